package broker

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

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
	e    *jsEngine
	name string
	key  string
	box  *mailbox[readerMsg]
	cons jetstream.Consumer

	win     *pipe             // chunks fetched and not taken, in fair order
	msgs    []*jsMsg          // messages fetched and not acknowledged, by base
	seqs    map[uint64]bool   // their stream sequences
	nextID  uint64            // the id of the next chunk fetched
	writers map[string]uint64 // subjects' writer tokens, as window writer ids
	last    map[string]uint64 // the sequence of each writer's last message

	wait     *readerMsg             // the read waiting for chunks
	held     map[*jsConn]*heldItems // what each connection TOOK and has not ACKed
	took     map[*jsConn]taken      // what each READ and MREAD took, which it may UNREAD
	inflight int                    // chunks in read replies not yet written

	progress map[uint64]int // chunks consumed of partly consumed messages, as recorded
	loaded   bool           // progress was read from the bucket
	pinID    string         // JetStream's pin, once a fetch gave us one
	leaseRev uint64         // the revision of our reader's lease; 0: not ours
	leaseAt  time.Time      // when it was last renewed
	fetching bool
	avgSize  int              // bytes of a message, a moving average
	used     time.Time        // when a connection last read here
	retry    <-chan time.Time // set after a failed fetch
	ctx      context.Context  // ends when the reader stops
	stop     context.CancelFunc
}

// jsMsg is a fetched message.
type jsMsg struct {
	m    jetstream.Msg
	seq  uint64
	base uint64 // the id of its first chunk in the window
	n    int    // its chunks (the window's share)
	done int    // consumed before it was fetched (progress) and since
	left int    // chunks not yet consumed
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
	ropArrived                   // messages of the fetch in flight
	ropFetched                   // the fetch is over
	ropProbe                     // tests: does a read wait?
)

type readerMsg struct {
	op      readerOp
	jc      *jsConn
	req     *Request
	n       int
	items   []item
	answer  chan reply
	fetched []jetstream.Msg
	err     error
	probe   chan bool
}

func newJSReader(e *jsEngine, name string) *jsReader {
	r := &jsReader{
		e:       e,
		name:    name,
		key:     pipeKey(name),
		box:     newMailbox[readerMsg](),
		win:     newPipe(name),
		seqs:    make(map[uint64]bool),
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
	tick := time.NewTicker(min(r.e.cfg.AckWait/3, r.e.cfg.Linger))
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
					r.stop()
					return
				}
			}
		case <-r.e.readersQuit:
			r.finishFetch()
			r.box.closeIfEmpty()
			for _, m := range r.box.take() {
				if m.answer != nil {
					m.answer <- errorReply(ErrShutdown)
				}
			}
			r.leave()
			r.stop()
			return
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
					m.answer <- errorReply(fmt.Errorf("%w: %v", ErrStore, err))
					return
				}
				if !ok {
					m.answer <- errorReply(ErrReaderBusy)
					return
				}
			}
			r.wait = &m
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
		r.fetched(m.fetched, nil)
	case ropFetched:
		r.fetching = false
		r.fetched(nil, m.err)
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
		m.done++
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
	if i := slices.Index(r.msgs, m); i >= 0 {
		r.msgs = slices.Delete(r.msgs, i, i+1)
	}
}

// keepAlive tells JetStream the messages held here are still being worked
// on, so it does not redeliver them while this broker lives.
func (r *jsReader) keepAlive() {
	for _, m := range r.msgs {
		m.m.InProgress()
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

// want starts a fetch if a connection reads here and the window has room.
func (r *jsReader) want() {
	if r.fetching || r.retry != nil || r.leaseRev == 0 {
		return
	}
	active := r.wait != nil || time.Since(r.used) < r.e.cfg.Linger
	if !active || r.win.bytes >= jsWindowBytes || len(r.msgs) >= 1000 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, jsOpTimeout)
	err := r.ensureConsumer(ctx)
	cancel()
	if err != nil {
		r.failed(err)
		return
	}
	// A pull asks for a count of messages, from the average size seen,
	// never for bytes: a message that does not fit a pull's byte budget
	// was seen to come after the next one.
	n := max(1, min(256, 1000-len(r.msgs), (jsWindowBytes-r.win.bytes)/max(r.avgSize, 1)))
	r.fetching = true
	r.e.readerWG.Add(1)
	go r.fetch(r.cons, n)
}

// fetch runs in its own goroutine: JetStream holds a pull open until n
// messages come or jsFetchWait passes. It has no context: a pull the
// client gives up on may still be answered, and those messages would come
// back only after the ack wait, behind later ones. So a fetch ends when
// the server says the pull is over.
func (r *jsReader) fetch(cons jetstream.Consumer, n int) {
	defer r.e.readerWG.Done()
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(jsFetchWait), jetstream.FetchPriorityGroup(jsGroup))
	if err == nil {
		// The messages go to the window as they come, not once the pull
		// is full (it waits for n messages or its expiry); but each time
		// with every message the consumer has at hand, so that reads take
		// turns among all the writers it holds.
		ch := batch.Messages()
		for m := range ch {
			msgs := []jetstream.Msg{m}
			for len(msgs) < n && pendingAfter(msgs[len(msgs)-1]) {
				m, ok := <-ch
				if !ok {
					break
				}
				msgs = append(msgs, m)
			}
			r.box.put(readerMsg{op: ropArrived, fetched: msgs})
		}
		err = batch.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoMessages) {
		err = nil // nothing came
	}
	r.box.put(readerMsg{op: ropFetched, err: err})
}

// pendingAfter reports whether the consumer had more messages ready when
// it sent this one.
func pendingAfter(m jetstream.Msg) bool {
	meta, err := m.Metadata()
	return err == nil && meta.NumPending > 0
}

// finishFetch waits for the fetch in flight, if any, and takes in its
// messages.
func (r *jsReader) finishFetch() {
	for r.fetching {
		<-r.box.wake
		for _, m := range r.box.take() {
			r.handle(m)
		}
	}
}

func (r *jsReader) failed(err error) {
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		r.cons = nil // the pipe was removed and made again: a new consumer
	}
	if r.ctx.Err() == nil {
		r.e.readFailed.event("pipe", abbrev([]byte(r.name)), "err", err)
	}
	r.retry = time.After(200 * time.Millisecond) // back off, then again
}

// fetched adds a fetch's messages to the window.
func (r *jsReader) fetched(msgs []jetstream.Msg, err error) {
	if err != nil {
		if errors.Is(err, jetstream.ErrPinIDMismatch) {
			r.pinID = ""
		}
		r.failed(err)
	}
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		seq := meta.Sequence.Stream
		if r.seqs[seq] {
			continue // redelivered while held here
		}
		if pin := m.Headers().Get("Nats-Pin-Id"); pin != "" {
			r.pinID = pin
		}
		token := m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]
		if seq < r.last[token] {
			r.e.log.Error("jetstream: a writer's message came after a later one; its chunks are read out of order", "pipe", abbrev([]byte(r.name)), "seq", seq, "after", r.last[token])
		}
		r.last[token] = seq
		wid, ok := r.writers[token]
		if !ok {
			wid = uint64(len(r.writers) + 1)
			r.writers[token] = wid
		}
		data := m.Data()
		r.avgSize += (len(data) - r.avgSize) / 8
		if strings.HasPrefix(m.Subject(), jsEnds) {
			r.win.finish(wid)
			m.Ack()
			continue
		}
		chunks, err := decodeChunks(data)
		if err != nil {
			r.e.log.Error("jetstream: a message is not a batch of chunks; dropped", "pipe", abbrev([]byte(r.name)), "seq", seq, "err", err)
			m.Term()
			continue
		}
		done := 0
		if meta.NumDelivered > 1 {
			done = r.consumedBefore(seq)
		}
		if done >= len(chunks) {
			m.Ack()
			continue
		}
		chunks = chunks[done:]
		jm := &jsMsg{m: m, seq: seq, base: r.nextID, n: len(chunks), left: len(chunks)}
		r.win.enqueueChunks(wid, chunks, r.nextID)
		r.nextID += uint64(len(chunks))
		r.msgs = append(r.msgs, jm)
		r.seqs[seq] = true
	}
}

// Progress of partly consumed messages. A message is one batch, acknowledged
// whole; a broker that stops reading a pipe with a message partly consumed
// records how many of its chunks are gone, so the next reader skips them.

func progressKey(key string) string { return key + ".progress" }

func (r *jsReader) consumedBefore(seq uint64) int {
	if !r.loaded {
		r.loaded = true
		ctx, cancel := context.WithTimeout(r.ctx, jsOpTimeout)
		defer cancel()
		if ent, err := r.e.kv.Get(ctx, progressKey(r.key)); err == nil {
			json.Unmarshal(ent.Value(), &r.progress)
		}
	}
	n := r.progress[seq]
	delete(r.progress, seq)
	return n
}

// leave gives back every message held here, in stream order, so the next
// reader, on any broker, gets them in order: it records the progress of
// partly consumed ones, naks them all and unpins the consumer. Chunks that
// an UNREAD put here, which belong to no message, are stored again at the
// pipe's end.
func (r *jsReader) leave() {
	defer r.reset()
	ctx, cancel := context.WithTimeout(context.Background(), jsOpTimeout)
	defer cancel()
	var fresh [][]byte
	r.win.returned.each(func(it item) {
		if it.id == 0 {
			fresh = append(fresh, it.data)
		}
	})
	if len(fresh) > 0 {
		var msg []byte
		for _, c := range fresh {
			msg = appendChunk(msg, c)
		}
		id := r.e.id + "-unread-" + r.key + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := r.e.publish(ctx, jsSubjects+r.key+".unread", id, msg); err != nil {
			r.e.log.Error("jetstream: chunks given back with UNREAD were lost", "pipe", abbrev([]byte(r.name)), "chunks", len(fresh), "err", err)
		}
	}
	defer r.release(ctx)
	if len(r.msgs) == 0 {
		r.unpin(ctx)
		// The last reader of a closed pipe removes it once drained.
		r.release(ctx)
		r.e.removeIfUnused(ctx, r.name)
		return
	}
	if r.progress == nil {
		r.progress = make(map[uint64]int)
	}
	partial := false
	for _, m := range r.msgs {
		if m.done > 0 {
			r.progress[m.seq] = m.done
			partial = true
		}
	}
	if partial {
		b, _ := json.Marshal(r.progress)
		if _, err := r.e.kv.Put(ctx, progressKey(r.key), b); err != nil {
			r.e.log.Warn("jetstream: the progress of a partly read batch was not recorded: its chunks already read will be read again", "pipe", abbrev([]byte(r.name)), "err", err)
		}
	}
	slices.SortFunc(r.msgs, func(a, b *jsMsg) int { return cmp.Compare(a.seq, b.seq) })
	for _, m := range r.msgs {
		if err := m.m.Nak(); err != nil {
			r.e.log.Warn("jetstream: giving back a message failed; JetStream redelivers it after the ack wait", "pipe", abbrev([]byte(r.name)), "seq", m.seq, "err", err)
		}
	}
	r.msgs = nil
	// The naks are on the wire before the unpin's request, on the same
	// connection, so the next reader sees them in order.
	r.unpin(ctx)
}

// reset empties the window, after leave.
func (r *jsReader) reset() {
	r.win = newPipe(r.name)
	r.msgs = nil
	clear(r.seqs)
	clear(r.writers)
	clear(r.last)
	clear(r.took)
	r.pinID = ""
}

func (r *jsReader) unpin(ctx context.Context) {
	if r.pinID == "" || r.cons == nil {
		return
	}
	if err := r.e.stream.UnpinConsumer(ctx, "p-"+r.key, jsGroup); err != nil {
		r.e.log.Debug("jetstream: unpinning a pipe's consumer failed; the pin expires by itself", "pipe", abbrev([]byte(r.name)), "err", err)
	}
}

// Messages: a batch of chunks, each a uvarint length and its bytes. An
// empty message is a writer's end.

func appendChunk(b, c []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(c)))
	return append(b, c...)
}

func binaryLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

func decodeChunks(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errors.New("bad chunk length")
		}
		b = b[k:]
		out = append(out, b[:n:n])
		b = b[n:]
	}
	return out, nil
}

// The reader's lease. JetStream's pin says which client a consumer
// delivers to, but only once a message has been delivered: two brokers
// whose readers wait on an empty pipe would both be waiting. So a broker
// reads a pipe only while it holds the pipe's lease, a key in the bucket
// ("<pipe>.reader": the broker's id and when the lease ends), taken by
// create or compare-and-set, renewed while it reads and deleted when it
// stops; a broker that dies loses it when it ends (PinnedTTL, as the pin).
// A second reader on another broker is refused while the lease is held.

func leaseKey(key string) string { return key + ".reader" }

func (r *jsReader) leaseValue() []byte {
	return []byte(r.e.id + " " + strconv.FormatInt(time.Now().Add(r.e.cfg.PinnedTTL).UnixNano(), 10))
}

// claim takes the lease if nobody holds it, or if its holder let it end;
// it reports whether this broker now holds it.
func (r *jsReader) claim() (bool, error) {
	ctx, cancel := context.WithTimeout(r.ctx, jsOpTimeout)
	defer cancel()
	k := leaseKey(r.key)
	for {
		rev, err := r.e.kv.Create(ctx, k, r.leaseValue())
		if err == nil {
			r.leaseRev, r.leaseAt = rev, time.Now()
			return true, nil
		}
		if !casConflict(err) {
			return false, err
		}
		ent, err := r.e.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return false, err
		}
		owner, end, _ := strings.Cut(string(ent.Value()), " ")
		ends, _ := strconv.ParseInt(end, 10, 64)
		if owner != r.e.id && time.Now().UnixNano() < ends {
			return false, nil
		}
		rev, err = r.e.kv.Update(ctx, k, r.leaseValue(), ent.Revision())
		if casConflict(err) {
			return false, nil // another broker took it first
		}
		if err != nil {
			return false, err
		}
		r.leaseRev, r.leaseAt = rev, time.Now()
		return true, nil
	}
}

// renew extends the lease a third of the way through it.
func (r *jsReader) renew() {
	if r.leaseRev == 0 || time.Since(r.leaseAt) < r.e.cfg.PinnedTTL/3 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, jsOpTimeout)
	defer cancel()
	rev, err := r.e.kv.Update(ctx, leaseKey(r.key), r.leaseValue(), r.leaseRev)
	if err != nil {
		r.e.log.Warn("jetstream: could not renew the lease on reading a pipe", "pipe", abbrev([]byte(r.name)), "err", err)
		if casConflict(err) {
			r.leaseRev = 0 // another broker holds it now
		}
		return
	}
	r.leaseRev, r.leaseAt = rev, time.Now()
}

func (r *jsReader) release(ctx context.Context) {
	if r.leaseRev == 0 {
		return
	}
	if err := r.e.kv.Delete(ctx, leaseKey(r.key), jetstream.LastRevision(r.leaseRev)); err != nil {
		r.e.log.Debug("jetstream: releasing the lease on reading a pipe failed; it ends by itself", "pipe", abbrev([]byte(r.name)), "err", err)
	}
	r.leaseRev = 0
}
