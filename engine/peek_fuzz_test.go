package engine

import (
	"testing"

	"github.com/pktipc/pktipc/frame"
)

// FuzzJudgeRequest: what the accept loop and the lobby conclude from the
// first bytes of a connection agrees with the assembler that reads them
// later: a whole request (and where it ends), a malformed one, or one that
// needs more bytes; and never a panic.
func FuzzJudgeRequest(f *testing.F) {
	for _, s := range []string{"", "0008ping0000", "0000", "0004", "0001", "0003", "zzzz", "0008pi", "fff0", "0005a0005b0000", "0008ping0000rest", "00"} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, full bool) {
		verdict, end := judgeWhole(in, full)
		msg, n, done, err := frame.NewAssembler(frame.SimpleIPC, 0).Next(in)
		switch verdict {
		case peekBad:
			if err == nil && done {
				t.Fatalf("malformed by the peek, a message of %d bytes for the assembler", n)
			}
		case peekReady:
			if end == 0 || !done || n != end {
				t.Fatalf("whole at %d by the peek; assembler: done %v at %d, %v", end, done, n, err)
			}
		case peekLarge:
			if !full || end != 0 || done || err != nil {
				t.Fatalf("large by the peek (full %v, end %d); assembler: done %v, %v", full, end, done, err)
			}
		case peekWait:
			if done || err != nil {
				t.Fatalf("more needed by the peek; assembler: done %v, %v (%d bytes)", done, err, len(msg))
			}
		}
	})
}
