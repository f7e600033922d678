package broker

import (
	"cmp"
	"math"
	"slices"
)

// chunkOverhead is what the broker counts for a queued chunk besides its
// bytes (its slice header in a queue), so byte limits track real memory.
const chunkOverhead = 24

// fifo is a queue of chunks in fixed-size segments, so that neither a long
// queue nor a burst of pushes ever copies the queue, and the memory of
// consumed chunks is released as the queue drains.
type fifo struct {
	head, tail *segment
	hi, ti     int // next slot to pop in head, next free slot in tail
	n          int
}

const segmentSize = 128

type segment struct {
	items [segmentSize][]byte
	next  *segment
}

func (q *fifo) len() int { return q.n }

func (q *fifo) push(c []byte) {
	if q.tail == nil || q.ti == segmentSize {
		s := &segment{}
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

func (q *fifo) peek() []byte { return q.head.items[q.hi] }

func (q *fifo) pop() []byte {
	c := q.head.items[q.hi]
	q.head.items[q.hi] = nil
	q.hi++
	q.n--
	switch {
	case q.n == 0:
		*q = fifo{} // drop the segments; an idle queue holds nothing
	case q.hi == segmentSize:
		q.head, q.hi = q.head.next, 0
	}
	return c
}

// pushFront puts chunks back at the head, keeping their order.
func (q *fifo) pushFront(cs [][]byte) {
	for i := len(cs) - 1; i >= 0; i-- {
		if q.head == nil {
			q.push(cs[i])
			continue
		}
		if q.hi == 0 {
			q.head = &segment{next: q.head}
			q.hi = segmentSize
		}
		q.hi--
		q.head.items[q.hi] = cs[i]
		q.n++
	}
}

// writerQueue holds one writer's chunks in one pipe.
type writerQueue struct {
	writer  uint64 // the writing connection's id
	started uint64 // the pipe's clock when the writer first wrote
	ended   uint64 // the pipe's clock when the writer finished; 0 while it writes
	placed  bool   // whether it is in the ring or in later (it has chunks)
	fifo
}

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
	opens  int // OPENs minus CLOSEs
	chunks int // chunks queued
	bytes  int // bytes queued, with chunkOverhead each

	returned fifo                    // chunks given back by UNREAD
	ring     []*writerQueue          // writers that may be served, in turn order
	next     int                     // ring index of the writer whose turn it is
	writers  map[uint64]*writerQueue // writers that have not finished, by id
	later    []*writerQueue          // writers waiting for finished ones, by start
	finished []*writerQueue          // finished writers, by end; drained ones are dropped lazily
	clock    uint64

	held      int // chunks readers TOOK and have not ACKed
	heldBytes int // their bytes, with chunkOverhead each

	reader  *conn   // the connection with a READ waiting, if any
	blocked []*conn // connections whose WRITE waits for room, in order
}

func newPipe(name string) *pipe {
	return &pipe{name: name, writers: make(map[uint64]*writerQueue)}
}

func chunkCost(c []byte) int { return len(c) + chunkOverhead }

func (p *pipe) tick() uint64 {
	p.clock++
	return p.clock
}

// enqueue adds a writer's chunks at the end of its queue.
func (p *pipe) enqueue(writer uint64, chunks [][]byte) {
	q := p.writers[writer]
	if q == nil {
		q = &writerQueue{writer: writer, started: p.tick()}
		p.writers[writer] = q
	}
	for _, c := range chunks {
		q.push(c)
		p.chunks++
		p.bytes += chunkCost(c)
	}
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
	for len(p.finished) > 0 && p.finished[0].len() == 0 {
		p.finished[0] = nil
		p.finished = p.finished[1:]
	}
	if len(p.finished) == 0 {
		return math.MaxUint64
	}
	return p.finished[0].ended
}

// finish records that a writer is done with the pipe: whoever starts
// writing after this is served after its chunks.
func (p *pipe) finish(writer uint64) {
	q := p.writers[writer]
	if q == nil {
		return
	}
	delete(p.writers, writer)
	q.ended = p.tick()
	if q.len() > 0 {
		p.finished = append(p.finished, q)
	}
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
func (p *pipe) unread(chunks [][]byte) {
	p.returned.pushFront(chunks)
	for _, c := range chunks {
		p.chunks++
		p.bytes += chunkCost(c)
	}
}

// dequeue appends to dst up to max chunks totalling at most maxBytes
// (always at least one chunk if any is queued): given-back chunks first,
// then one chunk per writer in turn.
func (p *pipe) dequeue(dst [][]byte, max, maxBytes int) [][]byte {
	size := 0
	for n := 0; n < max && p.chunks > 0; n++ {
		var c []byte
		if p.returned.len() > 0 {
			c = p.returned.peek()
		} else {
			c = p.ring[p.next].peek()
		}
		if n > 0 && size+len(c) > maxBytes {
			break
		}
		dst = append(dst, p.take())
		size += len(c)
	}
	return dst
}

// take removes the next chunk in fair order.
func (p *pipe) take() []byte {
	var c []byte
	if p.returned.len() > 0 {
		c = p.returned.pop()
	} else {
		q := p.ring[p.next]
		c = q.pop()
		if q.len() == 0 {
			q.placed = false
			p.ring = slices.Delete(p.ring, p.next, p.next+1)
			if p.next == len(p.ring) {
				p.next = 0
			}
			if q.ended != 0 {
				p.promote() // a finished writer drained: its sequels may go
			}
		} else if p.next++; p.next == len(p.ring) {
			p.next = 0
		}
	}
	p.chunks--
	p.bytes -= chunkCost(c)
	return c
}

// hold counts chunks a reader took provisionally; release uncounts them
// once acknowledged or given back.
func (p *pipe) hold(chunks [][]byte) {
	for _, c := range chunks {
		p.held++
		p.heldBytes += chunkCost(c)
	}
}

func (p *pipe) release(chunks [][]byte) {
	for _, c := range chunks {
		p.held--
		p.heldBytes -= chunkCost(c)
	}
}

// unused reports whether the pipe can be removed: nobody holds it open, it
// queues nothing, no reader holds chunks of it and nobody waits on it.
func (p *pipe) unused() bool {
	return p.opens == 0 && p.chunks == 0 && p.held == 0 && p.reader == nil && len(p.blocked) == 0
}

// writerCount is the number of writers with chunks queued.
func (p *pipe) writerCount() int { return len(p.ring) + len(p.later) }
