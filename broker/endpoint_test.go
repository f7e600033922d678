package broker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSocketFileRemovedAtClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.sock")
	s, err := Listen(Config{Endpoint: "ipc://" + path})
	mustOK(t, err)
	mustOK(t, s.Close())
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after Close: %v, want it gone", err)
	}
}

// Broker A's socket file is removed (by hand, by a tmp cleaner) and broker
// B binds the same path: stopping A must not take B's socket with it.
func TestBrokerRemovesOnlyItsOwnSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.sock")
	ep := "ipc://" + path
	a, err := Listen(Config{Endpoint: ep})
	mustOK(t, err)
	defer a.Close()
	mustOK(t, os.Remove(path))
	b := startServer(t, func(c *Config) { c.Endpoint = ep })
	mustOK(t, a.Close())
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("B's socket file after A stopped: %v", err)
	}
	c := dialT(t, b)
	mustOK(t, c.Open(testCtx(t), "p"))
}

// Whatever else sits at the path is somebody's file: it is neither replaced
// nor mistaken for another broker.
func TestNonSocketFileAtEndpointIsRefused(t *testing.T) {
	for _, tc := range []struct {
		kind string
		make func(path string) error
	}{
		{"a regular file", func(p string) error { return os.WriteFile(p, []byte("keep me"), 0o600) }},
		{"a directory", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"a FIFO", func(p string) error { return unix.Mkfifo(p, 0o600) }},
		{"a symbolic link", func(p string) error { return os.Symlink("elsewhere", p) }},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broker.sock")
			mustOK(t, tc.make(path))
			before, err := os.Lstat(path)
			mustOK(t, err)
			s, err := Listen(Config{Endpoint: "ipc://" + path})
			if err == nil {
				s.Close()
				t.Fatal("Listen succeeded")
			}
			if errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), path+" is "+tc.kind+", not a socket") {
				t.Fatalf("Listen: %v, want %s refused as not a socket", err, tc.kind)
			}
			after, err := os.Lstat(path)
			mustOK(t, err)
			if !os.SameFile(before, after) {
				t.Fatal("the file at the path was replaced")
			}
		})
	}
}

func TestSecondBrokerOnSameEndpointFails(t *testing.T) {
	s := startServer(t)
	_, err := Listen(Config{Endpoint: s.Endpoint()})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen: %v, want ErrInUse", err)
	}
}

func TestFilesystemEndpoint(t *testing.T) {
	path := t.TempDir() + "/broker.sock"
	ep := "ipc://" + path
	// A stale socket file from a crashed broker is replaced.
	stale, err := Listen(Config{Endpoint: ep})
	mustOK(t, err)
	stale.ln.SetUnlinkOnClose(false)
	stale.Close()
	s := startServer(t, func(c *Config) { c.Endpoint = ep })
	fi, err := os.Stat(path)
	mustOK(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	c := dialT(t, s)
	mustOK(t, c.Open(testCtx(t), "p"))
}

func TestNoBrokerFailsFast(t *testing.T) {
	start := time.Now()
	_, err := Dial(testCtx(t), testEndpoint())
	if !errors.Is(err, ErrNoBroker) || !strings.Contains(err.Error(), "zpipes serve") {
		t.Fatalf("dial with no broker: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dial took %v", d)
	}
}
