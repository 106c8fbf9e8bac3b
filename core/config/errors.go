package config

import (
	"errors"
	"fmt"
)

// Sentinel errors, wrapped by every error this package returns about the
// content of a configuration; test them with errors.Is.
var (
	// ErrSyntax reports a file that is not one well-formed JSON object.
	ErrSyntax = errors.New("invalid JSON")
	// ErrType reports a field whose JSON type is not the one the field
	// takes (a string for an integer, a fraction for an integer, a number
	// out of the field's range, ...).
	ErrType = errors.New("wrong type")
	// ErrInvalid reports a field whose value is well-typed but not
	// acceptable (an unknown cache type, a refill size that is not a power
	// of two, no layers at all, ...).
	ErrInvalid = errors.New("invalid value")
	// ErrStartup reports a start-up check of [Global.Prepare] that failed on
	// the system (a log file that cannot be opened, a cache directory that
	// cannot be created, no CA bundle).
	ErrStartup = errors.New("start-up check failed")
)

// FieldError describes a problem with one field of one configuration file.
type FieldError struct {
	// File is the path of the configuration file, or a description such
	// as "built-in defaults" when the configuration did not come from a
	// file.
	File string
	// Field is the path of the field inside the file, dot-separated with
	// array indexes in brackets, e.g. "cacheConfig.refillSize" or
	// "lowers[2].size". It is empty for errors about the whole file.
	Field string
	// Msg says what is wrong.
	Msg string
	// Kind is ErrSyntax, ErrType, ErrInvalid or ErrStartup.
	Kind error
	// Err is an underlying error (e.g. from the file system), or nil.
	Err error
}

// Error implements error.
func (e *FieldError) Error() string {
	s := e.File
	if s == "" {
		s = "configuration"
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	s += ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the underlying error, so that errors.Is works
// with both the sentinel and, e.g., fs.ErrNotExist.
func (e *FieldError) Unwrap() []error {
	errs := []error{e.Kind}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func fieldErr(file, field string, kind error, format string, args ...any) *FieldError {
	return &FieldError{File: file, Field: field, Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
