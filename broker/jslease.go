package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A broker's hold on reading a pipe: the lease that makes it the pipe's one
// reader across brokers, and giving back everything it held when it stops.

// leave gives back every message held here, in stream order, so the next
// reader, on any broker, gets them in order: it records which chunks of
// partly consumed ones are gone, naks them all and unpins the consumer.
// Chunks that an UNREAD put here, which belong to no message, are stored
// again at the pipe's end.
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
	if len(r.msgs) == 0 && len(r.ends) == 0 {
		r.unpin(ctx)
		// The last reader of a closed pipe removes it once drained.
		r.release(ctx)
		r.e.removeIfUnused(ctx, r.name)
		return
	}
	if r.progress == nil {
		r.progress = make(map[uint64][][2]int)
	}
	partial := false
	for _, m := range r.msgs {
		if m.gone != nil {
			r.progress[m.seq] = m.gone.ranges()
			partial = true
		}
	}
	if partial {
		b, _ := json.Marshal(r.progress)
		if _, err := r.e.kv.Put(ctx, progressKey(r.key), b); err != nil {
			r.e.log.Warn("jetstream: the progress of a partly read batch was not recorded: its chunks already read will be read again", "pipe", abbrev([]byte(r.name)), "err", err)
		}
	}
	// Writers' ends go back too, each behind its writer's chunks.
	held := append(r.msgs, r.ends...)
	slices.SortFunc(held, func(a, b *jsMsg) int { return cmp.Compare(a.seq, b.seq) })
	for _, m := range held {
		if err := m.m.Nak(); err != nil {
			r.e.log.Warn("jetstream: giving back a message failed; JetStream redelivers it after the ack wait", "pipe", abbrev([]byte(r.name)), "seq", m.seq, "err", err)
		}
	}
	r.msgs, r.ends = nil, nil
	// The naks are on the wire before the unpin's request, on the same
	// connection, so the next reader sees them in order.
	r.unpin(ctx)
}

// reset empties the window, after leave.
func (r *jsReader) reset() {
	r.win = newPipe(r.name)
	r.msgs, r.ends = nil, nil
	clear(r.seqs)
	clear(r.writers)
	clear(r.last)
	clear(r.took)
	// What pulls given up on bring yet belongs to the window given back.
	r.gonePin, r.pinID = r.pinID, ""
	r.dseq = 0
	r.moreComing = false
}

func (r *jsReader) unpin(ctx context.Context) {
	if r.pinID == "" || r.cons == nil {
		return
	}
	if err := r.e.stream.UnpinConsumer(ctx, "p-"+r.key, jsGroup); err != nil {
		r.e.log.Debug("jetstream: unpinning a pipe's consumer failed; the pin expires by itself", "pipe", abbrev([]byte(r.name)), "err", err)
	}
}

// The reader's lease. JetStream's pin says which client a consumer
// delivers to, but only once a message has been delivered: two brokers
// whose readers wait on an empty pipe would both be waiting. So a broker
// reads a pipe only while it holds the pipe's lease, a key in the bucket
// ("<pipe>.reader": the broker's id and when the lease ends), taken by
// create or compare-and-set, renewed while it reads and deleted when it
// stops; a broker that dies loses it when it ends, PinnedTTL or a little
// more after (leaseTTL), once what that broker held is due again.
// A second reader on another broker is refused while the lease is held.

func leaseKey(key string) string { return key + ".reader" }

func (r *jsReader) leaseValue() []byte {
	return []byte(r.e.id + " " + strconv.FormatInt(time.Now().Add(r.e.cfg.leaseTTL()).UnixNano(), 10))
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
