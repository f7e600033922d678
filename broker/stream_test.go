package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// readAll reads n chunks from pipe with a Reader and consumes them.
func readAll(t *testing.T, c *Client, pipe string, n int) []string {
	t.Helper()
	r := c.NewReader(testCtx(t), pipe, ReaderOptions{Max: n})
	defer func() { mustOK(t, r.Close()) }()
	var out []string
	for range n {
		chunk, err := r.Next()
		mustOK(t, err)
		out = append(out, string(chunk))
		r.Consume(1) // a held chunk counts against the pipe's limit
	}
	return out
}

func numbered(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

// numberedChunks is numbered as chunks, for one Write.
func numberedChunks(from, to int) [][]byte {
	var out [][]byte
	for _, s := range numbered(from, to) {
		out = append(out, []byte(s))
	}
	return out
}

func TestWriterCloseCountsWhatTheBrokerAcknowledged(t *testing.T) {
	s := startServer(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	acked := 0
	w, err := c.NewWriter(ctx, "p", WriterOptions{Batch: 100, Acked: func(n, _ int) { acked += n }})
	mustOK(t, err)
	for _, s := range numbered(1, 25000) {
		mustOK(t, w.Write([]byte(s)))
	}
	n, err := w.Close()
	mustOK(t, err)
	if n != 25000 || acked != 25000 {
		t.Fatalf("Close counted %d, Acked told of %d, want 25000", n, acked)
	}
	if got := readAll(t, c, "p", 25000); !slices.Equal(got, numbered(1, 25000)) {
		t.Fatal("chunks read back differ from those written")
	}
}

// A chunk over the broker's limit is refused before anything after it is
// sent: the pipe holds exactly the chunks before it, and Close says so.
func TestWriterRefusesAnOversizedChunkAndSendsNothingAfter(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits = DefaultLimits; c.Limits.MaxChunk = 1000 })
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	w, err := c.NewWriter(ctx, "p", WriterOptions{})
	mustOK(t, err)
	for _, s := range numbered(1, 10) {
		mustOK(t, w.Write([]byte(s)))
	}
	err = w.Write(make([]byte, 1001))
	var big *ChunkTooLargeError
	if !errors.As(err, &big) || !errors.Is(err, ErrTooLarge) || big.Index != 11 || big.Size != 1001 || big.Limit != 1000 {
		t.Fatalf("oversized chunk: %v", err)
	}
	if err := w.Write([]byte("after")); !errors.As(err, &big) {
		t.Fatalf("Write after a refused chunk: %v, want the same refusal", err)
	}
	n, err := w.Close()
	if n != 10 || !errors.As(err, &big) {
		t.Fatalf("Close: %d, %v; want 10 and the refusal", n, err)
	}
	infos, err := c.List(ctx)
	mustOK(t, err)
	if len(infos) != 1 || infos[0].Chunks != 10 {
		t.Fatalf("pipe holds %+v, want the 10 chunks before the refused one", infos)
	}
}

// Batches are sized to the limits the broker reports: a small chunk limit
// and a small pipe limit still take a stream of many small chunks.
func TestWriterBatchesFitTheBrokersLimits(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = DefaultLimits
		c.Limits.MaxChunk = 4096
		c.MaxPipeBytes = 64 << 10
		c.MaxTotalBytes = 64 << 10
	})
	w, r := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, w.Open(ctx, "p"))
	line := strings.Repeat("x", 100)
	done := make(chan error, 1)
	go func() {
		sw, err := w.NewWriter(ctx, "p", WriterOptions{})
		if err != nil {
			done <- err
			return
		}
		for range 5000 {
			if err := sw.Write([]byte(line)); err != nil {
				break
			}
		}
		n, err := sw.Close()
		if err == nil && n != 5000 {
			err = fmt.Errorf("acknowledged %d of 5000", n)
		}
		done <- err
	}()
	got := readAll(t, r, "p", 5000)
	mustOK(t, <-done)
	if len(got) != 5000 {
		t.Fatalf("read %d", len(got))
	}
}

// A Writer blocked on a full pipe stops when its context ends: Close
// cancels the writes the broker holds back, reports exactly what the pipe
// received, and nothing it sent lands afterwards, even once a reader makes
// room.
func TestInterruptedWriterOnAFullPipeLeavesNothingBehind(t *testing.T) {
	s := startServer(t, smallLimits(20<<10))
	c, watch := dialT(t, s), dialT(t, s)
	ctx, cancel := context.WithCancel(testCtx(t))
	mustOK(t, c.Open(ctx, "p"))
	w, err := c.NewWriter(ctx, "p", WriterOptions{Batch: 10})
	mustOK(t, err)
	written := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			if err := w.Write(fmt.Appendf(nil, "%0100d", i)); err != nil {
				written <- err
				return
			}
		}
	}()
	waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Blocked == 1 })
	cancel()
	if err := <-written; !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after cancel: %v", err)
	}
	n, err := w.Close()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Close: %v, want context.Canceled", err)
	}
	infos := waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Blocked == 0 })
	if infos[0].Chunks != n {
		t.Fatalf("Close counted %d, the pipe holds %d", n, infos[0].Chunks)
	}
	// Make room: a write the broker still held would land now.
	got := readAll(t, watch, "p", n)
	mustOK(t, watch.Write(testCtx(t), "p", []byte("marker")))
	if last := readAll(t, watch, "p", 1); last[0] != "marker" {
		t.Fatalf("after draining the %d counted chunks, read %q: an uncounted write landed", len(got), last[0])
	}
}

// A chunk that Idle holds back because a batch is in flight still goes out
// with no more input and no Close: the input went quiet, and the writer
// must not sit on it.
func TestWriterIdleSendsWhatItHeldBack(t *testing.T) {
	s := startServer(t, smallLimits(4<<10))
	ctx := testCtx(t)
	c, r := dialT(t, s), dialT(t, s)
	mustOK(t, c.Open(ctx, "p"))
	w, err := c.NewWriter(ctx, "p", WriterOptions{Window: 64})
	mustOK(t, err)
	defer w.Close()
	for range 20 { // more than the pipe holds: batches wait, in flight
		mustOK(t, w.Write(make([]byte, 500)))
	}
	mustOK(t, w.Flush())
	waitFor(t, r, func(ps []PipeInfo) bool { return ps[0].Blocked == 1 })
	mustOK(t, w.Write([]byte("last")))
	mustOK(t, w.Idle()) // held: a batch is in flight
	got := readAll(t, r, "p", 21)
	if got[20] != "last" {
		t.Fatalf("last chunk read: %q", got[20])
	}
}
