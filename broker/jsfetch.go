package broker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// How a pipe's reader fills its window: pulls from the pipe's consumer,
// batches decoded into chunks queued by writer, and the progress of batches
// read in part by a broker that stopped reading.

// want starts a fetch if a connection reads here and the window has room.
func (r *jsReader) want() {
	if r.fetching || r.retry != nil {
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
	if err != nil {
		r.failed(err)
		return
	}
	// A pull asks for a count of messages, from the average size seen,
	// never for bytes: a message that does not fit a pull's byte budget
	// was seen to come after the next one.
	n := max(1, min(256, 1000-len(r.msgs), (jsWindowBytes-r.win.bytes)/max(r.avgSize, 1)))
	r.fetching = true
	r.fetchGen++
	r.fetchStart = time.Now()
	r.e.readerWG.Add(1)
	go r.fetch(r.cons, n, r.fetchGen)
}

// jsFetchGrace is how long past its expiry a pull may go on before the
// reader stops waiting for it. A pull ends when the server says so; one
// was seen to go on for good after a server of the cluster was lost (the
// client's guard timer restarts with every status message). Its messages,
// if any come, still go to the window.
const jsFetchGrace = 5 * time.Second

// abandon stops waiting for a pull that has gone on too long, so that
// another starts.
func (r *jsReader) abandon() {
	if r.fetching && time.Since(r.fetchStart) > jsFetchWait+jsFetchGrace {
		r.e.readFailed.event("pipe", abbrev([]byte(r.name)), "err", "a pull did not end; starting another")
		r.fetching = false
		r.fetchGen++
	}
}

// fetch runs in its own goroutine: JetStream holds a pull open until n
// messages come or jsFetchWait passes. It has no context: a pull the
// client gives up on may still be answered, and those messages would come
// back only after the ack wait, behind later ones. So a fetch ends when
// the server says the pull is over.
func (r *jsReader) fetch(cons jetstream.Consumer, n int, gen uint64) {
	defer r.e.readerWG.Done()
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(jsFetchWait), jetstream.FetchPriorityGroup(jsGroup))
	if err == nil {
		// The messages go to the window as they come, not once the pull
		// is full (it waits for n messages or its expiry); but each time
		// with every message the consumer has at hand, so that reads take
		// turns among all the writers it holds.
		ch := batch.Messages()
		for {
			m, ok := r.next(ch)
			if !ok {
				break
			}
			msgs := []jetstream.Msg{m}
			for len(msgs) < n && pendingAfter(msgs[len(msgs)-1]) {
				if m, ok = r.next(ch); !ok {
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
	r.box.put(readerMsg{op: ropFetched, err: err, gen: gen})
}

// next receives a pull's next message; false once the pull is over or the
// reader has stopped.
func (r *jsReader) next(ch <-chan jetstream.Msg) (jetstream.Msg, bool) {
	select {
	case m, ok := <-ch:
		return m, ok
	case <-r.ctx.Done():
		return nil, false
	}
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
		jm := &jsMsg{m: m, seq: seq, base: r.nextID, n: len(chunks), done: done, left: len(chunks)}
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
