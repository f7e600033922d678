package wal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// checkDir makes sure dir is an existing directory, so that a typo in a flag
// reads as such rather than as a lock or version problem.
func checkDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory does not exist (create it first): %w", err)
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("not a directory")
	}
	return nil
}

// lockDir takes an exclusive flock on dir/LOCK and writes this process's pid
// in it. flock belongs to the open file, so a second Open in the same
// process is refused as surely as one from another process, and the kernel
// releases the lock when the holder dies, however it dies: a stale LOCK file
// never needs removing.
func lockDir(dir string) (*os.File, error) {
	name := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot write in the directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, lockedError(name)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	// The pid is only a hint for the message a second Open prints.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func lockedError(name string) error {
	b, _ := os.ReadFile(name)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
		if pid == os.Getpid() {
			return fmt.Errorf("%w by this process (pid %d): it is open already", ErrLocked, pid)
		}
		return fmt.Errorf("%w by pid %d: another process has it open", ErrLocked, pid)
	}
	return fmt.Errorf("%w: another process has it open", ErrLocked)
}

// checkVersion refuses a directory written in a format this build does not
// read, and marks a new one, or one of an older format it reads, with this
// build's version.
func checkVersion(dir string, dirf *os.File) error {
	name := filepath.Join(dir, "VERSION")
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return writeVersion(dir, dirf)
	}
	if err != nil {
		return err
	}
	s := strings.TrimSpace(string(b))
	v, err := strconv.Atoi(s)
	switch {
	case err != nil || v < OldestVersion || v > Version:
		return fmt.Errorf("%w: the directory holds version %q, this build reads versions %d to %d", ErrVersion, s, OldestVersion, Version)
	case v < Version:
		return writeVersion(dir, dirf)
	}
	return nil
}

// writeVersion writes VERSION through a temporary file and a rename, so that
// a crash leaves either no VERSION or a whole one.
func writeVersion(dir string, dirf *os.File) error {
	tmp := filepath.Join(dir, "VERSION.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d\n", Version)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, "VERSION"))
	}
	if err == nil {
		err = dirf.Sync()
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write VERSION: %w", err)
	}
	return nil
}
