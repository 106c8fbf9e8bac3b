package conformance

import (
	"os"
	"strconv"
	"time"
)

// SeedEnv is the environment variable that fixes the seed of every run, to
// replay a failure.
const SeedEnv = "OVERLAYBD_CONFORMANCE_SEED"

// LongEnv is the environment variable that selects long runs (more
// operations, more seeds) when set to 1.
const LongEnv = "OVERLAYBD_LONG"

// Seed returns the seed of SeedEnv when set, else a fresh one from the clock.
func Seed() (int64, error) {
	if s := os.Getenv(SeedEnv); s != "" {
		return strconv.ParseInt(s, 10, 64)
	}
	return time.Now().UnixNano(), nil
}

// Long reports whether long runs are selected (LongEnv=1).
func Long() bool { return os.Getenv(LongEnv) == "1" }
