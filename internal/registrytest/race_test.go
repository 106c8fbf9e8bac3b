//go:build race

package registrytest_test

// raceEnabled is true under the race detector, which makes the registry
// about twenty times slower.
const raceEnabled = true
