package wal

import (
	"bufio"
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
	if err != nil || string(b) != "1\n" {
		t.Fatalf("VERSION holds %q (%v)", b, err)
	}
	mustOK(t, os.WriteFile(filepath.Join(dir, "VERSION"), []byte("2\n"), 0o644))
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), `version "2"`) || !strings.Contains(err.Error(), "reads version 1") {
		t.Fatalf("Open: %v, want ErrVersion saying the directory holds 2 and this build reads 1", err)
	}
	// The refused Open released the lock.
	mustOK(t, os.WriteFile(filepath.Join(dir, "VERSION"), []byte("1\n"), 0o644))
	l = openT(t, dir, Options{})
	mustOK(t, l.Close())
}
