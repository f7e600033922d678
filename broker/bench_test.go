package broker

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"
)

// Benchmarks of the broker's hot paths, from the pipe queues up to a whole
// in-process transfer. They measure and never assert speed (see STYLE.md).
//
//	go test -run '^$' -bench . -benchmem ./broker/

// benchChunk is the W1 workload's chunk: a 64-byte line.
var benchChunk = bytes.Repeat([]byte("x"), 64)

// benchChunks returns n chunks sharing benchChunk's memory.
func benchChunks(n int) [][]byte {
	cs := make([][]byte, n)
	for i := range cs {
		cs[i] = benchChunk
	}
	return cs
}

func benchItems(n int) []item {
	items := make([]item, n)
	for i := range items {
		items[i] = item{data: benchChunk, id: uint64(i + 1)}
	}
	return items
}

// benchRefill is how many chunks a queue benchmark lets pile up before it
// starts again from an empty pipe, outside the timer, so the heap stays
// small whatever b.N is.
const benchRefill = 1 << 16

// BenchmarkPipeEnqueue measures queueing chunks as WRITE and MWRITE do:
// ns/op is per request, ns/chunk per chunk.
func BenchmarkPipeEnqueue(b *testing.B) {
	for _, bc := range []struct{ writers, batch int }{
		{1, 1}, {1, 1024}, {64, 1}, {1024, 1}, {64, 1024},
	} {
		b.Run("writers="+strconv.Itoa(bc.writers)+"/batch="+strconv.Itoa(bc.batch), func(b *testing.B) {
			b.ReportAllocs()
			chunks := benchItems(bc.batch)
			p := newPipe("jobs")
			n := 0
			for b.Loop() {
				p.enqueue(uint64(n%bc.writers), chunks)
				if n++; p.chunks >= benchRefill {
					b.StopTimer()
					p = newPipe("jobs")
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*bc.batch), "ns/chunk")
		})
	}
}

// BenchmarkPipeDequeue measures READ (max 1) and MREAD (max 1024) taking
// chunks round robin from a pipe that 1 or 64 writers filled.
func BenchmarkPipeDequeue(b *testing.B) {
	for _, bc := range []struct{ writers, max int }{
		{1, 1}, {64, 1}, {1, 1024}, {64, 1024},
	} {
		b.Run("writers="+strconv.Itoa(bc.writers)+"/max="+strconv.Itoa(bc.max), func(b *testing.B) {
			b.ReportAllocs()
			per := benchItems(benchRefill / bc.writers)
			fill := func() *pipe {
				p := newPipe("jobs")
				for w := range bc.writers {
					p.enqueue(uint64(w), per)
				}
				return p
			}
			p := fill()
			taken := 0
			for b.Loop() {
				if p.chunks < bc.max {
					b.StopTimer()
					p = fill()
					b.StartTimer()
				}
				taken += len(p.dequeue(make([]item, 0, min(bc.max, p.chunks)), bc.max, maxReplyBytes)) // as core.read
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(taken), "ns/chunk")
		})
	}
}

// benchRequests are a WRITE of one 64-byte chunk and an MWRITE of 1000.
func benchRequests() []struct {
	name   string
	frames [][]byte
} {
	return []struct {
		name   string
		frames [][]byte
	}{
		{"WRITE", append([][]byte{[]byte(CmdWrite), []byte("jobs")}, benchChunks(1)...)},
		{"MWRITE-1000", append([][]byte{[]byte(CmdMWrite), []byte("jobs")}, benchChunks(1000)...)},
	}
}

// BenchmarkParseRequest measures parsing a WRITE of one 64-byte chunk and
// an MWRITE of 1000.
func BenchmarkParseRequest(b *testing.B) {
	for _, bc := range benchRequests() {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseRequest(bc.frames, DefaultLimits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchEncode frames a message the way wire.writeMessage does.
func benchEncode(b *testing.B, frames [][]byte) []byte {
	var buf bytes.Buffer
	w := &wire{dst: &buf}
	if err := w.writeMessage(false, frames); err != nil {
		b.Fatal(err)
	}
	if err := w.flush(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkWireReadMessage measures reading a request from a connection's
// buffer: a WRITE, and an MWRITE of 1000 64-byte chunks (1002 frames).
func BenchmarkWireReadMessage(b *testing.B) {
	for _, bc := range benchRequests() {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			data := benchEncode(b, bc.frames)
			b.SetBytes(int64(len(data)))
			src := bytes.NewReader(data)
			w := &wire{r: bufio.NewReaderSize(src, bufferSize)}
			lim := DefaultLimits
			for b.Loop() {
				src.Reset(data)
				w.r.Reset(src)
				msg, err := w.readMessage(lim.maxMessage(), lim.maxFrames())
				if err != nil || msg.err != nil || len(msg.frames) != len(bc.frames) {
					b.Fatalf("read %d frames, err %v / %v", len(msg.frames), err, msg.err)
				}
			}
		})
	}
}

// BenchmarkWireWriteMessage measures framing replies into a connection's
// buffer and flushing it: an OK, and an MREAD reply of 1000 chunks.
func BenchmarkWireWriteMessage(b *testing.B) {
	for _, bc := range []struct {
		name   string
		frames [][]byte
	}{
		{"OK", replyOK()},
		{"MREAD-1000", append(replyOK(), benchChunks(1000)...)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(benchEncode(b, bc.frames))))
			w := &wire{dst: io.Discard}
			for b.Loop() {
				if err := w.writeMessage(false, bc.frames); err != nil {
					b.Fatal(err)
				}
				if err := w.flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEndToEnd streams 64-byte chunks through an in-process broker
// over its socket: one client pipelines MWRITEs of 1024 chunks (8 in flight,
// as zpipes cat -w does), another pipelines MREAD 1024 (4 in flight, as cat
// -r does). An op is one batch written and read; allocations are the whole
// process's (clients and broker).
func BenchmarkEndToEnd(b *testing.B) {
	benchEndToEnd(b, startServer(b, func(c *Config) {
		c.Logger = slog.New(slog.DiscardHandler)
	}))
}

// benchEndToEnd is BenchmarkEndToEnd's transfer through the broker s.
func benchEndToEnd(b *testing.B, s *Server) {
	const (
		batch     = 1024
		window    = 8
		readAhead = 4
	)
	wc, rc := dialT(b, s), dialT(b, s)
	ctx := testCtx(b)
	if err := wc.Open(ctx, "jobs"); err != nil {
		b.Fatal(err)
	}
	name := []byte("jobs")
	args := append([][]byte{name}, benchChunks(batch)...)
	want := b.N * batch

	b.ReportAllocs()
	b.SetBytes(batch * int64(len(benchChunk)))
	b.ResetTimer()
	start := time.Now()

	werr := make(chan error, 1)
	go func() {
		var inflight []*call
		for range b.N {
			if len(inflight) == window {
				if c := <-inflight[0].done; c.err != nil {
					werr <- c.err
					return
				}
				inflight = inflight[1:]
			}
			inflight = append(inflight, wc.async(CmdMWrite, args...))
		}
		for _, call := range inflight {
			if c := <-call.done; c.err != nil {
				werr <- c.err
				return
			}
		}
		werr <- nil
	}()

	// Reads ask for no more than is left, so none is outstanding at the end.
	maxArg := []byte(strconv.Itoa(batch))
	var inflight []*call
	got, asked := 0, 0
	for got < want {
		for len(inflight) < readAhead && asked < want {
			inflight = append(inflight, rc.async(CmdMRead, name, maxArg))
			asked += batch
		}
		c := <-inflight[0].done
		inflight = inflight[1:]
		if c.err != nil {
			b.Fatal(c.err)
		}
		for _, ch := range c.reply {
			if len(ch) != len(benchChunk) {
				b.Fatalf("chunk of %d bytes", len(ch))
			}
		}
		got += len(c.reply)
		// A short reply leaves asked ahead of what will come; ask again.
		asked -= batch - len(c.reply)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if err := <-werr; err != nil {
		b.Fatal(err)
	}
	if got != want {
		b.Fatalf("read %d chunks, wrote %d", got, want)
	}
	b.ReportMetric(float64(want)/elapsed.Seconds(), "chunks/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(want), "ns/chunk")
}
