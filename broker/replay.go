package broker

import (
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
//
// Replay loads no queued chunk: a writer's queue comes back as extents of
// the log (spill.go), read back as the reader reaches them, so a backlog
// larger than memory recovers. What replay keeps while reading is per
// record of a write (merged as spill.go merges extents), per range of
// consumed ids, and the chunks given back (they are at the head, in
// memory). A queue's ids that were consumed or given back are dead: an
// extent that holds some is read once at the end to count what is live,
// and the store skips them whenever it reads the extent back.
type replayState struct {
	nextID   uint64
	pipes    map[string]*replayPipe
	fresh    map[uint64][]byte // chunks given back as new (UNREAD, checkpoint)
	consumed intervals         // added in any order; normalized at the end
	sorted   int               // how much of consumed is normalized
	dead     intervals         // a checkpoint's recDead: not in their queues, not consumed either
}

type replayPipe struct {
	opens    int
	queues   map[uint64]*replayQueue
	steps    []replayStep // starts and finishes, in order
	returned [][]uint64   // blocks put back at the head, oldest first
}

// replayQueue is a writer's queue as extents.
type replayQueue struct {
	exts []replayExtent
}

// replayExtent is an extent of a queue's wrote records, or one a
// checkpoint kept where it lay (ref), which nothing is merged into.
type replayExtent struct {
	extent
	ref bool
}

type replayStep struct {
	queue  uint64
	finish bool
}

func newReplayState() *replayState {
	return &replayState{nextID: 1, pipes: make(map[string]*replayPipe), fresh: make(map[uint64][]byte)}
}

// queue returns a writer's queue, starting it if it is new.
func (p *replayPipe) queue(qid uint64) *replayQueue {
	q := p.queues[qid]
	if q == nil {
		q = &replayQueue{}
		p.queues[qid] = q
		p.steps = append(p.steps, replayStep{queue: qid})
	}
	return q
}

func (rs *replayState) pipe(name string) *replayPipe {
	p := rs.pipes[name]
	if p == nil {
		p = &replayPipe{queues: make(map[uint64]*replayQueue)}
		rs.pipes[name] = p
	}
	return p
}

// replayLog reads the log into the core, which must be new.
func replayLog(ls *logStore, co *core) (records int, err error) {
	cur := newReplayState()
	var next *replayState // a checkpoint being read
	err = ls.log.Replay(func(pos wal.Pos, rec []byte) error {
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
		end := pos.Offset + wal.RecordHeader + int64(len(rec))
		if err := rs.apply(typ, &d, pos, end); err != nil {
			return fmt.Errorf("%w at %v: %v", errCorrupt, pos, err)
		}
		return nil
	})
	if err != nil {
		return records, err
	}
	if err := cur.build(ls, co); err != nil {
		return records, err
	}
	return records, nil
}

func (rs *replayState) apply(typ byte, d *decoder, pos wal.Pos, end int64) error {
	switch typ {
	case recOpened:
		p := rs.pipe(d.str())
		p.opens += int(d.int())
	case recOpens:
		p := rs.pipe(d.str())
		p.opens = int(d.uint())
	case recWrote:
		p := rs.pipe(d.str())
		qid := d.uint()
		e := rs.extent(d, pos, end)
		q := p.queue(qid)
		if n := len(q.exts); n > 0 && !q.exts[n-1].ref && q.exts[n-1].merge(e.extent) {
			break
		}
		q.exts = append(q.exts, e)
	case recSpilled:
		p := rs.pipe(d.str())
		q := p.queue(d.uint())
		e := extent{seg: d.uint(), from: int64(d.uint()), to: int64(d.uint()), chunks: int(d.uint()),
			cost: int(d.uint()), first: d.uint(), last: d.uint()}
		q.exts = append(q.exts, replayExtent{extent: e, ref: true})
		rs.nextID = max(rs.nextID, e.last+1)
	case recDead:
		n := d.uint()
		for range n {
			from, count := d.uint(), d.uint()
			if d.err != nil || count == 0 {
				d.fail()
				break
			}
			rs.dead = append(rs.dead, [2]uint64{from, from + count - 1})
		}
	case recFinished:
		p := rs.pipe(d.str())
		p.steps = append(p.steps, replayStep{queue: d.uint(), finish: true})
	case recConsumed:
		rs.consume(d)
	case recReturned:
		p := rs.pipe(d.str())
		p.returned = append(p.returned, d.ranges())
	case recFresh:
		p := rs.pipe(d.str())
		p.returned = append(p.returned, rs.freshItems(d))
	default:
		return fmt.Errorf("record type %d", typ)
	}
	return d.err
}

// extent reads a wrote record's chunks for their count, bytes and ids, and
// keeps none of them.
func (rs *replayState) extent(d *decoder, pos wal.Pos, end int64) replayExtent {
	e := replayExtent{extent: extent{seg: pos.Segment, from: pos.Offset, to: end, first: ^uint64(0)}}
	d.items(func(id uint64, data []byte) {
		e.chunks++
		e.cost += chunkCost(data)
		e.first, e.last = min(e.first, id), max(e.last, id)
		rs.nextID = max(rs.nextID, id+1)
	})
	return e
}

// freshItems reads chunks given back as new, and keeps them.
func (rs *replayState) freshItems(d *decoder) []uint64 {
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
		rs.fresh[id] = d.bytes()
		ids = append(ids, id)
		rs.nextID = max(rs.nextID, id+1)
	}
	return ids
}

// consume adds a record's ranges of consumed ids, normalizing the set as
// it doubles.
func (rs *replayState) consume(d *decoder) {
	n := d.uint()
	for range n {
		from, count := d.uint(), d.uint()
		if d.err != nil || count == 0 || count > 1<<32 {
			d.fail()
			return
		}
		rs.consumed = append(rs.consumed, [2]uint64{from, from + count - 1})
	}
	if len(rs.consumed) > 2*rs.sorted+1024 {
		rs.consumed = rs.consumed.normalize()
		rs.sorted = len(rs.consumed)
	}
}

// build turns the replayed records into the core's pipes.
func (rs *replayState) build(ls *logStore, co *core) error {
	co.nextID = max(co.nextID, rs.nextID)
	consumed := rs.consumed.normalize()
	// The heads: the latest block given back first; a chunk given back
	// more than once is where it went last. A chunk given back is dead in
	// its writer's queue.
	heads := make(map[string][]uint64)
	dead := append(slices.Clone(consumed), rs.dead...)
	need := make(map[uint64][]byte) // known chunks given back: their data, found below
	for name, rp := range rs.pipes {
		moved := make(map[uint64]bool)
		var head []uint64
		for i := len(rp.returned) - 1; i >= 0; i-- {
			for _, id := range rp.returned[i] {
				if moved[id] {
					continue
				}
				moved[id] = true
				dead = append(dead, [2]uint64{id, id})
				if consumed.has(id) {
					continue
				}
				head = append(head, id)
				if _, ok := rs.fresh[id]; !ok {
					need[id] = nil
				}
			}
		}
		heads[name] = head
	}
	dead = dead.normalize()
	ls.dead = dead
	ls.copyBuf = make([]byte, 0, copyBytes)
	if err := rs.fetch(ls, need); err != nil {
		return err
	}
	for name, rp := range rs.pipes {
		p := newPipe(name)
		p.disk = co.disk
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
			var q *writerQueue
			for _, e := range rp.queues[s.queue].exts {
				if err := liveExtent(ls, s.queue, &e); err != nil {
					return err
				}
				if e.chunks == 0 {
					continue
				}
				if q == nil {
					q = p.queueOf(s.queue, s.queue) // keyed by its queue id: no live connection has one
					open = append(open, s.queue)
				}
				p.enqueueSpilled(q, e.extent)
			}
		}
		for _, q := range open {
			p.finish(q) // its connection is gone
		}
		var head []item
		for _, id := range heads[name] {
			data, ok := rs.fresh[id]
			if !ok {
				data = need[id]
				ok = data != nil // found (a copy, never nil)
			}
			if ok {
				head = append(head, item{data: data, id: id})
			}
		}
		p.unread(head)
		if p.chunks == 0 && p.opens == 0 {
			continue
		}
		co.addPipe(p)
		co.total += p.bytes
		co.spilled += p.spilled
	}
	return nil
}
