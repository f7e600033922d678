package broker

import (
	"errors"
	"io"
	"net"
	"time"
)

// conn is the broker's side of one connection. Its reader and writer
// goroutines own the wire halves (the core writes a short reply itself only
// while it holds the outbox and the writer is idle: outbox.sendNow); the
// core owns the rest.
type conn struct {
	id  uint64
	w   *wire
	out *outbox

	// Owned by the core.
	tasks   []*task              // requests not yet answered, in order
	waiting *pipe                // the pipe the head request waits on, if any
	writes  map[*pipe]struct{}   // pipes it has written to and not closed
	held    map[*pipe]*heldItems // chunks it TOOK and has not ACKed, by pipe
	holds   map[*pipe]int        // its HOLDs: opens that end with it
	took    map[string]taken     // what its READs and MREADs took, by pipe, which it may UNREAD
	gone    bool
}

// taken counts what a connection took from a pipe with READ and MREAD.
type taken struct{ chunks, bytes int }

// task is a request waiting its turn in its connection's order.
type task struct {
	req       Request
	err       error // a parse error, to be answered in turn
	cost      int
	cancelled bool   // a later CANCEL covers this read or write
	early     *reply // the reply of a request that acted on arrival (ACK)
}

// readLoop reads requests and hands them to the core until the connection
// fails. Only the core answers requests; PINGs are answered here.
func (s *Server) readLoop(c *conn) {
	defer s.wg.Done()
	lim := s.cfg.Limits
	for {
		if !c.out.admit() {
			break
		}
		msg, err := c.w.readMessage(lim.maxMessage(), lim.maxFrames())
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("connection read failed", "conn", c.id, "err", err)
			}
			break
		}
		if msg.command != "" {
			if msg.command != "PING" {
				c.out.release([]reply{{credit: true}})
				continue
			}
			// PONG echoes the context after the TTL: up to 16 bytes (ZMTP 3.1).
			body := msg.frames[0]
			if len(body) >= 2 {
				body = body[2:min(len(body), 2+16)]
			}
			// The PONG holds the PING's credit until it is written, so a
			// peer that pings and never reads is throttled like any other.
			c.out.push(reply{command: "PONG", frames: [][]byte{body}, credit: true})
			continue
		}
		t := &task{}
		if msg.err != nil {
			t.err = msg.err
			t.req.Envelope = msg.envelope
		} else {
			t.req, t.err = ParseRequest(msg.frames, lim)
			t.cost = t.req.Size
			if t.err == nil && t.req.isRead() {
				// Its reply is not built yet: hold room for it now, or a
				// peer could queue reads faster than replies fill the
				// bound below.
				t.cost += maxReplyBytes
			}
			c.out.charge(t.cost)
		}
		if !s.send(event{conn: c, task: t}) {
			break
		}
	}
	c.w.close()
	c.out.shutdown()
	s.send(event{conn: c, down: true})
}

// writeLoop sends replies, coalescing whatever is queued into one flush.
func (s *Server) writeLoop(c *conn) {
	defer s.wg.Done()
	defer s.untrack(c.w.nc)
	var batch []reply
	for {
		select {
		case <-c.out.wake:
		case <-c.out.stop:
			s.drain(c)
			return
		}
		batch = c.out.take(batch[:0])
		if unsent, err := s.write(c, batch); err != nil {
			s.log.Debug("connection write failed", "conn", c.id, "err", err)
			c.w.close()
			s.giveBack(c, unsent)
			return
		}
		c.out.idle()
		c.out.release(batch)
		s.delivered(c, batch)
		clear(batch)
	}
}

// write sends a batch of replies, coalesced into as few syscalls as the
// buffer allows. On failure it returns the replies that did not reach the
// kernel whole: those the peer cannot have had.
func (s *Server) write(c *conn, batch []reply) (unsent []reply, err error) {
	c.w.takeSent()
	for _, r := range batch {
		switch {
		case r.encoded: // buffered already, ahead of the rest
		case r.command != "":
			err = c.w.writeCommand(r.command, r.frames[0])
		default:
			err = c.w.writeMessage(r.envelope, r.frames)
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		err = c.w.flush()
	}
	if err != nil {
		return batch[c.w.takeSent():], err
	}
	return nil, nil
}

// drain sends what is queued when a connection is stopped: the replies the
// core queued last (at shutdown, the errors for waiting reads) are sent
// within a bound, then the connection closes.
func (s *Server) drain(c *conn) {
	c.w.nc.SetWriteDeadline(time.Now().Add(drainTimeout))
	unsent, _ := s.write(c, c.out.take(nil))
	c.w.close()
	s.giveBack(c, unsent)
}

// giveBack kills the outbox and returns to their pipes the chunks of read
// replies that never reached the peer: failed, the replies of the last
// batch that the kernel did not take whole, and whatever was still queued.
// The chunks go to the next reader; a chunk the peer may have had is never
// given back, so no reader sees one twice.
func (s *Server) giveBack(c *conn, failed []reply) {
	var ret []reply
	for _, r := range append(failed, c.out.kill()...) {
		if len(r.items) > 0 {
			ret = append(ret, r)
		}
	}
	if len(ret) > 0 {
		n := 0
		for _, r := range ret {
			n += len(r.items)
		}
		s.log.Debug("giving back chunks never sent", "conn", c.id, "replies", len(ret), "chunks", n)
		s.send(event{conn: c, returned: ret})
	}
}

const drainTimeout = 500 * time.Millisecond

// delivered tells the core which read replies reached the connection: the
// chunks stop counting against the limits, and a store records them as
// consumed. One event per batch written, and none for a batch without
// chunks.
func (s *Server) delivered(c *conn, batch []reply) {
	var out []reply
	for _, r := range batch {
		if len(r.items) > 0 {
			out = append(out, reply{pipe: r.pipe, items: r.items})
		}
	}
	if len(out) > 0 {
		s.send(event{conn: c, delivered: out})
	}
}

// heldItems is what a connection took from a pipe with TAKE and has not
// acknowledged: the replies' items, in order, kept as the slices they were
// taken in (no copy per chunk).
type heldItems struct {
	blocks [][]item
	off    int // items of blocks[0] already gone
	n      int
}

func (h *heldItems) add(items []item) {
	h.blocks = append(h.blocks, items)
	h.n += len(items)
}

func (h *heldItems) len() int { return h.n }

// take removes and returns the oldest n items. The common case, n items
// from one block (an ACK for what one TAKE returned), shares the block's
// memory instead of copying it.
func (h *heldItems) take(n int) []item {
	if n == 0 {
		return nil
	}
	if b := h.blocks[0][h.off:]; n <= len(b) {
		out := b[:n:n]
		if h.off += n; h.off == len(h.blocks[0]) {
			h.blocks[0] = nil
			h.blocks, h.off = h.blocks[1:], 0
		}
		h.n -= n
		return out
	}
	out := make([]item, 0, n)
	for len(out) < n {
		b := h.blocks[0][h.off:]
		k := min(len(b), n-len(out))
		out = append(out, b[:k]...)
		if h.off += k; h.off == len(h.blocks[0]) {
			h.blocks[0] = nil
			h.blocks, h.off = h.blocks[1:], 0
		}
	}
	h.n -= n
	return out
}

// each calls fn for every item, oldest first.
func (h *heldItems) each(fn func(item)) {
	for i, b := range h.blocks {
		if i == 0 {
			b = b[h.off:]
		}
		for _, it := range b {
			fn(it)
		}
	}
}
