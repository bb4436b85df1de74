package ring

import (
	"testing"
	"time"
)

// TestDeadlineLatch: a deadline found passed answers later looks as
// passed, and a later set (further on, cleared, or passed again) replaces
// the latch.
func TestDeadlineLatch(t *testing.T) {
	var d deadline
	if _, has := d.remaining(); has {
		t.Fatal("zero deadline reports one")
	}
	d.set(time.Now().Add(-time.Millisecond))
	if left, has := d.remaining(); !has || left > 0 {
		t.Fatalf("passed deadline: %v left, has %v", left, has)
	}
	if d.ns.Load() >= 0 {
		t.Fatalf("passed deadline not latched: ns %d", d.ns.Load())
	}
	if left, has := d.remaining(); !has || left != 0 {
		t.Fatalf("latched deadline: %v left, has %v", left, has)
	}
	d.set(time.Now().Add(time.Hour))
	if left, has := d.remaining(); !has || left < 59*time.Minute {
		t.Fatalf("deadline moved forward after a latch: %v left, has %v", left, has)
	}
	d.set(time.Time{})
	if _, has := d.remaining(); has {
		t.Fatal("cleared deadline reports one")
	}
	d.set(time.Now().Add(20 * time.Millisecond))
	if left, _ := d.remaining(); left <= 0 {
		t.Fatalf("future deadline: %v left", left)
	}
	time.Sleep(30 * time.Millisecond)
	if left, has := d.remaining(); !has || left > 0 {
		t.Fatalf("deadline that came: %v left, has %v", left, has)
	}
}
