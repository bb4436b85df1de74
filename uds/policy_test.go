package uds

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPolicies(t *testing.T) {
	me := sameUser{euid: 1000}
	for _, tc := range []struct {
		name  string
		p     Policy
		cred  Cred
		allow bool
	}{
		{"same user: us", me, Cred{UID: 1000}, true},
		{"same user: root", me, Cred{UID: 0}, true},
		{"same user: other", me, Cred{UID: 1001}, false},
		{"same user: unmapped (E6)", me, Cred{UID: 65534}, false},
		{"root only: root", RootOnly(), Cred{UID: 0}, true},
		{"root only: other", RootOnly(), Cred{UID: 1000}, false},
		{"uids: listed", AllowUIDs(5, 7), Cred{UID: 7}, true},
		{"uids: root not implied", AllowUIDs(5, 7), Cred{UID: 0}, false},
		{"uids: empty", AllowUIDs(), Cred{UID: 5}, false},
		{"gids: listed", AllowGIDs(20), Cred{UID: 9, GID: 20}, true},
		{"gids: uid does not count", AllowGIDs(20), Cred{UID: 20, GID: 21}, false},
		{"all", AllowAll(), Cred{UID: 12345}, true},
		{"nil func", PolicyFunc(nil), Cred{}, false},
		{"func", PolicyFunc(func(c Cred) error { return nil }), Cred{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Allow(tc.cred)
			if (err == nil) != tc.allow {
				t.Fatalf("Allow(%+v) = %v, want allow=%v", tc.cred, err, tc.allow)
			}
			if err != nil && !errors.Is(err, ErrDenied) {
				t.Errorf("denial %v does not wrap ErrDenied", err)
			}
		})
	}
	// The allow-lists keep their own copy.
	uids := []uint32{5}
	p := AllowUIDs(uids...)
	uids[0] = 6
	if p.Allow(Cred{UID: 5}) != nil {
		t.Error("AllowUIDs aliases its argument")
	}
}

// Credentials are typed numbers, never strings.
func TestCredIsTyped(t *testing.T) {
	ct := reflect.TypeFor[Cred]()
	for i := range ct.NumField() {
		f := ct.Field(i)
		switch f.Type.Kind() {
		case reflect.Int32, reflect.Uint32:
		default:
			t.Errorf("Cred.%s is a %v", f.Name, f.Type)
		}
	}
	if ct.NumMethod() != 0 {
		t.Error("Cred has methods (a String method would invite string comparisons)")
	}
}

func TestActiveStateString(t *testing.T) {
	// git's enum order.
	want := []string{"listening", "not listening", "invalid path", "path not found", "other error"}
	for i, w := range want {
		if got := ActiveState(i).String(); got != w {
			t.Errorf("ActiveState(%d) = %q, want %q", i, got, w)
		}
	}
	if Listening != 0 || OtherError != 4 {
		t.Error("enum order differs from git's")
	}
	if got := ActiveState(9).String(); got != "ActiveState(9)" {
		t.Errorf("unknown state prints %q", got)
	}
}

func TestOptions(t *testing.T) {
	o, err := newOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.mode != 0o600 || o.dirMode != 0o700 || o.backlog != DefaultBacklog || o.watch != DefaultWatchInterval ||
		o.passRights || o.insecureDir || o.abstract || o.gid != -1 || o.logger == nil {
		t.Errorf("defaults: %+v", o)
	}
	if _, ok := o.policy.(sameUser); !ok {
		t.Errorf("default policy %T, want SameUser", o.policy)
	}
	for _, tc := range []struct {
		name string
		opts []Option
		ok   bool
	}{
		{"nil option", []Option{nil}, false},
		{"mode 0600", []Option{WithMode(0o600)}, true},
		{"mode 0666", []Option{WithMode(0o666)}, true},
		{"mode without owner write", []Option{WithMode(0o400)}, false},
		{"mode with setuid", []Option{WithMode(0o4600)}, false},
		{"mode with type bits", []Option{WithMode(0o600 | 1<<31)}, false},
		{"dir 0700", []Option{WithDirMode(0o700)}, true},
		{"dir 0750 for a private socket", []Option{WithDirMode(0o750)}, false},
		{"dir 0750 for a group socket", []Option{WithMode(0o660), WithDirMode(0o750)}, true},
		{"dir group write", []Option{WithMode(0o660), WithDirMode(0o770)}, false},
		{"dir without owner x", []Option{WithDirMode(0o600)}, false},
		{"backlog 0", []Option{WithBacklog(0)}, false},
		{"backlog 1", []Option{WithBacklog(1)}, true},
		{"backlog huge", []Option{WithBacklog(1 << 20)}, false},
		{"watch 5ms", []Option{WithWatchInterval(5 * time.Millisecond)}, false},
		{"watch 1s", []Option{WithWatchInterval(time.Second)}, true},
		{"watch 2s", []Option{WithWatchInterval(2 * time.Second)}, false},
		{"nil policy", []Option{WithPolicy(nil)}, false},
		{"abstract without policy", []Option{WithAbstract()}, false},
		{"abstract with policy", []Option{WithAbstract(), WithPolicy(AllowAll())}, true},
		{"nil logger", []Option{WithLogger(nil)}, false},
		{"logger", []Option{WithLogger(slog.New(slog.DiscardHandler))}, true},
		{"group by number", []Option{WithGroup("123")}, true},
		{"group negative", []Option{WithGroup("-1")}, false},
		{"group unknown", []Option{WithGroup("pktipc-no-such-group")}, false},
		{"pass rights", []Option{WithPassRights(true)}, true},
		{"insecure dir", []Option{WithInsecureDir()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newOptions(tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidOption) {
				t.Errorf("%v does not wrap ErrInvalidOption", err)
			}
		})
	}
	if o, _ := newOptions([]Option{WithMode(0o660)}); o.dirMode != 0o750 {
		t.Errorf("dir mode for a group socket: %04o, want 0750", o.dirMode)
	}
	if d, _ := newDialOptions([]DialOption{DialAbstract()}); d.policy == nil {
		t.Error("DialAbstract has no default server policy")
	}
}

func TestErrors(t *testing.T) {
	pe := &PathTooLongError{Path: "/x", Len: 190, Max: 107}
	if !errors.Is(pe, syscall.ENAMETOOLONG) || !strings.Contains(pe.Error(), "190") || !strings.Contains(pe.Error(), "107") {
		t.Errorf("PathTooLongError: %v", pe)
	}
	iu := &InUseError{Path: "/x", Owner: &Cred{UID: 7, PID: 9}}
	if !errors.Is(iu, ErrInUse) || !strings.Contains(iu.Error(), "uid 7") {
		t.Errorf("InUseError: %v", iu)
	}
	de := &DialError{Path: "/x", State: PathNotFound, Attempts: 1, Err: syscall.ENOENT}
	if !errors.Is(de, ErrNotFound) || !errors.Is(de, syscall.ENOENT) || errors.Is(de, ErrNotListening) {
		t.Errorf("DialError matching: %v", de)
	}
	ide := &InsecureDirError{Dir: "/tmp", Mode: 0o1777, Reason: "r"}
	if !errors.Is(ide, ErrInsecureDir) || !strings.Contains(ide.Error(), "1777") {
		t.Errorf("InsecureDirError: %v", ide)
	}
}
