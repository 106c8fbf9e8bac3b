package core

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// NoNumber registers an implementation that has no upstream number.
const NoNumber = -1

// Registry maps names, and optionally upstream's numbers, to factories of one
// kind of implementation. It is safe for concurrent use.
type Registry[F any] struct {
	kind     string
	mu       sync.RWMutex
	byName   map[string]F
	byNumber map[int]string
}

// NewRegistry returns an empty registry; kind names the kind of
// implementation in error messages (e.g. "io engine").
func NewRegistry[F any](kind string) *Registry[F] {
	return &Registry[F]{kind: kind, byName: map[string]F{}, byNumber: map[int]string{}}
}

// Register adds a factory under name and, unless number is NoNumber, under
// number. Registering a name or number twice replaces the earlier entry, so
// that a build-tagged flavour (e.g. cgo codecs) can take over a name from
// the default one; the flavour registers in an init function that runs
// after the default's because it imports it.
func (r *Registry[F]) Register(name string, number int, f F) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byName[name] = f
	if number != NoNumber {
		r.byNumber[number] = name
	}
}

// Lookup returns the factory registered under name. An unknown name is an
// error that lists the known names.
func (r *Registry[F]) Lookup(name string) (F, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.byName[name]
	if !ok {
		var zero F
		return zero, fmt.Errorf("unknown %s %q (known: %s)", r.kind, name, r.knownLocked())
	}
	return f, nil
}

// LookupNumber returns the name and factory registered under upstream's
// number n. An unknown number is an error that lists the known ones.
func (r *Registry[F]) LookupNumber(n int) (string, F, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	name, ok := r.byNumber[n]
	if !ok {
		var zero F
		return "", zero, fmt.Errorf("unknown %s number %d (known: %s)", r.kind, n, r.knownLocked())
	}
	return name, r.byName[name], nil
}

// Resolve accepts either a registered name or the decimal form of a
// registered number and returns the name and factory.
func (r *Registry[F]) Resolve(nameOrNumber string) (string, F, error) {
	if n, err := strconv.Atoi(nameOrNumber); err == nil {
		return r.LookupNumber(n)
	}
	f, err := r.Lookup(nameOrNumber)
	return nameOrNumber, f, err
}

// NumberOf returns upstream's number for name, if it has one.
func (r *Registry[F]) NumberOf(name string) (int, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for n, nm := range r.byNumber {
		if nm == name {
			return n, true
		}
	}
	return 0, false
}

// Names returns the registered names, sorted.
func (r *Registry[F]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (r *Registry[F]) knownLocked() string {
	if len(r.byName) == 0 {
		return "none registered"
	}
	names := make([]string, 0, len(r.byName))
	for name := range r.byName {
		entry := name
		for n, nm := range r.byNumber {
			if nm == name {
				entry = fmt.Sprintf("%s (%d)", name, n)
			}
		}
		names = append(names, entry)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
