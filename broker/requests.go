package broker

import (
	"encoding/json"
	"fmt"
)

// How the core runs each request: exec, writes, the limits they wait on,
// LIMITS and LIST. Reads and what readers give back and acknowledge are in
// reads.go; core.go has the loop that calls exec.

// exec runs one request. It returns false if the request must wait; it has
// then registered itself where it will be woken.
func (co *core) exec(c *conn, t *task) (reply, bool) {
	if t.err != nil {
		co.s.requestFailed.event("conn", c.id, "err", t.err)
		return errorReply(t.err), true
	}
	if t.early != nil {
		return *t.early, true
	}
	req := &t.req
	switch req.Cmd {
	case CmdList:
		return co.list(req.After), true
	case CmdLimits:
		return co.limits(), true
	case CmdOpen, CmdHold:
		if co.pipes[req.Pipe] == nil {
			switch {
			case len(co.pipes) >= co.s.cfg.MaxPipes:
				return co.fail(c, req, fmt.Errorf("%w: the broker holds %d", ErrTooManyPipes, len(co.pipes))), true
			case co.fixed+co.total+newPipeCost(req.Pipe) > co.s.cfg.MaxTotalBytes:
				// An empty pipe costs memory too: within the budget.
				return co.fail(c, req, fmt.Errorf("%w: the broker's memory budget is full", ErrTooManyPipes)), true
			}
		}
		p := co.pipe(req.Pipe)
		p.opens++
		if req.Cmd == CmdHold {
			if c.holds == nil {
				c.holds = make(map[*pipe]int)
			}
			c.holds[p]++
			p.holds++
		} else {
			co.store.opened(p.name, 1)
		}
		return okReply, true
	case CmdCancel:
		return okReply, true
	case CmdUnread:
		if co.storeErr != nil {
			return co.fail(c, req, fmt.Errorf("%w: %v", ErrStore, co.storeErr)), true
		}
		// Only what this connection took may come back this way: UNREAD
		// is no way around the limits.
		took := c.took[req.Pipe]
		if len(req.Chunks) > took.chunks || req.Size > took.bytes {
			return co.fail(c, req, fmt.Errorf("%w: UNREAD of %d chunks (%d bytes); this connection took %d (%d bytes) from the pipe",
				ErrBadRequest, len(req.Chunks), req.Size, took.chunks, took.bytes)), true
		}
		took.chunks -= len(req.Chunks)
		took.bytes -= req.Size
		c.took[req.Pipe] = took
		co.unread(req.Pipe, co.newItems(compact(req)))
		return okReply, true
	}
	p := co.pipes[req.Pipe]
	if p == nil {
		return co.fail(c, req, ErrNoPipe), true
	}
	if t.cancelled {
		co.removeIfUnused(p)
		return co.fail(c, req, ErrCancelled), true
	}
	switch req.Cmd {
	case CmdClose:
		if p.opens == 0 {
			return co.fail(c, req, ErrNotOpen), true
		}
		p.opens--
		if c.holds[p] > 0 { // CLOSE ends this connection's own HOLD first
			if c.holds[p]--; c.holds[p] == 0 {
				delete(c.holds, p)
			}
			p.holds--
		} else {
			co.store.opened(p.name, -1)
		}
		co.finish(c, p)
		co.removeIfUnused(p)
		return okReply, true
	case CmdWrite, CmdMWrite:
		return co.write(c, p, req)
	case CmdNack:
		co.giveBackHeld(c, p)
		return okReply, true
	default: // READ, MREAD, TAKE
		return co.read(c, p, req)
	}
}

// write queues a write's chunks, or makes it wait for room. First come,
// first served: a write waits behind earlier blocked writes even if it
// would fit, so big chunks are not starved.
func (co *core) write(c *conn, p *pipe, req *Request) (reply, bool) {
	if co.storeErr != nil {
		return co.fail(c, req, fmt.Errorf("%w: %v", ErrStore, co.storeErr)), true
	}
	first := len(p.blocked) == 0 || p.blocked[0] == c
	if !first || !co.fits(c, p, req) {
		if len(p.blocked) == 0 || !first {
			p.blocked = append(p.blocked, c)
		}
		c.waiting = p
		co.stalled[p] = struct{}{}
		return reply{}, false
	}
	if len(p.blocked) > 0 {
		p.blocked = p.blocked[1:] // it was c's turn
	}
	chunks, firstID := compact(req), co.nextID
	co.nextID += uint64(len(chunks))
	before := p.cost()
	if co.spills(c, p, req) {
		if err := co.spillWrite(c, p, chunks, firstID); err != nil {
			co.recount(p, before)
			return co.fail(c, req, fmt.Errorf("%w: %v", ErrStore, err)), true
		}
	} else {
		q := p.enqueueChunks(c.id, chunks, firstID)
		if co.persist {
			items := make([]item, len(chunks))
			for i, ch := range chunks {
				items[i] = item{data: ch, id: firstID + uint64(i)}
			}
			co.store.wrote(p.name, q.qid, items)
		}
	}
	co.recount(p, before)
	if c.writes == nil {
		c.writes = make(map[*pipe]struct{})
	}
	c.writes[p] = struct{}{}
	co.total += req.Size + chunkOverhead*len(req.Chunks)
	co.wakeReader(p)
	return okReply, true
}

// compact returns the request's chunks, copied into a buffer of their own
// when the message they arrived in is mostly something else (a long pipe
// name and a short chunk): a queued chunk keeps its whole message alive.
func compact(req *Request) [][]byte {
	if len(req.Pipe) <= req.Size {
		return req.Chunks
	}
	buf := make([]byte, 0, req.Size)
	out := make([][]byte, len(req.Chunks))
	for i, c := range req.Chunks {
		buf = append(buf, c...)
		out[i] = buf[len(buf)-len(c) : len(buf) : len(buf)]
	}
	return out
}

// newItems gives chunks their ids.
func (co *core) newItems(chunks [][]byte) []item {
	items := make([]item, len(chunks))
	for i, c := range chunks {
		items[i] = item{data: c, id: co.nextID}
		co.nextID++
	}
	return items
}

// finish ends c's turn as a writer of p: a writer that starts after this is
// served after c's chunks.
func (co *core) finish(c *conn, p *pipe) {
	if _, ok := c.writes[p]; ok {
		co.finishWriter(p, c.id)
		delete(c.writes, p)
	}
}

func (co *core) finishWriter(p *pipe, writer uint64) {
	before := p.cost()
	defer co.recount(p, before)
	if q := p.finish(writer); q != nil {
		co.store.finished(p.name, q.qid)
	}
}

// fits reports whether a write fits. Chunks readers hold, and those in
// replies not yet written, count as queued, and so do the pipes and their
// writers' queues. A pipe always takes a write when it is empty, and the
// broker when it holds no chunks, so any chunk within the chunk limit
// eventually goes through.
func (co *core) fits(c *conn, p *pipe, req *Request) bool {
	cost := req.Size + chunkOverhead*len(req.Chunks)
	if p.writers[c.id] == nil {
		cost += queueOverhead // the writer's queue is new
	}
	empty := p.chunks == 0 && p.held == 0 && p.inflight == 0
	return (empty || p.cost()+p.bytes+p.heldBytes+p.inflight+cost <= co.s.cfg.MaxPipeBytes) &&
		(co.total == 0 || co.fixed+co.total+cost <= co.s.cfg.MaxTotalBytes)
}

// freed accounts for chunks taken from a pipe and lets blocked writers in.
func (co *core) freed(p *pipe, items []item) {
	co.total -= itemsCost(items)
	co.wakeWriters(p)
	// Writers blocked on the total limit may wait on any pipe.
	for other := range co.stalled {
		if other != p {
			co.wakeWriters(other)
		}
	}
	co.removeIfUnused(p)
}

func (co *core) wakeWriters(p *pipe) {
	for len(p.blocked) > 0 {
		c := p.blocked[0]
		if !co.fits(c, p, &c.tasks[0].req) {
			return
		}
		c.waiting = nil
		co.run(c) // takes c off p.blocked
	}
	delete(co.stalled, p)
}

func (co *core) limits() reply { return limitsReply(co.s.cfg) }

// limitsReply answers LIMITS from a broker's configuration.
func limitsReply(cfg Config) reply {
	l := cfg.Limits
	b, err := json.Marshal(BrokerLimits{
		MaxName:       l.MaxName,
		MaxChunk:      l.MaxChunk,
		MaxBatch:      l.MaxBatch,
		MaxMessage:    l.maxMessage(),
		MaxPipeBytes:  cfg.MaxPipeBytes,
		MaxTotalBytes: cfg.MaxTotalBytes,
		ChunkOverhead: chunkOverhead,
	})
	if err != nil {
		return errorReply(err)
	}
	return reply{frames: [][]byte{okFrame, b}}
}

// Pages of LIST: at most listPage pipes, and no more once the names in a
// page pass listPageBytes, so one request never builds a big reply or
// holds the core for long, however many pipes there are.
const (
	listPage      = 1000
	listPageBytes = 128 << 10
)

// list answers a page of pipes, by name, from the first after the given
// one; a third frame, the last name, says there are more.
func (co *core) list(after string) reply {
	infos := make([]PipeInfo, 0, min(listPage, len(co.pipes)))
	more, names := false, 0
	co.names.AscendGreaterOrEqual(after, func(name string) bool {
		if name == after && after != "" {
			return true
		}
		if len(infos) == listPage || names > listPageBytes {
			more = true
			return false
		}
		p := co.pipes[name]
		infos = append(infos, PipeInfo{
			Name:    p.name,
			Opens:   p.opens,
			Chunks:  p.chunks,
			Bytes:   p.bytes - chunkOverhead*p.chunks,
			Writers: p.writerCount(),
			Blocked: len(p.blocked),
			Reader:  p.reader != nil,
			Taken:   p.held,
		})
		names += len(name)
		return true
	})
	return listReply(infos, more)
}

// listReply answers LIST with a page of pipes and, if more follow, the
// name to ask after.
func listReply(infos []PipeInfo, more bool) reply {
	b, err := json.Marshal(infos)
	if err != nil {
		return errorReply(err)
	}
	frames := [][]byte{okFrame, b}
	if more {
		frames = append(frames, []byte(infos[len(infos)-1].Name))
	}
	return reply{frames: frames}
}
