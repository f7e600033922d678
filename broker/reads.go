package broker

import "fmt"

// How the core answers reads: READ, MREAD and TAKE, what a reader gives
// back (UNREAD, NACK, a reader gone) and acknowledges (ACK), and the
// accounting of chunks on their way to a reader. requests.go has the rest.

// maxReplyBytes bounds the chunks one MREAD reply carries (it always carries
// at least one), so a batch reply never holds up a connection for long.
const maxReplyBytes = 1024 << 10

// delivered accounts for a read reply written to its connection: its
// chunks are consumed, and stop counting against the limits.
func (co *core) delivered(p *pipe, items []item) {
	for _, it := range items {
		delete(co.inflight, it.id)
	}
	co.store.consumed(items)
	p.inflight -= itemsCost(items)
	co.freed(p, items)
}

// undelivered puts back at the head of its pipe a read reply that never
// reached its connection. Its chunks never stopped counting.
func (co *core) undelivered(p *pipe, items []item) {
	for _, it := range items {
		delete(co.inflight, it.id)
	}
	p.inflight -= itemsCost(items)
	if co.pipes[p.name] != p {
		p = co.pipe(p.name) // it went away meanwhile
	}
	co.store.returned(p.name, items, false)
	co.returnChunks(p, items)
}

// ackNow consumes the oldest chunks the connection holds from the pipe, as
// the ACK arrives; its reply waits its turn.
func (co *core) ackNow(c *conn, req *Request) reply {
	p := co.pipes[req.Pipe]
	if p == nil {
		return co.fail(c, req, ErrNoPipe)
	}
	h := c.held[p]
	if h == nil || h.len() < req.Max {
		held := 0
		if h != nil {
			held = h.len()
		}
		return co.fail(c, req, fmt.Errorf("%w: ACK %d, but %d chunks are held", ErrBadRequest, req.Max, held))
	}
	acked := h.take(req.Max)
	if h.len() == 0 {
		delete(c.held, p)
	}
	p.release(acked)
	co.store.consumed(acked)
	co.freed(p, acked)
	return okReply
}

// giveBackHeld puts every chunk the connection holds from the pipe back at
// its head, in the order they were taken.
func (co *core) giveBackHeld(c *conn, p *pipe) {
	h := c.held[p]
	if h == nil {
		return
	}
	delete(c.held, p)
	back := h.take(h.len())
	p.release(back)
	co.store.returned(p.name, back, false)
	co.returnChunks(p, back)
}

// read answers a READ, MREAD or TAKE with what the pipe has, or makes it
// wait. The chunks of a TAKE stay the connection's, held, until it ACKs or
// NACKs them or goes away: they still count against the limits, and they
// are not in the reply's give-back list, since what the connection holds
// goes back when it goes.
func (co *core) read(c *conn, p *pipe, req *Request) (reply, bool) {
	if p.reader != nil && p.reader != c {
		return co.fail(c, req, ErrReaderBusy), true
	}
	if p.chunks == 0 {
		p.reader = c
		c.waiting = p
		return reply{}, false
	}
	p.reader = nil
	// An MREAD or TAKE reply is "OK" and the chunks: one slice holds both.
	head := 0
	if req.Cmd != CmdRead {
		head = 1
	}
	before, spilled := p.cost(), p.spilled
	items := p.dequeue(make([]item, 0, min(req.Max, p.chunks)), req.Max, maxReplyBytes)
	co.recount(p, before)
	co.spilled += p.spilled - spilled
	if p.lostErr != nil {
		co.lostSpilled(p)
		if len(items) == 0 { // all there was is lost: wait for more
			p.reader = c
			c.waiting = p
			return reply{}, false
		}
	}
	frames := make([][]byte, head, head+len(items))
	if head == 1 {
		frames[0] = okFrame
	}
	for _, it := range items {
		frames = append(frames, it.data)
	}
	if req.Cmd == CmdTake {
		if c.held == nil {
			c.held = make(map[*pipe]*heldItems)
		}
		h := c.held[p]
		if h == nil {
			h = &heldItems{}
			c.held[p] = h
		}
		h.add(items)
		p.hold(items)
		return reply{frames: frames}, true
	}
	// They count against the limits, and a store records them as consumed,
	// once written to the connection (delivered); if they never are, they
	// come back (undelivered).
	cost := itemsCost(items)
	p.inflight += cost
	took := c.took[p.name]
	took.chunks += len(items)
	took.bytes += cost - chunkOverhead*len(items)
	if c.took == nil {
		c.took = make(map[string]taken)
	}
	c.took[p.name] = took
	co.removeIfUnused(p) // a pipe emptied by a read goes now, not when the reply is written
	if co.store.durable() {
		if co.inflight == nil {
			co.inflight = make(map[uint64]inflightItem)
		}
		for _, it := range items {
			co.inflight[it.id] = inflightItem{p: p, item: it}
		}
	}
	return reply{pipe: p, items: items, frames: frames}, true
}

// unread puts an UNREAD's chunks at the head of a pipe, creating it if it
// went away meanwhile. It ignores the limits: no more comes back than the
// connection took.
func (co *core) unread(name string, items []item) {
	p := co.pipe(name)
	co.total += itemsCost(items)
	co.store.returned(name, items, true)
	co.returnChunks(p, items)
}

// returnChunks puts chunks still counted in the total back at the head of
// the pipe, and lets a waiting reader have them.
func (co *core) returnChunks(p *pipe, items []item) {
	p.unread(items)
	co.wakeReader(p)
}

// wakeReader lets a waiting reader take the chunks that just arrived.
func (co *core) wakeReader(p *pipe) {
	if r := p.reader; r != nil && p.chunks > 0 {
		p.reader = nil
		r.waiting = nil
		co.run(r)
	}
}
