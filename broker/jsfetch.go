package broker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// How a pipe's reader fills its window: pulls from the pipe's consumer,
// batches decoded into chunks queued by writer, and the progress of batches
// read in part by a broker that stopped reading.

// want starts a pull if a connection reads here and the window has room.
func (r *jsReader) want() {
	if r.fetching || r.retry != nil || time.Now().Before(r.resync) {
		return
	}
	if r.leaseRev == 0 {
		if r.wait == nil {
			return
		}
		// A read waits for a lease its claim could not get an answer for.
		ok, err := r.claim()
		if err != nil {
			r.failed(err)
			return
		}
		if !ok {
			r.wait.answer <- errorReply(ErrReaderBusy)
			r.wait = nil
			return
		}
	}
	active := r.wait != nil || time.Since(r.used) < r.e.cfg.Linger
	if !active || r.win.bytes >= jsWindowBytes || len(r.msgs) >= 1000 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, jsOpTimeout)
	err := r.ensureConsumer(ctx)
	cancel()
	if err == nil {
		err = r.subscribe()
	}
	if err != nil {
		r.failed(err)
		return
	}
	if r.repin {
		// After a gap the pin may have ended; a pull with an old pin
		// is refused, and the server puts the redelivery it had taken
		// for it at the back of its queue. So a new pin, before pulling.
		ctx, cancel := context.WithTimeout(r.ctx, jsOpTimeout)
		r.unpin(ctx)
		r.pinID = ""
		cancel()
		r.repin = false
	}
	// A pull asks for a count of messages, from the average size seen,
	// never for bytes: a redelivered message that does not fit a pull's
	// byte budget goes to the back of the consumer's redelivery queue,
	// behind later ones.
	n := max(1, min(256, 1000-len(r.msgs), (jsWindowBytes-r.win.bytes)/max(r.avgSize, 1)))
	req, _ := json.Marshal(jsPullRequest{Batch: n, Expires: jsFetchWait, Group: jsGroup, ID: r.pinID})
	r.fetchGen++
	subj := "$JS.API.CONSUMER.MSG.NEXT." + jsStream + ".p-" + r.key
	if err := r.e.nc.PublishRequest(subj, r.inbox+"."+strconv.FormatUint(r.fetchGen, 10), req); err != nil {
		r.failed(err)
		return
	}
	r.fetching = true
	r.fetchLeft = n
	r.fetchStart = time.Now()
	r.failing = time.Time{}
}

// jsPullRequest asks a consumer for messages (JetStream's
// CONSUMER.MSG.NEXT).
type jsPullRequest struct {
	Batch   int           `json:"batch"`
	Expires time.Duration `json:"expires"`
	Group   string        `json:"group"`
	ID      string        `json:"id,omitempty"` // the pin
}

// subscribe makes the reader's one subscription, for the answers to all
// its pulls (inbox.<pull>). Pulls are not nats.go's Fetch: a Fetch
// subscribes for one pull and stops listening after a time of its own, and
// a message the server sends it after that is lost until the ack wait
// ends, behind later ones; and the messages of two pulls, each on its own
// subscription, can reach the window in either order. One subscription,
// kept for the reader's life and never dropping a message, receives
// everything the server sends the reader, in the order sent.
func (r *jsReader) subscribe() error {
	if r.sub != nil {
		return nil
	}
	r.inbox = r.e.nc.NewInbox()
	sub, err := r.e.nc.Subscribe(r.inbox+".*", func(m *nats.Msg) {
		if !r.box.put(readerMsg{op: ropArrived, msg: m}) && m.Reply != "" {
			m.Nak() // the reader has stopped: at once to the next
		}
	})
	if err != nil {
		return fmt.Errorf("pipe %q: subscribe: %w", abbrev([]byte(r.name)), err)
	}
	sub.SetPendingLimits(-1, -1)
	r.sub = sub
	return nil
}

// unsubscribe ends the reader's subscription, once it has stopped.
func (r *jsReader) unsubscribe() {
	if r.sub != nil {
		r.sub.Unsubscribe()
		r.sub = nil
	}
}

// jsFetchGrace is how long past its expiry a pull may go on before the
// reader stops waiting for it. A pull ends when the server says so; one
// was seen to go on for good after a server of the cluster was lost. Its
// messages, if any come, still go to the window, through the same
// subscription, in order.
const jsFetchGrace = 5 * time.Second

// abandon stops waiting for a pull that has gone on too long, so that
// another starts.
func (r *jsReader) abandon() {
	if r.fetching && time.Since(r.fetchStart) > jsFetchWait+jsFetchGrace {
		r.e.readFailed.event("pipe", abbrev([]byte(r.name)), "err", "a pull did not end; starting another")
		r.fetching = false
		// The rest of its messages, if a read waits for them, may never
		// come: the read takes what the window has.
		r.moreComing = false
		r.serveWaiting()
	}
}

// finishFetch waits for the pull in flight, if any, and takes in its
// messages.
func (r *jsReader) finishFetch() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for r.fetching {
		select {
		case <-r.box.wake:
			for _, m := range r.box.take() {
				r.handle(m)
			}
		case <-t.C:
			r.abandon()
		}
	}
}

// failed notes a failed attempt to pull, and tries again soon. A read that
// has waited through nothing but failures for FailAfter (failures that
// began before it came count from when it came) is answered ERROR:
// the client is not left waiting on a store it cannot reach (NATS away,
// the stream deleted, no permission).
func (r *jsReader) failed(err error) {
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		r.cons = nil // the pipe was removed and made again: a new consumer
	}
	if r.ctx.Err() == nil {
		r.e.readFailed.event("pipe", abbrev([]byte(r.name)), "err", err)
	}
	if r.failing.IsZero() {
		r.failing = time.Now()
	}
	if r.wait != nil && time.Since(later(r.failing, r.waitFrom)) >= r.e.cfg.FailAfter {
		r.wait.answer <- errorReply(fmt.Errorf("%w: %v", ErrStore, err))
		r.wait = nil
	}
	r.retry = time.After(200 * time.Millisecond) // back off, then again
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// arrived takes in what the server sent for a pull: a message, or a
// status that ends the pull.
func (r *jsReader) arrived(m *nats.Msg) {
	r.moreComing = false
	if status := m.Header.Get("Status"); status != "" && m.Reply == "" {
		// Sent to the pull's own inbox (inbox.<pull>); a message is sent
		// with its own subject.
		gen, _ := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64)
		r.pullStatus(r.fetching && gen == r.fetchGen, status, m.Header.Get("Description"))
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	if r.fetching {
		if r.fetchLeft--; r.fetchLeft == 0 {
			r.fetching = false
		}
		// More of this pull's messages are on their way: the waiting read
		// is answered with them all, so that it takes turns among all the
		// writers they hold.
		r.moreComing = r.fetching && meta.NumPending > 0
	}
	ok := r.inOrder(meta)
	if pin := m.Header.Get("Nats-Pin-Id"); pin != "" && pin == r.gonePin {
		m.Nak() // for a window given back (a pull given up on): after it
		return
	}
	if ok {
		r.fetched(m, meta)
	}
}

// pullStatus handles a status the server sent for a pull. All but a
// heartbeat end it.
func (r *jsReader) pullStatus(current bool, status, descr string) {
	if status == "100" || !current {
		return
	}
	r.fetching = false
	switch status {
	case "408", "404": // it expired, or nothing came
	case "409":
		if strings.Contains(strings.ToLower(descr), "consumer deleted") {
			r.failed(jetstream.ErrConsumerNotFound)
		} else if !strings.Contains(strings.ToLower(descr), "maxbytes") {
			r.failed(fmt.Errorf("pull: %s %s", status, descr)) // e.g. a leader change
		}
	case "423":
		r.pinID = "" // pinned to someone else, or by a leader that is gone
		r.failed(jetstream.ErrPinIDMismatch)
	case "503":
		// Nobody answers for the consumer: its leader is being elected,
		// or the pipe was removed with it. Made again if need be.
		r.cons = nil
		r.failed(fmt.Errorf("pull: %w", nats.ErrNoResponders))
	default:
		r.failed(fmt.Errorf("pull: %s %s", status, descr))
	}
}

// fetched adds a message to the window.
func (r *jsReader) fetched(m *nats.Msg, meta *nats.MsgMetadata) {
	seq := meta.Sequence.Stream
	if r.seqs[seq] {
		return // redelivered while held here
	}
	if _, ok := r.acked[seq]; ok {
		m.Ack() // redelivered as it was acknowledged, or the ack was lost
		return
	}
	if pin := m.Header.Get("Nats-Pin-Id"); pin != "" {
		r.pinID = pin
	}
	token := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if seq < r.last[token] {
		r.e.log.Error("jetstream: a writer's message came after a later one; its chunks are read out of order", "pipe", abbrev([]byte(r.name)), "seq", seq, "after", r.last[token])
	}
	r.last[token] = max(r.last[token], seq)
	wid, ok := r.writers[token]
	if !ok {
		wid = uint64(len(r.writers) + 1)
		r.writers[token] = wid
	}
	data := m.Data
	r.avgSize += (len(data) - r.avgSize) / 8
	if strings.HasPrefix(m.Subject, jsEnds) {
		r.win.finish(wid)
		r.ends = append(r.ends, &jsMsg{m: m, seq: seq, token: token})
		r.seqs[seq] = true
		r.ackEnds(token)
		return
	}
	chunks, err := decodeChunks(data)
	if err != nil {
		r.e.log.Error("jetstream: a message is not a batch of chunks; dropped", "pipe", abbrev([]byte(r.name)), "seq", seq, "err", err)
		m.Term()
		return
	}
	jm := &jsMsg{m: m, seq: seq, token: token, base: r.nextID, total: len(chunks)}
	if meta.NumDelivered > 1 {
		jm.gone = r.consumedBefore(seq, len(chunks))
	}
	if jm.gone != nil {
		var kept [][]byte
		for i, c := range chunks {
			if !jm.gone.has(i) {
				kept = append(kept, c)
				jm.at = append(jm.at, uint32(i))
			}
		}
		chunks = kept
	}
	if len(chunks) == 0 {
		r.acked[seq] = time.Now()
		m.Ack()
		return
	}
	jm.n, jm.left = len(chunks), len(chunks)
	r.win.enqueueChunks(wid, chunks, r.nextID)
	r.nextID += uint64(len(chunks))
	r.msgs = append(r.msgs, jm)
	r.seqs[seq] = true
}

// inOrder reports whether a delivery follows the one before it, and so
// may be taken in. The consumer numbers its deliveries, and all of them
// come here, in order, while this reader is pinned: a gap is a delivery
// that never came (the connection to NATS was lost with it on the way,
// or the consumer's leader changed). JetStream sends that message again
// once the ack wait ends; messages after it taken in meanwhile would be
// read before it. So after a gap the reader takes in nothing more and
// pulls nothing until every delivery it left alone is due again, an ack
// wait after the last of them: then they come again, with the missing
// one, in stream order. The window already taken in is read meanwhile.
func (r *jsReader) inOrder(meta *nats.MsgMetadata) bool {
	dseq := meta.Sequence.Consumer
	if time.Now().Before(r.resync) {
		r.resync = time.Now().Add(r.e.cfg.AckWait + r.e.cfg.AckWait/2)
		return false
	}
	if r.dseq != 0 && dseq != r.dseq+1 {
		r.e.log.Warn("jetstream: a delivery did not come; waiting for it to come again", "pipe", abbrev([]byte(r.name)), "delivery", dseq, "after", r.dseq)
		r.dseq = 0
		r.resync = time.Now().Add(r.e.cfg.AckWait + r.e.cfg.AckWait/2)
		r.repin = true
		return false
	}
	r.dseq = dseq
	return true
}

// Progress of partly consumed messages. A message is one batch, acknowledged
// whole; a broker that stops reading a pipe with a message partly consumed
// records which of its chunks are gone, as ranges of their indices, so the
// next reader skips them: not how many, since the chunks consumed need not
// be the first (one connection's TAKE given back, another's acknowledged).

func progressKey(key string) string { return key + ".progress" }

// consumedBefore returns the chunks of message seq that a reader before
// this one consumed, or nil.
func (r *jsReader) consumedBefore(seq uint64, total int) bitset {
	if !r.loaded {
		r.loaded = true
		ctx, cancel := context.WithTimeout(r.ctx, jsOpTimeout)
		defer cancel()
		if ent, err := r.e.kv.Get(ctx, progressKey(r.key)); err == nil {
			r.progress = decodeProgress(ent.Value())
		}
	}
	var gone bitset
	for _, rg := range r.progress[seq] {
		for i := max(rg[0], 0); i < min(rg[1], total); i++ {
			gone.add(i, total)
		}
	}
	delete(r.progress, seq)
	return gone
}

// decodeProgress reads the recorded progress: for each message, ranges of
// chunks consumed, or (as brokers before this one recorded it) a count of
// its first chunks consumed.
func decodeProgress(b []byte) map[uint64][][2]int {
	var raw map[uint64]json.RawMessage
	json.Unmarshal(b, &raw)
	progress := make(map[uint64][][2]int, len(raw))
	for seq, v := range raw {
		var n int
		var rs [][2]int
		switch {
		case json.Unmarshal(v, &n) == nil:
			progress[seq] = [][2]int{{0, n}}
		case json.Unmarshal(v, &rs) == nil:
			progress[seq] = rs
		}
	}
	return progress
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
	// Counted first, so the slice is made once: a message holds thousands.
	n := 0
	for r := b; len(r) > 0; n++ {
		size, k := binary.Uvarint(r)
		if k <= 0 || size > uint64(len(r)-k) {
			return nil, errors.New("bad chunk length")
		}
		r = r[k+int(size):]
	}
	out := make([][]byte, 0, n)
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
