//go:build race

package zfile_test

const raceEnabled = true
