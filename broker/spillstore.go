package broker

import (
	"fmt"
	"slices"

	"github.com/zpipes/zpipes/broker/internal/wal"
)

// The store's side: writes that go to the log at once, and reading them
// back.

// spillWrote records a write like wrote, but appends it to the log at once
// (after the event's records before it), so that its place is known and
// its chunks need not stay in memory.
func (ls *logStore) spillWrote(pipe string, queue uint64, chunks [][]byte, firstID uint64) (extent, error) {
	ls.flush()
	if ls.err != nil {
		return extent{}, ls.err
	}
	ls.begin(recWrote)
	ls.str(pipe)
	ls.uint(queue)
	ls.uint(uint64(len(chunks)))
	cost := 0
	for i, c := range chunks {
		if i == 0 {
			ls.uint(firstID)
		} else {
			ls.uint(1)
		}
		ls.bytes(c)
		cost += chunkCost(c)
	}
	return ls.appendExtent(extent{chunks: len(chunks), cost: cost, first: firstID, last: firstID + uint64(len(chunks)) - 1})
}

// appendExtent appends the record in buf and returns where it lies, as e.
func (ls *logStore) appendExtent(e extent) (extent, error) {
	pos, err := ls.log.Append(ls.buf)
	if err != nil {
		ls.err = err
		return extent{}, err
	}
	ls.unsynced = true
	e.seg, e.from, e.to = pos.Segment, pos.Offset, pos.Offset+wal.RecordHeader+int64(len(ls.buf))
	return e, nil
}

// flush appends the records told so far, so that one appended at once
// comes after them.
func (ls *logStore) flush() {
	if len(ls.recs) == 0 {
		return
	}
	if ls.err == nil { // a failed log takes nothing more
		if _, err := ls.log.Append(ls.recs...); err != nil {
			ls.err = err
		}
		ls.unsynced = true
	}
	clear(ls.recs)
	ls.recs = ls.recs[:0]
}

// load reads back the chunks of queue qid in records of segment seg from
// from up to to: about loadBytes of the log. Chunks that replay found
// consumed or moved (dead) are skipped. The chunks share the buffer the
// log read them into.
func (ls *logStore) load(qid uint64, seg uint64, from, to int64) ([]item, int64, error) {
	return ls.loadInto(nil, loadBytes, qid, seg, from, to)
}

// loadInto is load reading about limit bytes into buf, for chunks that are
// not kept past the next read.
func (ls *logStore) loadInto(buf []byte, limit int, qid uint64, seg uint64, from, to int64) ([]item, int64, error) {
	var items []item
	next, err := ls.log.ReadRange(seg, from, to, limit, buf, func(off int64, rec []byte) error {
		d := decoder{b: rec}
		if d.byte() != recWrote {
			return nil
		}
		d.skip() // the pipe's name
		if d.uint() != qid {
			return nil
		}
		d.items(func(id uint64, data []byte) {
			if len(ls.dead) == 0 || !ls.dead.has(id) {
				items = append(items, item{data: data, id: id})
			}
		})
		if d.err != nil {
			return fmt.Errorf("%w at %v: %v", errCorrupt, wal.Pos{Segment: seg, Offset: off}, d.err)
		}
		return nil
	})
	return items, next, err
}

// copyBytes is about how much of the log a checkpoint reads at a time, into
// one buffer: the records it writes then fit the log's buffers.
const copyBytes = 256 << 10

// copyPending is how much of a checkpoint's copy may wait for the log's
// syncer: a few of its buffers, which it then reuses (wal.Log.Hold).
const copyPending = 2 << 20

// copyExtent writes an extent of a queue's tail again, for a checkpoint:
// its chunks are read back and appended in new records, copyBytes at a
// time, so the checkpoint never holds the backlog in memory. The copies
// are added to into.
func (ls *logStore) copyExtent(pipe string, q *writerQueue, e extent, into *writerQueue) error {
	if ls.copyBuf == nil {
		ls.copyBuf = make([]byte, 0, copyBytes)
	}
	chunks, cost := into.spilledChunks, into.spilledCost
	for from := e.from; from < e.to; {
		items, next, err := ls.loadInto(ls.copyBuf, copyBytes, q.qid, e.seg, from, e.to)
		if err != nil {
			return err
		}
		from = next
		if len(items) == 0 {
			continue
		}
		ls.begin(recWrote)
		ls.str(pipe)
		ls.uint(q.qid)
		ls.items(items)
		ne := extent{chunks: len(items), cost: itemsCost(items), first: ^uint64(0)}
		for _, it := range items {
			ne.first, ne.last = min(ne.first, it.id), max(ne.last, it.id)
		}
		ne, err = ls.appendExtent(ne)
		if err != nil {
			return err
		}
		into.addExtent(ne)
		ls.log.Hold(copyPending)
	}
	if into.spilledChunks-chunks != e.chunks || into.spilledCost-cost != e.cost {
		return fmt.Errorf("copy queue %d of %q at %v: %d chunks (%d bytes) on disk, %d (%d) counted: %w",
			q.qid, pipe, wal.Pos{Segment: e.seg, Offset: e.from}, into.spilledChunks-chunks, into.spilledCost-cost,
			e.chunks, e.cost, errShortExtent)
	}
	return nil
}

// keepFrom chooses the oldest segment before start that a checkpoint
// keeps: its spilled extents there and after are referred to, not copied.
// The log drops only a prefix of its segments, so it is the oldest segment
// with spilled chunks such that the segments from it to start hold at
// least two thirds live payload; start if there is none. A reader drains a
// queue from its oldest segment, so most of a long backlog is kept where
// it lies and a compaction copies little. It also returns what the log
// would hold after the compaction: the kept segments and about the
// checkpoint's bytes.
func (ls *logStore) keepFrom(co *core, start uint64) (keep uint64, after int64) {
	live := make(map[uint64]int64)
	for _, p := range co.pipes {
		for _, qs := range [][]*writerQueue{p.ring, p.later} {
			for _, q := range qs {
				for _, e := range q.extents {
					live[e.seg] += int64(e.cost - chunkOverhead*e.chunks)
				}
			}
		}
	}
	keep = start
	var size, payload, kept, keptLive int64
	segs := ls.log.Segments()
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		if s.Num >= start {
			kept += s.Size // appended since the Roll: none yet
			continue
		}
		size += s.Size
		payload += live[s.Num]
		if live[s.Num] > 0 && 2*size <= 3*payload {
			keep, kept, keptLive = s.Num, size, payload
		}
	}
	return keep, kept + int64(co.total) - keptLive
}

// refer records an extent a checkpoint keeps where it lies.
func (ls *logStore) refer(pipe string, qid uint64, e extent) {
	ls.begin(recSpilled)
	ls.str(pipe)
	ls.uint(qid)
	ls.uint(e.seg)
	ls.uint(uint64(e.from))
	ls.uint(uint64(e.to))
	ls.uint(uint64(e.chunks))
	ls.uint(uint64(e.cost))
	ls.uint(e.first)
	ls.uint(e.last)
	ls.end()
}

// liveExtent counts what an extent holds that is not dead, reading it if
// some of its ids are.
func liveExtent(ls *logStore, qid uint64, e *replayExtent) error {
	switch {
	case e.chunks == 0 || !ls.dead.overlaps(e.first, e.last):
		return nil
	case ls.dead.covers(e.first, e.last):
		e.chunks, e.cost = 0, 0
		return nil
	}
	e.chunks, e.cost = 0, 0
	for from := e.from; from < e.to; {
		items, next, err := ls.loadInto(ls.copyBuf, copyBytes, qid, e.seg, from, e.to)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		e.chunks += len(items)
		e.cost += itemsCost(items)
		from = next
	}
	return nil
}

// fetch finds the data of known chunks given back in the writes that
// recorded them.
func (rs *replayState) fetch(ls *logStore, need map[uint64][]byte) error {
	if len(need) == 0 {
		return nil
	}
	ids := make([]uint64, 0, len(need))
	for id := range need {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, rp := range rs.pipes {
		for _, rq := range rp.queues {
			for _, e := range rq.exts {
				i, _ := slices.BinarySearch(ids, e.first)
				if i == len(ids) || ids[i] > e.last {
					continue
				}
				for from := e.from; from < e.to; {
					next, err := ls.log.ReadRange(e.seg, from, e.to, copyBytes, ls.copyBuf, func(_ int64, rec []byte) error {
						d := decoder{b: rec}
						if d.byte() != recWrote {
							return nil
						}
						d.skip()
						d.uint()
						d.items(func(id uint64, data []byte) {
							if _, ok := need[id]; ok {
								need[id] = append([]byte{}, data...)
							}
						})
						return d.err
					})
					if err != nil {
						return fmt.Errorf("replay: %w", err)
					}
					from = next
				}
			}
		}
	}
	return nil
}
