// Package deptest holds only a test: it enforces the module's import table
// (which package may import which, kept in the test as rules) with
// `go list`.
package deptest
