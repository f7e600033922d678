package broker

import (
	"encoding/binary"
	"fmt"
)

// decoder reads what logStore's encoders wrote; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("truncated or malformed record")
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	// A copy: the log's buffer is reused for the next record.
	b := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return b
}

func (d *decoder) str() string { return string(d.bytes()) }

// view is bytes without the copy: the slice points into the record.
func (d *decoder) view() []byte {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

// skip passes over a byte string.
func (d *decoder) skip() { d.view() }

// items reads what logStore.items wrote — a count, then each chunk's id (as
// the difference from the one before) and bytes — and calls fn for each
// chunk, its bytes pointing into the record, until the list ends or is
// malformed (then d.err says so).
func (d *decoder) items(fn func(id uint64, data []byte)) {
	n := d.uint()
	prev := uint64(0)
	for range n {
		id := prev + d.uint()
		prev = id
		data := d.view()
		if d.err != nil {
			return
		}
		fn(id, data)
	}
}

func (d *decoder) ranges() []uint64 {
	n := d.uint()
	var ids []uint64
	for range n {
		from, count := d.uint(), d.uint()
		if d.err != nil || count > 1<<32 {
			d.fail()
			return nil
		}
		for i := range count {
			ids = append(ids, from+i)
		}
	}
	return ids
}
