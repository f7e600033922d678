package broker

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
)

// Close gives back, in order, the chunks handed out and not consumed, those
// received and not handed out, and those the MREADs in flight brought.
func TestReaderCloseGivesBackWhatWasNotConsumedInOrder(t *testing.T) {
	s := startServer(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", chunks(numbered(1, 100)...)...))
	r := c.NewReader(ctx, "p", ReaderOptions{Batch: 7, Ahead: 3})
	for range 10 {
		_, err := r.Next()
		mustOK(t, err)
	}
	r.Consume(4) // 1..4 delivered; 5..10 handed out, not consumed
	mustOK(t, r.Close())
	if got := readAll(t, c, "p", 96); !slices.Equal(got, numbered(5, 100)) {
		t.Fatalf("after giving back: %v", got)
	}
}

// NextAll hands out whole batches, in order, mixed freely with Next; what
// it handed out counts as Next's would for Consume and Close.
func TestReaderNextAllHandsOutBatchesInOrder(t *testing.T) {
	s := startServer(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", chunks(numbered(1, 100)...)...))
	r := c.NewReader(ctx, "p", ReaderOptions{Batch: 7, Ahead: 3})
	var got []string
	one, err := r.Next()
	mustOK(t, err)
	got = append(got, string(one))
	for len(got) < 30 {
		batch, err := r.NextAll()
		mustOK(t, err)
		if len(batch) == 0 || len(batch) > 7 {
			t.Fatalf("NextAll gave %d chunks, want 1 to 7", len(batch))
		}
		for _, b := range batch {
			got = append(got, string(b))
		}
	}
	if !slices.Equal(got, numbered(1, len(got))) {
		t.Fatalf("handed out %v", got)
	}
	r.Consume(10) // 1..10 delivered; the rest handed out, not consumed
	mustOK(t, r.Close())
	if back := readAll(t, c, "p", 90); !slices.Equal(back, numbered(11, 100)) {
		t.Fatalf("after giving back: %v", back)
	}
}

func TestReaderTakesNoMoreThanMax(t *testing.T) {
	s := startServer(t)
	c, watch := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", chunks(numbered(1, 50)...)...))
	r := c.NewReader(ctx, "p", ReaderOptions{Max: 20, Batch: 8})
	for range 20 {
		_, err := r.Next()
		mustOK(t, err)
		r.Consume(1)
		// Never more than Max taken from the pipe, in flight included.
		if ps, err := watch.List(ctx); err != nil || ps[0].Chunks < 30 {
			t.Fatalf("pipe down to %+v, %v", ps, err)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next past Max: %v, want io.EOF", err)
	}
	mustOK(t, r.Close())
	waitFor(t, watch, func(ps []PipeInfo) bool { return ps[0].Chunks == 30 })
}

// A Reader whose context ends while it waits on an empty pipe returns the
// context's error and leaves no read behind: a chunk written afterwards is
// there for the next reader.
func TestReaderInterruptedWhileWaitingLeavesNoReadBehind(t *testing.T) {
	s := startServer(t)
	c, watch := dialT(t, s), dialT(t, s)
	mustOK(t, c.Open(testCtx(t), "p"))
	ctx, cancel := context.WithCancel(testCtx(t))
	r := c.NewReader(ctx, "p", ReaderOptions{})
	got := make(chan error, 1)
	go func() {
		_, err := r.Next()
		got <- err
	}()
	waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Reader })
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next: %v, want context.Canceled", err)
	}
	mustOK(t, r.Close())
	mustOK(t, watch.Write(testCtx(t), "p", []byte("later")))
	if got := readAll(t, watch, "p", 1); got[0] != "later" {
		t.Fatalf("read %q", got)
	}
}

// Giving back more than one UNREAD can carry is split into several, sent
// last part first, so the pipe still reads in order.
func TestReaderGivesBackMoreThanOneUnreadCarries(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits = DefaultLimits; c.Limits.MaxBatch = 10 })
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	w, err := c.NewWriter(ctx, "p", WriterOptions{})
	mustOK(t, err)
	for _, s := range numbered(1, 45) {
		mustOK(t, w.Write([]byte(s)))
	}
	_, err = w.Close()
	mustOK(t, err)
	r := c.NewReader(ctx, "p", ReaderOptions{Batch: 10, Max: 45})
	for range 45 {
		_, err := r.Next()
		mustOK(t, err)
	}
	mustOK(t, r.Close()) // 45 chunks back, at most 10 per UNREAD
	if got := readAll(t, c, "p", 45); !slices.Equal(got, numbered(1, 45)) {
		t.Fatalf("after giving back: %v", got)
	}
}
