package wal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecordsReplayInOrderAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 4096})
	const n = 3000
	var firsts []Pos // what Append said about each batch's first record
	for i := 0; i < n; i += 7 {
		var recs [][]byte
		for j := i; j < min(i+7, n); j++ {
			recs = append(recs, record(j))
		}
		p, err := l.Append(recs...)
		mustOK(t, err)
		firsts = append(firsts, p)
		if i%100 == 0 {
			mustOK(t, syncWait(t, l))
		}
	}
	mustOK(t, l.Close())

	segs := segFiles(t, dir)
	if len(segs) < 10 {
		t.Fatalf("%d segments, want many: %v", len(segs), segs)
	}
	var total int64
	for _, s := range segs {
		size := fileSize(t, filepath.Join(dir, s))
		if size > 4096+8+200 {
			t.Errorf("%s is %d bytes, past the segment size by more than a record", s, size)
		}
		total += size
	}
	if got := l.Size(); got != total {
		t.Errorf("Size() = %d, the files hold %d", got, total)
	}

	l = openT(t, dir, Options{SegmentBytes: 4096})
	if r := l.Recovered(); r.Records != n || r.Segments != len(segs) || r.Reason != "" || r.DroppedBytes != 0 {
		t.Fatalf("Recovered() = %+v, want %d records in %d segments, nothing dropped", r, n, len(segs))
	}
	if got := l.Size(); got != total {
		t.Errorf("Size() after Open = %d, the files hold %d", got, total)
	}
	recs, pos := replayAll(t, l)
	checkRecords(t, recs, n)
	for b, p := range firsts {
		if pos[b*7] != p {
			t.Fatalf("batch %d: Append said %v, Replay says %v", b, p, pos[b*7])
		}
	}
	// Appends go on after the recovered records.
	appendN(t, l, n, n+10, 3)
	if err := l.Replay(func(Pos, []byte) error { return nil }); err == nil {
		t.Error("Replay after Append succeeded")
	}
	mustOK(t, l.Close())
	l = openT(t, dir, Options{SegmentBytes: 4096})
	recs, _ = replayAll(t, l)
	checkRecords(t, recs, n+10)
}

func TestReplayStopsAtCallbackError(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 0, 10, 10)
	mustOK(t, l.Close())
	l = openT(t, dir, Options{})
	stop := errors.New("stop")
	calls := 0
	err := l.Replay(func(Pos, []byte) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Replay returned %v after %d calls, want %v after 1", err, calls, stop)
	}
}

func TestEmptyRecordsAndTheLimit(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	_, err := l.Append([]byte{}, nil, []byte("x"))
	mustOK(t, err)
	if _, err := l.Append([]byte("ok"), make([]byte, MaxRecordBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of %d bytes: %v, want ErrTooLarge", MaxRecordBytes+1, err)
	}
	mustOK(t, l.Close())
	l = openT(t, dir, Options{})
	recs, _ := replayAll(t, l)
	if len(recs) != 3 || len(recs[0]) != 0 || len(recs[1]) != 0 || string(recs[2]) != "x" {
		t.Fatalf("replayed %q, want two empty records and \"x\" (and nothing of the refused batch)", recs)
	}
}

func TestRollStartsASegmentForACheckpoint(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	mustOK(t, l.Roll()) // nothing in the segment yet: no new one
	if m := l.Mark(); m != (Pos{0, headerSize}) {
		t.Fatalf("Mark() = %v on an empty log", m)
	}
	appendN(t, l, 0, 5, 5)
	mustOK(t, l.Roll())
	m := l.Mark()
	if m != (Pos{1, headerSize}) {
		t.Fatalf("Mark() after Roll = %v, want the start of segment 1", m)
	}
	p, err := l.Append(record(5))
	mustOK(t, err)
	if p != m {
		t.Fatalf("Append after Mark() = %v got %v", m, p)
	}
}

func TestDropBeforeRemovesOnlyWholeEarlierSegments(t *testing.T) {
	dir := t.TempDir()
	opt := Options{SegmentBytes: 2048}
	l := openT(t, dir, opt)
	appendN(t, l, 0, 200, 10)
	segs := segFiles(t, dir)
	if len(segs) < 5 {
		t.Fatalf("only %d segments", len(segs))
	}
	// A checkpoint: roll, rewrite the state, make it durable, drop what
	// came before.
	mustOK(t, l.Roll())
	m := l.Mark()
	if err := l.DropBefore(m); err == nil {
		t.Fatal("DropBefore a position not yet durable succeeded")
	}
	if got := segFiles(t, dir); len(got) != len(segs) {
		t.Fatalf("refused DropBefore removed files: %v", got)
	}
	appendN(t, l, 1000, 1003, 3)
	before := l.Size()
	mid := Pos{m.Segment, m.Offset + 8 + int64(len(record(1000)))} // inside the checkpoint's segment
	mustOK(t, l.DropBefore(mid))
	got := segFiles(t, dir)
	if len(got) != 1 || got[0] != segName(m.Segment) {
		t.Fatalf("after DropBefore(%v): %v, want only %s", mid, got, segName(m.Segment))
	}
	if l.Size() != fileSize(t, filepath.Join(dir, got[0])) || l.Size() >= before {
		t.Errorf("Size() = %d (was %d), the file holds %d", l.Size(), before, fileSize(t, filepath.Join(dir, got[0])))
	}
	mustOK(t, l.DropBefore(mid)) // again: nothing more to remove
	mustOK(t, l.Close())

	l = openT(t, dir, opt)
	var first Pos
	n := 0
	mustOK(t, l.Replay(func(p Pos, rec []byte) error {
		if n == 0 {
			first = p
		}
		n++
		return nil
	}))
	if n != 3 || first != m {
		t.Fatalf("replay after DropBefore: %d records from %v, want 3 from %v", n, first, m)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	mustOK(t, err)
	appendN(t, l, 0, 3, 3)
	_, err = l.Append(record(3)) // not synced: Close makes it durable
	mustOK(t, err)
	mustOK(t, l.Close())
	mustOK(t, l.Close())
	if _, err := l.Append(record(4)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := syncWait(t, l); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: %v, want ErrClosed", err)
	}
	for _, f := range []func() error{l.Roll, func() error { return l.DropBefore(Pos{}) }} {
		if err := f(); !errors.Is(err, ErrClosed) {
			t.Errorf("after Close: %v, want ErrClosed", err)
		}
	}
	l = openT(t, dir, Options{}) // the lock is released
	recs, _ := replayAll(t, l)
	checkRecords(t, recs, 4)
}

func TestMissingOrUnwritableDirIsClearAtOpen(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	mustOK(t, os.WriteFile(file, nil, 0o644))
	for _, c := range []struct{ dir, want string }{
		{filepath.Join(tmp, "missing"), "directory does not exist"},
		{file, "not a directory"},
		{filepath.Join(file, "sub"), "not a directory"},
	} {
		_, err := Open(c.dir, Options{})
		if err == nil || !strings.Contains(err.Error(), c.dir) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%s): %v, want an error naming it and saying %q", c.dir, err, c.want)
		}
	}
	if os.Geteuid() == 0 {
		return // a read-only directory does not stop root
	}
	ro := filepath.Join(tmp, "ro")
	mustOK(t, os.Mkdir(ro, 0o555))
	_, err := Open(ro, Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot write") {
		t.Errorf("Open of a read-only directory: %v", err)
	}
}
