package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Order and accounting on the hot paths: a writer queue's runs, replies
// written straight to the socket beside those queued for the writer, and
// synchronous calls cut short while others are in flight.

// runQueue: short and long runs, pushed and popped in any mix, come out in
// the order pushed, with their ids; each sees what is left; len is right.
func TestRunQueueMixedRunsKeepOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 50; round++ {
		var q runQueue
		var want []item
		nextID := uint64(1)
		for op := 0; op < 300; op++ {
			switch rng.IntN(4) {
			case 0, 1: // push a run of n chunks, as chunks or as items
				n := 1 + rng.IntN(20)
				if rng.IntN(2) == 0 {
					cs := make([][]byte, n)
					for i := range cs {
						cs[i] = []byte(strconv.FormatUint(nextID+uint64(i), 10))
						want = append(want, item{data: cs[i], id: nextID + uint64(i)})
					}
					q.pushRun(run{chunks: cs, id: nextID})
					nextID += uint64(n)
				} else {
					its := make([]item, n)
					for i := range its {
						id := nextID + uint64(2*i) // ids with gaps
						its[i] = item{data: []byte(strconv.FormatUint(id, 10)), id: id}
					}
					want = append(want, its...)
					q.pushRun(run{items: its})
					nextID += uint64(2 * n)
				}
			case 2:
				if q.len() == 0 {
					continue
				}
				got := q.pop()
				if got.id != want[0].id || !bytes.Equal(got.data, want[0].data) {
					t.Fatalf("round %d: pop %d %q, want %d %q", round, got.id, got.data, want[0].id, want[0].data)
				}
				want = want[1:]
			case 3:
				if q.len() == 0 {
					continue
				}
				max := 1 + rng.IntN(10)
				dst, n, _ := q.popRun(nil, max, 1<<30, true)
				for i := 0; i < n; i++ {
					if dst[i].id != want[i].id || !bytes.Equal(dst[i].data, want[i].data) {
						t.Fatalf("round %d: popRun[%d] %d %q, want %d %q", round, i, dst[i].id, dst[i].data, want[i].id, want[i].data)
					}
				}
				want = want[n:]
			}
			if q.len() != len(want) {
				t.Fatalf("round %d: len %d, want %d", round, q.len(), len(want))
			}
			i := 0
			q.each(func(it item) {
				if i >= len(want) || it.id != want[i].id || !bytes.Equal(it.data, want[i].data) {
					t.Fatalf("round %d: each[%d] %d %q", round, i, it.id, it.data)
				}
				i++
			})
			if i != len(want) {
				t.Fatalf("round %d: each saw %d, want %d", round, i, len(want))
			}
		}
	}
}

// flushNow: what the kernel does not take stays buffered, in order, and
// the next flush writes it before what was buffered after; sent counts
// each message once, when it went whole.
func TestFlushNowLeavesTheRestInOrder(t *testing.T) {
	local, peer := socketPair(t)
	defer local.Close()
	defer peer.Close()
	w := &wire{nc: local, dst: local}
	var want []byte
	msgs, sent := 0, 0
	// Messages of 60 KiB in frames below vecMin, so flushNow writes them,
	// until the kernel takes only part of what is buffered.
	for i := 0; ; i++ {
		frames := make([][]byte, 30)
		for j := range frames {
			frames[j] = bytes.Repeat([]byte{byte('a' + (i+j)%26)}, 2000)
		}
		mustOK(t, w.writeMessage(false, frames))
		fs := make([]string, len(frames))
		for j := range frames {
			fs[j] = string(frames[j])
		}
		want = append(want, zmessage(fs...)...)
		msgs++
		whole, err := w.flushNow()
		mustOK(t, err)
		sent += w.takeSent()
		if !whole {
			break
		}
		if i > 1000 {
			t.Fatal("the socket never filled")
		}
	}
	t.Logf("%d messages, %d sent whole by flushNow, %d bytes left", msgs, sent, w.pending())
	// One more message, then a blocking flush while the peer reads.
	mustOK(t, w.writeMessage(false, [][]byte{[]byte("OK"), bytes.Repeat([]byte("z"), 5000)}))
	want = append(want, zmessage("OK", string(bytes.Repeat([]byte("z"), 5000)))...)
	msgs++
	got := make(chan []byte)
	go func() {
		buf := make([]byte, len(want))
		n, _ := io.ReadFull(peer, buf)
		got <- buf[:n]
	}()
	mustOK(t, w.flush())
	sent += w.takeSent()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("stream differs: %d bytes read, %d wanted", len(b), len(want))
	}
	if sent != msgs {
		t.Fatalf("%d messages counted sent, want %d", sent, msgs)
	}
}

// Replies written straight to the socket (sendNow) and replies queued for
// the writer (read replies with chunks) reach each client in the order of
// its requests, many clients at once, and the outboxes' counts end at zero.
func TestDirectAndQueuedRepliesStayInOrder(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Logger = quietLogger(t) })
	const clients, rounds = 6, 400
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for ci := range clients {
		c := dialT(t, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			pipe := []byte("p" + strconv.Itoa(ci))
			if err := c.Open(testCtx(t), string(pipe)); err != nil {
				errs <- err
				return
			}
			type op struct {
				k    *call
				kind int
				arg  string
			}
			var ops []op
			for r := range rounds {
				chunk := fmt.Sprintf("c%d-%d-%s", ci, r, bytes.Repeat([]byte("x"), r*37%5000))
				ops = append(ops,
					op{c.async(CmdWrite, pipe, []byte(chunk)), 0, ""},
					op{c.async(CmdMRead, pipe, []byte("1")), 1, chunk},
					op{c.async(CmdClose, []byte("nope"+strconv.Itoa(ci))), 2, ""},
					op{c.async(CmdOpen, pipe), 0, ""},
				)
			}
			for i, o := range ops {
				select {
				case <-o.k.done:
				case <-time.After(20 * time.Second):
					errs <- fmt.Errorf("client %d: op %d never answered", ci, i)
					return
				}
				var bad bool
				switch o.kind {
				case 0:
					bad = o.k.err != nil || len(o.k.reply) != 0
				case 1:
					bad = o.k.err != nil || len(o.k.reply) != 1 || string(o.k.reply[0]) != o.arg
				case 2:
					bad = o.k.err == nil
				}
				if bad {
					errs <- fmt.Errorf("client %d: op %d (%s) got %d frames, err %v", ci, i, o.k.cmd, len(o.k.reply), o.k.err)
					return
				}
			}
			errs <- nil
		}()
	}
	wg.Wait()
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	settle(t, 5*time.Second, "outbox counts", func() (bool, string) {
		s.coreMu.Lock()
		defer s.coreMu.Unlock()
		for _, c := range s.co.conns {
			c.out.mu.Lock()
			in, b, q := c.out.inflight, c.out.bytes, len(c.out.queue)
			c.out.mu.Unlock()
			// The reader admits its next request before reading it: 1.
			if in != 1 || b != 0 || q != 0 {
				return false, fmt.Sprintf("conn %d: inflight %d, bytes %d, queued %d", c.id, in, b, q)
			}
		}
		return true, ""
	})
}

// Synchronous calls whose contexts end at random moments, from several
// goroutines on one client, with asynchronous calls in flight too: every
// call that is not cut short gets its own reply, no call hangs, and the
// connection stays in step.
func TestCallsCutAtRandomStayInStep(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Logger = quietLogger(t) })
	c := dialT(t, s)
	mustOK(t, c.Open(testCtx(t), "q"))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 1500; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(300))*time.Microsecond)
				var err error
				switch i % 3 {
				case 0:
					_, err = c.List(ctx)
				case 1:
					err = c.ClosePipe(ctx, "nope")
					if err == nil {
						err = errors.New("CLOSE of no pipe answered OK")
					} else if errors.Is(err, ErrNoPipe) {
						err = nil
					}
				case 2:
					if g == 0 {
						// An asynchronous call in flight as well.
						k := c.async(CmdOpen, []byte("q"))
						select {
						case <-k.done:
							err = k.err
						case <-time.After(10 * time.Second):
							err = errors.New("async OPEN never answered")
						}
					} else {
						err = c.Open(ctx, "q")
					}
				}
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					errs <- fmt.Errorf("goroutine %d call %d: %w", g, i, err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("calls hung")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mustOK(t, c.Err())
	_, err := c.List(testCtx(t))
	mustOK(t, err)
}

// A peer that sends thousands of requests before it reads a reply fills
// its socket: direct replies then meet EAGAIN (sendNow hands them to the
// writer) while others queue behind. Every reply still comes once, in order.
func TestDirectRepliesToAFullSocketStayInOrder(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Logger = quietLogger(t) })
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	var cs [][]byte
	for i := 0; i < 100; i++ {
		cs = append(cs, []byte("c"+strconv.Itoa(i)))
	}
	mustOK(t, c.Write(ctx, "p", cs...))
	p := dialRaw(t, s, zmq4.Dealer)
	const n = 3600
	kind := func(i int) int {
		switch {
		case i%240 == 7:
			return 2 // MREAD: a reply with a chunk, for the writer
		case i%2 == 0:
			return 0 // OPEN: OK
		default:
			return 1 // CLOSE of no pipe: ERROR
		}
	}
	for i := 0; i < n; i++ {
		var fs [][]byte
		switch kind(i) {
		case 0:
			fs = [][]byte{[]byte("OPEN"), []byte("p")}
		case 1:
			fs = [][]byte{[]byte("CLOSE"), []byte("nope")}
		case 2:
			fs = [][]byte{[]byte("MREAD"), []byte("p"), []byte("1")}
		}
		mustOK(t, p.w.writeMessage(false, fs))
	}
	mustOK(t, p.w.flush())
	// Let the broker answer into the full socket before reading.
	settle(t, 10*time.Second, "the broker read every request", func() (bool, string) {
		ps, err := c.List(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(ps) == 1 && ps[0].Opens == 1+n/2, fmt.Sprintf("%+v", ps)
	})
	next := 0
	for i := 0; i < n; i++ {
		var got []string
		for {
			p.w.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			msg, err := p.w.readMessage(1<<30, 1<<20)
			mustOK(t, err)
			if msg.command != "" {
				continue // the broker's PING while it throttles us
			}
			for _, f := range msg.frames {
				got = append(got, string(f))
			}
			break
		}
		ok := false
		switch kind(i) {
		case 0:
			ok = len(got) == 1 && got[0] == "OK"
		case 1:
			ok = len(got) == 2 && got[0] == "ERROR"
		case 2:
			ok = len(got) == 2 && got[0] == "OK" && got[1] == "c"+strconv.Itoa(next)
			next++
		}
		if !ok {
			t.Fatalf("reply %d (kind %d): %q", i, kind(i), got)
		}
	}
}
