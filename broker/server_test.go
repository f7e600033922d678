package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

func mustOK(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWriteThenRead(t *testing.T) {
	s := startServer(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "jobs"))
	mustOK(t, c.Write(ctx, "jobs", []byte("hello")))
	got, err := c.Read(ctx, "jobs")
	mustOK(t, err)
	if string(got) != "hello" {
		t.Fatalf("read %q, want hello", got)
	}
	mustOK(t, c.ClosePipe(ctx, "jobs"))
}

// waitingRead opens pipe p on a new client and sends it a READ, returning
// once watch's LIST shows the READ waiting.
func waitingRead(t *testing.T, s *Server, watch *Client) *call {
	t.Helper()
	r := dialT(t, s)
	mustOK(t, r.Open(testCtx(t), "p"))
	call := r.async(CmdRead, []byte("p"))
	waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Reader })
	return call
}

func TestReadWaitsForWrite(t *testing.T) {
	s := startServer(t)
	w := dialT(t, s)
	ctx := testCtx(t)
	call := waitingRead(t, s, w)
	select {
	case <-call.done:
		t.Fatalf("READ on an empty pipe answered: %q %v", call.reply, call.err)
	default:
	}
	mustOK(t, w.Write(ctx, "p", []byte("x")))
	<-call.done
	if call.err != nil || string(call.reply[0]) != "x" {
		t.Fatalf("READ got %q, %v", call.reply, call.err)
	}
}

// waitFor polls LIST until cond holds: the broker's state is the event.
func waitFor(t testing.TB, c *Client, cond func([]PipeInfo) bool) []PipeInfo {
	t.Helper()
	ctx := testCtx(t)
	for {
		ps, err := c.List(ctx)
		mustOK(t, err)
		if cond(ps) {
			return ps
		}
		select {
		case <-ctx.Done():
			t.Fatalf("condition never held; last LIST: %+v", ps)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestChunksOutliveTheirWriter(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	w, err := Dial(ctx, s.Endpoint())
	mustOK(t, err)
	mustOK(t, w.Open(ctx, "p"))
	mustOK(t, w.Write(ctx, "p", []byte("1"), []byte("2")))
	mustOK(t, w.ClosePipe(ctx, "p"))
	w.Close()

	r := dialT(t, s)
	for _, want := range []string{"1", "2"} {
		got, err := r.Read(ctx, "p")
		mustOK(t, err)
		if string(got) != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	// Open count 0 and nothing queued: the pipe is gone.
	if ps, _ := r.List(ctx); len(ps) != 0 {
		t.Fatalf("pipes left: %+v", ps)
	}
	if _, err := r.Read(ctx, "p"); !errors.Is(err, ErrNoPipe) {
		t.Fatalf("READ on removed pipe: %v, want ErrNoPipe", err)
	}
}

func TestOpenKeepsPipeAfterClientExits(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	c, err := Dial(ctx, s.Endpoint())
	mustOK(t, err)
	mustOK(t, c.Open(ctx, "fifo"))
	c.Close()
	d := dialT(t, s)
	ps := waitFor(t, d, func(ps []PipeInfo) bool { return true })
	if len(ps) != 1 || ps[0].Name != "fifo" || ps[0].Opens != 1 {
		t.Fatalf("LIST = %+v, want fifo open once", ps)
	}
	mustOK(t, d.ClosePipe(ctx, "fifo"))
	if ps, _ := d.List(ctx); len(ps) != 0 {
		t.Fatalf("pipes left after CLOSE: %+v", ps)
	}
}

func TestCloseBelowZeroFails(t *testing.T) {
	s := startServer(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", []byte("keep")))
	mustOK(t, c.ClosePipe(ctx, "p"))
	// The pipe still exists (it holds a chunk) but nobody has it open.
	if err := c.ClosePipe(ctx, "p"); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("second CLOSE: %v, want ErrNotOpen", err)
	}
}

func TestMissingPipeErrors(t *testing.T) {
	s := startServer(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	if _, err := c.Read(ctx, "nope"); !errors.Is(err, ErrNoPipe) {
		t.Errorf("READ: %v", err)
	}
	if err := c.Write(ctx, "nope", []byte("x")); !errors.Is(err, ErrNoPipe) {
		t.Errorf("WRITE: %v", err)
	}
	if err := c.ClosePipe(ctx, "nope"); !errors.Is(err, ErrNoPipe) {
		t.Errorf("CLOSE: %v", err)
	}
}

func TestSecondReaderRejected(t *testing.T) {
	s := startServer(t)
	b := dialT(t, s)
	ctx := testCtx(t)
	call := waitingRead(t, s, b)
	if _, err := b.Read(ctx, "p"); !errors.Is(err, ErrReaderBusy) {
		t.Fatalf("second reader: %v, want ErrReaderBusy", err)
	}
	mustOK(t, b.Write(ctx, "p", []byte("x")))
	<-call.done
	mustOK(t, call.err)
}

func TestLightWriterNotStarved(t *testing.T) {
	s := startServer(t)
	heavy, light, r := dialT(t, s), dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, r.Open(ctx, "p"))
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = []byte("heavy")
	}
	for range 10 {
		mustOK(t, heavy.Write(ctx, "p", batch...))
	}
	mustOK(t, light.Write(ctx, "p", []byte("light")))
	for i := 1; i <= 2; i++ {
		got, err := r.Read(ctx, "p")
		mustOK(t, err)
		if string(got) == "light" {
			return
		}
	}
	t.Fatal("light writer's chunk not among the next 2 READs behind 10,000 heavy chunks")
}

func TestRoundRobinKeepsEachWritersOrder(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	r := dialT(t, s)
	mustOK(t, r.Open(ctx, "p"))
	const writers, each = 3, 50
	for w := range writers {
		c := dialT(t, s)
		for i := range each {
			mustOK(t, c.Write(ctx, "p", fmt.Appendf(nil, "%d:%d", w, i)))
		}
	}
	next := make([]int, writers)
	var turns []int
	for range writers * each {
		got, err := r.Read(ctx, "p")
		mustOK(t, err)
		var w, i int
		fmt.Sscanf(string(got), "%d:%d", &w, &i)
		if i != next[w] {
			t.Fatalf("writer %d: got chunk %d, want %d", w, i, next[w])
		}
		next[w]++
		turns = append(turns, w)
	}
	// One chunk per turn: every window of `writers` READs (while all have
	// chunks) holds each writer once.
	for i := 0; i+writers <= len(turns); i += writers {
		win := slices.Clone(turns[i : i+writers])
		slices.Sort(win)
		if !slices.Equal(win, []int{0, 1, 2}) {
			t.Fatalf("READs %d..%d served writers %v", i, i+writers-1, turns[i:i+writers])
		}
	}
}

func TestWaitingReadHoldsLaterRequestsOfSameClient(t *testing.T) {
	s := startServer(t)
	c, other := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	read := c.async(CmdRead, []byte("p"))
	open := c.async(CmdOpen, []byte("q"))
	// Another client is not held up.
	mustOK(t, other.Open(ctx, "r"))
	waitFor(t, other, func(ps []PipeInfo) bool { return len(ps) == 2 })
	select {
	case <-open.done:
		t.Fatal("OPEN behind a waiting READ ran before it")
	default:
	}
	mustOK(t, other.Write(ctx, "p", []byte("x")))
	<-read.done
	<-open.done
	mustOK(t, read.err)
	mustOK(t, open.err)
}

func TestChunksAreArbitraryBytes(t *testing.T) {
	s := startServer(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	big := bytes.Repeat([]byte{0, 1, 2, 255}, 1<<20) // 4 MiB
	chunks := [][]byte{{}, []byte("OK"), []byte("ERROR"), {0, 0xff, '\n'}, big}
	name := strings.Repeat("n", 255)
	mustOK(t, c.Open(ctx, name))
	for _, ch := range chunks {
		mustOK(t, c.Write(ctx, name, ch))
	}
	for _, want := range chunks {
		got, err := c.Read(ctx, name)
		mustOK(t, err)
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, want %d", len(got), len(want))
		}
	}
}

// The chunk limit bounds one chunk, not one message: a batch of chunks
// each within it is taken whole even when together they exceed it.
func TestChunkLimitIsNotMessageLimit(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits = DefaultLimits; c.Limits.MaxChunk = 1000 })
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	batch := make([][]byte, 3000)
	for i := range batch {
		batch[i] = []byte(strings.Repeat("x", 100))
	}
	mustOK(t, c.Write(ctx, "p", batch...))
	if err := c.Write(ctx, "p", make([]byte, 1001)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("1001-byte chunk: %v, want ErrTooLarge", err)
	}
	got, err := readBatch(ctx, c, "p", 5000)
	mustOK(t, err)
	if len(got) != 3000 {
		t.Fatalf("read %d chunks, want the batch of 3000", len(got))
	}
}

func TestErrorsAreTwoFramesAndServingGoesOn(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.MaxChunk = 1000; c.Limits.MaxName = 300; c.Limits.MaxBatch = 10 })
	p := dialRaw(t, s, zmq4.Dealer)
	cases := []struct {
		frames []string
		want   string
	}{
		{[]string{"open", "p"}, "unknown command"},
		{[]string{"FOO", "p"}, "unknown command"},
		{[]string{"OPEN"}, "bad request"},
		{[]string{"OPEN", "p", "extra"}, "bad request"},
		{[]string{"WRITE", "p"}, "bad request"},
		{[]string{"OPEN", ""}, "bad pipe name"},
		{[]string{"OPEN", strings.Repeat("x", 301)}, "bad pipe name"},
		{[]string{"WRITE", "nope", "x"}, "no such pipe"},
		{[]string{"READ", "nope"}, "no such pipe"},
		{[]string{"CLOSE", "nope"}, "no such pipe"},
		{[]string{"MREAD", "p", "0"}, "bad request"},
		{[]string{"MREAD", "p", "x"}, "bad request"},
		{[]string{"OPEN", "p", strings.Repeat("x", minBatchBytes+2000)}, "too large"},
		{[]string{"WRITE", "p", strings.Repeat("x", 1001)}, "too large"},
	}
	for _, tc := range cases {
		p.send(tc.frames...)
		got := p.recv()
		if len(got) != 2 || got[0] != "ERROR" || !strings.HasPrefix(got[1], tc.want) {
			t.Errorf("%.20q: reply %.60q, want [ERROR %s...]", tc.frames, got, tc.want)
		}
	}
	// After all that the connection still works.
	p.send("OPEN", "p")
	if got := p.recv(); !slices.Equal(got, []string{"OK"}) {
		t.Fatalf("OPEN after errors: %q", got)
	}
}

func TestREQEnvelopeIsEchoed(t *testing.T) {
	s := startServer(t)
	p := dialRaw(t, s, zmq4.Req)
	for _, step := range []struct{ req, reply []string }{
		{[]string{"", "OPEN", "p"}, []string{"", "OK"}},
		{[]string{"", "WRITE", "p", "chunk"}, []string{"", "OK"}},
		{[]string{"", "READ", "p"}, []string{"", "chunk"}},
		{[]string{"", "NOPE", "p"}, []string{"", "ERROR", `unknown command: "NOPE"`}},
		{[]string{"", "CLOSE", "p"}, []string{"", "OK"}},
	} {
		p.send(step.req...)
		if got := p.recv(); !slices.Equal(got, step.reply) {
			t.Fatalf("%q -> %q, want %q", step.req, got, step.reply)
		}
	}
}

func TestSecondBrokerOnSameEndpointFails(t *testing.T) {
	s := startServer(t)
	_, err := Listen(Config{Endpoint: s.Endpoint()})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen: %v, want ErrInUse", err)
	}
}

func TestFilesystemEndpoint(t *testing.T) {
	path := t.TempDir() + "/broker.sock"
	ep := "ipc://" + path
	// A stale socket file from a crashed broker is replaced.
	stale, err := Listen(Config{Endpoint: ep})
	mustOK(t, err)
	stale.ln.SetUnlinkOnClose(false)
	stale.Close()
	s := startServer(t, func(c *Config) { c.Endpoint = ep })
	fi, err := os.Stat(path)
	mustOK(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	c := dialT(t, s)
	mustOK(t, c.Open(testCtx(t), "p"))
}

func TestNoBrokerFailsFast(t *testing.T) {
	start := time.Now()
	_, err := Dial(testCtx(t), testEndpoint())
	if !errors.Is(err, ErrNoBroker) || !strings.Contains(err.Error(), "zpipes serve") {
		t.Fatalf("dial with no broker: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dial took %v", d)
	}
}

// Trap: a connection that never sends its greeting must not hold up others
// (zmq4's own accept loop handshakes inline).
func TestSilentConnectionDoesNotBlockOthers(t *testing.T) {
	s := startServer(t)
	for range 3 {
		nc, err := dialUnix(s.Endpoint())
		mustOK(t, err)
		defer nc.Close()
	}
	c := dialT(t, s)
	mustOK(t, c.Open(testCtx(t), "p"))
}

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

// A reader killed while its READ waits must not be sent the next chunk.
func TestKilledReaderIsNotSentChunks(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	c := dialT(t, s)
	mustOK(t, c.Open(ctx, "p"))
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "ZPIPES_TEST_READER="+s.Endpoint(), "ZPIPES_TEST_PIPE=p")
		out, err := cmd.StdoutPipe()
		mustOK(t, err)
		mustOK(t, cmd.Start())
		buf := make([]byte, 8)
		out.Read(buf)
		waitFor(t, c, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Reader })
		mustOK(t, cmd.Process.Signal(syscall.SIGKILL))
		cmd.Wait()
		// Write at once: whether or not the broker has noticed the death
		// yet, the chunk must reach the next reader.
		chunk := fmt.Appendf(nil, "chunk %d", round)
		mustOK(t, c.Write(ctx, "p", chunk))
		var got []byte
		for {
			got, err = c.Read(ctx, "p")
			if !errors.Is(err, ErrReaderBusy) {
				break // busy only until the broker sees the reader gone
			}
		}
		mustOK(t, err)
		if !bytes.Equal(got, chunk) {
			t.Fatalf("round %d: read %q, want %q", round, got, chunk)
		}
	}
}

func TestClientGivesUpOnSilentBroker(t *testing.T) {
	ep := testEndpoint()
	ln, err := listen(ep)
	mustOK(t, err)
	defer ln.Close()
	accepted := make(chan *wire, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		w, err := handshake(nc, zmq4.Router, nil, true, time.Now().Add(5*time.Second))
		if err != nil {
			nc.Close()
			return
		}
		accepted <- w // and never answer anything
	}()
	c, err := Dial(testCtx(t), ep, WithTimeout(300*time.Millisecond))
	mustOK(t, err)
	defer c.Close()
	w := <-accepted
	defer w.close()
	start := time.Now()
	err = c.Open(context.Background(), "p")
	if !errors.Is(err, ErrConnLost) {
		t.Fatalf("OPEN to a silent broker: %v, want ErrConnLost", err)
	}
	t.Logf("gave up after %v", time.Since(start))
}

func TestClientNoticesBrokerClose(t *testing.T) {
	s, err := Listen(Config{Endpoint: testEndpoint()})
	mustOK(t, err)
	c, err := Dial(testCtx(t), s.Endpoint())
	mustOK(t, err)
	defer c.Close()
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	call := c.async(CmdRead, []byte("p"))
	watcher, err := Dial(ctx, s.Endpoint())
	mustOK(t, err)
	defer watcher.Close()
	waitFor(t, watcher, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Reader })
	s.Close()
	<-call.done
	if !errors.Is(call.err, ErrShutdown) {
		t.Fatalf("waiting READ at shutdown: %v, want ErrShutdown", call.err)
	}
	if err := c.Open(ctx, "p"); !errors.Is(err, ErrConnLost) {
		t.Fatalf("request after shutdown: %v, want ErrConnLost", err)
	}
}
