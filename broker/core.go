package broker

import (
	"context"
	"encoding/json"
	"log/slog"
	"runtime/debug"
	"sort"
	"time"
)

// maxReplyBytes bounds the chunks one MREAD reply carries (it always carries
// at least one), so a batch reply never holds up a connection for long.
const maxReplyBytes = 1024 << 10

// core is the broker's core: the pipe table, every queue and every waiting
// request. One goroutine (loop) owns it; connections talk to it through
// Server.events, so no lock guards protocol state.
type core struct {
	s       *Server
	log     *slog.Logger
	pipes   map[string]*pipe
	conns   map[uint64]*conn
	total   int // bytes queued in all pipes
	stalled map[*pipe]struct{}

	peak    int              // most bytes queued since memory was last released
	release <-chan time.Time // fires to release memory after a big drain
}

func newCore(s *Server) *core {
	return &core{
		s:       s,
		log:     s.log,
		pipes:   make(map[string]*pipe),
		conns:   make(map[uint64]*conn),
		stalled: make(map[*pipe]struct{}),
	}
}

func (co *core) loop() {
	defer co.s.wg.Done()
	defer close(co.s.done)
	for {
		select {
		case ev := <-co.s.events:
			co.handle(ev)
			co.watchMemory()
		case <-co.release:
			co.release = nil
			co.peak = co.total
			// A broker that has gone quiet allocates nothing, so the Go
			// runtime would keep a drained queue's memory for minutes: a
			// second burst then stacks on top of it. Hand it back now.
			debug.FreeOSMemory()
		case <-co.s.quit:
			co.shutdown()
			return
		}
	}
}

// releaseAfter is how long after a big drain the broker returns the memory
// to the system; releaseAbove is how big a queue counts as big.
const (
	releaseAfter = time.Second
	releaseAbove = 32 << 20
)

// watchMemory schedules a release of memory once most of a big queue has
// been read.
func (co *core) watchMemory() {
	co.peak = max(co.peak, co.total)
	if co.release == nil && co.peak >= releaseAbove && co.total <= co.peak/4 {
		co.release = time.After(releaseAfter)
	}
}

func (co *core) handle(ev event) {
	c := ev.conn
	switch {
	case ev.up:
		co.conns[c.id] = c
	case ev.down:
		co.disconnect(c)
	case ev.returned != nil:
		for i := len(ev.returned) - 1; i >= 0; i-- {
			r := ev.returned[i]
			co.unread(r.pipe, r.chunks)
		}
	case ev.req != nil:
		co.submit(c, ev.req)
	}
}

// submit queues a request behind the connection's earlier ones and runs what
// can run. A CANCEL acts as it arrives: it marks this connection's reads of
// the pipe, including one already waiting, to be answered "cancelled".
func (co *core) submit(c *conn, p *task) {
	if c.gone {
		return
	}
	if p.err == nil && p.req.Cmd == CmdCancel {
		for _, q := range c.pending {
			if q.err == nil && q.req.isRead() && q.req.Pipe == p.req.Pipe {
				q.cancelled = true
			}
		}
		if w := c.waiting; w != nil && w.reader == c && w.name == p.req.Pipe {
			w.reader = nil
			c.waiting = nil
		}
	}
	c.pending = append(c.pending, p)
	if c.waiting == nil {
		co.run(c)
	}
}

// run executes the connection's requests in order until one has to wait.
func (co *core) run(c *conn) {
	for len(c.pending) > 0 {
		p := c.pending[0]
		r, ok := co.exec(c, p)
		if !ok {
			return
		}
		c.pending[0] = nil
		c.pending = c.pending[1:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		co.reply(c, p, r)
	}
}

func (co *core) reply(c *conn, p *task, r reply) {
	r.envelope = p.req.Envelope
	r.cost = p.cost
	r.credit = true
	if !c.out.push(r) && len(r.chunks) > 0 {
		// The connection died after the chunks were taken: they go back.
		co.unread(r.pipe, r.chunks)
	}
}

func errorReply(err error) reply { return reply{frames: replyError(err)} }

// exec runs one request. It returns false if the request must wait; it has
// then registered itself where it will be woken.
func (co *core) exec(c *conn, p *task) (reply, bool) {
	if p.err != nil {
		co.log.Info("bad request", "conn", c.id, "err", p.err)
		return errorReply(p.err), true
	}
	req := &p.req
	if req.Cmd == CmdList {
		return co.list(), true
	}
	pp := co.pipes[req.Pipe]
	switch req.Cmd {
	case CmdOpen:
		if pp == nil {
			pp = newPipe(req.Pipe)
			co.pipes[req.Pipe] = pp
		}
		pp.opens++
		return reply{frames: replyOK()}, true
	case CmdCancel:
		return reply{frames: replyOK()}, true
	case CmdUnread:
		co.unread(req.Pipe, req.Chunks)
		return reply{frames: replyOK()}, true
	}
	if pp == nil {
		return co.fail(c, req, ErrNoPipe), true
	}
	switch req.Cmd {
	case CmdClose:
		if pp.opens == 0 {
			return co.fail(c, req, ErrNotOpen), true
		}
		pp.opens--
		co.removeIfUnused(pp)
		return reply{frames: replyOK()}, true
	case CmdWrite, CmdMWrite:
		// First come, first served: a write waits behind earlier blocked
		// writes even if it would fit, so big chunks are not starved.
		first := len(pp.blocked) == 0 || pp.blocked[0] == c
		if !first || !co.fits(pp, req) {
			if first && len(pp.blocked) == 0 || !first {
				pp.blocked = append(pp.blocked, c)
			}
			c.waiting = pp
			co.stalled[pp] = struct{}{}
			return reply{}, false
		}
		if len(pp.blocked) > 0 {
			pp.blocked = pp.blocked[1:] // it was c's turn
		}
		pp.enqueue(c.id, req.Chunks)
		co.total += req.Size + chunkOverhead*len(req.Chunks)
		co.wakeReader(pp)
		return reply{frames: replyOK()}, true
	default: // READ, MREAD
		if p.cancelled {
			co.removeIfUnused(pp)
			return co.fail(c, req, ErrCancelled), true
		}
		if pp.reader != nil && pp.reader != c {
			return co.fail(c, req, ErrReaderBusy), true
		}
		if pp.chunks == 0 {
			pp.reader = c
			c.waiting = pp
			return reply{}, false
		}
		pp.reader = nil
		// An MREAD reply is "OK" and the chunks: one slice holds both.
		head := 0
		if req.Cmd == CmdMRead {
			head = 1
		}
		frames := make([][]byte, head, head+min(req.Max, pp.chunks))
		if head == 1 {
			frames[0] = okFrame
		}
		frames = pp.dequeue(frames, req.Max, maxReplyBytes)
		chunks := frames[head:]
		co.freed(pp, chunks)
		return reply{pipe: pp.name, chunks: chunks, frames: frames}, true
	}
}

// fail answers a request with an error. The reason names no pipe: the
// client knows which it asked for, and the log says it for the operator.
func (co *core) fail(c *conn, req *Request, err error) reply {
	level := slog.LevelInfo
	if err == ErrCancelled {
		level = slog.LevelDebug // the client asked for it
	}
	co.log.Log(context.Background(), level, "request failed", "conn", c.id, "cmd", req.Cmd, "pipe", abbrev([]byte(req.Pipe)), "err", err)
	return errorReply(err)
}

// fits reports whether a write fits. A pipe always takes a write when it is
// empty, so any chunk within the chunk limit eventually goes through.
func (co *core) fits(p *pipe, req *Request) bool {
	cost := req.Size + chunkOverhead*len(req.Chunks)
	return (p.chunks == 0 || p.bytes+cost <= co.s.cfg.MaxPipeBytes) &&
		co.total+cost <= co.s.cfg.MaxTotalBytes
}

// unread puts chunks back at the head of a pipe, creating it if it went away
// meanwhile. It ignores the limits: the chunks were counted in before.
func (co *core) unread(name string, chunks [][]byte) {
	p := co.pipes[name]
	if p == nil {
		p = newPipe(name)
		co.pipes[name] = p
	}
	p.unread(chunks)
	for _, c := range chunks {
		co.total += chunkCost(c)
	}
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

// freed accounts for chunks taken from a pipe and lets blocked writers in.
func (co *core) freed(p *pipe, chunks [][]byte) {
	for _, c := range chunks {
		co.total -= chunkCost(c)
	}
	co.wakeWriters(p)
	// Writers blocked on the total limit may wait on any pipe.
	for q := range co.stalled {
		if q != p {
			co.wakeWriters(q)
		}
	}
	co.removeIfUnused(p)
}

func (co *core) wakeWriters(p *pipe) {
	for len(p.blocked) > 0 {
		c := p.blocked[0]
		if !co.fits(p, &c.pending[0].req) {
			return
		}
		c.waiting = nil
		co.run(c) // takes c off p.blocked
	}
	delete(co.stalled, p)
}

func (co *core) removeIfUnused(p *pipe) {
	if p.unused() && co.pipes[p.name] == p {
		delete(co.pipes, p.name)
		delete(co.stalled, p)
	}
}

// disconnect forgets a connection. Its requests not yet executed are
// dropped (none was acknowledged); the chunks it wrote stay.
func (co *core) disconnect(c *conn) {
	if c.gone {
		return
	}
	c.gone = true
	delete(co.conns, c.id)
	if p := c.waiting; p != nil {
		if p.reader == c {
			p.reader = nil
		}
		if i := indexOf(p.blocked, c); i >= 0 {
			p.blocked = append(p.blocked[:i], p.blocked[i+1:]...)
			// Whoever was behind it may fit now.
			co.wakeWriters(p)
		}
		c.waiting = nil
		co.removeIfUnused(p)
	}
	c.pending = nil
	co.log.Debug("disconnected", "conn", c.id)
}

func indexOf(cs []*conn, c *conn) int {
	for i, x := range cs {
		if x == c {
			return i
		}
	}
	return -1
}

// shutdown answers every waiting request with an error, reports what is
// discarded and tells every connection to flush and close.
func (co *core) shutdown() {
	chunks, bytes, pipes := 0, 0, 0
	for _, p := range co.pipes {
		if p.chunks > 0 {
			pipes++
		}
		chunks += p.chunks
		bytes += p.bytes - chunkOverhead*p.chunks
	}
	for _, c := range co.conns {
		if c.waiting != nil && len(c.pending) > 0 {
			co.reply(c, c.pending[0], errorReply(ErrShutdown))
		}
		c.out.shutdown()
	}
	// Chunks live in memory only, by design: say what goes.
	co.log.Info("shutting down", "discarded_chunks", chunks, "discarded_bytes", bytes, "pipes_with_chunks", pipes)
}

func (co *core) list() reply {
	infos := make([]PipeInfo, 0, len(co.pipes))
	for _, p := range co.pipes {
		infos = append(infos, PipeInfo{
			Name:    p.name,
			Opens:   p.opens,
			Chunks:  p.chunks,
			Bytes:   p.bytes - chunkOverhead*p.chunks,
			Writers: p.writerCount(),
			Blocked: len(p.blocked),
			Reader:  p.reader != nil,
		})
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	b, err := json.Marshal(infos)
	if err != nil {
		return errorReply(err)
	}
	return reply{frames: [][]byte{okFrame, b}}
}
