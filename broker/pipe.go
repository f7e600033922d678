package broker

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
	writer uint64 // the writing connection's id
	fifo
}

// pipe is a named queue: one FIFO per writer, served round robin, plus the
// chunks readers gave back, served first. It is owned by the broker's core
// goroutine; nothing here is safe for concurrent use.
type pipe struct {
	name   string
	opens  int // OPENs minus CLOSEs
	chunks int // chunks queued
	bytes  int // bytes queued, with chunkOverhead each

	returned fifo                    // chunks given back by UNREAD
	ring     []*writerQueue          // writers with chunks, in turn order
	next     int                     // ring index of the writer whose turn it is
	writers  map[uint64]*writerQueue // the same queues, by writer

	reader  *conn   // the connection with a READ waiting, if any
	blocked []*conn // connections whose WRITE waits for room, in order
}

func newPipe(name string) *pipe {
	return &pipe{name: name, writers: make(map[uint64]*writerQueue)}
}

func chunkCost(c []byte) int { return len(c) + chunkOverhead }

// enqueue adds a writer's chunks at the end of its queue.
func (p *pipe) enqueue(writer uint64, chunks [][]byte) {
	q := p.writers[writer]
	if q == nil {
		q = &writerQueue{writer: writer}
		p.writers[writer] = q
		// A new writer joins just before the one whose turn it is, so it is
		// served after everyone already waiting: within one round.
		p.ring = append(p.ring, nil)
		copy(p.ring[p.next+1:], p.ring[p.next:])
		p.ring[p.next] = q
		p.next++
		if p.next == len(p.ring) {
			p.next = 0
		}
	}
	for _, c := range chunks {
		q.push(c)
		p.chunks++
		p.bytes += chunkCost(c)
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
			delete(p.writers, q.writer)
			p.ring = append(p.ring[:p.next], p.ring[p.next+1:]...)
			if p.next == len(p.ring) {
				p.next = 0
			}
		} else if p.next++; p.next == len(p.ring) {
			p.next = 0
		}
	}
	p.chunks--
	p.bytes -= chunkCost(c)
	return c
}

// unused reports whether the pipe can be removed: nobody holds it open, it
// queues nothing and nobody waits on it.
func (p *pipe) unused() bool {
	return p.opens == 0 && p.chunks == 0 && p.reader == nil && len(p.blocked) == 0
}

// writerCount is the number of writers with chunks queued.
func (p *pipe) writerCount() int { return len(p.ring) }
