package wal

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"
)

// readAllRange reads records [from, to) of a segment in steps of limit
// bytes, as the broker reads a queue back.
func readAllRange(t *testing.T, l *Log, seg uint64, from, to int64, limit int) ([][]byte, error) {
	t.Helper()
	var recs [][]byte
	for from < to {
		next, err := l.ReadRange(seg, from, to, limit, nil, func(_ int64, rec []byte) error {
			recs = append(recs, rec)
			return nil
		})
		if err != nil {
			return recs, err
		}
		if next == from {
			t.Fatalf("ReadRange made no progress at %d", from)
		}
		from = next
	}
	return recs, nil
}

// A record can be read back as soon as it is appended, before anyone asked
// for a Sync: the read waits for the syncer to write it out.
func TestReadRangeReadsRecordsNotYetWritten(t *testing.T) {
	// Periodic syncs an hour apart: only the read makes the syncer write.
	l := openT(t, t.TempDir(), Options{SyncEvery: time.Hour})
	const n = 500
	first, err := l.Append(record(0))
	mustOK(t, err)
	for i := 1; i < n; i++ {
		_, err := l.Append(record(i))
		mustOK(t, err)
	}
	end := l.Mark()
	if end.Segment != first.Segment {
		t.Fatalf("records went to segments %d..%d, want one", first.Segment, end.Segment)
	}
	for _, limit := range []int{1, 300, 1 << 20} {
		recs, err := readAllRange(t, l, first.Segment, first.Offset, end.Offset, limit)
		mustOK(t, err)
		checkRecords(t, recs, n)
	}
	// A range in the middle: from the position of the tenth record.
	var tenth int64
	_, err = l.ReadRange(first.Segment, first.Offset, end.Offset, 1<<20, make([]byte, 0, 64), func(off int64, _ []byte) error {
		if tenth == 0 && off > first.Offset {
			tenth = off // the second; step on to the tenth below
		}
		return nil
	})
	mustOK(t, err)
	recs, err := readAllRange(t, l, first.Segment, tenth, end.Offset, 64)
	mustOK(t, err)
	if len(recs) != n-1 || !slices.Equal(recs[0], record(1)) {
		t.Fatalf("from the second record: %d records, first %d bytes", len(recs), len(recs[0]))
	}
}

// A record whose bytes changed on disk is an error, never a payload.
func TestReadRangeRefusesACorruptRecord(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	first, err := l.Append(record(5), record(6), record(7))
	mustOK(t, err)
	mustOK(t, syncWait(t, l))
	end := l.Mark()
	f, err := os.OpenFile(segPath(dir, first.Segment), os.O_WRONLY, 0)
	mustOK(t, err)
	// Flip a payload byte of the second record.
	second := first.Offset + recordHeader + int64(len(record(5)))
	_, err = f.WriteAt([]byte{0xff}, second+recordHeader+3)
	mustOK(t, err)
	mustOK(t, f.Close())
	recs, err := readAllRange(t, l, first.Segment, first.Offset, end.Offset, 1<<20)
	if err == nil {
		t.Fatalf("read %d records of a corrupt range without an error", len(recs))
	}
	if len(recs) != 0 {
		// One ReadRange call: nothing of a call that fails is trusted
		// beyond the records before the bad one.
		if len(recs) != 1 || !slices.Equal(recs[0], record(5)) {
			t.Fatalf("before the corrupt record got %d records", len(recs))
		}
	}
}

// Reading a segment DropBefore removed is an error, not a wait.
func TestReadRangeOfADroppedSegmentFails(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	first, err := l.Append(record(1))
	mustOK(t, err)
	end := l.Mark()
	mustOK(t, l.Roll())
	_, err = l.Append(record(2))
	mustOK(t, err)
	mustOK(t, syncWait(t, l))
	_, err = readAllRange(t, l, first.Segment, first.Offset, end.Offset, 1<<20)
	mustOK(t, err) // opens the file for reading
	mustOK(t, l.DropBefore(l.Mark()))
	if _, err := readAllRange(t, l, first.Segment, first.Offset, end.Offset, 1<<20); err == nil {
		t.Fatal("read a dropped segment")
	}
	mustOK(t, l.Close())
	if _, err := readAllRange(t, l, end.Segment+1, headerSize, headerSize+100, 1<<20); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v, want ErrClosed", err)
	}
}

// Hold returns once the syncer has taken what was appended down to the
// bound, without a Sync.
func TestHoldWaitsForTheSyncerToTakeAppends(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SyncEvery: time.Hour})
	for i := range 100 {
		_, err := l.Append(make([]byte, 10<<10+i))
		mustOK(t, err)
	}
	l.Hold(0)
	l.mu.Lock()
	pending := l.pendingBytes
	l.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d bytes pending after Hold(0)", pending)
	}
}
