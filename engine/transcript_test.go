package engine

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// transcript is one exchange with git's simple-ipc test daemon, as observed:
// raw request bytes, the reply bytes the daemon sends, and how the
// connection ends.
type transcript struct {
	name   string
	send   []string // written one after the other, 20 ms apart
	halfCl bool     // shutdown(SHUT_WR) after sending
	reply  string
	unread bool // git leaves request bytes unread, so its peer sees RST
}

func a(n int) string { return strings.Repeat("a", n) }

var transcripts = []transcript{
	{name: "ping", send: []string{"0008ping0000"}, reply: "0008pong0000"},
	{name: "lowercase hex", send: []string{"000aping120000"}, reply: "001dunhandled command: ping120000"},
	{name: "uppercase hex", send: []string{"000Aping120000"}, reply: "001dunhandled command: ping120000"},
	{name: "mixed-case hex", send: []string{"000Apingxx0000"}, reply: "001dunhandled command: pingxx0000"},
	{name: "empty request", send: []string{"0000"}, reply: "0017unhandled command: 0000"},
	{name: "delim ends request", send: []string{"00010008ping0000"}, reply: "0017unhandled command: 0000", unread: true},
	{name: "response-end ends request", send: []string{"00020008ping0000"}, reply: "0017unhandled command: 0000", unread: true},
	{name: "empty data packet ends request", send: []string{"00040008ping0000"}, reply: "0017unhandled command: 0000", unread: true},
	{name: "ping then delim", send: []string{"0008ping0001"}, reply: "0008pong0000"},
	{name: "ping then response-end", send: []string{"0008ping0002"}, reply: "0008pong0000"},
	{name: "0004 mid-request", send: []string{"0006pi0004", "0006ng0000"}, reply: "0019unhandled command: pi0000", unread: true},
	{name: "payloads concatenate", send: []string{"0006pi0006ng0000"}, reply: "0008pong0000"},
	{name: "header and payload apart", send: []string{"0008", "ping", "0000"}, reply: "0008pong0000"},
	{name: "largest packet", send: []string{"fff0" + a(65516) + "0000"},
		reply: string(frame.AppendMessage(nil, []byte("unhandled command: "+a(65516))))},
	{name: "non-hex zzzz", send: []string{"zzzz0000"}, unread: true},
	{name: "non-hex space", send: []string{" 008ping0000"}, unread: true},
	{name: "non-hex minus", send: []string{"-008ping0000"}, unread: true},
	{name: "non-hex plus", send: []string{"+008ping0000"}, unread: true},
	{name: "non-hex 0x", send: []string{"0x08ping0000"}, unread: true},
	{name: "bad length 3 alone", send: []string{"0003"}},
	{name: "bad length 3", send: []string{"00030000"}, unread: true},
	{name: "too long fff1", send: []string{"fff1" + a(65517) + "0000"}, unread: true},
	{name: "too long ffff", send: []string{"ffff" + a(100)}, unread: true},
	{name: "two requests", send: []string{"0008ping00000008ping0000"}, reply: "0008pong0000", unread: true},
	{name: "NUL in request", send: []string{"0009ping\x000000"}, reply: "001bunhandled command: ping0000"},
	{name: "ERR is data", send: []string{"0008ERR 0000"}, reply: "001bunhandled command: ERR 0000"},
	{name: "truncated then half-close", send: []string{"0008ping"}, halfCl: true},
	{name: "request then half-close", send: []string{"0008ping0000"}, halfCl: true, reply: "0008pong0000"},
	{name: "slow request then half-close", send: []string{"000cslowping0000"}, halfCl: true, reply: "0008pong0000"},
	// In parts, the request goes to an event loop, which sees the half
	// close while a worker runs the handler (the rescue path); whole, a
	// worker serves it on the bare descriptor, which the half close does
	// not disturb.
	{name: "slow request in parts then half-close", send: []string{"000cslowping", "0000"}, halfCl: true, reply: "0008pong0000"},
}

// TestTranscripts replays every observed exchange of git's daemon against
// our server, inline and pooled, and compares the reply byte for byte.
//
// One deliberate difference: where git leaves request bytes unread in the
// kernel (so its peer sees ECONNRESET after the reply), gnet has usually
// read them already, and the peer sees EOF. Either is accepted for those
// rows; the bytes must match exactly.
func TestTranscripts(t *testing.T) {
	for _, mode := range []string{"pool", "inline"} {
		t.Run(mode, func(t *testing.T) {
			leakcheck.Check(t)
			ts := startServer(t, HandlerFunc(gitDaemon), WithInlineHandlers(mode == "inline"), WithWorkers(2))
			for _, tr := range transcripts {
				if mode == "inline" && strings.Contains(tr.name, "slow") {
					continue // inline handlers must not block
				}
				t.Run(tr.name, func(t *testing.T) {
					c := dialRaw(t, ts.path)
					for i, s := range tr.send {
						if i > 0 {
							time.Sleep(20 * time.Millisecond)
						}
						if _, err := c.Write([]byte(s)); err != nil {
							if tr.unread {
								break // the server answered, or refused, and closed before the rest
							}
							t.Fatal(err)
						}
					}
					if tr.halfCl {
						if err := c.CloseWrite(); err != nil {
							t.Fatal(err)
						}
					}
					got, kind := readAll(t, c)
					if !bytes.Equal(got, []byte(tr.reply)) {
						t.Fatalf("reply %s, want %s", quote(got), quote([]byte(tr.reply)))
					}
					if !tr.unread && kind != kindEOF {
						t.Fatalf("connection ended with %s, want EOF", kind)
					}
				})
			}
			st := ts.Stats()
			if mode == "pool" && st.Rescued == 0 {
				t.Errorf("the half-closed slow request was answered without the rescue path: %+v", st)
			}
			if st.ProtocolErrors < 8 {
				t.Errorf("ProtocolErrors = %d, want at least 8", st.ProtocolErrors)
			}
		})
	}
}

func quote(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%q...(%d bytes)", b[:80], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// TestProbeConnections checks that git's liveness probes (connect, close)
// are dropped silently: no request, no error, nothing left open.
func TestProbeConnections(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon))
	for range 50 {
		c := dialRaw(t, ts.path)
		c.Close()
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 && ts.Stats().Accepted == 50 })
	if st := ts.Stats(); st.Requests != 0 || st.ProtocolErrors != 0 {
		t.Fatalf("probes produced requests or errors: %+v", st)
	}
}
