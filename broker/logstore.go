package broker

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/zpipes/zpipes/broker/internal/wal"
)

// logStore is the durable store of `zpipes serve --store DIR`: every change
// the core makes goes into a write-ahead log (internal/wal), and replies
// wait until the log has it on disk (group commit: one fsync covers every
// change made meanwhile). At start the log is replayed to rebuild the pipes.
//
// The log is never edited: chunks that were consumed stay in it until a
// compaction, which writes the whole live state (pipes, open counts,
// writers' queues in their order, chunks given back, chunks taken and not
// yet consumed) as a checkpoint and then deletes every segment before it,
// like a Redis AOF rewrite. Queues whose tails are on disk only (spill.go)
// keep them where they lie when their segments are mostly live: the
// checkpoint refers to them, and only the segments before them go. It runs when the log has grown past twice what
// is live plus compactSlack, so the disk holds at most about twice the
// queued bytes plus compactSlack, and each byte written is copied at most
// once more on average.
type logStore struct {
	log        *wal.Log
	logger     *slog.Logger
	relaxed    bool // --sync-every: reply before the fsync
	buf        []byte
	recs       [][]byte  // records of the current core event, appended at commit
	compacting bool      // a checkpoint is written and not yet durable
	slack      int64     // compactSlack, smaller in tests
	unsynced   bool      // records were appended at once since the last commit (spill.go)
	dead       intervals // chunks replay found consumed or moved: skipped when read back
	copyBuf    []byte    // what a checkpoint or replay reads spilled records into
	skipped    [2]int64  // the log's size and the live bytes when a compaction was last found not worth it
	err        error
}

// compactSlack is how far the log may grow past twice the live bytes
// before it is compacted.
const compactSlack = 64 << 20

// Record types.
const (
	recOpened   = 1  // pipe, delta
	recWrote    = 2  // pipe, queue, items
	recFinished = 3  // pipe, queue
	recConsumed = 4  // id ranges
	recReturned = 5  // pipe, id ranges: known chunks back at the head
	recFresh    = 6  // pipe, items: new chunks at the head (UNREAD, checkpoint)
	recOpens    = 7  // pipe, opens: the open count, in a checkpoint
	recBegin    = 8  // next id: a checkpoint starts
	recEnd      = 9  // the checkpoint is whole
	recSpilled  = 10 // pipe, queue, extent: a queue's chunks kept where they lie, in a checkpoint
	recDead     = 11 // id ranges: chunks in kept extents that are no longer in their queues, in a checkpoint
)

func openLogStore(dir string, opt wal.Options, logger *slog.Logger) (*logStore, error) {
	l, err := wal.Open(dir, opt)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	return &logStore{log: l, logger: logger, relaxed: opt.SyncEvery > 0, slack: compactSlack}, nil
}

// Encoding helpers: each record is its type, then uvarints and
// length-prefixed byte strings.

func (ls *logStore) begin(typ byte) { ls.buf = append(ls.buf[:0], typ) }

func (ls *logStore) uint(v uint64) { ls.buf = binary.AppendUvarint(ls.buf, v) }

func (ls *logStore) bytes(b []byte) {
	ls.uint(uint64(len(b)))
	ls.buf = append(ls.buf, b...)
}

func (ls *logStore) str(s string) {
	ls.uint(uint64(len(s)))
	ls.buf = append(ls.buf, s...)
}

// items writes chunks with their ids, each id as the difference from the
// one before (1 in a fresh batch).
func (ls *logStore) items(items []item) {
	ls.uint(uint64(len(items)))
	prev := uint64(0)
	for _, it := range items {
		ls.uint(it.id - prev)
		prev = it.id
		ls.bytes(it.data)
	}
}

// ids writes ids as ranges of consecutive ids.
func (ls *logStore) ids(items []item) {
	var ranges [][2]uint64
	for _, it := range items {
		if n := len(ranges); n > 0 && ranges[n-1][0]+ranges[n-1][1] == it.id {
			ranges[n-1][1]++
			continue
		}
		ranges = append(ranges, [2]uint64{it.id, 1})
	}
	ls.uint(uint64(len(ranges)))
	for _, r := range ranges {
		ls.uint(r[0])
		ls.uint(r[1])
	}
}

func (ls *logStore) end() { ls.recs = append(ls.recs, append([]byte(nil), ls.buf...)) }

func (ls *logStore) opened(pipe string, delta int) {
	ls.begin(recOpened)
	ls.str(pipe)
	ls.buf = binary.AppendVarint(ls.buf, int64(delta))
	ls.end()
}

func (ls *logStore) wrote(pipe string, queue uint64, items []item) {
	ls.begin(recWrote)
	ls.str(pipe)
	ls.uint(queue)
	ls.items(items)
	ls.end()
}

func (ls *logStore) finished(pipe string, queue uint64) {
	ls.begin(recFinished)
	ls.str(pipe)
	ls.uint(queue)
	ls.end()
}

func (ls *logStore) consumed(items []item) {
	if len(items) == 0 {
		return
	}
	ls.begin(recConsumed)
	ls.ids(items)
	ls.end()
}

func (ls *logStore) returned(pipe string, items []item, fresh bool) {
	if fresh {
		ls.begin(recFresh)
		ls.str(pipe)
		ls.items(items)
	} else {
		ls.begin(recReturned)
		ls.str(pipe)
		ls.ids(items)
	}
	ls.end()
}

func (ls *logStore) durable() bool { return !ls.relaxed }

func (ls *logStore) pending() bool { return len(ls.recs) > 0 || ls.unsynced }

// commit appends the event's records and asks for them to be made durable.
// In relaxed mode the replies have already gone; the fsync comes with the
// log's next periodic sync.
func (ls *logStore) commit(done func(error)) {
	ls.flush()
	ls.unsynced = false
	if ls.err != nil {
		done(ls.err)
		return
	}
	ls.log.Sync(done)
}

// compact writes a checkpoint of the core's state when the log has grown
// well past it, and drops the segments before it once it is durable.
func (ls *logStore) compact(co *core) error {
	size := ls.log.Size()
	if ls.compacting || ls.err != nil || size < 2*int64(co.total)+ls.slack {
		return nil
	}
	// Kept segments (keepFrom) may leave the log above the bound: compact
	// only if that frees half the slack, and once it would not, look again
	// only when the log or what is live has moved by a quarter of it.
	if ls.skipped[0] != 0 && size < ls.skipped[0]+ls.slack/4 && int64(co.total) > ls.skipped[1]-ls.slack/4 {
		return nil
	}
	next := ls.log.Mark().Segment + 1 // where the checkpoint will start
	if _, after := ls.keepFrom(co, next); after > size-ls.slack/2 {
		ls.skipped = [2]int64{size, int64(co.total)}
		return nil
	}
	ls.skipped = [2]int64{}
	if err := ls.log.Roll(); err != nil {
		return err
	}
	start := ls.log.Mark()
	before := ls.log.Size()
	t0 := time.Now()
	keep, _ := ls.keepFrom(co, start.Segment)
	copied, err := ls.checkpoint(co, keep)
	if err != nil {
		ls.err = err
		return err
	}
	ls.compacting = true
	ls.unsynced = false // this Sync covers the checkpoint
	drop := wal.Pos{Segment: min(keep, start.Segment)}
	if drop.Segment == start.Segment {
		ls.dead = nil // nothing kept: the copies hold live chunks only
	}
	ls.log.Sync(func(err error) {
		co.s.notify(event{compacted: &compactDone{start: drop, err: err}})
	})
	// The core waited for the checkpoint, spilled chunks copied included:
	// how long is in the log.
	ls.logger.Info("compacting store", "log_bytes", before, "live_bytes", co.total,
		"spilled_bytes", co.spilled, "copied_bytes", copied, "kept_segments", start.Segment-drop.Segment,
		"took", time.Since(t0).Round(time.Millisecond))
	return nil
}

type compactDone struct {
	start wal.Pos // the first segment kept
	err   error
}

// compacted drops the log before a durable checkpoint.
func (ls *logStore) compacted(d *compactDone) error {
	ls.compacting = false
	if d.err != nil {
		return d.err
	}
	if err := ls.log.DropBefore(d.start); err != nil {
		return err
	}
	ls.logger.Debug("store compacted", "log_bytes", ls.log.Size())
	return nil
}

// checkpoint appends the whole live state: enough to rebuild every pipe
// with nothing before it but the segments from keep on. It appends as it
// goes, so that it holds at most a record part in memory. The queues'
// tails on disk (spill.go) in segments from keep on are referred to where
// they lie; those before are copied and, once all is appended, the queues
// point at the copies. It returns the bytes it copied.
func (ls *logStore) checkpoint(co *core, keep uint64) (copied int, err error) {
	tails := make(map[*writerQueue][]extent)
	ls.begin(recBegin)
	ls.uint(co.nextID)
	ls.end()
	if len(ls.dead) > 0 {
		// Kept extents may hold chunks replay found dead: they stay dead.
		ls.begin(recDead)
		ls.uint(uint64(len(ls.dead)))
		for _, r := range ls.dead {
			ls.uint(r[0])
			ls.uint(r[1] - r[0] + 1)
		}
		ls.end()
	}
	held := make(map[*pipe][]item)
	for _, c := range co.conns {
		for p, h := range c.held {
			h.each(func(it item) { held[p] = append(held[p], it) })
		}
	}
	for _, it := range co.inflight {
		held[it.p] = append(held[it.p], it.item)
	}
	names := make([]string, 0, len(co.pipes))
	for name := range co.pipes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := co.pipes[name]
		ls.begin(recOpens)
		ls.str(name)
		ls.uint(uint64(p.opens - p.holds))
		ls.end()
		// Writers' queues, started and finished in their clock order, so
		// that replaying them orders them as they are ordered now.
		type step struct {
			at     uint64
			q      *writerQueue
			finish bool
		}
		var steps []step
		add := func(q *writerQueue) {
			steps = append(steps, step{at: q.started, q: q})
			if q.ended != 0 {
				steps = append(steps, step{at: q.ended, q: q, finish: true})
			}
		}
		for _, q := range p.ring {
			add(q)
		}
		for _, q := range p.later {
			add(q)
		}
		slices.SortFunc(steps, func(a, b step) int { return cmp.Compare(a.at, b.at) })
		for _, s := range steps {
			if s.finish {
				ls.finished(name, s.q.qid)
				continue
			}
			var items []item
			s.q.each(func(it item) { items = append(items, it) })
			for _, part := range recordParts(items) {
				ls.wrote(name, s.q.qid, part) // replay appends them in order
				ls.flush()
			}
			// The tail, after the head, in its order.
			var tail writerQueue
			for _, e := range s.q.extents {
				if e.seg >= keep {
					ls.refer(name, s.q.qid, e)
					tail.addExtent(e)
					continue
				}
				ls.flush()
				if err := ls.copyExtent(name, s.q, e, &tail); err != nil {
					return copied, fmt.Errorf("checkpoint: %w", err)
				}
				copied += e.cost - chunkOverhead*e.chunks
			}
			if len(s.q.extents) > 0 {
				tails[s.q] = tail.extents
			}
		}
		var returned []item
		p.returned.each(func(it item) { returned = append(returned, it) })
		if len(returned) > 0 {
			ls.returnedParts(name, returned)
		}
		// Taken and not consumed: back at the head if the broker dies.
		if h := held[p]; len(h) > 0 {
			slices.SortFunc(h, func(a, b item) int { return cmp.Compare(a.id, b.id) })
			ls.returnedParts(name, h)
		}
	}
	ls.begin(recEnd)
	ls.end()
	ls.flush()
	if ls.err != nil {
		return copied, ls.err
	}
	for q, tail := range tails {
		q.extents = tail
	}
	return copied, nil
}

// checkpointRecordBytes bounds one record of a checkpoint, well under what
// the log takes in one record: a queue of a gigabyte is written in parts.
// (A variable, for tests.)
var checkpointRecordBytes = 8 << 20

// recordParts splits items into runs of at most checkpointRecordBytes.
func recordParts(items []item) [][]item {
	var parts [][]item
	for start := 0; start < len(items); {
		end, size := start, 0
		for end < len(items) && (end == start || size+len(items[end].data) <= checkpointRecordBytes) {
			size += len(items[end].data)
			end++
		}
		parts = append(parts, items[start:end])
		start = end
	}
	return parts
}

// returnedParts records chunks back at the head in parts, last part first:
// each goes to the head, so the first part ends up first.
func (ls *logStore) returnedParts(pipe string, items []item) {
	parts := recordParts(items)
	for i := len(parts) - 1; i >= 0; i-- {
		ls.returned(pipe, parts[i], true)
		ls.flush()
	}
}

func (ls *logStore) close() error { return ls.log.Close() }

// errCorrupt marks a record the log's checksum passed but that does not
// parse: a bug, or a log from elsewhere.
var errCorrupt = errors.New("malformed store record")
