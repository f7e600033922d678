package broker

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
)

// Acknowledged reads: TAKE hands out chunks that the broker holds for the
// connection until ACK consumes them or NACK, or the connection's end,
// gives them back.

func take(t *testing.T, c *Client, pipe string, n int) []string {
	t.Helper()
	k := c.async(CmdTake, []byte(pipe), []byte(strconv.Itoa(n)))
	<-k.done
	mustOK(t, k.err)
	var out []string
	for _, ch := range k.reply {
		out = append(out, string(ch))
	}
	return out
}

func TestTakenChunksGoBackInOrderWhenTheReaderGoes(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	w := dialT(t, s)
	mustOK(t, w.Open(ctx, "p"))
	mustOK(t, w.Write(ctx, "p", chunks(numbered(1, 10)...)...))

	r, err := Dial(ctx, s.Endpoint())
	mustOK(t, err)
	if got := take(t, r, "p", 5); !slices.Equal(got, numbered(1, 5)) {
		t.Fatalf("TAKE 5: %v", got)
	}
	_, err = r.do(ctx, CmdAck, []byte("p"), []byte("2"))
	mustOK(t, err)
	waitFor(t, w, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Taken == 3 && ps[0].Chunks == 5 })
	r.Close() // holding 3, 4, 5

	waitFor(t, w, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks == 8 })
	if got := readAll(t, w, "p", 8); !slices.Equal(got, numbered(3, 10)) {
		t.Fatalf("after the reader went: %v, want 3..10", got)
	}
}

func TestNackGivesBackEverythingHeldAheadOfTheQueue(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	c := dialT(t, s)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", chunks(numbered(1, 6)...)...))
	take(t, c, "p", 2)
	take(t, c, "p", 2)
	_, err := c.do(ctx, CmdNack, []byte("p"))
	mustOK(t, err)
	if got := readAll(t, c, "p", 6); !slices.Equal(got, numbered(1, 6)) {
		t.Fatalf("after NACK: %v", got)
	}
}

func TestAckOfMoreThanIsHeldIsABadRequest(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	c := dialT(t, s)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", chunks("a", "b")...))
	take(t, c, "p", 1)
	_, err := c.do(ctx, CmdAck, []byte("p"), []byte("2"))
	if !errors.Is(err, ErrBadRequest) {
		t.Fatalf("ACK 2 holding 1: %v, want ErrBadRequest", err)
	}
	_, err = c.do(ctx, CmdAck, []byte("p"), []byte("1"))
	mustOK(t, err)
}

// Held chunks count against the pipe's limit: a reader that never
// acknowledges cannot make the broker hold more than the limit.
func TestHeldChunksCountAgainstThePipeLimit(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = DefaultLimits
		c.Limits.MaxChunk = 100
		c.MaxPipeBytes, c.MaxTotalBytes = 300+onePipe("p"), 300+onePipe("p")
	})
	ctx := testCtx(t)
	w, r, watch := dialT(t, s), dialT(t, s), dialT(t, s)
	mustOK(t, w.Open(ctx, "p"))
	mustOK(t, w.Write(ctx, "p", make([]byte, 100), make([]byte, 100)))
	take(t, r, "p", 2) // held, not acknowledged
	late := w.async(CmdWrite, []byte("p"), make([]byte, 100))
	waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Blocked == 1 })
	_, err := r.do(ctx, CmdAck, []byte("p"), []byte("2"))
	mustOK(t, err)
	<-late.done
	mustOK(t, late.err)
}

// HOLD opens a pipe for as long as the connection lasts.
func TestHoldEndsWithTheConnection(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	watch := dialT(t, s)
	c, err := Dial(ctx, s.Endpoint())
	mustOK(t, err)
	mustOK(t, c.Hold(ctx, "p"))
	mustOK(t, c.Hold(ctx, "q"))
	mustOK(t, c.ClosePipe(ctx, "q"))
	waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Name == "p" && ps[0].Opens == 1 })
	c.Close()
	waitFor(t, watch, func(ps []PipeInfo) bool { return len(ps) == 0 })
	// An OPEN is the pipe's, not the connection's: it stays.
	o, err := Dial(ctx, s.Endpoint())
	mustOK(t, err)
	mustOK(t, o.Open(ctx, "kept"))
	o.Close()
	mustOK(t, watch.Write(context.Background(), "kept", []byte("x")))
}

// An ACK acts as it arrives: a TAKE waiting on an empty pipe does not hold
// it back (it may be waiting for the room the ACK frees), and its reply
// still comes in turn, after the TAKE's.
func TestAckIsNotHeldBackByAWaitingTake(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	c, w := dialT(t, s), dialT(t, s)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, w.Write(ctx, "p", []byte("a")))
	take(t, c, "p", 1)
	waiting := c.async(CmdTake, []byte("p"), []byte("1"))
	ack := c.async(CmdAck, []byte("p"), []byte("1"))
	waitFor(t, w, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Taken == 0 && ps[0].Reader })
	select {
	case <-ack.done:
		t.Fatal("ACK answered before the TAKE ahead of it")
	default:
	}
	mustOK(t, w.Write(ctx, "p", []byte("b")))
	<-waiting.done
	<-ack.done
	mustOK(t, waiting.err)
	mustOK(t, ack.err)
}
