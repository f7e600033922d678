package broker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Request semantics end to end: a broker on its own endpoint, and clients
// talking to it over the socket as real ones do.

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

// Regression: a READ cancelled while it waited on a pipe that meanwhile
// lost its last open left the pipe behind: unused (no opens, no chunks, no
// reader), yet never removed, so it stayed in LIST and took WRITEs that
// should fail with ErrNoPipe.
func TestCancelledReadLeavesNoUnusedPipe(t *testing.T) {
	s := startServer(t)
	a, b := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, a.Open(ctx, "p"))
	read := a.async(CmdRead, []byte("p"))
	waitFor(t, b, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Reader })
	mustOK(t, b.ClosePipe(ctx, "p"))
	cancel := a.cancel("p")
	<-read.done
	<-cancel.done
	mustOK(t, cancel.err)
	if !errors.Is(read.err, ErrCancelled) {
		t.Fatalf("cancelled READ: %v", read.err)
	}
	if ps, _ := b.List(ctx); len(ps) != 0 {
		t.Errorf("pipes left: %+v", ps)
	}
	if err := b.Write(ctx, "p", []byte("x")); !errors.Is(err, ErrNoPipe) {
		t.Errorf("WRITE to the closed, drained pipe: %v, want ErrNoPipe", err)
	}
}
