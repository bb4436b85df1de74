// Package deptest holds only a test: it enforces the import table of
// ARCHITECTURE.md (which package may import which) with `go list`.
package deptest
