package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
)

// value is one parsed JSON value. Objects keep their keys in file order so
// that errors can be reported deterministically.
type value struct {
	kind    valueKind
	str     string // string contents, or the literal text of a number
	boolean bool
	keys    []string
	members map[string]*value
	elems   []*value
}

type valueKind uint8

const (
	kindNull valueKind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// String names the kind in error messages.
func (k valueKind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindBool:
		return "a boolean"
	case kindNumber:
		return "a number"
	case kindString:
		return "a string"
	case kindArray:
		return "an array"
	default:
		return "an object"
	}
}

// parseDocument parses data as exactly one JSON object. Duplicate keys and
// trailing data are syntax errors.
func parseDocument(data []byte, file string) (*value, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parseValue(dec, "")
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.File = file
			return nil, fe
		}
		return nil, &FieldError{File: file, Kind: ErrSyntax, Msg: "not valid JSON", Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fieldErr(file, "", ErrSyntax, "data after the top-level JSON object")
	}
	if v.kind != kindObject {
		return nil, fieldErr(file, "", ErrSyntax, "the top level is %s, want an object", v.kind)
	}
	return v, nil
}

func parseValue(dec *json.Decoder, path string) (*value, error) {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch t := tok.(type) {
	case nil:
		return &value{kind: kindNull}, nil
	case bool:
		return &value{kind: kindBool, boolean: t}, nil
	case json.Number:
		return &value{kind: kindNumber, str: string(t)}, nil
	case string:
		return &value{kind: kindString, str: t}, nil
	case json.Delim:
		switch t {
		case '{':
			v := &value{kind: kindObject, members: map[string]*value{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, errors.New("object key is not a string")
				}
				if _, dup := v.members[key]; dup {
					return nil, fieldErr("", joinField(path, key), ErrSyntax, "duplicate key")
				}
				m, err := parseValue(dec, joinField(path, key))
				if err != nil {
					return nil, err
				}
				v.keys = append(v.keys, key)
				v.members[key] = m
			}
			if _, err := dec.Token(); err != nil { // '}'
				return nil, err
			}
			return v, nil
		case '[':
			v := &value{kind: kindArray}
			for i := 0; dec.More(); i++ {
				e, err := parseValue(dec, path+"["+strconv.Itoa(i)+"]")
				if err != nil {
					return nil, err
				}
				v.elems = append(v.elems, e)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return nil, err
			}
			return v, nil
		}
	}
	return nil, errors.New("unexpected token")
}

func joinField(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// reader extracts typed fields from one JSON object. The first error is
// kept (sticky) and later calls do nothing.
type reader struct {
	file string
	path string
	obj  *value
	err  *error
}

func newReader(file string, obj *value) reader {
	var err error
	return reader{file: file, obj: obj, err: &err}
}

func (r reader) failed() bool { return *r.err != nil }

func (r reader) fail(field string, kind error, format string, args ...any) {
	if *r.err == nil {
		*r.err = fieldErr(r.file, field, kind, format, args...)
	}
}

// get returns the member key, or nil when it is absent or null.
func (r reader) get(key string) (*value, string) {
	field := joinField(r.path, key)
	if r.failed() || r.obj == nil {
		return nil, field
	}
	v := r.obj.members[key]
	if v == nil || v.kind == kindNull {
		return nil, field
	}
	return v, field
}

func (r reader) has(key string) bool {
	v, _ := r.get(key)
	return v != nil
}

func (r reader) want(v *value, field string, k valueKind) bool {
	if v.kind != k {
		r.fail(field, ErrType, "is %s, want %s", v.kind, k)
		return false
	}
	return true
}

func (r reader) str(key string, dst *string) {
	if v, field := r.get(key); v != nil && r.want(v, field, kindString) {
		*dst = v.str
	}
}

func (r reader) boolean(key string, dst *bool) {
	if v, field := r.get(key); v != nil && r.want(v, field, kindBool) {
		*dst = v.boolean
	}
}

// integer parses v as an integer in [lo, hi].
func (r reader) integer(v *value, field string, lo int64, hi uint64) (int64, uint64, bool) {
	if !r.want(v, field, kindNumber) {
		return 0, 0, false
	}
	if strings.ContainsAny(v.str, ".eE") {
		r.fail(field, ErrType, "is %s, want an integer", v.str)
		return 0, 0, false
	}
	if strings.HasPrefix(v.str, "-") {
		n, err := strconv.ParseInt(v.str, 10, 64)
		if err != nil || n < lo {
			r.fail(field, ErrType, "%s is out of range [%d, %d]", v.str, lo, hi)
			return 0, 0, false
		}
		return n, 0, true
	}
	u, err := strconv.ParseUint(v.str, 10, 64)
	if err != nil || u > hi {
		r.fail(field, ErrType, "%s is out of range [%d, %d]", v.str, lo, hi)
		return 0, 0, false
	}
	return int64(u), u, true
}

// int32 reads an upstream "int" (signed 32-bit) into a Go int.
func (r reader) int32(key string, dst *int) {
	if v, field := r.get(key); v != nil {
		if n, _, ok := r.integer(v, field, math.MinInt32, math.MaxInt32); ok {
			*dst = int(n)
		}
	}
}

func (r reader) uint32(key string, dst *uint32) {
	if v, field := r.get(key); v != nil {
		if _, u, ok := r.integer(v, field, 0, math.MaxUint32); ok {
			*dst = uint32(u)
		}
	}
}

func (r reader) uint64(key string, dst *uint64) {
	if v, field := r.get(key); v != nil {
		if _, u, ok := r.integer(v, field, 0, math.MaxUint64); ok {
			*dst = u
		}
	}
}

// object returns a reader for the member object key; present is false when
// the member is absent or null (the reader then yields only defaults).
func (r reader) object(key string) (sub reader, present bool) {
	v, field := r.get(key)
	sub = reader{file: r.file, path: field, err: r.err}
	if v != nil && r.want(v, field, kindObject) {
		sub.obj = v
		return sub, true
	}
	return sub, false
}

// array returns the elements of the member array key (nil when absent or
// null) and the field path of the array.
func (r reader) array(key string) ([]*value, string) {
	v, field := r.get(key)
	if v != nil && r.want(v, field, kindArray) {
		if v.elems == nil {
			return []*value{}, field
		}
		return v.elems, field
	}
	return nil, field
}

// strings reads an array of strings.
func (r reader) strings(key string, dst *[]string) {
	elems, field := r.array(key)
	if elems == nil {
		return
	}
	out := make([]string, 0, len(elems))
	for i, e := range elems {
		f := field + "[" + strconv.Itoa(i) + "]"
		if !r.want(e, f, kindString) {
			return
		}
		out = append(out, e.str)
	}
	if len(out) == 0 {
		out = nil
	}
	*dst = out
}

// element returns a reader for the i-th element of an array, which must be
// an object.
func (r reader) element(field string, i int, e *value) reader {
	f := field + "[" + strconv.Itoa(i) + "]"
	sub := reader{file: r.file, path: f, err: r.err}
	if r.want(e, f, kindObject) {
		sub.obj = e
	}
	return sub
}
