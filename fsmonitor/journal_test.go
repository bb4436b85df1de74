package fsmonitor

import (
	"errors"
	"regexp"
	"slices"
	"testing"
	"time"
)

func TestTokenFormat(t *testing.T) {
	tm := time.Date(2026, 11, 23, 8, 33, 13, 557826000, time.UTC)
	if got, want := tokenFor(0, 28566, tm), "0.28566.20261123T083313.557826Z"; got != want {
		t.Fatalf("tokenFor = %q, want %q (git's own token id)", got, want)
	}
	j := newJournal(42, 10)
	tok, _, _ := j.state()
	if !regexp.MustCompile(`^0\.42\.\d{8}T\d{6}\.\d{6}Z$`).MatchString(tok) {
		t.Fatalf("first token %q", tok)
	}
	j.reset(nil)
	if tok2, _, _ := j.state(); tok2[:2] != "1." || tok2 == tok {
		t.Fatalf("token after a reset %q (before %q): the flush count must advance", tok2, tok)
	}
}

func TestJournalQueries(t *testing.T) {
	j := newJournal(1, 100)
	tok, _, _ := j.state()

	a := j.query("", 0, false)
	if !a.trivial || a.token != tok || a.seq != 1 {
		t.Fatalf("first query without a token: %+v", a)
	}
	j.add([]string{"b.txt", "a.txt", "b.txt"})
	a = j.query(tok, 1, true)
	if a.trivial || a.seq != 2 || !slices.Equal(a.paths, []string{"a.txt", "b.txt"}) {
		t.Fatalf("query from 1: %+v, want a.txt and b.txt once each at seq 2", a)
	}
	// Nothing new: an empty, non-trivial answer.
	if a = j.query(tok, 2, true); a.trivial || len(a.paths) != 0 || a.seq != 3 {
		t.Fatalf("query from 2 with no change: %+v", a)
	}
	j.add([]string{"c/"})
	// An older point still sees everything after it.
	if a = j.query(tok, 1, true); a.trivial || !slices.Equal(a.paths, []string{"a.txt", "b.txt", "c/"}) {
		t.Fatalf("query from 1 again: %+v", a)
	}
	for _, c := range []struct {
		name  string
		token string
		seq   uint64
	}{
		{"another token", "0.1.20200101T000000.000000Z", 1},
		{"a future sequence number", tok, 99},
	} {
		if a = j.query(c.token, c.seq, true); !a.trivial || a.token != tok {
			t.Errorf("%s: %+v, want a trivial reply with the current token", c.name, a)
		}
	}
}

func TestJournalLimit(t *testing.T) {
	j := newJournal(1, 3)
	tok, _, _ := j.state()
	j.add([]string{"one"})
	j.query(tok, 0, true) // seq 1
	j.add([]string{"two", "three"})
	j.query(tok, 1, true)   // seq 2
	j.add([]string{"four"}) // "one" falls out: floor 1
	if a := j.query(tok, 0, true); !a.trivial {
		t.Fatalf("query from before the oldest kept change: %+v, want trivial", a)
	}
	a := j.query(tok, 1, true)
	if a.trivial || !slices.Equal(a.paths, []string{"four", "three", "two"}) {
		t.Fatalf("query from 1: %+v", a)
	}
	j.add([]string{"5", "6", "7", "8"}) // more than the limit in one batch
	if a := j.query(tok, a.seq, true); !a.trivial {
		t.Fatalf("a batch larger than the journal: %+v, want trivial", a)
	}
}

func TestJournalIncomplete(t *testing.T) {
	j := newJournal(1, 10)
	tok, _, _ := j.state()
	j.spoil(ErrWatchLimit)
	if a := j.query(tok, 0, true); !a.trivial {
		t.Fatalf("spoiled journal: %+v, want trivial", a)
	}
	if _, _, why := j.state(); !errors.Is(why, ErrWatchLimit) {
		t.Fatalf("state's reason %v", why)
	}
	j.reset(ErrWatchLimit)
	tok, _, _ = j.state()
	if a := j.query(tok, 0, true); !a.trivial {
		t.Fatalf("reset with a reason: %+v, want trivial", a)
	}
	j.reset(nil)
	tok, _, _ = j.state()
	if a := j.query(tok, 0, true); a.trivial {
		t.Fatalf("reset without a reason: %+v, want complete", a)
	}
}
