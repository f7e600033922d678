package wal

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The format is a promise to the next build: these bytes must not change
// without a new Version.
func TestFormatIsStable(t *testing.T) {
	h := appendHeader(nil, 0x0102)
	want := []byte("ZPIPEWAL\x02\x00\x00\x00\x02\x01\x00\x00\x00\x00\x00\x00")
	want = binary.LittleEndian.AppendUint32(want, crc32.Checksum(want, crc32.MakeTable(crc32.Castagnoli)))
	if !bytes.Equal(h, want) {
		t.Errorf("header\n got %x\nwant %x", h, want)
	}
	r := appendRecord(nil, []byte("abc"))
	sum := crc32.Checksum([]byte("\x03\x00\x00\x00abc"), crc32.MakeTable(crc32.Castagnoli))
	want = binary.LittleEndian.AppendUint32([]byte{3, 0, 0, 0}, sum)
	want = append(want, "abc"...)
	if !bytes.Equal(r, want) {
		t.Errorf("record\n got %x\nwant %x", r, want)
	}
}

func TestSegmentNames(t *testing.T) {
	for _, n := range []uint64{0, 1, 0xabc, 1<<64 - 1} {
		got, ok := parseSegName(segName(n))
		if !ok || got != n || len(segName(n)) != 20 {
			t.Errorf("segment %d is named %q, which parses as %d, %v", n, segName(n), got, ok)
		}
	}
	for _, name := range []string{"LOCK", "VERSION", "00000000000000AB.wal", "0000000000000001.wal.tmp", "000000000000001.wal", "x000000000000001.wal"} {
		if _, ok := parseSegName(name); ok {
			t.Errorf("%q taken for a segment", name)
		}
	}
}

// Some filesystems show zeros after power loss where a file grew but its
// data never reached the disk. The checksum covers the length, so zeros do
// not read as empty records.
func TestZeroFilledTailIsDropped(t *testing.T) {
	dir, _ := writeLog(t, 10, Options{})
	name := filepath.Join(dir, segName(0))
	size := fileSize(t, name)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	mustOK(t, err)
	_, err = f.Write(make([]byte, 4096))
	mustOK(t, err)
	mustOK(t, f.Close())
	r := reopen(t, dir, 10)
	if r.Records != 10 || r.DroppedBytes != 4096 || !strings.Contains(r.Reason, "checksum") {
		t.Fatalf("Recovered() = %+v, want 10 records, the 4096 zero bytes dropped for a bad checksum", r)
	}
	if got := fileSize(t, name); got != size+8+int64(len(record(10))) {
		t.Fatalf("segment is %d bytes after recovery and one append, want %d", got, size+8+int64(len(record(10))))
	}
}
