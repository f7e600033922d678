package broker

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestFullPipeDelaysWriteOnlyForThatPipe(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = Limits{MaxName: 64, MaxChunk: 100, MaxBatch: 16}
		c.MaxPipeBytes = 4 * (100 + chunkOverhead)
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
		c.MaxPipeBytes = 4 * (100 + chunkOverhead)
		c.MaxTotalBytes = 6 * (100 + chunkOverhead)
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
		c.MaxPipeBytes, c.MaxTotalBytes = 200, 200
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
