package core

import (
	"strings"
	"testing"
)

func TestRegistryLookup(t *testing.T) {
	r := NewRegistry[func() string]("widget")
	r.Register("alpha", 0, func() string { return "a" })
	r.Register("beta", NoNumber, func() string { return "b" })

	f, err := r.Lookup("alpha")
	if err != nil || f() != "a" {
		t.Fatalf("Lookup(alpha) failed: %v", err)
	}
	name, f, err := r.LookupNumber(0)
	if err != nil || name != "alpha" || f() != "a" {
		t.Fatalf("LookupNumber(0) = %q, %v", name, err)
	}
	if _, _, err := r.LookupNumber(7); err == nil || !strings.Contains(err.Error(), "alpha (0), beta") {
		t.Fatalf("LookupNumber(7) error = %v, want the known list", err)
	}
	_, err = r.Lookup("gamma")
	if err == nil {
		t.Fatal("Lookup(gamma) succeeded")
	}
	for _, want := range []string{`unknown widget "gamma"`, "alpha (0)", "beta"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if n, ok := r.NumberOf("alpha"); !ok || n != 0 {
		t.Errorf("NumberOf(alpha) = %d, %v", n, ok)
	}
	if _, ok := r.NumberOf("beta"); ok {
		t.Error("NumberOf(beta) reported a number")
	}
	for _, in := range []string{"0", "alpha"} {
		name, _, err := r.Resolve(in)
		if err != nil || name != "alpha" {
			t.Errorf("Resolve(%q) = %q, %v", in, name, err)
		}
	}
	if got := strings.Join(r.Names(), ","); got != "alpha,beta" {
		t.Errorf("Names() = %s", got)
	}
}

func TestRegistryReplace(t *testing.T) {
	r := NewRegistry[int]("codec")
	r.Register("lz4", 1, 1)
	r.Register("lz4", 1, 2)
	if v, _ := r.Lookup("lz4"); v != 2 {
		t.Fatalf("later registration did not take over: %d", v)
	}
}

func TestRegistryEmpty(t *testing.T) {
	r := NewRegistry[int]("cache")
	if _, err := r.Lookup("file"); err == nil || !strings.Contains(err.Error(), "none registered") {
		t.Fatalf("error = %v", err)
	}
}
