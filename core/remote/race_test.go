//go:build race

package remote_test

// raceEnabled shrinks the large test layers: distribution's in-memory
// storage takes minutes to accept 64 MiB under the race detector.
const raceEnabled = true
