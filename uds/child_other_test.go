//go:build !linux

package uds

func runChild() bool { return false }
