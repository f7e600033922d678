package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
)

// Reading records back while the log is written: the broker keeps a long
// queue on disk only and reads its chunks back as the reader reaches them;
// and what such a caller needs besides (Segments, to choose what a
// checkpoint keeps; Hold, to copy a backlog into a checkpoint in little
// memory).
//
// Records are read from the segment files, so from the page cache when
// they are recent; a record appended and not yet written (it is still in
// the appender's buffer) makes Read wake the syncer and wait until it is.
// The segment files are opened once for reading and closed when DropBefore
// removes them, or at Close.

// ReadRange reads the records that start in segment seg at offsets from
// from up to to (the end of a record), checking each one's checksum, and
// calls fn with each record's offset and payload, in order. It reads at
// most about limit bytes, but always one whole record; it returns the
// offset after the last record it passed to fn (to once the range is
// done). The payloads passed to fn share one buffer: buf if it is large
// enough, else one allocated for this call and never reused, so that fn
// may keep slices of them when buf is nil. A checksum that fails is an
// error: nothing corrupt is ever passed to fn.
func (l *Log) ReadRange(seg uint64, from, to int64, limit int, buf []byte, fn func(off int64, rec []byte) error) (int64, error) {
	wrap := func(err error) error { return fmt.Errorf("read %s at %d: %w", segName(seg), from, err) }
	if from >= to {
		return to, nil
	}
	end := min(to, from+int64(max(limit, recordHeader)))
	f, err := l.readable(seg, end)
	if err != nil {
		return from, wrap(err)
	}
	if int64(cap(buf)) >= end-from {
		buf = buf[:end-from]
	} else {
		buf = make([]byte, end-from)
	}
	if _, err := f.ReadAt(buf, from); err != nil {
		return from, wrap(err)
	}
	off := from
	for len(buf) > 0 {
		if len(buf) < recordHeader {
			break
		}
		n := int64(binary.LittleEndian.Uint32(buf))
		if n > MaxRecordBytes || off+recordHeader+n > to {
			return off, wrap(fmt.Errorf("corrupt length %d at offset %d", n, off))
		}
		if int64(len(buf)) < recordHeader+n {
			if off > from {
				break // the next call reads it
			}
			// The first record is longer than limit: read it whole.
			whole := make([]byte, recordHeader+n)
			if _, err := l.readAt(seg, whole, off, off+recordHeader+n); err != nil {
				return off, wrap(err)
			}
			buf = whole
		}
		rec := buf[recordHeader : recordHeader+n]
		crc := crc32.Update(crc32.Update(0, castagnoli, buf[:4]), castagnoli, rec)
		if crc != binary.LittleEndian.Uint32(buf[4:]) {
			return off, wrap(fmt.Errorf("checksum mismatch at offset %d", off))
		}
		if err := fn(off, rec); err != nil {
			return off, err
		}
		off += recordHeader + n
		buf = buf[recordHeader+n:]
	}
	return off, nil
}

func (l *Log) readAt(seg uint64, b []byte, off, end int64) (int, error) {
	f, err := l.readable(seg, end)
	if err != nil {
		return 0, err
	}
	return f.ReadAt(b, off)
}

// readable returns segment seg opened for reading, once its bytes up to end
// are written to the file.
func (l *Log) readable(seg uint64, end int64) (*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.writtenTo.Segment < seg || (l.writtenTo.Segment == seg && l.writtenTo.Offset < end) {
		if err := l.usable(); err != nil {
			return nil, err
		}
		if len(l.segs) == 0 || seg < l.segs[0].num || seg > l.segs[len(l.segs)-1].num {
			return nil, fmt.Errorf("no segment %s", segName(seg))
		}
		l.signal()
		l.wrote.Wait()
	}
	if len(l.segs) == 0 || seg < l.segs[0].num {
		return nil, fmt.Errorf("segment %s was dropped", segName(seg))
	}
	if f := l.readers[seg]; f != nil {
		return f, nil
	}
	f, err := os.Open(segPath(l.dir, seg))
	if err != nil {
		return nil, err
	}
	if l.readers == nil {
		l.readers = make(map[uint64]*os.File)
	}
	l.readers[seg] = f
	return f, nil
}

// closeReaders closes the files opened for reading segments before seg.
// Called under mu.
func (l *Log) closeReaders(before uint64) {
	for num, f := range l.readers {
		if num < before {
			f.Close()
			delete(l.readers, num)
		}
	}
}

// Segment is a segment file's number and size.
type Segment struct {
	Num  uint64
	Size int64
}

// Segments lists the segments, oldest first, with their sizes (buffered
// bytes included).
func (l *Log) Segments() []Segment {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Segment, len(l.segs))
	for i, s := range l.segs {
		out[i] = Segment{s.num, s.size}
	}
	return out
}

// Hold waits until at most n appended bytes wait for the syncer (or the
// log has failed or is closing). Append alone lets maxPending bytes wait,
// which a long run of appends (a checkpoint copying a backlog) turns over
// as fresh buffers; holding it to a few writeChunks keeps the syncer's
// buffers in reuse.
func (l *Log) Hold(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pendingBytes > n {
		l.signal()
	}
	for l.pendingBytes > n && l.err == nil && !l.closing {
		l.space.Wait()
	}
}
