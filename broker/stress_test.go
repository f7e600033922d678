package broker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Stress tests: hostile and careless peers next to correct ones. Each runs
// in a few seconds under -race on two cores.

// settleBaseline waits for the goroutine count to come back to what it was
// and the heap to come back near it: what the broker held for connections
// and chunks now gone must be freed.
func settleBaseline(t testing.TB, goroutines int, heap uint64) {
	t.Helper()
	settle(t, 10*time.Second, "goroutine count", func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= goroutines, fmt.Sprintf("%d goroutines, baseline %d", n, goroutines)
	})
	const slack = 16 << 20
	settle(t, 10*time.Second, "heap in use", func() (bool, string) {
		h := heapInuse()
		return h <= heap+slack, fmt.Sprintf("%d MiB in use, baseline %d MiB", h>>20, heap>>20)
	})
}

func TestStressGarbageDoesNotDisturbCorrectClients(t *testing.T) {
	lim := Limits{MaxName: 64, MaxChunk: 4096, MaxBatch: 16}
	s := startServer(t, func(c *Config) {
		c.Limits = lim
		c.HandshakeTimeout = 2 * time.Second
		c.Logger = quietLogger(t)
	})
	ctx := testCtx(t)
	const pipe, n = "data", 3000
	chunk := func(i int) []byte { return fmt.Appendf(nil, "chunk %05d", i) }

	w, r := dialT(t, s), dialT(t, s)
	mustOK(t, w.Open(ctx, pipe))
	done := make(chan struct{})
	var garbage sync.WaitGroup
	var rounds atomic.Int64
	for g := range 6 {
		garbage.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for k := 0; ; k++ {
				select {
				case <-done:
					return
				default:
				}
				if err := garbageRound(s, lim, pipe, rng, (g+k)%len(garbageKinds)); err != nil {
					t.Errorf("garbage %s: %v", garbageKinds[(g+k)%len(garbageKinds)], err)
					return
				}
				rounds.Add(1)
			}
		})
	}

	// The writer pipelines a window of WRITEs; every one must be acked.
	wrote := make(chan error, 1)
	go func() {
		var calls []*call
		for i := range n {
			calls = append(calls, w.async(CmdWrite, []byte(pipe), chunk(i)))
			if len(calls) == 32 || i == n-1 {
				for _, c := range calls {
					if <-c.done; c.err != nil {
						wrote <- fmt.Errorf("WRITE: %w", c.err)
						return
					}
				}
				calls = calls[:0]
			}
		}
		wrote <- nil
	}()
	next := 0
	for next < n {
		got, err := readBatch(ctx, r, pipe, 1+next%lim.MaxBatch)
		if err != nil {
			t.Fatalf("reader, after %d chunks: %v", next, err)
		}
		for _, c := range got {
			if !bytes.Equal(c, chunk(next)) {
				t.Fatalf("reader: got %q, want %q", c, chunk(next))
			}
			next++
		}
	}
	mustOK(t, <-wrote)
	close(done)
	garbage.Wait()
	t.Logf("%d garbage connections meanwhile", rounds.Load())
	// Nothing the garbage sent reached the pipe.
	ps, err := r.List(ctx)
	mustOK(t, err)
	for _, p := range ps {
		if p.Name == pipe && (p.Chunks != 0 || p.Opens != 1 || p.Reader) {
			t.Fatalf("pipe after the run: %+v", p)
		}
	}
}

var garbageKinds = []string{
	"random frames", "too many frames", "oversized frames", "raw bytes",
	"vanish mid-message", "vanish mid-handshake", "huge READY", "not reading",
}

// garbageRound opens one connection and abuses it in the given way. It
// reports an error only for a broker reply that breaks the protocol.
func garbageRound(s *Server, lim Limits, pipe string, rng *rand.Rand, kind int) error {
	nc, err := dialUnix(s.Endpoint())
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	switch garbageKinds[kind] {
	case "raw bytes":
		if rng.IntN(2) == 0 {
			nc.Write([]byte("GET / HTTP/1.1\r\nHost: zpipes\r\n\r\n"))
		} else {
			nc.Write(randBytes(1 + rng.IntN(300)))
		}
		return nil
	case "vanish mid-handshake":
		hs := append(zmtpGreeting(), zmtpReady("DEALER")...)
		nc.Write(hs[:rng.IntN(len(hs))])
		return nil
	case "huge READY":
		nc.Write(zmtpGreeting())
		nc.Write([]byte{flagCommand | flagLong, 0, 0, 1, 0, 0, 0, 0, 0, 5, 'R', 'E', 'A', 'D', 'Y'})
		return nil
	}
	w, err := handshake(nc, zmq4.Dealer, nil, false, time.Now().Add(5*time.Second))
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	var sent [][][]byte // requests whose replies are checked
	send := func(frames ...[]byte) error {
		sent = append(sent, frames)
		return w.writeMessage(false, frames)
	}
	b := func(s string) []byte { return []byte(s) }
	switch garbageKinds[kind] {
	case "random frames":
		for range 1 + rng.IntN(8) {
			var frames [][]byte
			switch rng.IntN(4) {
			case 0: // nothing like a command
				for range 1 + rng.IntN(6) {
					frames = append(frames, append([]byte{0xfe}, randBytes(rng.IntN(40))...))
				}
			case 1: // the right pipe, the wrong shape
				frames = [][][]byte{
					{b(CmdWrite), b(pipe)},
					{b(CmdWrite), b(pipe), b("x"), b("y")},
					{b(CmdMWrite), b(pipe)},
					{b(CmdMRead), b(pipe), b("0")},
					{b(CmdRead), b(pipe), b("extra")},
					{b(CmdUnread), b(pipe)},
					{b("write"), b(pipe), b("x")},
				}[rng.IntN(7)]
			case 2: // well-formed, on pipes of its own or harmless
				junk := b(fmt.Sprintf("junk%d", rng.IntN(4)))
				frames = [][][]byte{
					{b(CmdOpen), junk},
					{b(CmdWrite), junk, randBytes(rng.IntN(100))},
					{b(CmdMRead), b("nope"), b("3")},
					{b(CmdCancel), b(pipe)},
					{b(CmdClose), junk},
					{b(CmdList)},
				}[rng.IntN(6)]
			case 3: // a ZMTP PING between requests
				if err := w.writeCommand("PING", randBytes(rng.IntN(20))); err != nil {
					return err
				}
				continue
			}
			if err := send(frames...); err != nil {
				return err
			}
		}
	case "too many frames":
		frames := [][]byte{b(CmdMWrite), b(pipe)}
		for range lim.MaxBatch + 1 + rng.IntN(100) {
			frames = append(frames, b("x"))
		}
		if err := send(frames...); err != nil {
			return err
		}
		if err := send(make([][]byte, 5000)...); err != nil {
			return err
		}
	case "oversized frames":
		if err := send(b(CmdWrite), b(pipe), make([]byte, lim.MaxChunk+1)); err != nil {
			return err
		}
		if err := send(b(CmdWrite), b(pipe), make([]byte, lim.maxMessage())); err != nil {
			return err
		}
		// Every chunk within the chunk limit, the message over its own.
		frames := [][]byte{b(CmdMWrite), b(pipe)}
		for range lim.maxMessage()/lim.MaxChunk + 1 {
			frames = append(frames, make([]byte, lim.MaxChunk))
		}
		if err := send(frames...); err != nil {
			return err
		}
	case "vanish mid-message":
		// A WRITE to the real pipe cut off in its chunk: it must not land.
		w.appendFrame(flagMore, b(CmdWrite))
		w.appendFrame(flagMore, b(pipe))
		w.out = append(w.out, flagLong)
		w.out = binary.BigEndian.AppendUint64(w.out, uint64(lim.MaxChunk))
		w.out = append(w.out, randBytes(rng.IntN(lim.MaxChunk))...)
		return w.flush()
	case "not reading":
		for range 2000 {
			if err := w.writeMessage(false, [][]byte{b("NOPE")}); err != nil {
				return nil // throttled, then cut off: fine
			}
		}
		w.flush()
		return nil
	}
	if err := w.flush(); err != nil {
		return err
	}
	// Every request gets exactly one well-formed reply, in order.
	for i, req := range sent {
		var msg message
		for {
			msg, err = w.readMessage(1<<30, 1<<20)
			if err != nil {
				return fmt.Errorf("reply %d of %d: %w", i, len(sent), err)
			}
			if msg.command == "" {
				break
			}
		}
		fs := msg.frames
		if msg.envelope {
			fs = fs[1:]
		}
		req := describe(req)
		isErr := len(fs) == 2 && string(fs[0]) == StatusError
		isOK := len(fs) >= 1 && string(fs[0]) == StatusOK
		if !isErr && !isOK {
			return fmt.Errorf("request %.40q: reply %.60q", req, fs)
		}
		if isErr && remoteError(fs[1]).(*RemoteError).kind == nil && !strings.HasPrefix(string(fs[1]), ErrUnknownCommand.Error()) {
			return fmt.Errorf("request %.40q: unknown reason %q", req, fs[1])
		}
		if isOK && req[0] != CmdList && req[0] != CmdMRead && len(fs) != 1 {
			return fmt.Errorf("request %.40q: reply %.60q", req, fs)
		}
		if len(req) > 1 && req[1] == pipe && req[0] != CmdCancel && !isErr {
			return fmt.Errorf("bad request %.40q on the real pipe answered %.60q", req, fs)
		}
	}
	return nil
}

// describe abbreviates a request for messages: at most its first frames.
func describe(frames [][]byte) []string {
	var out []string
	for i, f := range frames {
		if i == 4 {
			out = append(out, fmt.Sprintf("... %d frames", len(frames)))
			break
		}
		out = append(out, string(f))
	}
	return out
}

func TestStressManyTinyMessages(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Logger = quietLogger(t) })
	ctx := testCtx(t)
	const (
		pipe    = "tiny"
		writers = 4
		each    = 50000
	)
	goroutines, heap := runtime.NumGoroutine(), heapInuse()
	r := dialT(t, s)
	mustOK(t, r.Open(ctx, pipe))
	errs := make(chan error, writers)
	for wi := range writers {
		w := dialT(t, s)
		go func() {
			// All pipelined at once: the broker throttles, the client waits.
			calls := make([]*call, each)
			for i := range calls {
				calls[i] = w.async(CmdWrite, []byte(pipe), binary.BigEndian.AppendUint32([]byte{byte(wi)}, uint32(i)))
			}
			for i, c := range calls {
				if <-c.done; c.err != nil {
					errs <- fmt.Errorf("writer %d, WRITE %d: %w", wi, i, c.err)
					return
				}
			}
			errs <- w.Close()
		}()
	}
	next := make([]uint32, writers)
	for got := 0; got < writers*each; {
		chunks, err := readBatch(ctx, r, pipe, 4096)
		if err != nil {
			t.Fatalf("after %d chunks: %v", got, err)
		}
		for _, c := range chunks {
			if len(c) != 5 || int(c[0]) >= writers {
				t.Fatalf("chunk %q", c)
			}
			wi, i := c[0], binary.BigEndian.Uint32(c[1:])
			if i != next[wi] {
				t.Fatalf("writer %d: chunk %d, want %d", wi, i, next[wi])
			}
			next[wi]++
		}
		got += len(chunks)
	}
	for range writers {
		mustOK(t, <-errs)
	}
	mustOK(t, r.ClosePipe(ctx, pipe))
	assertNoPipes(t, r)
	r.Close()
	settleBaseline(t, goroutines, heap)
}

func TestStressVanishingClients(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Logger = quietLogger(t) })
	ctx := testCtx(t)
	goroutines, heap := runtime.NumGoroutine(), heapInuse()
	keeper := dialT(t, s)
	// "in" gets the vanishing writers' chunks; "empty" the vanishing
	// readers' READs, which wait; "ok" is a correct client's round trips.
	for _, p := range []string{"in", "empty", "ok"} {
		mustOK(t, keeper.Open(ctx, p))
	}
	const rounds = 600
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < rounds; i += 4 {
				nc, err := dialUnix(s.Endpoint())
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				switch i % 5 {
				case 0: // gone before the handshake is done
					nc.Write(zmtpGreeting()[:i%greetingSize])
					nc.Close()
					continue
				case 1: // gone right after connecting
					nc.Close()
					continue
				}
				w, err := handshake(nc, zmq4.Dealer, nil, false, time.Now().Add(5*time.Second))
				if err != nil {
					t.Errorf("handshake: %v", err)
					nc.Close()
					return
				}
				var frames [][]byte
				switch i % 5 {
				case 2:
					frames = [][]byte{[]byte(CmdRead), []byte("empty")}
				case 3:
					frames = [][]byte{[]byte(CmdWrite), []byte("in"), fmt.Appendf(nil, "v%d", i)}
				case 4:
					frames = [][]byte{[]byte(CmdMRead), []byte("empty"), []byte("5")}
				}
				w.writeMessage(false, frames)
				w.flush()
				w.close()
			}
		})
	}
	// Meanwhile a correct client is served.
	c := dialT(t, s)
	for i := 0; i < 200; i++ {
		want := fmt.Appendf(nil, "ok %d", i)
		mustOK(t, c.Write(ctx, "ok", want))
		got, err := c.Read(ctx, "ok")
		mustOK(t, err)
		if !bytes.Equal(got, want) {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	wg.Wait()
	// Every vanished connection is gone: the broker has read all it will
	// of them, and each request it read has reached the core.
	settle(t, 5*time.Second, "the vanished connections gone", func() (bool, string) {
		n := s.conns()
		return n == 2, fmt.Sprintf("%d connections", n)
	})
	// Every vanished reader is forgotten: "empty" has no reader left, so a
	// READ of it is not refused as busy. The chunks that landed in "in" are
	// distinct and were written.
	waitFor(t, keeper, func(ps []PipeInfo) bool {
		for _, p := range ps {
			if p.Name == "empty" {
				return !p.Reader
			}
		}
		return false
	})
	mustOK(t, keeper.Write(ctx, "empty", []byte("x")))
	if got, err := keeper.Read(ctx, "empty"); err != nil || string(got) != "x" {
		t.Fatalf("READ of empty after the vanishing readers: %q, %v", got, err)
	}
	seen := map[string]bool{}
	for {
		ps, err := keeper.List(ctx)
		mustOK(t, err)
		if len(ps) == 0 || ps[0].Name != "empty" || ps[1].Name != "in" || ps[1].Chunks == 0 {
			break
		}
		chunks, err := readBatch(ctx, keeper, "in", 100)
		mustOK(t, err)
		for _, ch := range chunks {
			var i int
			if _, err := fmt.Sscanf(string(ch), "v%d", &i); err != nil || i%5 != 3 || seen[string(ch)] {
				t.Fatalf("chunk %q in pipe in (seen before: %v)", ch, seen[string(ch)])
			}
			seen[string(ch)] = true
		}
	}
	t.Logf("%d of %d vanishing writers' chunks landed", len(seen), rounds/5)
	for _, p := range []string{"in", "empty", "ok"} {
		mustOK(t, keeper.ClosePipe(ctx, p))
	}
	assertNoPipes(t, keeper)
	keeper.Close()
	c.Close()
	settleBaseline(t, goroutines, heap)
}
