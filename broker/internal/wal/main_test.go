package wal

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("ZPIPES_WAL_TEST_HOLD"); dir != "" {
		holdLock(dir)
		return
	}
	goleak.VerifyTestMain(m)
}

// holdLock is the test binary run as another process: it opens the log in
// dir, says so, and keeps it open until its stdin closes.
func holdLock(dir string) {
	l, err := Open(dir, Options{})
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	l.Close()
	os.Exit(0)
}

// openT opens a log that is closed when the test ends.
func openT(t testing.TB, dir string, opt Options) *Log {
	t.Helper()
	l, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// syncWait asks for a Sync and waits for its callback, with a deadline so
// that a bug fails the test instead of hanging it.
func syncWait(t testing.TB, l *Log) error {
	t.Helper()
	done := make(chan error, 1)
	l.Sync(func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Sync callback never called")
		return nil
	}
}

func mustOK(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// record is the i-th test record: its size varies from 0 to 199 bytes and
// its bytes say which it is.
func record(i int) []byte {
	return bytes.Repeat([]byte{byte(i)}, i*7%200)
}

// appendN appends records from..to-1 in batches and syncs them.
func appendN(t testing.TB, l *Log, from, to, batch int) {
	t.Helper()
	for i := from; i < to; i += batch {
		var recs [][]byte
		for j := i; j < min(i+batch, to); j++ {
			recs = append(recs, record(j))
		}
		_, err := l.Append(recs...)
		mustOK(t, err)
	}
	mustOK(t, syncWait(t, l))
}

// replayAll reopens nothing: it replays l and returns the records and their
// positions.
func replayAll(t testing.TB, l *Log) ([][]byte, []Pos) {
	t.Helper()
	var recs [][]byte
	var pos []Pos
	mustOK(t, l.Replay(func(p Pos, rec []byte) error {
		recs = append(recs, slices.Clone(rec))
		pos = append(pos, p)
		return nil
	}))
	return recs, pos
}

// checkRecords fails unless recs are record(0), record(1), … record(n-1).
func checkRecords(t testing.TB, recs [][]byte, n int) {
	t.Helper()
	if len(recs) != n {
		t.Fatalf("got %d records, want %d", len(recs), n)
	}
	for i, r := range recs {
		if !bytes.Equal(r, record(i)) {
			t.Fatalf("record %d is %d bytes of %v, want %d bytes of %d", i, len(r), r[:min(len(r), 1)], len(record(i)), byte(i))
		}
	}
}

// segFiles lists the segment files in dir.
func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	mustOK(t, err)
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	return names
}

func fileSize(t testing.TB, name string) int64 {
	t.Helper()
	st, err := os.Stat(name)
	mustOK(t, err)
	return st.Size()
}
