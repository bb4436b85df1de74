//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runChild is a re-executed test binary's life: it works on the ring
// memfd it inherits as descriptor 3.
func runChild(mode string) int {
	f := os.NewFile(3, "ring")
	switch mode {
	case "scribble":
		return childScribble(f)
	case "writer":
		return childWriter(f)
	case "echo":
		return childEcho(f, os.NewFile(4, "replies"))
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return 2
}

// startChild runs this test binary in the given mode with f as its
// descriptor 3, stopping it at cleanup.
func startChild(t *testing.T, mode string, f *os.File) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewReader(out)
}

// childScribble maps the ring and writes random values over its header
// words and records until it is killed.
func childScribble(f *os.File) int {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 1
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return 1
	}
	fmt.Println("ready")
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 2))
	words := []uint64{offHead, offRPark, offWPark, offClosed}
	shift := uint8(bits.TrailingZeros64(uint64(len(mem) - headerSize)))
	for {
		var off uint64
		if rng.IntN(2) == 0 {
			off = words[rng.IntN(len(words))]
		} else {
			off = headerSize + uint64(rng.IntN(len(mem)-headerSize))&^7
		}
		var v uint64
		switch rng.IntN(4) {
		case 0:
			v = rng.Uint64()
		case 1:
			v = uint64(rng.IntN(3 * (len(mem) - headerSize)))
		case 2:
			// A header sealed for one of the first laps, which the
			// reader takes for a record when its head is there.
			lap := uint64(rng.IntN(16)) << shift
			v = packRecord(uint32(rng.IntN(len(mem))), uint32(rng.IntN(4))|seal(lap, shift))
		default:
			v = word64(mem, off&^7).Load() + uint64(rng.IntN(64))
		}
		word64(mem, off&^7).Store(v)
		if rng.IntN(64) == 0 {
			time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
		}
	}
}

// childWriter writes numbered messages, says how many, and then waits
// to be killed with a reservation held.
func childWriter(f *os.File) int {
	w, err := NewWriter(f, nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for i := range 100 {
		if err := w.Write([]byte(strconv.Itoa(i))); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	w.Reserve(10)
	fmt.Println("wrote 100")
	select {}
}

// TestScribblingPeer: a second process writes random values into the
// shared header and records while this one writes and reads the ring. Every
// call returns, within its deadline and a margin, nil or a typed error; a
// side ended by corruption is replaced by a fresh one on the same memory.
func TestScribblingPeer(t *testing.T) {
	checkMappings(t)
	f, err := Create(MinCapacity * 4)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, out := startChild(t, "scribble", f)
	if line, _ := out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("child: %q", line)
	}
	const (
		run      = 1500 * time.Millisecond
		deadline = 20 * time.Millisecond
		margin   = 2 * time.Second // -race on a loaded machine
	)
	end := time.Now().Add(run)
	check := func(what string, start time.Time, err error) {
		if el := time.Since(start); el > deadline+margin {
			t.Errorf("%s took %v with a %v deadline", what, el, deadline)
		}
		switch {
		case err == nil, err == io.EOF, err == io.ErrUnexpectedEOF,
			errors.Is(err, ErrTimeout), errors.Is(err, ErrCorrupt), errors.Is(err, ErrPeerClosed),
			errors.Is(err, ErrBrokenMessage), errors.Is(err, ErrTooLarge):
		default:
			t.Errorf("%s: untyped error %v", what, err)
		}
	}
	var wg sync.WaitGroup
	var corruptW, corruptR, msgs int
	wg.Go(func() {
		buf := make([]byte, 3*MinCapacity)
		for time.Now().Before(end) {
			w, err := NewWriter(f, nil)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("NewWriter: %v", err)
				}
				continue
			}
			for time.Now().Before(end) {
				w.SetDeadline(time.Now().Add(deadline))
				start := time.Now()
				err := w.Write(buf[:rand.IntN(len(buf))])
				check("Write", start, err)
				if errors.Is(err, ErrCorrupt) {
					corruptW++
				}
				if err != nil && !errors.Is(err, ErrTimeout) {
					break
				}
			}
			w.Close()
		}
	})
	wg.Go(func() {
		var buf []byte
		for time.Now().Before(end) {
			r, err := NewReader(f, nil)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("NewReader: %v", err)
					return
				}
				corruptR++
				continue
			}
			for time.Now().Before(end) {
				r.SetDeadline(time.Now().Add(deadline))
				r.Prefetch() // reads the scribbled header too
				start := time.Now()
				buf, err = r.ReadMessage(buf[:0], 1<<20)
				check("ReadMessage", start, err)
				if errors.Is(err, ErrCorrupt) {
					corruptR++
				}
				if err == nil {
					msgs++
				} else if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrTooLarge) {
					break
				}
			}
			r.Close()
		}
	})
	wg.Wait()
	t.Logf("corruption seen by writers %d, by readers %d times; %d messages read", corruptW, corruptR, msgs)
	if corruptW+corruptR == 0 {
		t.Error("the scribbler never corrupted the ring: the test did not test")
	}
}

// TestPeerDeath: a writer process is killed with a reservation held; the
// reader reads what was committed, and its owner, seeing the child's end
// of the connection close, closes the reader, which wakes at once.
func TestPeerDeath(t *testing.T) {
	checkMappings(t)
	f, err := Create(MinCapacity)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewReader(f, &Options{Spin: -1})
	if err != nil {
		t.Fatal(err)
	}
	cmd, out := startChild(t, "writer", f)
	for i := range 100 {
		got, err := r.ReadMessage(nil, 10)
		if err != nil || string(got) != strconv.Itoa(i) {
			t.Fatalf("message %d: %q, %v", i, got, err)
		}
	}
	if line, _ := out.ReadString('\n'); line != "wrote 100\n" {
		t.Fatalf("child: %q", line)
	}
	done := make(chan error)
	go func() { _, _, err := r.Next(); done <- err }()
	cmd.Process.Kill()
	if _, err := out.ReadString('\n'); err != io.EOF {
		t.Fatalf("child's output after the kill: %v", err)
	}
	killed := time.Now()
	r.Close() // what an owner watching the connection does
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("parked reader after its peer died: %v, want ErrClosed", err)
		}
		t.Logf("reader woke %v after the peer's death was seen", time.Since(killed))
	case <-time.After(5 * time.Second):
		t.Fatal("reader still parked 5 s after Close")
	}
}

// TestRefusedFiles: only a sealed memfd of a ring's size with a ring's
// header is mapped.
func TestRefusedFiles(t *testing.T) {
	checkMappings(t)
	for _, c := range []int{-1, 0, 1000, MinCapacity + 8, MaxCapacity + MinCapacity} {
		if f, err := Create(c); !errors.Is(err, ErrInvalid) {
			if f != nil {
				f.Close()
			}
			t.Errorf("Create(%d): %v, want ErrInvalid", c, err)
		}
	}
	memfd := func(t *testing.T, flags int, size int64, seals int, header bool) *os.File {
		t.Helper()
		fd, err := unix.MemfdCreate("pktipc-ring", unix.MFD_CLOEXEC|flags)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "memfd")
		t.Cleanup(func() { f.Close() })
		if err := unix.Ftruncate(fd, size); err != nil {
			t.Fatal(err)
		}
		if header {
			hdr := make([]byte, 16)
			initHeader(hdr, uint64(size-headerSize))
			unix.Pwrite(fd, hdr, 0)
		}
		if seals != 0 {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
				t.Fatal(err)
			}
		}
		return f
	}
	good := int64(headerSize + MinCapacity)
	disk, err := os.Create(filepath.Join(t.TempDir(), "ring"))
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	disk.Truncate(good)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	cases := []struct {
		name string
		f    func(t *testing.T) *os.File
	}{
		{"unsealed", func(t *testing.T) *os.File { return memfd(t, unix.MFD_ALLOW_SEALING, good, 0, true) }},
		{"sealing not allowed", func(t *testing.T) *os.File { return memfd(t, 0, good, 0, true) }},
		{"shrink seal only", func(t *testing.T) *os.File {
			return memfd(t, unix.MFD_ALLOW_SEALING, good, unix.F_SEAL_SHRINK, true)
		}},
		{"no reseal seal", func(t *testing.T) *os.File {
			return memfd(t, unix.MFD_ALLOW_SEALING, good, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW, true)
		}},
		{"write sealed", func(t *testing.T) *os.File {
			return memfd(t, unix.MFD_ALLOW_SEALING, good, requiredSeals|unix.F_SEAL_WRITE, true)
		}},
		{"wrong size", func(t *testing.T) *os.File {
			return memfd(t, unix.MFD_ALLOW_SEALING, headerSize+5000, requiredSeals, true)
		}},
		{"header only", func(t *testing.T) *os.File {
			return memfd(t, unix.MFD_ALLOW_SEALING, headerSize, requiredSeals, true)
		}},
		{"no ring header", func(t *testing.T) *os.File {
			return memfd(t, unix.MFD_ALLOW_SEALING, good, requiredSeals, false)
		}},
		{"file on disk", func(*testing.T) *os.File { return disk }},
		{"pipe", func(*testing.T) *os.File { return pr }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.f(t)
			_, err := NewReader(f, nil)
			var fe *FileError
			if !errors.Is(err, ErrBadFile) || !errors.As(err, &fe) {
				t.Fatalf("NewReader: %v, want a *FileError", err)
			}
			if _, err := NewWriter(f, nil); !errors.Is(err, ErrBadFile) {
				t.Fatalf("NewWriter: %v, want ErrBadFile", err)
			}
			t.Log(err)
		})
	}
	if _, err := NewReader(nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewReader(nil): %v", err)
	}
}

// TestCorruptValues: each value the ring's invariants rule out ends the
// side that reads it with a *CorruptError naming it, for good, and tells
// the peer.
func TestCorruptValues(t *testing.T) {
	const c = MinCapacity
	cases := []struct {
		name, field string
		head        uint64 // where the reader starts
		set         func(s *shared)
	}{
		{"record across the end", "record length", 0, func(s *shared) { putRecord(s, 0, c, 0) }},
		{"record across the end, late in a lap", "record length", 3*c - 8, func(s *shared) { putRecord(s, 3*c-8, 8, 0) }},
		{"unknown flags", "record flags", 0, func(s *shared) { putRecord(s, 0, 0, 8) }},
		{"a word no writer leaves", "record header", 0, func(s *shared) {
			word64(s.data, 0).Store(0x0123_4567_89ab_cdef)
		}},
		{"a header sealed for a later lap", "record header", c, func(s *shared) { putRecord(s, 2*c, 1, 0) }},
		{"padding at the start of the area", "padding", 0, func(s *shared) { putRecord(s, 0, 0, flagPad) }},
		{"padding after padding", "padding", 3*c - 8, func(s *shared) {
			putRecord(s, 3*c-8, 0, flagPad)
			putRecord(s, 3*c, 0, flagPad)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, s, _ := heapRing(c)
			s.head.Store(tc.head)
			r, err := newReader(s, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			r.SetDeadline(time.Now().Add(time.Minute)) // a miss fails, rather than hangs
			tc.set(s)
			_, _, err = r.Next()
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("Next: %v, want a *CorruptError on %q", err, tc.field)
			}
			if _, _, err2 := r.Next(); err2 != err {
				t.Fatalf("second Next: %v, want the same error", err2)
			}
			if s.closed.Load()&closedReader == 0 {
				t.Fatal("the writer was not told")
			}
		})
	}
	t.Run("head past tail", func(t *testing.T) {
		_, s, _ := heapRing(c)
		w, err := newWriter(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if err := w.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		// The writer reads the head when its last reading leaves too
		// little room, so it sees the bad value within a ring's worth.
		s.head.Store(1 << 40)
		w.SetDeadline(time.Now().Add(time.Second))
		for range MinCapacity / 8 {
			if err = w.Write([]byte("y")); err != nil {
				break
			}
		}
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Field != "head" {
			t.Fatalf("Write: %v, want a *CorruptError on head", err)
		}
		if err2 := w.Write([]byte("z")); err2 != err {
			t.Fatalf("second Write: %v", err2)
		}
	})
	t.Run("unaligned head at attach", func(t *testing.T) {
		_, s, _ := heapRing(c)
		s.head.Store(4)
		if _, err := newWriter(s, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("newWriter: %v, want ErrCorrupt", err)
		}
		if _, err := newReader(s, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("newReader: %v, want ErrCorrupt", err)
		}
	})
}
