//go:build !linux

package engine

import (
	"errors"
	"syscall"
)

func peerHalfClosed(int) bool { return false }

func fdExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

const soloSupported = false

type pollSet struct{}

func pollNow(int, int) (bool, bool) { return false, false }

func waitReadable(*pollSet, int, int) (bool, error) { return false, errors.ErrUnsupported }

func awaitInput(w *inputWait, _ int) { w.news, w.queued = false, false }

const (
	inputData int16 = 1
	inputEnd  int16 = 2
)

func sysDup(int) (int, error) { return -1, errors.ErrUnsupported }

type hangupPoll struct{}

func (*hangupPoll) check(cs []*conn) []bool { return make([]bool, len(cs)) }

func arenaAlloc(size int) []byte { return make([]byte, 0, size) }

func arenaFree([]byte) {}
