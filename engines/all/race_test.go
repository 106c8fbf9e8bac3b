//go:build race

package all_test

// raceEnabled tells tests that the race detector is on (it makes sync.Pool
// drop items on purpose, so allocation counts mean nothing then).
const raceEnabled = true
