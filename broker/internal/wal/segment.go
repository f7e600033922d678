package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The on-disk format. A segment file, named after its number as %016x.wal,
// starts with a header
//
//	magic "ZPIPEWAL" | format version uint32 | segment number uint64 | crc32c of the 20 bytes before uint32
//
// and holds records
//
//	length uint32 | crc32c of length and payload uint32 | payload
//
// all little-endian. The checksum covers the length, so a tail of zeros (a
// file extended but never written, as some filesystems leave after power
// loss) does not read as empty records.
const (
	// Version is the format version this build writes, both in every
	// segment header and in the directory's VERSION file. It reads
	// OldestVersion to Version. Version 2 frames records as version 1 did;
	// it marks logs that may hold records a version-1 broker does not know
	// (spilled extents), so that such a build refuses the directory with
	// ErrVersion instead of failing on a record it cannot parse. Opening a
	// version-1 directory upgrades its VERSION file.
	Version       = 2
	OldestVersion = 1

	// RecordHeader is the bytes a record takes in a segment besides its
	// payload.
	RecordHeader = 8

	// MaxRecordBytes bounds a record's payload. It keeps a corrupt length
	// field from making Open allocate more than this.
	MaxRecordBytes = 64 << 20

	magic        = "ZPIPEWAL"
	headerSize   = 24
	recordHeader = RecordHeader
	segSuffix    = ".wal"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func segName(num uint64) string { return fmt.Sprintf("%016x%s", num, segSuffix) }

// parseSegName returns the number a segment file name carries, or false for
// any other file.
func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(hex) != 16 || strings.ToLower(hex) != hex {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 64)
	return n, err == nil
}

func appendHeader(b []byte, num uint64) []byte {
	start := len(b)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint32(b, Version)
	b = binary.LittleEndian.AppendUint64(b, num)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

func appendRecord(b, rec []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rec)))
	crc := crc32.Update(crc32.Update(0, castagnoli, b[start:]), castagnoli, rec)
	b = binary.LittleEndian.AppendUint32(b, crc)
	return append(b, rec...)
}

// damage says where and why a segment stops being readable.
type damage struct {
	off int64
	why string
}

func (d *damage) Error() string { return fmt.Sprintf("offset %d: %s", d.off, d.why) }

// checkHeader reads a segment's header. A header that is short or fails its
// checksum is damage; a sound header of another format version is
// ErrVersion, because that file was written by another build, not torn.
func checkHeader(r io.Reader, num uint64) error {
	var h [headerSize]byte
	n, err := io.ReadFull(r, h[:])
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return &damage{0, fmt.Sprintf("torn header (%d of %d bytes)", n, headerSize)}
	case err != nil:
		return err
	case string(h[:8]) != magic || crc32.Checksum(h[:20], castagnoli) != binary.LittleEndian.Uint32(h[20:]):
		return &damage{0, "corrupt header"}
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v < OldestVersion || v > Version {
		return fmt.Errorf("%w: segment %s holds version %d, this build reads versions %d to %d",
			ErrVersion, segName(num), v, OldestVersion, Version)
	}
	if got := binary.LittleEndian.Uint64(h[12:]); got != num {
		return &damage{0, fmt.Sprintf("header names segment %d", got)}
	}
	return nil
}

// recordReader reads the records of one segment after its header, checking
// each one's checksum.
type recordReader struct {
	r    *bufio.Reader
	off  int64 // where the next record starts
	size int64 // where the segment ends
	buf  []byte
}

func newRecordReader(f *os.File, size int64) *recordReader {
	return &recordReader{r: bufio.NewReaderSize(io.NewSectionReader(f, headerSize, size-headerSize), 1<<20), off: headerSize, size: size}
}

// next returns the next record, valid until the following call; io.EOF at
// the end of the segment; or *damage if the rest cannot be trusted.
func (rr *recordReader) next() ([]byte, error) {
	if rr.off == rr.size {
		return nil, io.EOF
	}
	left := rr.size - rr.off
	if left < recordHeader {
		return nil, &damage{rr.off, fmt.Sprintf("torn record (%d of %d header bytes)", left, recordHeader)}
	}
	var h [recordHeader]byte
	if _, err := io.ReadFull(rr.r, h[:]); err != nil {
		return nil, err
	}
	n := int64(binary.LittleEndian.Uint32(h[:]))
	if n > MaxRecordBytes {
		return nil, &damage{rr.off, fmt.Sprintf("corrupt length %d (over the %d limit)", n, MaxRecordBytes)}
	}
	if n > left-recordHeader {
		return nil, &damage{rr.off, fmt.Sprintf("torn record (length %d, %d bytes left)", n, left-recordHeader)}
	}
	if int64(cap(rr.buf)) < n {
		rr.buf = make([]byte, n) // at most MaxRecordBytes, and never past the file's end
	}
	rec := rr.buf[:n]
	if _, err := io.ReadFull(rr.r, rec); err != nil {
		return nil, err
	}
	crc := crc32.Update(crc32.Update(0, castagnoli, h[:4]), castagnoli, rec)
	if crc != binary.LittleEndian.Uint32(h[4:]) {
		return nil, &damage{rr.off, "checksum mismatch"}
	}
	rr.off += recordHeader + n
	return rec, nil
}

// frames estimates how many records lie in f between from and size by
// following length fields without checking checksums: one for the bytes at
// from, then one per further plausible length. It is what Recovery reports
// as dropped, so it reads only the 8-byte headers.
func frames(f *os.File, from, size int64) int {
	count := 0
	var h [recordHeader]byte
	for off := from; off < size; {
		count++
		if _, err := f.ReadAt(h[:], off); err != nil {
			break
		}
		n := int64(binary.LittleEndian.Uint32(h[:]))
		if n > MaxRecordBytes || off+recordHeader+n > size {
			break
		}
		off += recordHeader + n
	}
	return count
}

// segPath is where segment num of the log in dir lives.
func segPath(dir string, num uint64) string { return filepath.Join(dir, segName(num)) }
