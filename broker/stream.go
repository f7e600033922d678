package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Streaming. A Writer and a Reader keep several batches in flight on one
// Client, so a pipe of small chunks moves at the speed of bytes rather than
// of round trips, and they hold the promises that make a stream a stream:
//
//   - A Writer sends nothing after a chunk it refuses (one over the broker's
//     chunk limit), each MWRITE is queued all or nothing, and Close reports
//     exactly how many chunks the broker acknowledged. Interrupted, it
//     cancels the writes the broker has not executed, so nothing it did not
//     count lands in the pipe later.
//   - A Reader hands out chunks in pipe order; Close puts every chunk it
//     took and the caller did not Consume back at the head of the pipe, in
//     order, so a reader that stops short of SIGKILL loses nothing.

// Batching defaults: a batch carries at most this many chunks and bytes.
const (
	DefaultBatch   = 8192
	batchByteLimit = 1 << 20
	defaultWindow  = 4 // MWRITEs in flight
	defaultAhead   = 2 // TAKEs in flight
)

// WriterOptions tune a Writer. Zero fields take defaults.
type WriterOptions struct {
	Batch  int // most chunks per MWRITE: default DefaultBatch, at most the broker's limit
	Window int // MWRITEs in flight: default 4

	// Acked, if set, is told of each batch the broker acknowledges: its
	// chunks and their bytes. It runs in the goroutine that called Write,
	// Flush or Close.
	Acked func(chunks, bytes int)
}

// Writer streams chunks into one pipe. Write buffers a chunk into the next
// batch and sends the batch when it is full; Flush sends it at once. Write
// and Flush wait only when Window batches are unacknowledged. A Writer is
// safe for use by two goroutines: one that writes, and one that closes it
// (say on a signal) while the other is still writing.
type Writer struct {
	c    *Client
	ctx  context.Context
	pipe string

	mu       sync.Mutex
	opt      WriterOptions
	maxChunk int // the broker's chunk limit
	maxBytes int // chunk bytes per batch
	maxCost  int // bytes plus overhead per batch, to fit the pipe's limit
	overhead int
	enc      batchEncoder
	inflight []batchSent
	given    int   // chunks given to Write
	acked    int   // chunks the broker acknowledged
	refused  error // a chunk Write refused: nothing after it is sent
	err      error // the broker refused a batch, or the connection failed
	closed   bool
	idle     *time.Timer // flushes a batch Idle held back
}

// ChunkTooLargeError is a Writer's refusal of a chunk over the broker's
// chunk limit. Nothing written after it is sent.
type ChunkTooLargeError struct {
	Pipe  string
	Index int // the chunk's place in the stream, from 1
	Size  int // its bytes
	Limit int // the broker's chunk limit
}

func (e *ChunkTooLargeError) Error() string {
	return fmt.Sprintf("write %q: %v: chunk %d has %d bytes, over the broker's limit of %d", e.Pipe, ErrTooLarge, e.Index, e.Size, e.Limit)
}

// Unwrap returns ErrTooLarge.
func (e *ChunkTooLargeError) Unwrap() error { return ErrTooLarge }

type batchSent struct {
	call          *call
	chunks, bytes int
}

// NewWriter starts a stream of chunks into pipe. It asks the broker for its
// limits (once per Client), to size batches that fit them. ctx bounds the
// Writer's waits: once it ends, Write fails and Close cancels what the
// broker has not yet executed.
func (c *Client) NewWriter(ctx context.Context, pipe string, opt WriterOptions) (*Writer, error) {
	lim, err := c.Limits(ctx)
	if err != nil {
		return nil, wrap("write", pipe, err)
	}
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	opt.Batch = min(opt.Batch, lim.MaxBatch)
	if opt.Window <= 0 {
		opt.Window = defaultWindow
	}
	w := &Writer{
		c: c, ctx: ctx, pipe: pipe, opt: opt,
		maxChunk: lim.MaxChunk,
		// The message carries the command and the name besides the chunks.
		maxBytes: min(batchByteLimit, lim.MaxMessage-len(CmdMWrite)-len(pipe)),
		// A batch costs its bytes plus an overhead per chunk against the
		// pipe's and the broker's limits: keep several in a full pipe.
		maxCost:  max(1, min(lim.MaxPipeBytes, lim.MaxTotalBytes)/(opt.Window+1)),
		overhead: lim.ChunkOverhead,
	}
	w.enc.reset(CmdMWrite, pipe)
	return w, nil
}

// Write adds a copy of chunk to the stream. It fails, and so does every
// later Write, if the broker would refuse the chunk, if it refused an
// earlier batch, or once the Writer's context has ended.
func (w *Writer) Write(chunk []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	return w.add(chunk)
}

// WriteAll is Write for each chunk in turn, stopping at the first error,
// under one lock: a producer with many small chunks at hand (every line of
// a read) pays for the Writer's lock once, not once a chunk.
func (w *Writer) WriteAll(chunks [][]byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	for _, c := range chunks {
		if err := w.add(c); err != nil {
			return err
		}
	}
	return nil
}

// add is Write once the Writer is known usable; w.mu is held.
func (w *Writer) add(chunk []byte) error {
	w.given++
	if len(chunk) > w.maxChunk {
		w.refused = &ChunkTooLargeError{Pipe: w.pipe, Index: w.given, Size: len(chunk), Limit: w.maxChunk}
		return w.refused
	}
	cost := w.enc.size + len(chunk) + w.overhead*(w.enc.chunks+1)
	if w.enc.chunks > 0 && (w.enc.size+len(chunk) > w.maxBytes || cost > w.maxCost) {
		if err := w.send(); err != nil {
			return err
		}
	}
	w.enc.add(chunk)
	if w.enc.chunks >= w.opt.Batch || w.enc.size >= w.maxBytes {
		return w.send()
	}
	return nil
}

// Idle says the input has nothing more for now. With no batch in flight
// the buffered chunks go at once; otherwise they wait up to idleDelay for
// more to join them, since the pipeline is busy anyway: a producer that
// pauses for a moment between bursts then makes full batches rather than
// one small batch per burst, and a lone interactive line is late by at
// most idleDelay.
func (w *Writer) Idle() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if w.reap(); len(w.inflight) == 0 {
		return w.send()
	}
	if w.enc.chunks > 0 && w.idle == nil {
		w.idle = time.AfterFunc(idleDelay, func() { w.Flush() })
	}
	return nil
}

// idleDelay is how long Idle lets buffered chunks wait while batches are
// in flight.
const idleDelay = 2 * time.Millisecond

// Flush sends the chunks buffered so far without waiting for more.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	return w.send()
}

func (w *Writer) usable() error {
	switch {
	case w.closed:
		return fmt.Errorf("write %q: writer closed", w.pipe)
	case w.refused != nil:
		return w.refused
	case w.err != nil:
		return w.err
	}
	return w.ctx.Err()
}

// send sends the buffered batch, first waiting for room in the window.
func (w *Writer) send() error {
	if w.idle != nil {
		w.idle.Stop()
		w.idle = nil
	}
	if w.enc.chunks == 0 {
		return nil
	}
	for len(w.inflight) >= w.opt.Window {
		if err := w.waitOldest(); err != nil {
			return err
		}
	}
	k := w.c.asyncEncoded(CmdMWrite, w.enc.bytes())
	w.inflight = append(w.inflight, batchSent{call: k, chunks: w.enc.chunks, bytes: w.enc.size})
	w.enc.reset(CmdMWrite, w.pipe)
	w.reap()
	return w.err
}

// reap accounts for the batches acknowledged meanwhile, without waiting.
func (w *Writer) reap() {
	for len(w.inflight) > 0 {
		select {
		case <-w.inflight[0].call.done:
			w.settle()
		default:
			return
		}
	}
}

// waitOldest waits for the oldest batch in flight, or for the context.
func (w *Writer) waitOldest() error {
	select {
	case <-w.inflight[0].call.done:
		w.settle()
		return w.err
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
}

// settle accounts for the oldest batch in flight, which has its reply.
func (w *Writer) settle() {
	b := w.inflight[0]
	w.inflight = w.inflight[1:]
	switch err := b.call.err; {
	case err == nil:
		w.acked += b.chunks
		if w.opt.Acked != nil {
			w.opt.Acked(b.chunks, b.bytes)
		}
	case errors.Is(err, ErrCancelled):
		// Close cancelled it: not in the pipe, and not an error.
	case w.err == nil:
		w.err = wrap("write", w.pipe, err)
		// Later batches must not land after a hole: the broker answers
		// those it has not executed yet with "cancelled".
		if len(w.inflight) > 0 {
			w.c.cancel(w.pipe)
		}
	}
}

// Close sends what is buffered, waits until the broker has answered every
// batch, and returns how many chunks it acknowledged: exactly those the
// pipe received. If the Writer's context ends first, the buffered chunks
// are dropped and the writes the broker has not executed (a write waits
// while the pipe is full) are cancelled, so none of them lands later; the
// count is still exact. The error is the first failure: a refused chunk, a
// refused batch, the connection, or the context's error. Close may be
// called more than once.
func (w *Writer) Close() (acked int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		w.finish()
	}
	return w.acked, errors.Join(w.refused, w.err, w.ctx.Err())
}

func (w *Writer) finish() {
	if w.err == nil && w.ctx.Err() == nil {
		w.send()
	}
	if w.idle != nil {
		w.idle.Stop()
	}
	for len(w.inflight) > 0 {
		if w.waitOldest() != nil && w.ctx.Err() != nil {
			break
		}
	}
	if len(w.inflight) == 0 {
		return
	}
	// Interrupted: the replies come at once after a CANCEL, or the
	// client's timeout fails them if the broker is frozen.
	cancel := w.c.cancel(w.pipe)
	for len(w.inflight) > 0 {
		<-w.inflight[0].call.done
		w.settle()
	}
	<-cancel.done
}
