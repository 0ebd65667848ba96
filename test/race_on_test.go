//go:build race

package test

// raceEnabled reports a -race build: the race detector's shadow memory
// multiplies the process's resident memory, so RSS is not held against the
// node's budget there (the Go heap still is).
const raceEnabled = true
