package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"

	"github.com/google/btree"
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
	names   *btree.BTreeG[string] // the pipes' names, in order, for LIST
	conns   map[uint64]*conn
	total   int // bytes queued in all pipes
	stalled map[*pipe]struct{}

	peak    int              // most bytes queued since memory was last released
	release <-chan time.Time // fires to release memory after a big drain

	// The store, and the replies that wait for it (see store.go). Every
	// change recorded bumps gen; a reply made after a change waits in
	// deferred until a commit covering that gen is done, and replies leave
	// in the order made, so a connection's replies stay in order.
	store    store
	persist  bool   // the store keeps something: changes are committed
	nextID   uint64 // the id of the next chunk queued
	gen      uint64 // changes recorded so far
	dirty    bool   // changes recorded since the last commit was asked for
	deferred []deferredReply
	storeErr error                   // the store failed: nothing more is acknowledged
	inflight map[uint64]inflightItem // read replies' chunks not yet written, with a durable store
}

type inflightItem struct {
	p *pipe
	item
}

type deferredReply struct {
	c   *conn
	t   *task
	r   reply
	gen uint64
}

func newCore(s *Server) *core {
	return &core{
		s:       s,
		log:     s.log,
		pipes:   make(map[string]*pipe),
		conns:   make(map[uint64]*conn),
		stalled: make(map[*pipe]struct{}),
		store:   memStore{},
		nextID:  1,
		names:   btree.NewOrderedG[string](32),
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
			co.undelivered(r.pipe, r.items)
		}
	case ev.delivered != nil:
		for _, r := range ev.delivered {
			co.delivered(r.pipe, r.items)
		}
	case ev.compacted != nil:
		if ls, ok := co.store.(*logStore); ok {
			if err := ls.compacted(ev.compacted); err != nil {
				co.storeFailed(err)
			}
		}
	case ev.committed != nil:
		co.committed(ev.committed.gen, ev.committed.err)
	case ev.task != nil:
		co.submit(c, ev.task)
	}
	if co.dirty {
		co.dirty = false
		gen := co.gen
		co.store.commit(func(err error) {
			co.s.notify(event{committed: &commitDone{gen: gen, err: err}})
		})
		if err := co.store.compact(co); err != nil {
			co.storeFailed(err)
		}
	}
}

// commitDone says the store has made every change up to gen durable, or
// failed to.
type commitDone struct {
	gen uint64
	err error
}

// recorded notes that the store was told of a change, to be committed at
// the end of the event.
func (co *core) recorded() {
	if co.persist {
		co.gen++
		co.dirty = true
	}
}

// committed sends the replies that waited for changes up to gen.
func (co *core) committed(gen uint64, err error) {
	if err != nil {
		co.storeFailed(err)
	}
	n := 0
	for n < len(co.deferred) && co.deferred[n].gen <= gen {
		d := co.deferred[n]
		if co.storeErr != nil && d.t.req.isWrite() {
			// Not stored: not acknowledged.
			d.r = errorReply(fmt.Errorf("%w: %v", ErrStore, co.storeErr))
		}
		co.send(d.c, d.r)
		n++
	}
	clear(co.deferred[:n])
	co.deferred = co.deferred[n:]
}

func (co *core) storeFailed(err error) {
	if co.storeErr == nil {
		co.storeErr = err
		co.log.Error("store failed: writes are refused from now on", "err", err)
	}
}

// submit queues a request behind the connection's earlier ones and runs what
// can run. A CANCEL acts as it arrives: it marks this connection's reads and
// writes of the pipe that are not yet answered, including one already
// waiting, to be answered "cancelled".
func (co *core) submit(c *conn, t *task) {
	if c.gone {
		return
	}
	if t.err == nil && t.req.Cmd == CmdCancel {
		co.cancel(c, t.req.Pipe)
	}
	c.tasks = append(c.tasks, t)
	if c.waiting == nil {
		co.run(c)
	}
}

// cancel marks c's unanswered reads and writes of the pipe named, and
// stops the one waiting, if any, so that run answers them in turn.
func (co *core) cancel(c *conn, name string) {
	for _, t := range c.tasks {
		if t.err == nil && (t.req.isRead() || t.req.isWrite()) && t.req.Pipe == name {
			t.cancelled = true
		}
	}
	p := c.waiting
	if p == nil || p.name != name {
		return
	}
	c.waiting = nil
	if p.reader == c {
		p.reader = nil
	}
	if i := slices.Index(p.blocked, c); i >= 0 {
		p.blocked = slices.Delete(p.blocked, i, i+1)
		co.wakeWriters(p) // whoever was behind it may fit now
	}
}

// run executes the connection's requests in order until one has to wait.
func (co *core) run(c *conn) {
	for len(c.tasks) > 0 {
		t := c.tasks[0]
		r, ok := co.exec(c, t)
		if !ok {
			return
		}
		c.tasks[0] = nil
		c.tasks = c.tasks[1:]
		if len(c.tasks) == 0 {
			c.tasks = nil
		}
		co.reply(c, t, r)
	}
}

func (co *core) reply(c *conn, t *task, r reply) {
	r.envelope = t.req.Envelope
	r.cost = t.cost
	r.credit = true
	if co.store.durable() && (co.dirty || len(co.deferred) > 0) {
		co.deferred = append(co.deferred, deferredReply{c: c, t: t, r: r, gen: co.gen})
		return
	}
	co.send(c, r)
}

// send queues a reply for the connection's writer.
func (co *core) send(c *conn, r reply) {
	if !c.out.push(r) && len(r.items) > 0 {
		// The connection died after the chunks were taken: they go back.
		co.undelivered(r.pipe, r.items)
	}
}

// delivered accounts for a read reply written to its connection: its
// chunks are consumed, and stop counting against the limits.
func (co *core) delivered(p *pipe, items []item) {
	for _, it := range items {
		delete(co.inflight, it.id)
	}
	co.store.consumed(items)
	co.recorded()
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
	co.recorded()
	co.returnChunks(p, items)
}

// pipe returns the pipe of that name, creating it if needed.
func (co *core) pipe(name string) *pipe {
	p := co.pipes[name]
	if p == nil {
		p = newPipe(name)
		co.addPipe(p)
	}
	return p
}

// addPipe and the delete in removeIfUnused keep the table and the index of
// names, which LIST pages through, in step.
func (co *core) addPipe(p *pipe) {
	co.pipes[p.name] = p
	co.names.ReplaceOrInsert(p.name)
}

func errorReply(err error) reply { return reply{frames: replyError(err)} }

var okReply = reply{frames: [][]byte{okFrame}}

// exec runs one request. It returns false if the request must wait; it has
// then registered itself where it will be woken.
func (co *core) exec(c *conn, t *task) (reply, bool) {
	if t.err != nil {
		co.log.Info("bad request", "conn", c.id, "err", t.err)
		return errorReply(t.err), true
	}
	req := &t.req
	switch req.Cmd {
	case CmdList:
		return co.list(req.After), true
	case CmdLimits:
		return co.limits(), true
	case CmdOpen, CmdHold:
		if co.pipes[req.Pipe] == nil && len(co.pipes) >= co.s.cfg.MaxPipes {
			return co.fail(c, req, fmt.Errorf("%w: the broker holds %d", ErrTooManyPipes, len(co.pipes))), true
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
			co.recorded()
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
			co.recorded()
		}
		co.finish(c, p)
		co.removeIfUnused(p)
		return okReply, true
	case CmdWrite, CmdMWrite:
		return co.write(c, p, req)
	case CmdAck:
		return co.ack(c, p, req)
	case CmdNack:
		co.giveBackHeld(c, p)
		return okReply, true
	default: // READ, MREAD, TAKE
		return co.read(c, p, req)
	}
}

// ack consumes the oldest chunks the connection holds from the pipe.
func (co *core) ack(c *conn, p *pipe, req *Request) (reply, bool) {
	h := c.held[p]
	if h == nil || h.len() < req.Max {
		held := 0
		if h != nil {
			held = h.len()
		}
		return co.fail(c, req, fmt.Errorf("%w: ACK %d, but %d chunks are held", ErrBadRequest, req.Max, held)), true
	}
	acked := make([]item, req.Max)
	for i := range acked {
		acked[i] = h.pop()
	}
	if h.len() == 0 {
		delete(c.held, p)
	}
	p.release(acked)
	co.store.consumed(acked)
	co.recorded()
	co.freed(p, acked)
	return okReply, true
}

// giveBackHeld puts every chunk the connection holds from the pipe back at
// its head, in the order they were taken.
func (co *core) giveBackHeld(c *conn, p *pipe) {
	h := c.held[p]
	if h == nil {
		return
	}
	delete(c.held, p)
	back := make([]item, 0, h.len())
	for h.len() > 0 {
		back = append(back, h.pop())
	}
	p.release(back)
	co.store.returned(p.name, back, false)
	co.recorded()
	co.returnChunks(p, back)
}

// write queues a write's chunks, or makes it wait for room. First come,
// first served: a write waits behind earlier blocked writes even if it
// would fit, so big chunks are not starved.
func (co *core) write(c *conn, p *pipe, req *Request) (reply, bool) {
	if co.storeErr != nil {
		return co.fail(c, req, fmt.Errorf("%w: %v", ErrStore, co.storeErr)), true
	}
	first := len(p.blocked) == 0 || p.blocked[0] == c
	if !first || !co.fits(p, req) {
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
	items := co.newItems(compact(req))
	q := p.enqueue(c.id, items)
	co.store.wrote(p.name, q.qid, items)
	co.recorded()
	if c.writes == nil {
		c.writes = make(map[*pipe]struct{})
	}
	c.writes[p] = struct{}{}
	co.total += req.Size + chunkOverhead*len(req.Chunks)
	co.wakeReader(p)
	return okReply, true
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
	items := p.dequeue(make([]item, 0, min(req.Max, p.chunks)), req.Max, maxReplyBytes)
	frames := make([][]byte, head, head+len(items))
	if head == 1 {
		frames[0] = okFrame
	}
	for _, it := range items {
		frames = append(frames, it.data)
	}
	if req.Cmd == CmdTake {
		if c.held == nil {
			c.held = make(map[*pipe]*fifo[item])
		}
		h := c.held[p]
		if h == nil {
			h = &fifo[item]{}
			c.held[p] = h
		}
		for _, it := range items {
			h.push(it)
		}
		p.hold(items)
		return reply{frames: frames}, true
	}
	// They count against the limits, and a store records them as consumed,
	// once written to the connection (delivered); if they never are, they
	// come back (undelivered).
	p.inflight += itemsCost(items)
	took := c.took[p.name]
	took.chunks += len(items)
	for _, it := range items {
		took.bytes += len(it.data)
	}
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
	if q := p.finish(writer); q != nil {
		co.store.finished(p.name, q.qid)
		co.recorded()
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

// fits reports whether a write fits. Chunks readers hold, and those in
// replies not yet written, count as queued. A pipe always takes a write
// when it is empty, and the broker when it holds nothing, so any chunk
// within the chunk limit eventually goes through.
func (co *core) fits(p *pipe, req *Request) bool {
	cost := req.Size + chunkOverhead*len(req.Chunks)
	return (p.chunks == 0 || p.bytes+p.heldBytes+p.inflight+cost <= co.s.cfg.MaxPipeBytes) &&
		(co.total == 0 || co.total+cost <= co.s.cfg.MaxTotalBytes)
}

// unread puts an UNREAD's chunks at the head of a pipe, creating it if it
// went away meanwhile. It ignores the limits: no more comes back than the
// connection took.
func (co *core) unread(name string, items []item) {
	p := co.pipe(name)
	co.total += itemsCost(items)
	co.store.returned(name, items, true)
	co.recorded()
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
		if !co.fits(p, &c.tasks[0].req) {
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
		co.names.Delete(p.name)
		delete(co.stalled, p)
		// Writers that wrote and never closed forget it.
		for id := range p.writers {
			if c := co.conns[id]; c != nil {
				delete(c.writes, p)
			}
		}
	}
}

// disconnect forgets a connection. Its requests not yet executed are
// dropped (none was acknowledged); the chunks it wrote stay, and it has
// finished writing every pipe.
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
		if i := slices.Index(p.blocked, c); i >= 0 {
			p.blocked = slices.Delete(p.blocked, i, i+1)
			// Whoever was behind it may fit now.
			co.wakeWriters(p)
		}
		c.waiting = nil
		co.removeIfUnused(p)
	}
	for p := range c.writes {
		co.finishWriter(p, c.id)
	}
	c.writes = nil
	// What it held goes back to the head; what it HOLDs open is closed.
	for p := range c.held {
		co.giveBackHeld(c, p)
	}
	for p, n := range c.holds {
		p.opens -= n
		p.holds -= n
		co.removeIfUnused(p)
	}
	c.holds = nil
	c.tasks = nil
	co.log.Debug("disconnected", "conn", c.id)
}

// recover rebuilds the pipes from a store's log, before the broker serves.
func (co *core) recover(ls *logStore) error {
	rec := ls.log.Recovered()
	if rec.DroppedBytes > 0 || rec.DroppedRecords > 0 {
		co.log.Warn("store: dropped a damaged tail", "dropped_bytes", rec.DroppedBytes,
			"dropped_records", rec.DroppedRecords, "reason", rec.Reason)
	}
	n, err := replayLog(ls.log, co)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	chunks := 0
	for _, p := range co.pipes {
		chunks += p.chunks
	}
	co.log.Info("store recovered", "records", n, "pipes", len(co.pipes), "chunks", chunks, "bytes", co.total)
	return nil
}

// shutdown answers every waiting request with an error, reports what is
// discarded and tells every connection to flush and close.
func (co *core) shutdown() {
	// What the store holds is made durable, and the replies that waited
	// for it leave before the connections close.
	_, kept := co.store.(*logStore)
	if err := co.store.close(); err != nil {
		co.storeFailed(err)
	}
	co.committed(co.gen, nil)
	co.store, co.dirty, co.persist = memStore{}, false, false // closed: what follows goes straight out
	chunks, bytes, pipes := 0, 0, 0
	for _, p := range co.pipes {
		if p.chunks+p.held > 0 {
			pipes++
		}
		chunks += p.chunks + p.held
		bytes += p.bytes - chunkOverhead*p.chunks + p.heldBytes - chunkOverhead*p.held
	}
	for _, c := range co.conns {
		if c.waiting != nil && len(c.tasks) > 0 {
			co.reply(c, c.tasks[0], errorReply(ErrShutdown))
		}
		c.out.shutdown()
	}
	if kept {
		co.log.Info("shutting down", "kept_chunks", chunks, "kept_bytes", bytes, "pipes_with_chunks", pipes)
		return
	}
	// Chunks live in memory only: say what goes.
	co.log.Info("shutting down", "discarded_chunks", chunks, "discarded_bytes", bytes, "pipes_with_chunks", pipes)
}

func (co *core) limits() reply {
	l := co.s.cfg.Limits
	b, err := json.Marshal(BrokerLimits{
		MaxName:       l.MaxName,
		MaxChunk:      l.MaxChunk,
		MaxBatch:      l.MaxBatch,
		MaxMessage:    l.maxMessage(),
		MaxPipeBytes:  co.s.cfg.MaxPipeBytes,
		MaxTotalBytes: co.s.cfg.MaxTotalBytes,
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
		})
		names += len(name)
		return true
	})
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
