//go:build race

package frame

// raceEnabled: the race detector makes every memory access costly, so
// the longest tests do less.
const raceEnabled = true
