package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("second Open: %v, want ErrLocked naming %s and pid %d", err, dir, os.Getpid())
	}
	mustOK(t, l.Close())
	l = openT(t, dir, Options{})
	mustOK(t, l.Close())
}

func TestLockHoldsAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ZPIPES_WAL_TEST_HOLD="+dir)
	stdin, err := cmd.StdinPipe()
	mustOK(t, err)
	stdout, err := cmd.StdoutPipe()
	mustOK(t, err)
	cmd.Stderr = os.Stderr
	mustOK(t, cmd.Start())
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "locked\n" {
		t.Fatalf("the other process said %q (%v)", line, err)
	}

	_, err = Open(dir, Options{})
	pid := strconv.Itoa(cmd.Process.Pid)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "pid "+pid) {
		t.Fatalf("Open while pid %s holds the log: %v, want ErrLocked naming the dir and the pid", pid, err)
	}

	stdin.Close() // the other process closes its log and exits
	mustOK(t, cmd.Wait())
	l := openT(t, dir, Options{})
	mustOK(t, l.Close())
}

func TestVersionMismatchIsRefused(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	mustOK(t, l.Close())
	b, err := os.ReadFile(filepath.Join(dir, "VERSION"))
	if err != nil || string(b) != "2\n" {
		t.Fatalf("VERSION holds %q (%v)", b, err)
	}
	mustOK(t, os.WriteFile(filepath.Join(dir, "VERSION"), []byte("3\n"), 0o644))
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), `version "3"`) || !strings.Contains(err.Error(), "reads versions 1 to 2") {
		t.Fatalf("Open: %v, want ErrVersion saying the directory holds 3 and this build reads 1 to 2", err)
	}
	// The refused Open released the lock.
	mustOK(t, os.WriteFile(filepath.Join(dir, "VERSION"), []byte("2\n"), 0o644))
	l = openT(t, dir, Options{})
	mustOK(t, l.Close())
}

// A directory a version-1 build wrote (same framing, VERSION 1, segments
// with version-1 headers) opens, keeps its records, and is marked version 2,
// so that a version-1 build will refuse it from now on.
func TestVersionOneDirectoryIsReadAndUpgraded(t *testing.T) {
	dir, _ := writeLog(t, 3, Options{})
	name := filepath.Join(dir, segName(0))
	b, err := os.ReadFile(name)
	mustOK(t, err)
	h := appendHeader(nil, 0)
	binary.LittleEndian.PutUint32(h[8:], 1)
	copy(b, appendHeaderFields(h[:20]))
	mustOK(t, os.WriteFile(name, b, 0o644))
	mustOK(t, os.WriteFile(filepath.Join(dir, "VERSION"), []byte("1\n"), 0o644))
	l := openT(t, dir, Options{})
	n := 0
	mustOK(t, l.Replay(func(Pos, []byte) error { n++; return nil }))
	mustOK(t, l.Close())
	if n != 3 {
		t.Errorf("replayed %d records of a version-1 log, want 3", n)
	}
	if v, err := os.ReadFile(filepath.Join(dir, "VERSION")); err != nil || string(v) != "2\n" {
		t.Errorf("VERSION after opening holds %q (%v), want 2", v, err)
	}
}
