package broker

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

func TestFullPipeDelaysWriteOnlyForThatPipe(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = Limits{MaxName: 64, MaxChunk: 100, MaxBatch: 16}
		c.MaxPipeBytes = 4*(100+chunkOverhead) + onePipe("p")
		c.MaxTotalBytes = 1 << 20
	})
	ctx := testCtx(t)
	w, other, r := dialT(t, s), dialT(t, s), dialT(t, s)
	mustOK(t, r.Open(ctx, "p"))
	chunk := bytes.Repeat([]byte("x"), 100)
	for range 4 {
		mustOK(t, w.Write(ctx, "p", chunk))
	}
	late := w.async(CmdWrite, []byte("p"), []byte("fifth"))
	waitFor(t, r, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Blocked == 1 })
	// Other pipes and other clients go on.
	mustOK(t, other.Open(ctx, "q"))
	mustOK(t, other.Write(ctx, "q", []byte("free")))
	select {
	case <-late.done:
		t.Fatalf("WRITE to a full pipe answered: %v", late.err)
	default:
	}
	// One READ makes room; the WRITE is acknowledged and queued last.
	_, err := r.Read(ctx, "p")
	mustOK(t, err)
	<-late.done
	mustOK(t, late.err)
	for i := range 4 {
		got, err := r.Read(ctx, "p")
		mustOK(t, err)
		if want := map[bool]string{true: "fifth", false: string(chunk)}[i == 3]; string(got) != want {
			t.Fatalf("READ %d: %.10q, want %.10q", i, got, want)
		}
	}
}

func TestTotalLimitBlocksWritesAcrossPipes(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = Limits{MaxName: 64, MaxChunk: 100, MaxBatch: 16}
		c.MaxPipeBytes = 4*(100+chunkOverhead) + onePipe("a")
		c.MaxTotalBytes = 6*(100+chunkOverhead) + onePipe("a") + onePipe("b")
	})
	ctx := testCtx(t)
	w, r := dialT(t, s), dialT(t, s)
	chunk := bytes.Repeat([]byte("x"), 100)
	mustOK(t, w.Open(ctx, "a"))
	mustOK(t, w.Open(ctx, "b"))
	mustOK(t, w.Write(ctx, "a", chunk, chunk, chunk, chunk))
	mustOK(t, w.Write(ctx, "b", chunk, chunk))
	late := w.async(CmdWrite, []byte("b"), chunk) // b has room; the total has not
	waitFor(t, r, func(ps []PipeInfo) bool { return len(ps) == 2 && ps[1].Blocked == 1 })
	// Reading from a makes room in the total: b's WRITE goes through.
	_, err := r.Read(ctx, "a")
	mustOK(t, err)
	<-late.done
	mustOK(t, late.err)
}

// CANCEL answers "cancelled" to this connection's writes that wait for room,
// and the pipe does not take them afterwards.
func TestCancelStopsAWriteWaitingForRoom(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = DefaultLimits
		c.Limits.MaxChunk = 100
		c.MaxPipeBytes, c.MaxTotalBytes = 200+onePipe("p"), 200+onePipe("p")
	})
	w, watch := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, w.Open(ctx, "p"))
	mustOK(t, w.Write(ctx, "p", make([]byte, 100)))
	late := w.async(CmdWrite, []byte("p"), make([]byte, 100)) // no room
	waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Blocked == 1 })
	cancel := w.cancel("p")
	<-late.done
	<-cancel.done
	mustOK(t, cancel.err)
	if !errors.Is(late.err, ErrCancelled) {
		t.Fatalf("blocked WRITE after CANCEL: %v, want ErrCancelled", late.err)
	}
	readAll(t, watch, "p", 1)
	if ps, err := watch.List(ctx); err != nil || len(ps) != 1 || ps[0].Chunks != 0 {
		t.Fatalf("pipe after the cancelled write: %+v, %v", ps, err)
	}
}

func TestOversizedChunkIsAnError(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits = Limits{MaxName: 64, MaxChunk: 100, MaxBatch: 16} })
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	if err := c.Write(ctx, "p", make([]byte, 101)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("101-byte chunk: %v, want ErrTooLarge", err)
	}
	mustOK(t, c.Write(ctx, "p", make([]byte, 100)))
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

func TestLimitsReportsWhatTheBrokerAccepts(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = Limits{MaxName: 100, MaxChunk: 5000, MaxBatch: 10}
		c.MaxPipeBytes, c.MaxTotalBytes = 1<<20, 2<<20
	})
	got, err := dialT(t, s).Limits(testCtx(t))
	mustOK(t, err)
	want := BrokerLimits{MaxName: 100, MaxChunk: 5000, MaxBatch: 10, MaxMessage: minBatchBytes + 100 + 1024,
		MaxPipeBytes: 1 << 20, MaxTotalBytes: 2 << 20, ChunkOverhead: chunkOverhead}
	if got != want {
		t.Fatalf("LIMITS: %+v, want %+v", got, want)
	}
}

// Chunks of replies a reader has not taken off its socket still count
// against the limits: a reader that sends MREADs and never reads cannot
// make the broker acknowledge writes without end.
func TestRepliesNotReadCountAgainstTheLimit(t *testing.T) {
	s := startServer(t, smallLimits(64<<10))
	ctx := testCtx(t)
	w, watch := dialT(t, s), dialT(t, s)
	mustOK(t, w.Open(ctx, "p"))
	reader := dialRaw(t, s, zmq4.Dealer)
	for range 16 { // as many as it may have in flight: room for 16 MiB of replies
		reader.send("MREAD", "p", "1000") // and never read the replies
	}
	chunk := make([]byte, 1000)
	calls := make([]*call, 3000)
	for i := range calls {
		calls[i] = w.async(CmdWrite, []byte("p"), chunk)
	}
	waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Blocked == 1 })
	acked := 0
	for _, k := range calls {
		select {
		case <-k.done:
			mustOK(t, k.err)
			acked++
		default:
		}
	}
	// 64 KiB of limit, and what the kernel's socket buffers took; not 3 MB.
	if acked > 1000 {
		t.Fatalf("%d writes of 1000 bytes acknowledged under a 64 KiB limit", acked)
	}
	t.Logf("acknowledged %d writes before the limit held", acked)
}

// A connection that does not read its replies stops being read once its
// replies and requests pass maxInflightBytes: it cannot make the broker
// build replies without end.
func TestRepliesNotReadThrottleTheirConnection(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	w, watch := dialT(t, s), dialT(t, s)
	mustOK(t, w.Open(ctx, "p"))
	chunk := make([]byte, 1<<20)
	for range 64 {
		mustOK(t, w.Write(ctx, "p", chunk))
	}
	reader := dialRaw(t, s, zmq4.Dealer)
	for range 64 {
		reader.send("MREAD", "p", "1")
	}
	// Settled when the pipe stops draining; the broker stops reading the
	// MREADs after 16 MiB of replies (and the socket buffers) wait.
	left := 64
	settle(t, 10*time.Second, "the reader throttled", func() (bool, string) {
		ps, err := watch.List(ctx)
		mustOK(t, err)
		n := ps[0].Chunks
		stable := n == left
		left = n
		return stable && n < 64, fmt.Sprintf("%d chunks left", n)
	})
	if left < 64-24 {
		t.Fatalf("the broker built %d MiB of replies for a connection that reads none", 64-left)
	}
}

// UNREAD gives back only what the connection took with READ and MREAD.
func TestUnreadGivesBackOnlyWhatWasTaken(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	c := dialT(t, s)
	mustOK(t, c.Open(ctx, "p"))
	if err := c.Unread(ctx, "p", []byte("never taken")); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("UNREAD of what was not taken: %v, want ErrBadRequest", err)
	}
	mustOK(t, c.Write(ctx, "p", []byte("a"), []byte("b")))
	got, err := readBatch(ctx, c, "p", 2)
	mustOK(t, err)
	mustOK(t, c.Unread(ctx, "p", got...))
	if err := c.Unread(ctx, "p", []byte("a")); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("UNREAD of more than was taken: %v, want ErrBadRequest", err)
	}
}

// A write that costs more than the total limit, into a broker that holds
// nothing, goes through rather than wait for room that can never be made.
func TestBatchOverTheTotalLimitGoesIntoAnEmptyBroker(t *testing.T) {
	s := startServer(t, smallLimits(1100))
	ctx := testCtx(t)
	c := dialT(t, s)
	mustOK(t, c.Open(ctx, "p"))
	batch := make([][]byte, 10)
	for i := range batch {
		batch[i] = make([]byte, 200)
	}
	mustOK(t, c.Write(ctx, "p", batch...)) // 2,240 bytes counted
}

func TestOpenBeyondMaxPipesIsRefused(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxPipes = 2 })
	ctx := testCtx(t)
	c := dialT(t, s)
	mustOK(t, c.Open(ctx, "a"))
	mustOK(t, c.Hold(ctx, "b"))
	for _, err := range []error{c.Open(ctx, "c"), c.Hold(ctx, "c")} {
		if !errors.Is(err, ErrTooManyPipes) {
			t.Fatalf("a third pipe: %v, want ErrTooManyPipes", err)
		}
	}
	mustOK(t, c.Open(ctx, "a")) // an existing one is fine
	mustOK(t, c.ClosePipe(ctx, "b"))
	mustOK(t, c.Open(ctx, "c")) // room again
}

// LIST answers a page at a time, so one request never builds a reply of
// unbounded size; Client.List pages through them all, in order.
func TestListAnswersInPages(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	c := dialT(t, s)
	const n = 2500
	calls := make([]*call, n)
	for i := range calls {
		calls[i] = c.async(CmdOpen, fmt.Appendf(nil, "pipe-%05d", i))
	}
	for _, k := range calls {
		<-k.done
		mustOK(t, k.err)
	}
	raw := dialRaw(t, s, zmq4.Dealer)
	raw.send("LIST")
	page := raw.recv()
	if len(page) != 3 || page[0] != "OK" || page[2] != fmt.Sprintf("pipe-%05d", listPage-1) {
		t.Fatalf("first page: %d frames, next %q", len(page), page[len(page)-1])
	}
	infos, err := c.List(ctx)
	mustOK(t, err)
	if len(infos) != n {
		t.Fatalf("List: %d pipes, want %d", len(infos), n)
	}
	for i, p := range infos {
		if p.Name != fmt.Sprintf("pipe-%05d", i) {
			t.Fatalf("pipe %d is %q", i, p.Name)
		}
	}
}

// onePipe is what a pipe of that name with one writer's queue counts
// against the limits besides its chunks.
func onePipe(name string) int { return newPipeCost(name) + queueOverhead }

// What a writer's queue and a pipe cost counts against the limits, not
// only the chunks: writers that write one byte each fill a budget in a
// few hundred writes, not tens of thousands.
func TestWritersQueuesCountAgainstTheLimit(t *testing.T) {
	s := startServer(t, smallLimits(64<<10))
	ctx := testCtx(t)
	watch := dialT(t, s)
	mustOK(t, watch.Open(ctx, "p"))
	for i := 0; ; i++ {
		w := dialT(t, s) // a writer of its own for each byte
		w.async(CmdWrite, []byte("p"), []byte{'x'})
		ps := waitFor(t, watch, func(ps []PipeInfo) bool { return ps[0].Chunks == i+1 || ps[0].Blocked == 1 })
		if ps[0].Blocked == 1 {
			if want := (64<<10 - onePipe("p") + queueOverhead) / (1 + chunkOverhead + queueOverhead); i != want {
				t.Fatalf("%d one-byte writers fit in 64 KiB, want %d", i, want)
			}
			t.Logf("%d one-byte writers filled 64 KiB", i)
			break
		}
		if i > 10000 {
			t.Fatal("the limit never held")
		}
	}
}

// An empty pipe costs memory too: OPENs that would create pipes past the
// memory budget are refused, whatever --max-pipes allows.
func TestEmptyPipesCountAgainstTheBudget(t *testing.T) {
	s := startServer(t, smallLimits(64<<10))
	ctx := testCtx(t)
	c := dialT(t, s)
	opened := 0
	for ; opened < 1000; opened++ {
		err := c.Open(ctx, fmt.Sprintf("%016d", opened))
		if errors.Is(err, ErrTooManyPipes) {
			break
		}
		mustOK(t, err)
	}
	if want := (64 << 10) / newPipeCost("0123456789abcdef"); opened != want {
		t.Fatalf("%d empty pipes opened under a 64 KiB budget, want %d", opened, want)
	}
}
