package broker

import (
	"cmp"
	"math"
	"slices"
)

// What the broker counts against its limits besides the chunks' bytes, so
// that the limits track real memory: a queued chunk's slot (its slice
// header and id, 32 bytes, and a share of the allocator's rounding), a
// writer's queue (its struct, first segment and table entries), and a
// pipe (its struct, table and index entries; plus its name's bytes).
const (
	chunkOverhead = 48
	queueOverhead = 320
	pipeOverhead  = 1024 // measured: 880 bytes for a pipe with a 16-byte name
)

// item is a queued chunk and its id, unique in the broker (and, with a
// store, across its restarts), by which a store records what became of it.
type item struct {
	data []byte
	id   uint64
}

// fifo is a queue in segments, so that neither a long queue nor a burst of
// pushes ever copies the queue, and the memory of consumed entries is
// released as the queue drains. Segments start small and double up to
// segmentSize, so the many queues that only ever hold a chunk or two (one
// per writer that writes once) cost little.
type fifo[T any] struct {
	head, tail *segment[T]
	hi, ti     int // next slot to pop in head, next free slot in tail
	n          int
}

const (
	segmentSize  = 128
	firstSegment = 4
)

type segment[T any] struct {
	items []T // fixed length
	next  *segment[T]
}

func (q *fifo[T]) len() int { return q.n }

func (q *fifo[T]) push(c T) {
	if q.tail == nil || q.ti == len(q.tail.items) {
		size := firstSegment
		if q.tail != nil {
			size = min(2*len(q.tail.items), segmentSize)
		}
		s := &segment[T]{items: make([]T, size)}
		if q.tail == nil {
			q.head, q.hi = s, 0
		} else {
			q.tail.next = s
		}
		q.tail, q.ti = s, 0
	}
	q.tail.items[q.ti] = c
	q.ti++
	q.n++
}

func (q *fifo[T]) peek() T { return q.head.items[q.hi] }

// front is the head entry, in place.
func (q *fifo[T]) front() *T { return &q.head.items[q.hi] }

// back is the tail entry, in place.
func (q *fifo[T]) back() *T { return &q.tail.items[q.ti-1] }

func (q *fifo[T]) pop() T {
	var zero T
	c := q.head.items[q.hi]
	q.head.items[q.hi] = zero
	q.hi++
	q.n--
	switch {
	case q.n == 0:
		*q = fifo[T]{} // drop the segments; an idle queue holds nothing
	case q.hi == len(q.head.items):
		q.head, q.hi = q.head.next, 0
	}
	return c
}

// pushFront puts entries back at the head, keeping their order.
func (q *fifo[T]) pushFront(cs []T) {
	for i := len(cs) - 1; i >= 0; i-- {
		if q.head == nil {
			q.push(cs[i])
			continue
		}
		if q.hi == 0 {
			size := min(max(i+1, firstSegment), segmentSize)
			q.head = &segment[T]{items: make([]T, size), next: q.head}
			q.hi = size
		}
		q.hi--
		q.head.items[q.hi] = cs[i]
		q.n++
	}
}

// each calls fn for every entry, head first.
func (q *fifo[T]) each(fn func(T)) {
	for s, i, n := q.head, q.hi, 0; n < q.n; n++ {
		if i == len(s.items) {
			s, i = s.next, 0
		}
		fn(s.items[i])
		i++
	}
}

// run is chunks queued together: a batch's, whose ids run on from id, or
// items read back from disk, each with its own id.
type run struct {
	chunks [][]byte
	id     uint64
	items  []item
}

func (r *run) len() int { return len(r.chunks) + len(r.items) }

func (r *run) at(i int) item {
	if r.items != nil {
		return r.items[i]
	}
	return item{data: r.chunks[i], id: r.id + uint64(i)}
}

// runQueue is a queue of chunks kept as the runs they were queued in: a
// batch of a thousand chunks is one push, not a thousand.
type runQueue struct {
	runs fifo[run]
	off  int // chunks of the head run already gone
	n    int // chunks queued
}

func (q *runQueue) len() int { return q.n }

// shortRun is the fewest chunks queued as a run of their own. Fewer (a
// WRITE's one, most of all) join a run of items at the tail, so that each
// costs a 32-byte slot, not a run and the message's list of frames.
const shortRun = 8

// pushRun queues r's chunks. A run of shortRun chunks or more is kept as it
// is, its slice included: whoever made it must not change or reuse it.
func (q *runQueue) pushRun(r run) {
	n := r.len()
	if n < shortRun {
		for i := range n {
			q.pushItem(r.at(i))
		}
		return
	}
	r.items = r.items[:len(r.items):len(r.items)] // never appended to: not ours
	q.runs.push(r)
	q.n += n
}

// pushItem adds one chunk to the items run at the tail, or to a new one.
// Like the fifo's segments, such runs start small and double up to
// segmentSize, so a queue of one chunk costs little and a long one is
// never copied whole.
func (q *runQueue) pushItem(it item) {
	size := firstSegment
	if q.runs.len() > 0 {
		if t := q.runs.back(); t.items != nil {
			if len(t.items) < cap(t.items) {
				t.items = append(t.items, it)
				q.n++
				return
			}
			size = min(2*cap(t.items), segmentSize)
		}
	}
	items := make([]item, 1, size)
	items[0] = it
	q.runs.push(run{items: items})
	q.n++
}

func (q *runQueue) peek() item { return q.runs.front().at(q.off) }

func (q *runQueue) pop() item {
	r := q.runs.front()
	it := r.at(q.off)
	q.n--
	if q.off++; q.off == r.len() {
		q.runs.pop()
		q.off = 0
	}
	return it
}

// popRun appends to dst chunks of the head run, up to max of them and
// maxBytes of their bytes (at least one if first), and returns how many
// and their bytes.
func (q *runQueue) popRun(dst []item, max, maxBytes int, first bool) (_ []item, n, bytes int) {
	r := q.runs.front()
	for i := q.off; i < r.len() && n < max; i++ {
		it := r.at(i)
		if bytes+len(it.data) > maxBytes && (n > 0 || !first) {
			break
		}
		dst = append(dst, it)
		bytes += len(it.data)
		n++
	}
	q.n -= n
	if q.off += n; q.off == r.len() {
		q.runs.pop()
		q.off = 0
	}
	return dst, n, bytes
}

// each calls fn for every chunk, head first.
func (q *runQueue) each(fn func(item)) {
	off := q.off
	q.runs.each(func(r run) {
		for i := off; i < r.len(); i++ {
			fn(r.at(i))
		}
		off = 0
	})
}

// writerQueue holds one writer's chunks in one pipe: a head in memory
// (the runQueue), and with a store that spills, a tail on disk only
// (spilled, see spill.go), whose chunks come into the head as the reader
// reaches them.
type writerQueue struct {
	writer  uint64 // the writing connection's id
	qid     uint64 // the id of its first chunk: its name in a store
	started uint64 // the pipe's clock when the writer first wrote
	ended   uint64 // the pipe's clock when the writer finished; 0 while it writes
	placed  bool   // whether it is in the ring or in later (it has chunks)
	runQueue
	spill
}

// size is the number of chunks queued, in memory and on disk.
func (q *writerQueue) size() int { return q.len() + q.spilledChunks }

// pipe is a named queue: one FIFO per writer, served round robin, plus the
// chunks readers gave back, served first. It is owned by the broker's core
// goroutine; nothing here is safe for concurrent use.
//
// Round robin is for writers that write at the same time. A writer that
// starts after another has finished (closed the pipe or disconnected) is a
// sequel, like "cat a b > fifo": it waits in later until every chunk of the
// writers that finished before it started has been read, then joins the
// ring. A pipe keeps a logical clock to tell which came first.
type pipe struct {
	name   string
	opens  int // OPENs and HOLDs minus CLOSEs
	holds  int // the HOLDs among them, which end with their connections
	chunks int // chunks queued
	bytes  int // bytes queued, with chunkOverhead each
	queues int // writers' queues it keeps, each queueOverhead

	returned fifo[item]              // chunks given back (UNREAD, undelivered, unacknowledged)
	ring     []*writerQueue          // writers that may be served, in turn order
	next     int                     // ring index of the writer whose turn it is
	writers  map[uint64]*writerQueue // writers that have not finished, by id
	later    []*writerQueue          // writers waiting for finished ones, by start
	finished []*writerQueue          // finished writers, by end; drained ones are dropped lazily
	clock    uint64

	spilled int    // of bytes, those of chunks on disk only (spill.go)
	disk    loader // reads spilled chunks back; nil in memory mode
	lost    int    // bytes of spilled chunks that could not be read back, for the core to uncount
	lostErr error  // why

	held      int // chunks readers TOOK and have not ACKed
	heldBytes int // their bytes, with chunkOverhead each
	inflight  int // bytes of READ and MREAD replies not yet written (they do not keep the pipe)

	reader  *conn   // the connection with a READ waiting, if any
	blocked []*conn // connections whose WRITE waits for room, in order
}

func newPipe(name string) *pipe {
	return &pipe{name: name, writers: make(map[uint64]*writerQueue, 1)}
}

func chunkCost(c []byte) int { return len(c) + chunkOverhead }

// cost is what the pipe itself and its writers' queues count against the
// limits, besides the chunks.
func (p *pipe) cost() int { return newPipeCost(p.name) + queueOverhead*p.queues }

// newPipeCost is what an empty pipe costs: its struct and table entries,
// and its name, which it keeps twice (measured: 2,883 bytes for a pipe with
// a 1024-byte name).
func newPipeCost(name string) int { return pipeOverhead + 2*len(name) }

func itemsCost(items []item) int {
	n := 0
	for _, it := range items {
		n += chunkCost(it.data)
	}
	return n
}

func (p *pipe) tick() uint64 {
	p.clock++
	return p.clock
}

// enqueue adds a writer's chunks (at least one) at the end of its queue,
// and returns the queue. The queue may keep items itself (see pushRun):
// the caller must not change or reuse it.
func (p *pipe) enqueue(writer uint64, items []item) *writerQueue {
	q := p.queueOf(writer, items[0].id)
	q.pushRun(run{items: items})
	p.chunks += len(items)
	p.bytes += itemsCost(items)
	p.place(q)
	return q
}

// enqueueChunks is enqueue for chunks whose ids run from firstID, without
// making the items first. Like items there, chunks may be kept as they are.
func (p *pipe) enqueueChunks(writer uint64, chunks [][]byte, firstID uint64) *writerQueue {
	q := p.queueOf(writer, firstID)
	q.pushRun(run{chunks: chunks, id: firstID})
	for _, c := range chunks {
		p.bytes += chunkCost(c)
	}
	p.chunks += len(chunks)
	p.place(q)
	return q
}

// queueOf returns the writer's queue, making one named by firstID.
func (p *pipe) queueOf(writer, firstID uint64) *writerQueue {
	q := p.writers[writer]
	if q == nil {
		q = &writerQueue{writer: writer, qid: firstID, started: p.tick()}
		p.writers[writer] = q
		p.queues++
	}
	return q
}

func (p *pipe) place(q *writerQueue) {
	if !q.placed {
		p.admit(q)
	}
}

// admit puts a writer that has chunks in the ring, or in later if a writer
// that finished before it started still has chunks.
func (p *pipe) admit(q *writerQueue) {
	q.placed = true
	if q.started > p.oldestEnd() {
		i, _ := slices.BinarySearchFunc(p.later, q.started, func(w *writerQueue, s uint64) int { return cmp.Compare(w.started, s) })
		p.later = slices.Insert(p.later, i, q)
		return
	}
	// A writer joins just before the one whose turn it is, so it is served
	// after everyone already waiting: within one round.
	p.ring = slices.Insert(p.ring, p.next, q)
	p.next++
	if p.next == len(p.ring) {
		p.next = 0
	}
}

// oldestEnd is the clock at which the earliest finished writer that still
// has chunks finished, or the largest clock value if there is none.
func (p *pipe) oldestEnd() uint64 {
	for len(p.finished) > 0 && p.finished[0].size() == 0 {
		p.finished[0] = nil
		p.finished = p.finished[1:]
	}
	if len(p.finished) == 0 {
		return math.MaxUint64
	}
	return p.finished[0].ended
}

// finish records that a writer is done with the pipe: whoever starts
// writing after this is served after its chunks. It returns the writer's
// queue, or nil if it had none.
func (p *pipe) finish(writer uint64) *writerQueue {
	q := p.writers[writer]
	if q == nil {
		return nil
	}
	delete(p.writers, writer)
	q.ended = p.tick()
	if q.size() > 0 {
		p.finished = append(p.finished, q)
	} else {
		p.queues-- // finished and empty: gone
	}
	return q
}

// promote moves the writers in later whose predecessors have drained into
// the ring, in the order they started.
func (p *pipe) promote() {
	end := p.oldestEnd()
	for len(p.later) > 0 && p.later[0].started < end {
		q := p.later[0]
		p.later[0] = nil
		p.later = p.later[1:]
		p.admit(q)
	}
	if len(p.later) == 0 {
		p.later = nil
	}
}

// unread puts chunks back at the head of the pipe, in order.
func (p *pipe) unread(items []item) {
	p.returned.pushFront(items)
	p.chunks += len(items)
	p.bytes += itemsCost(items)
}

// dequeue appends to dst up to max chunks totalling at most maxBytes
// (always at least one chunk if any is queued): given-back chunks first,
// then one chunk per writer in turn.
func (p *pipe) dequeue(dst []item, max, maxBytes int) []item {
	size := 0
	for n := 0; n < max && p.chunks > 0; {
		var c item
		if p.returned.len() > 0 {
			c = p.returned.peek()
		} else {
			q := p.ring[p.next]
			if q.len() == 0 {
				// Its head is on disk (it would not be in the ring if it
				// had no chunks).
				p.refill(q)
				if q.len() == 0 { // they could not be read back
					p.leaveRing(q)
					continue
				}
			}
			if len(p.ring) == 1 {
				// One writer: no turns to take, so its head run goes
				// in a row.
				k, bytes := 0, 0
				dst, k, bytes = q.popRun(dst, max-n, maxBytes-size, n == 0)
				p.chunks -= k
				p.bytes -= bytes + k*chunkOverhead
				size += bytes
				n += k
				if q.size() == 0 {
					p.leaveRing(q)
				}
				if k == 0 {
					break
				}
				continue
			}
			c = q.peek()
		}
		if n > 0 && size+len(c.data) > maxBytes {
			break
		}
		dst = append(dst, p.take())
		size += len(c.data)
		n++
	}
	return dst
}

// take removes the next chunk in fair order; the queue whose turn it is has
// its head in memory.
func (p *pipe) take() item {
	var c item
	if p.returned.len() > 0 {
		c = p.returned.pop()
	} else {
		q := p.ring[p.next]
		c = q.pop()
		if q.size() == 0 {
			p.leaveRing(q)
		} else if p.next++; p.next == len(p.ring) {
			p.next = 0
		}
	}
	p.chunks--
	p.bytes -= chunkCost(c.data)
	return c
}

// leaveRing takes a drained queue, the one whose turn it is, out of the
// ring.
func (p *pipe) leaveRing(q *writerQueue) {
	q.placed = false
	p.ring = slices.Delete(p.ring, p.next, p.next+1)
	if p.next == len(p.ring) {
		p.next = 0
	}
	if q.ended != 0 {
		p.queues--  // finished and drained: gone
		p.promote() // its sequels may go
	}
}

// hold counts chunks a reader took provisionally; release uncounts them
// once acknowledged or given back.
func (p *pipe) hold(items []item) {
	p.held += len(items)
	p.heldBytes += itemsCost(items)
}

func (p *pipe) release(items []item) {
	p.held -= len(items)
	p.heldBytes -= itemsCost(items)
}

// unused reports whether the pipe can be removed: nobody holds it open, it
// queues nothing, no reader holds chunks of it and nobody waits on it.
func (p *pipe) unused() bool {
	return p.opens == 0 && p.chunks == 0 && p.held == 0 && p.reader == nil && len(p.blocked) == 0
}

// writerCount is the number of writers with chunks queued.
func (p *pipe) writerCount() int { return len(p.ring) + len(p.later) }
