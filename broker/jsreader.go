package broker

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// jsReader reads one pipe from JetStream for this broker's connections. Its
// goroutine owns the pipe's window: the messages fetched and not yet
// acknowledged, their chunks queued in a local pipe (pipe.go) with one
// writer's queue per subject, so reads are served in the same fair order
// as in memory. A message is acknowledged once all its chunks are consumed.
// Connections talk to it through its mailbox; it answers on the channel
// each request brings.
type jsReader struct {
	e     *jsEngine
	name  string
	key   string
	box   *mailbox[readerMsg]
	cons  jetstream.Consumer
	sub   *nats.Subscription // the answers to its pulls (jsfetch.go)
	inbox string

	win     *pipe                // chunks fetched and not taken, in fair order
	msgs    []*jsMsg             // messages fetched and not acknowledged, by base
	ends    []*jsMsg             // writers' ends fetched, each acknowledged once its writer's messages before it are
	seqs    map[uint64]bool      // their stream sequences
	acked   map[uint64]time.Time // sequences acknowledged lately, and when
	nextID  uint64               // the id of the next chunk fetched
	writers map[string]uint64    // subjects' writer tokens, as window writer ids
	last    map[string]uint64    // the sequence of each writer's last message

	wait     *readerMsg             // the read waiting for chunks
	waitFrom time.Time              // since when it waits
	held     map[*jsConn]*heldItems // what each connection TOOK and has not ACKed
	took     map[*jsConn]taken      // what each READ and MREAD took, which it may UNREAD
	inflight int                    // chunks in read replies not yet written

	progress   map[uint64][][2]int // chunks consumed of partly consumed messages, as recorded
	loaded     bool                // progress was read from the bucket
	pinID      string              // JetStream's pin, once a fetch gave us one
	leaseRev   uint64              // the revision of our reader's lease; 0: not ours
	leaseAt    time.Time           // when it was last renewed
	fetching   bool
	fetchGen   uint64           // the pull in flight, or given up on
	fetchLeft  int              // messages it may still bring
	fetchStart time.Time        // when it started
	gonePin    string           // the pin of the window given back last
	moreComing bool             // the last message said more of its pull follow
	dseq       uint64           // the consumer's number of the last delivery taken in
	resync     time.Time        // after a gap in dseq: take in nothing till then
	repin      bool             // after a gap: unpin before the next pull
	avgSize    int              // bytes of a message, a moving average
	used       time.Time        // when a connection last read here
	retry      <-chan time.Time // set after a failed fetch
	failing    time.Time        // since when pulls fail, while they do
	ctx        context.Context  // ends when the reader stops
	stop       context.CancelFunc
}

// jsMsg is a fetched message.
type jsMsg struct {
	m     *nats.Msg
	seq   uint64
	token string   // its writer's
	base  uint64   // the id of its first chunk in the window
	n     int      // its chunks in the window
	left  int      // of those, not yet consumed
	total int      // its chunks, in the window or not
	at    []uint32 // each window chunk's index in the message; nil: the same
	gone  bitset   // the message's chunks consumed: before it was fetched (progress) and since
}

// bitset is a set of chunk indices.
type bitset []uint64

func (b *bitset) add(i, size int) {
	if *b == nil {
		*b = make(bitset, (size+63)/64)
	}
	(*b)[i/64] |= 1 << (i % 64)
}

func (b bitset) has(i int) bool { return i/64 < len(b) && b[i/64]&(1<<(i%64)) != 0 }

// ranges lists the set as [from, to) ranges, in order.
func (b bitset) ranges() [][2]int {
	var rs [][2]int
	for i := range len(b) * 64 {
		switch {
		case !b.has(i):
		case len(rs) > 0 && rs[len(rs)-1][1] == i:
			rs[len(rs)-1][1]++
		default:
			rs = append(rs, [2]int{i, i + 1})
		}
	}
	return rs
}

type readerOp int

const (
	ropRead      readerOp = iota // READ, MREAD or TAKE: answer with chunks, maybe later
	ropCancel                    // a CANCEL: answer the waiting read "cancelled"
	ropAck                       // ACK n
	ropGiveBack                  // NACK or UNREAD
	ropGone                      // the connection is gone
	ropDelivered                 // read replies written
	ropReturned                  // read replies never written
	ropArrived                   // a message or status for a pull
	ropProbe                     // tests: does a read wait?
)

type readerMsg struct {
	op     readerOp
	jc     *jsConn
	req    *Request
	n      int
	items  []item
	answer chan reply
	msg    *nats.Msg // ropArrived
	probe  chan bool
}

func newJSReader(e *jsEngine, name string) *jsReader {
	r := &jsReader{
		e:       e,
		name:    name,
		key:     pipeKey(name),
		box:     newMailbox[readerMsg](),
		win:     newPipe(name),
		seqs:    make(map[uint64]bool),
		acked:   make(map[uint64]time.Time),
		nextID:  1,
		writers: make(map[string]uint64),
		last:    make(map[string]uint64),
		held:    make(map[*jsConn]*heldItems),
		took:    make(map[*jsConn]taken),
		used:    time.Now(),
		avgSize: 64 << 10,
	}
	r.ctx, r.stop = context.WithCancel(context.Background())
	return r
}

func (r *jsReader) loop() {
	defer r.e.readerWG.Done()
	tick := time.NewTicker(r.e.cfg.tick())
	defer tick.Stop()
	for {
		select {
		case <-r.box.wake:
			for _, m := range r.box.take() {
				r.handle(m)
			}
			r.want()
		case <-r.retry:
			r.retry = nil
			r.want()
		case <-tick.C:
			r.abandon()
			r.want()
			r.keepAlive()
			r.renew()
			if r.idle() && time.Since(r.used) > r.e.cfg.Linger {
				r.finishFetch()
				if !r.idle() {
					continue
				}
				// Give back first, then go: a read that comes meanwhile
				// finds this reader with an empty window.
				r.leave()
				if r.e.forget(r) {
					r.unsubscribe()
					r.stop()
					return
				}
			}
		case <-r.e.readersQuit:
			r.finishFetch()
			r.drainAtStop()
			r.leave()
			r.unsubscribe()
			r.stop()
			return
		}
	}
}

// drainAtStop empties the mailbox and closes it, as the reader stops:
// replies delivered or returned are accounted for and messages a pull
// brought are taken into the window, before leave gives the window back
// in order; requests are answered that the broker is stopping. Whatever
// comes once the mailbox is closed is nak'd where it arrives.
func (r *jsReader) drainAtStop() {
	for !r.box.closeIfEmpty() {
		for _, m := range r.box.take() {
			switch {
			case m.op == ropDelivered || m.op == ropReturned || m.op == ropArrived:
				r.handle(m)
			case m.answer != nil:
				m.answer <- errorReply(ErrShutdown)
			}
		}
	}
}

// idle reports whether nobody reads here: no read waits, nothing is held
// or on its way to a connection.
func (r *jsReader) idle() bool {
	if r.wait != nil || r.inflight > 0 {
		return false
	}
	for _, h := range r.held {
		if h.len() > 0 {
			return false
		}
	}
	return true
}

func (r *jsReader) handle(m readerMsg) {
	switch m.op {
	case ropRead:
		r.used = time.Now()
		switch {
		case r.wait != nil && r.wait.jc != m.jc:
			m.answer <- errorReply(ErrReaderBusy)
		case r.win.chunks > 0:
			m.answer <- r.serve(m)
		default:
			if r.leaseRev == 0 {
				ok, err := r.claim()
				if err != nil {
					// NATS is away or electing: the read waits, and
					// want claims again.
					r.failed(err)
				} else if !ok {
					m.answer <- errorReply(ErrReaderBusy)
					return
				}
			}
			r.wait, r.waitFrom = &m, time.Now()
		}
	case ropCancel:
		if r.wait != nil && r.wait.jc == m.jc {
			r.wait.answer <- errorReply(ErrCancelled)
			r.wait = nil
		}
	case ropAck:
		h := r.held[m.jc]
		if h == nil || h.len() < m.n {
			n := 0
			if h != nil {
				n = h.len()
			}
			m.answer <- errorReply(fmt.Errorf("%w: ACK %d, but %d chunks are held", ErrBadRequest, m.n, n))
			return
		}
		r.consume(h.take(m.n))
		m.answer <- okReply
	case ropGiveBack:
		m.answer <- r.giveBack(m.jc, m.req)
	case ropGone:
		if r.wait != nil && r.wait.jc == m.jc {
			r.wait = nil
		}
		r.giveBack(m.jc, &Request{Cmd: CmdNack})
		delete(r.held, m.jc)
		delete(r.took, m.jc)
		m.answer <- okReply
	case ropDelivered:
		r.inflight -= len(m.items)
		r.consume(m.items)
	case ropReturned:
		r.inflight -= len(m.items)
		r.win.unread(m.items)
	case ropProbe:
		m.probe <- r.wait != nil
	case ropArrived:
		r.arrived(m.msg)
		if r.moreComing {
			return // served with the rest of the pull
		}
	}
	r.serveWaiting()
}

func (r *jsReader) serveWaiting() {
	if r.wait != nil && r.win.chunks > 0 {
		w := r.wait
		r.wait = nil
		w.answer <- r.serve(*w)
	}
}

// serve takes chunks for a read, as the core does (requests.go read).
func (r *jsReader) serve(m readerMsg) reply {
	head := 0
	if m.req.Cmd != CmdRead {
		head = 1
	}
	items := r.win.dequeue(make([]item, 0, min(m.req.Max, r.win.chunks)), m.req.Max, maxReplyBytes)
	frames := make([][]byte, head, head+len(items))
	if head == 1 {
		frames[0] = okFrame
	}
	for _, it := range items {
		frames = append(frames, it.data)
	}
	if m.req.Cmd == CmdTake {
		h := r.held[m.jc]
		if h == nil {
			h = &heldItems{}
			r.held[m.jc] = h
		}
		h.add(items)
		return reply{frames: frames}
	}
	r.inflight += len(items)
	t := r.took[m.jc]
	t.chunks += len(items)
	for _, it := range items {
		t.bytes += len(it.data)
	}
	r.took[m.jc] = t
	return reply{pipe: r.win, items: items, frames: frames}
}

// giveBack answers a NACK (what the connection holds goes back to the
// head, in order) or an UNREAD (its chunks go to the head: no more than
// its READs took).
func (r *jsReader) giveBack(jc *jsConn, req *Request) reply {
	if req.Cmd == CmdNack {
		if h := r.held[jc]; h != nil {
			r.win.unread(h.take(h.len()))
		}
		return okReply
	}
	t := r.took[jc]
	if len(req.Chunks) > t.chunks || req.Size > t.bytes {
		return errorReply(fmt.Errorf("%w: UNREAD of %d chunks (%d bytes); this connection took %d (%d bytes) from the pipe",
			ErrBadRequest, len(req.Chunks), req.Size, t.chunks, t.bytes))
	}
	t.chunks -= len(req.Chunks)
	t.bytes -= req.Size
	r.took[jc] = t
	// Chunks of no message (id 0): they live here until read again.
	items := make([]item, len(req.Chunks))
	for i, c := range compact(req) {
		items[i] = item{data: c}
	}
	r.win.unread(items)
	return okReply
}

// consume accounts for chunks gone for good, and acknowledges each
// message whose chunks are all consumed.
func (r *jsReader) consume(items []item) {
	var m *jsMsg
	for _, it := range items {
		if it.id == 0 {
			continue
		}
		if m == nil || it.id < m.base || it.id >= m.base+uint64(m.n) {
			m = r.msgOf(it.id)
			if m == nil {
				continue
			}
		}
		i := int(it.id - m.base)
		if m.at != nil {
			i = int(m.at[i])
		}
		m.gone.add(i, m.total)
		if m.left--; m.left == 0 {
			r.ack(m)
			m = nil
		}
	}
}

func (r *jsReader) msgOf(id uint64) *jsMsg {
	i, found := slices.BinarySearchFunc(r.msgs, id, func(m *jsMsg, id uint64) int { return cmp.Compare(m.base, id) })
	if !found {
		i--
	}
	if i < 0 || i >= len(r.msgs) || id >= r.msgs[i].base+uint64(r.msgs[i].n) {
		return nil
	}
	return r.msgs[i]
}

func (r *jsReader) ack(m *jsMsg) {
	if err := m.m.Ack(); err != nil {
		r.e.log.Warn("jetstream: acknowledging a message failed; it will be read again", "pipe", abbrev([]byte(r.name)), "seq", m.seq, "err", err)
	}
	delete(r.seqs, m.seq)
	r.acked[m.seq] = time.Now()
	if i := slices.Index(r.msgs, m); i >= 0 {
		r.msgs = slices.Delete(r.msgs, i, i+1)
	}
	if len(r.ends) > 0 {
		r.ackEnds(m.token)
	}
}

// ackEnds acknowledges each end of writer token held here that has no
// message of its writer before it left unconsumed. Until then the end stays
// in the window: given back with the writer's chunks, it goes with them to
// the next reader, so that the writer after it is still read after it.
func (r *jsReader) ackEnds(token string) {
	r.ends = slices.DeleteFunc(r.ends, func(end *jsMsg) bool {
		if end.token != token {
			return false
		}
		for _, m := range r.msgs {
			if m.token == end.token && m.seq < end.seq {
				return false
			}
		}
		if err := end.m.Ack(); err != nil {
			r.e.log.Warn("jetstream: acknowledging a writer's end failed; it will be read again", "pipe", abbrev([]byte(r.name)), "seq", end.seq, "err", err)
		}
		delete(r.seqs, end.seq)
		r.acked[end.seq] = time.Now()
		return true
	})
}

// keepAlive tells JetStream the messages held here are still being worked
// on, so it does not redeliver them while this broker lives.
func (r *jsReader) keepAlive() {
	for _, m := range r.msgs {
		m.m.InProgress()
	}
	for _, m := range r.ends {
		m.m.InProgress()
	}
	// A message acknowledged as JetStream sent it again (its ack wait
	// ended) comes after its ack: it is known for two ack waits.
	for seq, at := range r.acked {
		if time.Since(at) > 2*r.e.cfg.AckWait {
			delete(r.acked, seq)
		}
	}
}

func (r *jsReader) ensureConsumer(ctx context.Context) error {
	if r.cons != nil {
		return nil
	}
	c, err := r.e.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:        "p-" + r.key,
		Description:    "zpipes: the reader of a pipe",
		FilterSubjects: []string{jsSubjects + r.key + ".>", jsEnds + r.key + ".>"},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        r.e.cfg.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  20000,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      r.e.cfg.PinnedTTL,
		PriorityGroups: []string{jsGroup},
	})
	if err != nil {
		return fmt.Errorf("consumer of pipe %q: %w", abbrev([]byte(r.name)), err)
	}
	r.cons = c
	return nil
}
