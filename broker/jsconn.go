package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// jsConn runs one connection's requests against JetStream, in the order
// sent, in its own goroutine: each waits on the network, and a slow one
// must hold back this connection's later requests and nobody else's. As
// in the core, CANCEL and ACK act on arrival (intake), even while a read
// waits.
type jsConn struct {
	e     *jsEngine
	c     *conn
	box   *mailbox[*task]
	gone  chan struct{} // closed when the connection goes or the broker stops
	queue []*task       // requests taken from box, not yet run

	// The read waiting for chunks, if any, for CANCEL.
	cur     *task
	curPipe string

	writer map[string]string // pipe -> "<pipe key>.<this writer>", its subjects' end
	writes map[string]bool   // pipes written since this connection last CLOSEd them
	broken map[string]error  // pipes a write of this connection failed to store
	opened map[string]int    // its OPENs not yet CLOSEd: pipes that surely exist
	holds  map[string]int    // its HOLDs, which end with it
	reads  map[string]bool   // pipes it read, whose readers must know when it goes
	sent   uint64            // messages published, for their Nats-Msg-Id
}

func newJSConn(e *jsEngine, c *conn) *jsConn {
	return &jsConn{
		e:      e,
		c:      c,
		box:    newMailbox[*task](),
		gone:   make(chan struct{}),
		writer: make(map[string]string),
		writes: make(map[string]bool),
		broken: make(map[string]error),
		opened: make(map[string]int),
		holds:  make(map[string]int),
		reads:  make(map[string]bool),
	}
}

func (jc *jsConn) run() {
	defer jc.e.connWG.Done()
	defer jc.leave()
	for {
		t := jc.next()
		if t == nil {
			return
		}
		if t.err == nil && t.req.isWrite() && !t.cancelled {
			jc.write(t)
			continue
		}
		r, ok := jc.exec(t)
		if !ok {
			return // gone while it waited
		}
		jc.reply(t, r)
	}
}

// next returns the next request to run, or nil once the connection is gone.
func (jc *jsConn) next() *task {
	for len(jc.queue) == 0 {
		select {
		case <-jc.box.wake:
			jc.intake()
		case <-jc.gone:
			return nil
		}
	}
	t := jc.queue[0]
	jc.queue[0] = nil
	jc.queue = jc.queue[1:]
	return t
}

// intake queues the requests that arrived, acting on CANCEL and ACK now.
func (jc *jsConn) intake() {
	for _, t := range jc.box.take() {
		if t.err == nil && t.req.Cmd == CmdCancel {
			for _, q := range jc.queue {
				if q.err == nil && (q.req.isRead() || q.req.isWrite()) && q.req.Pipe == t.req.Pipe {
					q.cancelled = true
				}
			}
			if jc.cur != nil && jc.curPipe == t.req.Pipe {
				jc.e.toReader(jc.curPipe, readerMsg{op: ropCancel, jc: jc})
			}
		}
		if t.err == nil && t.req.Cmd == CmdAck {
			ans := make(chan reply, 1)
			jc.e.toReader(t.req.Pipe, readerMsg{op: ropAck, jc: jc, n: t.req.Max, answer: ans})
			r := <-ans
			t.early = &r
		}
		jc.queue = append(jc.queue, t)
	}
}

func (jc *jsConn) reply(t *task, r reply) {
	r.envelope = t.req.Envelope
	r.cost = t.cost
	r.credit = true
	if !jc.c.out.push(r) && len(r.items) > 0 {
		jc.e.toReader(r.pipe.name, readerMsg{op: ropReturned, items: r.items})
	}
}

func (jc *jsConn) fail(req *Request, err error) reply {
	if err == ErrCancelled {
		jc.e.log.Debug("request failed", "conn", jc.c.id, "cmd", req.Cmd, "pipe", abbrev([]byte(req.Pipe)), "err", err)
	} else {
		jc.e.s.requestFailed.event("conn", jc.c.id, "cmd", req.Cmd, "pipe", abbrev([]byte(req.Pipe)), "err", err)
	}
	return errorReply(err)
}

// opCtx bounds one request's calls to JetStream.
func (jc *jsConn) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(jc.e.ctx, jsOpTimeout)
}

// exec runs a request other than a write. It reports false if the
// connection went away while the request waited.
func (jc *jsConn) exec(t *task) (reply, bool) {
	if t.err != nil {
		jc.e.s.requestFailed.event("conn", jc.c.id, "err", t.err)
		return errorReply(t.err), true
	}
	if t.early != nil {
		return *t.early, true
	}
	req := &t.req
	if t.cancelled {
		return jc.fail(req, ErrCancelled), true
	}
	ctx, cancel := jc.opCtx()
	defer cancel()
	switch req.Cmd {
	case CmdList:
		return jc.e.list(ctx, req.After), true
	case CmdLimits:
		return limitsReply(jc.e.s.cfg), true
	case CmdCancel:
		return okReply, true
	case CmdOpen, CmdHold:
		if _, err := jc.e.addOpens(ctx, req.Pipe, 1, true); err != nil {
			return jc.fail(req, err), true
		}
		if req.Cmd == CmdHold {
			jc.holds[req.Pipe]++
		} else {
			jc.opened[req.Pipe]++
		}
		return okReply, true
	case CmdClose:
		return jc.closePipe(ctx, req), true
	case CmdUnread, CmdNack:
		if !jc.reads[req.Pipe] {
			if ok, err := jc.e.exists(ctx, req.Pipe); err != nil || !ok {
				return jc.fail(req, cmpErr(err, ErrNoPipe)), true
			}
		}
		ans := make(chan reply, 1)
		jc.e.toReader(req.Pipe, readerMsg{op: ropGiveBack, jc: jc, req: req, answer: ans})
		r := <-ans
		if len(r.frames) == 2 {
			return jc.fail(req, errors.New(string(r.frames[1]))), true
		}
		return r, true
	default: // READ, MREAD, TAKE
		return jc.read(ctx, t)
	}
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// closePipe ends one of the connection's opens (its own HOLD first) and,
// if it wrote, its turn as a writer.
//
// The end is stored first: a CLOSE answered OK has no gap after which a
// later writer could be read alongside this one, and one answered ERROR
// changed nothing, so it can be sent again.
func (jc *jsConn) closePipe(ctx context.Context, req *Request) reply {
	name := req.Pipe
	if jc.writes[name] {
		if err := jc.publishEnd(ctx, name); err != nil {
			return jc.fail(req, fmt.Errorf("%w: the writer's end: %v", ErrStore, err))
		}
		delete(jc.writes, name)
	}
	opens, err := jc.e.addOpens(ctx, name, -1, false)
	if err != nil {
		return jc.fail(req, err)
	}
	switch {
	case jc.holds[name] > 0:
		jc.holds[name]--
	case jc.opened[name] > 0:
		jc.opened[name]--
	}
	if opens == 0 {
		jc.e.removeIfUnused(ctx, name)
	}
	return okReply
}

// read asks the pipe's reader for chunks and waits for them, taking in
// the connection's later requests meanwhile (a CANCEL stops the wait).
func (jc *jsConn) read(ctx context.Context, t *task) (reply, bool) {
	req := &t.req
	if !jc.reads[req.Pipe] && jc.opened[req.Pipe] == 0 {
		if ok, err := jc.e.exists(ctx, req.Pipe); err != nil || !ok {
			return jc.fail(req, cmpErr(err, ErrNoPipe)), true
		}
	}
	jc.reads[req.Pipe] = true
	ans := make(chan reply, 1)
	jc.e.toReader(req.Pipe, readerMsg{op: ropRead, jc: jc, req: req, answer: ans})
	jc.cur, jc.curPipe = t, req.Pipe
	defer func() { jc.cur, jc.curPipe = nil, "" }()
	for {
		select {
		case r := <-ans:
			if len(r.frames) == 2 && string(r.frames[0]) == StatusError {
				return jc.fail(req, errors.New(string(r.frames[1]))), true
			}
			return r, true
		case <-jc.box.wake:
			jc.intake()
		case <-jc.gone:
			if jc.e.ctx.Err() != nil {
				// The broker stops: the waiting read is answered.
				jc.reply(t, errorReply(ErrShutdown))
			}
			// The reader forgets the wait when told the connection is
			// gone (leave); an answer made before that comes back.
			jc.leaveReaders()
			select {
			case r := <-ans:
				if len(r.items) > 0 {
					jc.e.toReader(req.Pipe, readerMsg{op: ropReturned, items: r.items})
				}
			default:
			}
			return reply{}, false
		}
	}
}

// write publishes a write's chunks with those of the writes to the same
// pipe queued behind it, as few messages as they fit in, and answers each
// once JetStream has stored all of its chunks.
func (jc *jsConn) write(t *task) {
	name := t.req.Pipe
	batch := []*task{t}
	size := t.req.Size
	jc.intake()
	for len(jc.queue) > 0 && size < 4*jc.e.maxMsg {
		n := jc.queue[0]
		if n.err != nil || n.early != nil || n.cancelled || !n.req.isWrite() || n.req.Pipe != name {
			break
		}
		batch = append(batch, n)
		size += n.req.Size
		jc.queue[0] = nil
		jc.queue = jc.queue[1:]
	}
	if err := jc.broken[name]; err != nil {
		// Its stream has a hole: whatever it writes after it would be
		// read after the hole, with nothing to say so.
		for _, w := range batch {
			jc.reply(w, jc.fail(&w.req, fmt.Errorf("%w: an earlier write of this connection to the pipe failed (%v); connect again to write more", ErrStore, err)))
		}
		return
	}
	ctx, cancel := context.WithTimeout(jc.e.ctx, jsPublishRetry+jsOpTimeout)
	defer cancel()
	if jc.opened[name] == 0 && jc.holds[name] == 0 {
		if ok, err := jc.e.exists(ctx, name); err != nil || !ok {
			for _, w := range batch {
				jc.reply(w, jc.fail(&w.req, cmpErr(err, ErrNoPipe)))
			}
			return
		}
	}
	jc.writes[name] = true
	chunks := 0
	for _, w := range batch {
		chunks += len(w.req.Chunks)
	}
	// Made once at its largest, not grown by appending.
	msg := make([]byte, 0, min(size+chunks*binary.MaxVarintLen32, jc.e.maxMsg))
	answered := 0
	// Each write is answered once the message holding its last chunk is
	// stored; a failed message fails every write not yet answered.
	flush := func(upto int) error {
		if len(msg) == 0 {
			return nil
		}
		err := jc.publish(ctx, name, msg)
		if err != nil {
			jc.broken[name] = err
		}
		msg = msg[:0]
		for ; answered < upto; answered++ {
			w := batch[answered]
			if err != nil {
				jc.reply(w, jc.fail(&w.req, fmt.Errorf("%w: %v", ErrStore, err)))
			} else {
				jc.reply(w, okReply)
			}
		}
		return err
	}
	for i, w := range batch {
		for _, ch := range w.req.Chunks {
			if len(msg) > 0 && len(msg)+len(ch)+binaryLen(len(ch)) > jc.e.maxMsg {
				if flush(i) != nil {
					for ; answered < len(batch); answered++ {
						jc.reply(batch[answered], jc.fail(&batch[answered].req, ErrStore))
					}
					return
				}
			}
			msg = appendChunk(msg, ch)
		}
	}
	flush(len(batch))
}

// publish stores one message in the connection's subject of the pipe,
// retrying while JetStream is unreachable or electing a leader, with the
// same message id, so that a retry after a lost acknowledgement is not
// stored twice.
func (jc *jsConn) publish(ctx context.Context, name string, data []byte) error {
	writer := jc.writer[name]
	if writer == "" {
		writer = pipeKey(name) + "." + jc.e.id + "-" + strconv.FormatUint(jc.c.id, 10)
		jc.writer[name] = writer
	}
	subj := jsSubjects + writer
	if data == nil {
		subj = jsEnds + writer
	}
	jc.sent++
	id := jc.e.id + "-" + strconv.FormatUint(jc.c.id, 10) + "-" + strconv.FormatUint(jc.sent, 10)
	logged := false
	for {
		err := jc.e.publish(ctx, subj, id, data)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if !logged {
			jc.e.log.Warn("jetstream: storing a write failed; retrying", "pipe", abbrev([]byte(name)), "err", err)
			logged = true
		}
		select {
		case <-time.After(100 * time.Millisecond): // back off, then again
		case <-ctx.Done():
			return err
		}
	}
}

// publishEnd stores the writer's end in its subject: an empty message.
func (jc *jsConn) publishEnd(ctx context.Context, name string) error {
	return jc.publish(ctx, name, nil)
}

// leave ends what the connection held: its HOLDs, its turns as a writer,
// its reads (chunks it took go back to the head of their pipes).
func (jc *jsConn) leave() {
	if jc.e.ctx.Err() != nil {
		defer jc.c.out.shutdown()
	}
	ctx, cancel := context.WithTimeout(context.Background(), jsOpTimeout)
	defer cancel()
	jc.leaveReaders()
	for name := range jc.writes {
		if err := jc.publishEnd(ctx, name); err != nil {
			jc.e.log.Warn("jetstream: a writer's end was not stored", "pipe", abbrev([]byte(name)), "err", err)
		}
	}
	for name, n := range jc.holds {
		if n == 0 {
			continue
		}
		opens, err := jc.e.addOpens(ctx, name, -n, false)
		if err != nil {
			jc.e.log.Warn("jetstream: a HOLD could not be ended", "pipe", abbrev([]byte(name)), "err", err)
			continue
		}
		if opens == 0 {
			jc.e.removeIfUnused(ctx, name)
		}
	}
}

// leaveReaders tells the readers of the pipes the connection read that it
// is gone, and waits until they know.
func (jc *jsConn) leaveReaders() {
	for name := range jc.reads {
		ans := make(chan reply, 1)
		jc.e.toReader(name, readerMsg{op: ropGone, jc: jc, answer: ans})
		<-ans
	}
	clear(jc.reads)
}
