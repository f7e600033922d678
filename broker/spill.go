package broker

import (
	"errors"
	"fmt"
	"slices"

	"github.com/zpipes/zpipes/broker/internal/wal"
)

// Spilling: with a store, a backlog larger than memory. The store's log
// holds every queued chunk anyway, so a writer's queue need not: once the
// chunks the broker holds in memory pass Config.spillAbove (spillAbove by
// default), a write is appended to the log at once and its chunks leave
// memory; the queue keeps only where they lie, as extents. A queue is then
// a head in memory (its fifo) and a tail on disk (its extents), and once a
// queue has a tail, every later write of it goes there too, so its order
// holds. When the reader reaches the end of a queue's head, the next
// records of its first extent are read back (refill), at most loadBytes at
// a time, by the core: from the page cache when they are
// recent, from the disk when the backlog is larger than the cache.
//
// An extent is a range of one segment of the log that holds the queue's
// wrote records and perhaps others (another queue's writes, reads'
// records) in between: consecutive records of a queue become one extent
// when they lie close together (mergeGap), so a queue of a million small
// writes does not need a million extents. Reading an extent back skips the
// records that are not the queue's.
//
// What stays in memory: every queue's head, chunks given back (UNREAD,
// NACK, a reader gone), chunks readers hold or that sit in replies not yet
// written, and the extents (56 bytes each, about one per write whose
// records do not lie together). A refill reads whole records, so a queue
// the reader has reached holds the rest of the write it last read back
// (`cat -w` writes up to 1 MiB at a time): a pipe with many writers whose
// queues all spilled holds about one write per writer while the reader
// goes round them, whatever spillAbove says. (Measured with
// scripts/store-backlog.sh WRITERS=16: the drain's VmHWM is 128 MB where
// one writer's is 50 MB; queuing, 286 MB where one writer's is 70 MB, but
// that is the writers' requests in flight, which spilling does not bound.)
//
// The limits (MaxPipeBytes, MaxTotalBytes) still bound what is queued, in
// memory or on disk: they are the backpressure a writer sees and the
// store's quota, not the broker's memory, which spillAbove bounds. A user
// who sets a limit expects the same pipe to fill at the same point with or
// without --store; what --store adds is that the point may lie past RAM.
//
// At start, replay (replay.go) builds queues as extents and loads no
// queued chunk, so recovery needs memory for the extents and the chunks
// given back only.
//
// A compaction (logstore.go) does not load spilled tails either. The log
// drops only a prefix of its segments (a gap in their numbers reads as
// damage), so a checkpoint chooses the oldest segment to keep (keepFrom):
// the oldest holding spilled chunks such that from it on at least two
// thirds of the log is their payload. Extents from there on are referred
// to where they lie (recSpilled records, with recDead for chunks replay
// found consumed in them); extents before it are copied into the
// checkpoint, copyBytes at a time through one buffer. A reader drains a
// backlog from its oldest segment, so the kept segments are mostly live
// and little is copied; a slow queue stuck in an old segment, with much
// consumed after it, is copied instead of keeping all that. The disk stays
// within about twice the queued bytes plus the slack, as before spilling.
//
// Measured with scripts/store-backlog.sh (2 GiB of 1 KiB lines, 2 cores,
// ext4 on a virtual disk): the five compactions of the drain kept 16, 9,
// 6 and 5 segments and copied nothing, then copied 19 MB; each held the
// core 4–34 ms. Copying every spilled tail instead (the first version of
// this file) copied 1.04 GB, 0.46 GB, 0.19 GB and 0.05 GB and held the
// core 2.8–3.5 s, 1–1.9 s, 0.3–0.4 s and 0.1–0.16 s, at the disk's write
// speed.
//
// A refill is synchronous: BenchmarkRefill reads back a record of a
// thousand 1 KiB chunks from the page cache in 0.35 ms (2.8 GB/s), so the
// 2 GiB drain spends under a second of its 8–18 s in refills, and reading
// ahead in another goroutine would save little while adding a hand-off per
// record. A backlog larger than the page cache is read from the disk: a
// refill then waits for the disk to read up to loadBytes (not measured
// here: this machine's 2 GiB fit its page cache).
type spill struct {
	extents       []extent
	spilledChunks int
	spilledCost   int // their bytes, with chunkOverhead each
}

// extent is a range of the log holding a writer queue's chunks: the wrote
// records of that queue that start in segment seg at offsets from from up
// to to (the end of the last one). chunks and cost are what is left of it.
type extent struct {
	seg         uint64
	from, to    int64
	chunks      int
	cost        int    // bytes with chunkOverhead each
	first, last uint64 // bounds of the ids of its chunks
}

const (
	// spillAbove is how many bytes of chunks the broker holds in memory,
	// with chunkOverhead each, before writes go to the store's log only.
	spillAbove = 16 << 20
	// loadBytes is about how much of the log a refill reads (at least one
	// record).
	loadBytes = 1 << 20
	// mergeGap is how far apart two records of a queue may lie in a
	// segment and still make one extent: what a refill may read in vain.
	mergeGap = 64 << 10
)

// loader reads spilled chunks back: the store's side of spilling.
type loader interface {
	// load reads the records of queue qid in segment seg from from up to
	// to, about loadBytes of them, and returns their chunks and the offset
	// where the next read starts.
	load(qid uint64, seg uint64, from, to int64) ([]item, int64, error)
}

// addExtent appends chunks on disk to the queue's tail, in one extent with
// the last one if they lie close enough.
func (q *writerQueue) addExtent(e extent) {
	q.spilledChunks += e.chunks
	q.spilledCost += e.cost
	if n := len(q.extents); n > 0 && q.extents[n-1].merge(e) {
		return
	}
	q.extents = append(q.extents, e)
}

// merge takes e into x if e follows x in the same segment within
// mergeGap, and reports whether it did.
func (x *extent) merge(e extent) bool {
	if x.seg != e.seg || e.from < x.to || e.from-x.to > mergeGap {
		return false
	}
	x.to = e.to
	x.chunks += e.chunks
	x.cost += e.cost
	x.first, x.last = min(x.first, e.first), max(x.last, e.last)
	return true
}

// enqueueSpilled adds chunks a store holds on disk at the end of a
// writer's queue.
func (p *pipe) enqueueSpilled(q *writerQueue, e extent) {
	q.addExtent(e)
	p.chunks += e.chunks
	p.bytes += e.cost
	p.spilled += e.cost
	p.place(q)
}

// errShortExtent says an extent held fewer live chunks than counted: the
// log does not say what the broker recorded.
var errShortExtent = errors.New("fewer chunks on disk than queued")

// refill reads the next chunks of a queue's tail into its head: the
// records of its first extent, until some are read. An extent that cannot
// be read back is dropped, and what it held is counted in lost.
func (p *pipe) refill(q *writerQueue) {
	for q.len() == 0 && len(q.extents) > 0 {
		e := &q.extents[0]
		items, next, err := p.disk.load(q.qid, e.seg, e.from, e.to)
		if err == nil && len(items) > e.chunks {
			err = errShortExtent
		}
		if err == nil {
			cost := itemsCost(items)
			q.pushRun(run{items: items})
			e.from = next
			e.chunks -= len(items)
			e.cost -= cost
			q.spilledChunks -= len(items)
			q.spilledCost -= cost
			p.spilled -= cost
			if e.from < e.to && e.chunks > 0 {
				continue
			}
			if e.chunks == 0 && e.cost == 0 {
				q.extents = slices.Delete(q.extents, 0, 1)
				continue
			}
			err = errShortExtent
		}
		// Lost: uncount what is left of the extent.
		p.lostErr = fmt.Errorf("read back %d chunks at %v: %w", e.chunks, wal.Pos{Segment: e.seg, Offset: e.from}, err)
		p.lost += e.cost
		p.chunks -= e.chunks
		p.bytes -= e.cost
		p.spilled -= e.cost
		q.spilledChunks -= e.chunks
		q.spilledCost -= e.cost
		q.extents = slices.Delete(q.extents, 0, 1)
	}
	if len(q.extents) == 0 {
		q.extents = nil
	}
}

// intervals is a set of ids as sorted, disjoint, non-adjacent ranges
// [from, to].
type intervals [][2]uint64

// normalize sorts and merges ranges added in any order.
func (s intervals) normalize() intervals {
	slices.SortFunc(s, func(a, b [2]uint64) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	out := s[:0]
	for _, r := range s {
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// index is the position of the first range that ends at or after id.
func (s intervals) index(id uint64) int {
	i, _ := slices.BinarySearchFunc(s, id, func(r [2]uint64, id uint64) int {
		if r[1] < id {
			return -1
		}
		return 1
	})
	return i
}

func (s intervals) has(id uint64) bool {
	i := s.index(id)
	return i < len(s) && s[i][0] <= id
}

// overlaps reports whether any id in [from, to] is in the set; covers,
// whether all are.
func (s intervals) overlaps(from, to uint64) bool {
	i := s.index(from)
	return i < len(s) && s[i][0] <= to
}

func (s intervals) covers(from, to uint64) bool {
	i := s.index(from)
	return i < len(s) && s[i][0] <= from && s[i][1] >= to
}

// The core's side.

// spills reports whether a write goes to the store's log only: its queue
// has chunks there already, or the chunks in memory would pass spillAbove.
func (co *core) spills(c *conn, p *pipe, req *Request) bool {
	if co.disk == nil {
		return false
	}
	if q := p.writers[c.id]; q != nil && len(q.extents) > 0 {
		return true
	}
	return co.total-co.spilled+req.Size+chunkOverhead*len(req.Chunks) > co.spillAbove
}

// spillWrite queues a write's chunks on disk only.
func (co *core) spillWrite(c *conn, p *pipe, chunks [][]byte, firstID uint64) error {
	fresh := p.writers[c.id] == nil
	q := p.queueOf(c.id, firstID)
	e, err := co.disk.spillWrote(p.name, q.qid, chunks, firstID)
	if err != nil {
		if fresh { // nothing was queued: no queue either
			delete(p.writers, c.id)
			p.queues--
		}
		co.storeFailed(err)
		return err
	}
	p.enqueueSpilled(q, e)
	co.spilled += e.cost
	return nil
}

// lostSpilled uncounts spilled chunks of the pipe that could not be read
// back (a damaged log), and says so.
func (co *core) lostSpilled(p *pipe) {
	co.log.Error("store: queued chunks could not be read back; they are lost", "pipe", abbrev([]byte(p.name)),
		"bytes", p.lost, "err", p.lostErr)
	co.total -= p.lost // dequeue uncounted them from spilled
	p.lost, p.lostErr = 0, nil
	co.wakeWriters(p)
}
