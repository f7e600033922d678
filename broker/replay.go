package broker

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/zpipes/zpipes/broker/internal/wal"
)

// replay rebuilds the core's pipes from a store's log: every record since
// the last whole checkpoint, in order. A chunk is live if it was written
// (or given back fresh) and not consumed since; it goes back where the
// records put it last: in its writer's queue, or at the head of its pipe if
// it was given back. Writers' queues are admitted in the order their starts
// and finishes were recorded, so the order of sequential writers survives;
// every writer has finished once the broker restarts, since its connection
// is gone. A checkpoint begun and not ended (the broker died while writing
// it) is ignored.
type replayState struct {
	nextID   uint64
	pipes    map[string]*replayPipe
	data     map[uint64][]byte // every chunk recorded, by id
	consumed map[uint64]bool
}

type replayPipe struct {
	opens    int
	queues   map[uint64][]uint64 // writer queue -> its chunks' ids, in order
	steps    []replayStep        // starts and finishes, in order
	returned [][]uint64          // blocks put back at the head, oldest first
}

type replayStep struct {
	queue  uint64
	finish bool
}

func newReplayState() *replayState {
	return &replayState{nextID: 1, pipes: make(map[string]*replayPipe),
		data: make(map[uint64][]byte), consumed: make(map[uint64]bool)}
}

func (rs *replayState) pipe(name string) *replayPipe {
	p := rs.pipes[name]
	if p == nil {
		p = &replayPipe{queues: make(map[uint64][]uint64)}
		rs.pipes[name] = p
	}
	return p
}

// replayLog reads the log into the core, which must be new.
func replayLog(l *wal.Log, co *core) (records int, err error) {
	cur := newReplayState()
	var next *replayState // a checkpoint being read
	err = l.Replay(func(pos wal.Pos, rec []byte) error {
		records++
		d := decoder{b: rec}
		typ := d.byte()
		switch typ {
		case recBegin:
			next = newReplayState()
			next.nextID = d.uint()
			return d.err
		case recEnd:
			if next == nil {
				return fmt.Errorf("%w at %v: checkpoint end without a beginning", errCorrupt, pos)
			}
			cur, next = next, nil
			return nil
		}
		rs := cur
		if next != nil {
			rs = next
		}
		if err := rs.apply(typ, &d); err != nil {
			return fmt.Errorf("%w at %v: %v", errCorrupt, pos, err)
		}
		return nil
	})
	if err != nil {
		return records, err
	}
	cur.build(co)
	return records, nil
}

func (rs *replayState) apply(typ byte, d *decoder) error {
	switch typ {
	case recOpened:
		p := rs.pipe(d.str())
		p.opens += int(d.int())
	case recOpens:
		p := rs.pipe(d.str())
		p.opens = int(d.uint())
	case recWrote:
		p := rs.pipe(d.str())
		q := d.uint()
		ids := rs.items(d)
		if _, ok := p.queues[q]; !ok {
			p.steps = append(p.steps, replayStep{queue: q})
		}
		p.queues[q] = append(p.queues[q], ids...)
	case recFinished:
		p := rs.pipe(d.str())
		p.steps = append(p.steps, replayStep{queue: d.uint(), finish: true})
	case recConsumed:
		for _, id := range d.ranges() {
			rs.consumed[id] = true
		}
	case recReturned:
		p := rs.pipe(d.str())
		p.returned = append(p.returned, d.ranges())
	case recFresh:
		p := rs.pipe(d.str())
		p.returned = append(p.returned, rs.items(d))
	default:
		return fmt.Errorf("record type %d", typ)
	}
	return d.err
}

// items reads chunks with their ids and keeps their data.
func (rs *replayState) items(d *decoder) []uint64 {
	n := d.uint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	ids := make([]uint64, 0, n)
	prev := uint64(0)
	for range n {
		id := prev + d.uint()
		prev = id
		rs.data[id] = d.bytes()
		ids = append(ids, id)
		rs.nextID = max(rs.nextID, id+1)
	}
	return ids
}

// build turns the replayed records into the core's pipes.
func (rs *replayState) build(co *core) {
	co.nextID = max(co.nextID, rs.nextID)
	live := func(id uint64) ([]byte, bool) {
		data, ok := rs.data[id]
		return data, ok && !rs.consumed[id]
	}
	for name, rp := range rs.pipes {
		// The head: the latest block given back first; a chunk given back
		// more than once is where it went last.
		moved := make(map[uint64]bool)
		var head []item
		for i := len(rp.returned) - 1; i >= 0; i-- {
			for _, id := range rp.returned[i] {
				if moved[id] {
					continue
				}
				moved[id] = true
				if data, ok := live(id); ok {
					head = append(head, item{data: data, id: id})
				}
			}
		}
		p := newPipe(name)
		p.opens = max(rp.opens, 0)
		started := make(map[uint64]bool)
		var open []uint64
		for _, s := range rp.steps {
			if s.finish {
				p.finish(s.queue)
				open = slices.DeleteFunc(open, func(q uint64) bool { return q == s.queue })
				continue
			}
			if started[s.queue] {
				continue
			}
			started[s.queue] = true
			var items []item
			for _, id := range rp.queues[s.queue] {
				if data, ok := live(id); ok && !moved[id] {
					items = append(items, item{data: data, id: id})
				}
			}
			if len(items) > 0 {
				// Keyed by its queue id: no live connection has one.
				p.enqueue(s.queue, items)
				open = append(open, s.queue)
			}
		}
		for _, q := range open {
			p.finish(q) // its connection is gone
		}
		p.unread(head)
		if p.chunks == 0 && p.opens == 0 {
			continue
		}
		co.addPipe(p)
		co.total += p.bytes
	}
}

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
