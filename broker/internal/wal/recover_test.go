package wal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// writeLog makes a log in a new directory with records 0..n-1 and returns
// the directory and each record's position.
func writeLog(t *testing.T, n int, opt Options) (string, []Pos) {
	t.Helper()
	dir := t.TempDir()
	l, err := Open(dir, opt)
	mustOK(t, err)
	pos := make([]Pos, n)
	for i := range n {
		pos[i], err = l.Append(record(i))
		mustOK(t, err)
	}
	mustOK(t, l.Close())
	return dir, pos
}

// copyDir copies the files of a log directory into a new one.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	ents, err := os.ReadDir(from)
	mustOK(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		mustOK(t, err)
		mustOK(t, os.WriteFile(filepath.Join(to, e.Name()), b, 0o644))
	}
	return to
}

// reopen opens dir, checks that it replays records 0..want-1, and that an
// Append after them replays too.
func reopen(t *testing.T, dir string, want int) Recovery {
	t.Helper()
	l := openT(t, dir, Options{})
	rec := l.Recovered()
	recs, _ := replayAll(t, l)
	checkRecords(t, recs, want)
	_, err := l.Append(record(want))
	mustOK(t, err)
	mustOK(t, l.Close())
	l = openT(t, dir, Options{})
	if r := l.Recovered(); r.Reason != "" {
		t.Fatalf("second Open after recovery found damage again: %+v", r)
	}
	recs, _ = replayAll(t, l)
	checkRecords(t, recs, want+1)
	mustOK(t, l.Close())
	return rec
}

func TestTornTailAtEveryOffsetKeepsTheValidPrefix(t *testing.T) {
	const n = 40 // record 39 is 73 bytes
	orig, pos := writeLog(t, n, Options{})
	name := segName(0)
	last := pos[n-1].Offset
	end := fileSize(t, filepath.Join(orig, name))
	for cut := last + 1; cut < end; cut++ {
		dir := copyDir(t, orig)
		mustOK(t, os.Truncate(filepath.Join(dir, name), cut))
		r := reopen(t, dir, n-1)
		if r.Records != n-1 || r.DroppedBytes != cut-last || r.DroppedRecords != 1 || !strings.Contains(r.Reason, "torn") {
			t.Fatalf("cut at %d: Recovered() = %+v, want %d records kept, %d bytes and 1 record dropped, a torn record", cut, r, n-1, cut-last)
		}
		if got := fileSize(t, filepath.Join(dir, name)); got != last+8+int64(len(record(n-1))) {
			t.Fatalf("cut at %d: the segment is %d bytes after recovery and one append", cut, got)
		}
	}
}

func TestTornHeaderOfANewSegmentDropsIt(t *testing.T) {
	orig, _ := writeLog(t, 10, Options{})
	for cut := range headerSize {
		dir := copyDir(t, orig)
		mustOK(t, os.WriteFile(filepath.Join(dir, segName(1)), appendHeader(nil, 1)[:cut], 0o644))
		r := reopen(t, dir, 10)
		if r.Records != 10 || r.Segments != 1 || r.DroppedBytes != int64(cut) || r.DroppedRecords != 0 || !strings.Contains(r.Reason, segName(1)) {
			t.Fatalf("header cut at %d: Recovered() = %+v", cut, r)
		}
	}
}

func TestFlippedByteInAMiddleSegmentDropsEverythingAfter(t *testing.T) {
	const n = 500
	opt := Options{SegmentBytes: 4096}
	orig, pos := writeLog(t, n, opt)
	segs := segFiles(t, orig)
	if len(segs) < 4 {
		t.Fatalf("only %d segments", len(segs))
	}
	// The first record of segment 1 that has a payload past byte 3.
	bad := 0
	for pos[bad].Segment != 1 || len(record(bad)) < 4 {
		bad++
	}
	var wantBytes int64
	for _, s := range segs[1:] {
		wantBytes += fileSize(t, filepath.Join(orig, s))
	}
	wantBytes -= pos[bad].Offset

	for _, c := range []struct {
		what string
		at   int64 // from the record's start
	}{{"payload", 8 + 3}, {"checksum", 5}, {"length", 1}} {
		dir := copyDir(t, orig)
		name := filepath.Join(dir, segName(1))
		b, err := os.ReadFile(name)
		mustOK(t, err)
		b[pos[bad].Offset+c.at] ^= 0x20
		mustOK(t, os.WriteFile(name, b, 0o644))

		r := reopen(t, dir, bad)
		if r.Records != bad || r.Segments != 2 || r.DroppedBytes != wantBytes || !strings.Contains(r.Reason, segName(1)) {
			t.Errorf("flipped %s byte: Recovered() = %+v, want %d records in 2 segments kept and %d bytes dropped",
				c.what, r, bad, wantBytes)
		}
		if c.what != "length" && r.DroppedRecords != n-bad {
			t.Errorf("flipped %s byte: DroppedRecords = %d, want %d", c.what, r.DroppedRecords, n-bad)
		}
		if got := segFiles(t, dir); len(got) != 2 {
			t.Errorf("flipped %s byte: segments %v remain, want 2", c.what, got)
		}
	}
}

func TestCorruptLengthAllocatesLittle(t *testing.T) {
	orig, pos := writeLog(t, 10, Options{})
	for _, length := range []uint32{0xffffffff, MaxRecordBytes, 1 << 30} {
		dir := copyDir(t, orig)
		name := filepath.Join(dir, segName(0))
		b, err := os.ReadFile(name)
		mustOK(t, err)
		binary.LittleEndian.PutUint32(b[pos[5].Offset:], length)
		mustOK(t, os.WriteFile(name, b, 0o644))

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l, err := Open(dir, Options{})
		runtime.ReadMemStats(&after)
		mustOK(t, err)
		mustOK(t, l.Close())
		if a := after.TotalAlloc - before.TotalAlloc; a > 8<<20 {
			t.Errorf("length %#x: Open allocated %d MiB", length, a>>20)
		}
		if r := l.Recovered(); r.Records != 5 || r.DroppedRecords != 1 {
			t.Errorf("length %#x: Recovered() = %+v, want 5 records kept, 1 dropped", length, r)
		}
	}
}

func TestSegmentFromAnotherVersionIsRefused(t *testing.T) {
	dir, _ := writeLog(t, 3, Options{})
	name := filepath.Join(dir, segName(0))
	b, err := os.ReadFile(name)
	mustOK(t, err)
	h := appendHeader(nil, 0)
	binary.LittleEndian.PutUint32(h[8:], Version+1)
	copy(b, appendHeaderFields(h[:20]))
	mustOK(t, os.WriteFile(name, b, 0o644))
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "version 3") || !strings.Contains(err.Error(), "versions 1 to 2") {
		t.Fatalf("Open: %v, want ErrVersion naming versions 3 and 1 to 2", err)
	}
}

// appendHeaderFields completes the first 20 bytes of a header with their
// checksum.
func appendHeaderFields(h []byte) []byte {
	return binary.LittleEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
}

func TestMissingMiddleSegmentIsRefused(t *testing.T) {
	dir, _ := writeLog(t, 500, Options{SegmentBytes: 4096})
	mustOK(t, os.Remove(filepath.Join(dir, segName(2))))
	_, err := Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open with a gap in the segments: %v", err)
	}
}
