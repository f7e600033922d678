package broker

import (
	"log/slog"
	"runtime/debug"
	"slices"
	"time"

	"github.com/google/btree"
)

// core is the broker's core: the pipe table, every queue and every waiting
// request. It runs on the goroutine that has something for it — a
// connection's reader with a request, its writer with replies written, the
// loop below with the store's news — under Server.coreMu, so no other lock
// guards protocol state. Running it there, not on a goroutine of its own,
// takes a hand-off off every request's path: a request read is answered
// by the goroutine that read it, with no other thread to wake (see
// docs/performance.md).
type core struct {
	s       *Server
	log     *slog.Logger
	pipes   map[string]*pipe
	names   *btree.BTreeG[string] // the pipes' names, in order, for LIST
	conns   map[uint64]*conn
	total   int // bytes of chunks held in all pipes, with chunkOverhead each
	spilled int // of total, the bytes of chunks on disk only (spill.go)
	fixed   int // what the pipes and their writers' queues cost besides
	stalled map[*pipe]struct{}

	peak      int           // most bytes queued since memory was last released
	releasing bool          // a release of memory is scheduled
	release   chan struct{} // wakes loop to schedule one
	gone      bool          // shut down: events are refused

	// The store, and the replies that wait for it (see store.go). The
	// changes of an event are committed at its end (commit gen); a reply
	// made after a change waits in deferred until that commit is done,
	// and replies leave in the order made, so a connection's replies stay
	// in order.
	store    store
	persist  bool   // the store keeps something: changes are committed
	nextID   uint64 // the id of the next chunk queued
	gen      uint64 // commits asked for so far
	deferred []deferredReply
	storeErr error                   // the store failed: nothing more is acknowledged
	inflight map[uint64]inflightItem // read replies' chunks not yet written, with a durable store
	// With a store that spills: where writes go once the chunks in memory
	// pass spillAbove bytes (spill.go); nil in memory mode.
	disk       *logStore
	spillAbove int
}

func newCore(s *Server) *core {
	return &core{
		s:       s,
		log:     s.log,
		pipes:   make(map[string]*pipe),
		conns:   make(map[uint64]*conn),
		stalled: make(map[*pipe]struct{}),
		release: make(chan struct{}, 1),
		store:   memStore{},
		nextID:  1,
		names:   btree.NewOrderedG[string](32),
	}
}

// dispatch handles one event under the core's lock; false once the core
// has shut down.
func (co *core) dispatch(ev event) bool {
	co.s.coreMu.Lock()
	defer co.s.coreMu.Unlock()
	if co.gone {
		return false
	}
	co.handle(ev)
	co.watchMemory()
	return true
}

// loop does the core's work that no connection brings: the store's news,
// releasing memory after a big drain, and the shutdown.
func (co *core) loop() {
	defer co.s.wg.Done()
	defer close(co.s.done)
	var release <-chan time.Time
	for {
		select {
		case <-co.s.mailWake:
			co.s.coreMu.Lock()
			for _, ev := range co.s.takeMail() {
				co.handle(ev)
			}
			co.s.coreMu.Unlock()
		case <-co.release:
			release = time.After(releaseAfter)
		case <-release:
			release = nil
			co.s.coreMu.Lock()
			co.releasing = false
			co.peak = co.total
			co.s.coreMu.Unlock()
			// A broker that has gone quiet allocates nothing, so the Go
			// runtime would keep a drained queue's memory for minutes: a
			// second burst then stacks on top of it. Hand it back now.
			debug.FreeOSMemory()
		case <-co.s.quit:
			co.s.coreMu.Lock()
			co.shutdown()
			co.gone = true
			co.s.coreMu.Unlock()
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
	if !co.releasing && co.peak >= releaseAbove && co.total <= co.peak/4 {
		co.releasing = true
		signal(co.release)
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
	case ev.books != nil:
		ev.books <- [3]int{co.total, co.fixed, co.spilled}
	}
	if co.persist && co.store.pending() {
		co.gen++
		gen := co.gen
		co.store.commit(func(err error) {
			co.s.notify(event{committed: &commitDone{gen: gen, err: err}})
		})
		if err := co.store.compact(co); err != nil {
			co.storeFailed(err)
		}
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
	if t.err == nil && t.req.Cmd == CmdAck {
		// An ACK acts on arrival, like CANCEL: a reader that keeps TAKEs
		// in flight acknowledges chunks while a later TAKE waits, and that
		// TAKE may be waiting for the very room the ACK frees.
		r := co.ackNow(c, &t.req)
		t.early = &r
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
	if co.store.durable() && (co.store.pending() || len(co.deferred) > 0) {
		gen := co.gen // only keeping its place behind replies that wait
		if co.store.pending() {
			gen++ // waits for the commit at the end of this event
		}
		co.deferred = append(co.deferred, deferredReply{c: c, t: t, r: r, gen: gen})
		return
	}
	co.send(c, r)
}

// send queues a reply for the connection's writer.
func (co *core) send(c *conn, r reply) {
	if c.out.sendNow(c.w, r) {
		return
	}
	if !c.out.push(r) && len(r.items) > 0 {
		// The connection died after the chunks were taken: they go back.
		co.undelivered(r.pipe, r.items)
	}
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
	if co.disk != nil {
		p.disk = co.disk
	}
	co.pipes[p.name] = p
	co.names.ReplaceOrInsert(p.name)
	co.fixed += p.cost()
}

// recount accounts for a change in what a pipe in the table costs beyond
// its chunks (its writers' queues), given what it cost before.
func (co *core) recount(p *pipe, before int) {
	if co.pipes[p.name] == p {
		co.fixed += p.cost() - before
	}
}

func errorReply(err error) reply { return reply{frames: replyError(err)} }

var okReply = reply{frames: [][]byte{okFrame}}

// fail answers a request with an error. The reason names no pipe: the
// client knows which it asked for, and the log says it for the operator.
func (co *core) fail(c *conn, req *Request, err error) reply {
	if err == ErrCancelled {
		co.log.Debug("request failed", "conn", c.id, "cmd", req.Cmd, "pipe", abbrev([]byte(req.Pipe)), "err", err) // the client asked for it
	} else {
		// A client can make requests fail at any rate: one line a second.
		co.s.requestFailed.event("conn", c.id, "cmd", req.Cmd, "pipe", abbrev([]byte(req.Pipe)), "err", err)
	}
	return errorReply(err)
}

func (co *core) removeIfUnused(p *pipe) {
	if p.unused() && co.pipes[p.name] == p {
		delete(co.pipes, p.name)
		co.names.Delete(p.name)
		co.fixed -= p.cost()
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
	co.store, co.persist = memStore{}, false // closed: what follows goes straight out
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
