package broker

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// A connection's reader and writer (conn.go): a peer that does not read
// its replies, or sends more than the broker will hold for it, is throttled
// alone, and is not taken for dead while it waits.

// Trap: a client that never reads its replies must not stall the broker
// (zmq4's ROUTER blocks every send behind one full peer).
func TestClientNotReadingRepliesStallsNobody(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	c := dialT(t, s)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", bytes.Repeat([]byte("x"), 1000)))
	// The rude client floods LIST requests, whose replies it never reads.
	rude := dialRaw(t, s, zmq4.Dealer)
	go func() {
		for range 20000 {
			if rude.w.writeMessage(false, [][]byte{[]byte("LIST")}) != nil || rude.w.flush() != nil {
				return
			}
		}
	}()
	// Wait until the broker has more replies for it than a socket buffer
	// holds (its writer is then blocked on the socket)...
	for range 200 {
		mustOK(t, c.Write(ctx, "p", []byte("y")))
		_, err := c.Read(ctx, "p")
		mustOK(t, err)
	}
	// ...and everyone else is still served.
	other := dialT(t, s)
	mustOK(t, other.Open(ctx, "q"))
	mustOK(t, other.Write(ctx, "q", []byte("z")))
	got, err := other.Read(ctx, "q")
	mustOK(t, err)
	if string(got) != "z" {
		t.Fatalf("got %q", got)
	}
}

// Regression: PINGs bypassed the per-connection inflight limits. The
// reader released a PING's credit at once and queued its PONG, echoing the
// PING's context, without bound; a peer that sends PINGs and never reads
// made the broker queue PONGs until memory ran out.
func TestPingFloodIsThrottled(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Logger = quietLogger(t) })
	p := dialRaw(t, s, zmq4.Dealer)
	ping := make([]byte, 2+1024) // TTL, then a 1 KiB context
	const limit = 1 << 16        // 64 MiB of PINGs
	sent := 0
	for sent < limit {
		p.w.nc.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		for range 64 {
			if err := p.w.writeCommand("PING", ping); err != nil {
				break
			}
			sent++
		}
		if p.w.flush() != nil {
			break // the broker stopped reading: throttled
		}
	}
	t.Logf("%d PINGs of %d bytes sent without reading a PONG", sent, len(ping))
	if sent > 16384 {
		t.Fatalf("the broker read %d PINGs (%d MiB) from a peer that reads no PONGs", sent, sent*len(ping)>>20)
	}
	// Others are served meanwhile.
	c := dialT(t, s)
	mustOK(t, c.Open(testCtx(t), "p"))
}

// Regression: a client with more requests in flight than the broker's
// inflight limits, behind a WRITE that waits for room, was declared dead.
// The broker rightly stops reading it, so it reads no PING either; and with
// no reply due, the client hears nothing for its whole timeout and gives up
// with ErrConnLost, although the broker is fine and the writes would all
// have gone through once a reader came.
func TestThrottledClientIsNotDeclaredDead(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = Limits{MaxName: 64, MaxChunk: 1024, MaxBatch: 16}
		c.MaxPipeBytes = 64 << 10
		c.Logger = quietLogger(t)
	})
	ctx := testCtx(t)
	const timeout = 1500 * time.Millisecond
	w := dialT(t, s, WithTimeout(timeout))
	mustOK(t, w.Open(ctx, "p"))
	// 64 KiB of pipe holds about 1,300 one-byte chunks: the rest wait, and
	// more than maxInflight requests are in flight.
	const n = maxInflight + 3000
	sent := make(chan []*call, 1)
	go func() {
		calls := make([]*call, n)
		for i := range calls {
			calls[i] = w.async(CmdWrite, []byte("p"), []byte{byte(i)})
		}
		sent <- calls
	}()
	r := dialT(t, s)
	waitFor(t, r, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks > 1000 })
	// The reader comes back after longer than the writer's timeout.
	select {
	case <-time.After(timeout + time.Second):
	case <-ctx.Done():
	}
	for got := 0; got < n; {
		chunks, err := readBatch(ctx, r, "p", 16)
		if err != nil {
			t.Fatalf("reader after %d chunks: %v", got, err)
		}
		for _, c := range chunks {
			if c[0] != byte(got) {
				t.Fatalf("chunk %d is %d", got, c[0])
			}
			got++
		}
		if w.Err() != nil {
			t.Fatalf("writer, after %d chunks read: %v", got, w.Err())
		}
	}
	for i, c := range <-sent {
		if <-c.done; c.err != nil {
			t.Fatalf("WRITE %d: %v", i, c.err)
		}
	}
}

// heldItems.take hands out the oldest items in order, sharing a block's
// memory when they lie in one block and copying across blocks; taking none
// is allowed however few are held.
func TestHeldItemsTakeInOrder(t *testing.T) {
	var h heldItems
	if got := h.take(0); len(got) != 0 {
		t.Fatalf("take(0) of nothing = %v", got)
	}
	mk := func(from, n int) []item {
		var out []item
		for i := range n {
			out = append(out, item{id: uint64(from + i)})
		}
		return out
	}
	h.add(mk(1, 3))
	h.add(mk(4, 2))
	h.add(mk(6, 4))
	var ids []uint64
	for _, n := range []int{0, 2, 3, 1, 3} {
		for _, it := range h.take(n) {
			ids = append(ids, it.id)
		}
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(ids, want) || h.len() != 0 {
		t.Fatalf("took %v, %d left; want %v, 0 left", ids, h.len(), want)
	}
}
