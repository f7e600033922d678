package broker

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
)

// The streaming Reader: see stream.go for what a stream promises.

// ReaderOptions tune a Reader. Zero fields take defaults.
type ReaderOptions struct {
	Batch int // most chunks per TAKE: default DefaultBatch, at most the broker's limit
	Ahead int // TAKEs in flight: default 2
	Max   int // most chunks to take from the pipe in all; 0: no limit
}

// Reader streams chunks out of one pipe, keeping TAKEs in flight. The
// broker holds every chunk it hands a Reader until the Reader acknowledges
// it: Consume says the caller has delivered chunks (ACK), and Close gives
// back every chunk not consumed (NACK), in order, ahead of everything
// queued. If the process dies instead, the broker gives them back when the
// connection ends, so a reader killed by SIGKILL loses nothing: what it
// delivered and had not yet acknowledged is delivered again (at least
// once). A Reader is for one goroutine.
type Reader struct {
	c    *Client
	ctx  context.Context
	pipe string
	opt  ReaderOptions

	calls     []readSent // TAKEs in flight, in order
	requested int        // chunks they ask for
	received  int        // chunks received in all
	ready     [][]byte   // received, not handed out
	handed    int        // handed out, not consumed
	acks      []*call    // ACKs not yet answered
	err       error
	sized     bool // Batch fits the broker's limits
	closed    bool
	closeErr  error
}

type readSent struct {
	call *call
	n    int
}

// NewReader starts reading pipe. Nothing is asked of the broker until the
// first Next or Buffered. ctx bounds the waits of Next.
func (c *Client) NewReader(ctx context.Context, pipe string, opt ReaderOptions) *Reader {
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.Ahead <= 0 {
		opt.Ahead = defaultAhead
	}
	return &Reader{c: c, ctx: ctx, pipe: pipe, opt: opt}
}

// Next returns the next chunk, waiting while the pipe is empty. It returns
// io.EOF once Max chunks have been taken, and the context's error if it
// ends first. The chunk counts as taken until Consume.
func (r *Reader) Next() ([]byte, error) { return r.NextContext(r.ctx) }

// NextContext is Next with a context of its own for this wait, for a
// caller that must also stop waiting for reasons of its own. An ended
// wait loses nothing: the next call picks up where it left off.
func (r *Reader) NextContext(ctx context.Context) ([]byte, error) {
	if err := r.wait(ctx); err != nil {
		return nil, err
	}
	chunk := r.ready[0]
	r.ready[0] = nil
	r.ready = r.ready[1:]
	r.handed++
	return chunk, nil
}

// NextAll is Next for every chunk that is ready: it waits as Next does for
// the first, then hands out all that arrived with it (at least one), in
// order, as if Next had been called for each. A reader that handles chunks
// in a loop of its own saves a call per chunk.
func (r *Reader) NextAll() ([][]byte, error) {
	if err := r.wait(r.ctx); err != nil {
		return nil, err
	}
	chunks := r.ready
	r.ready = nil
	r.handed += len(chunks)
	return chunks, nil
}

// wait returns once a chunk is ready, or with why none will be.
func (r *Reader) wait(ctx context.Context) error {
	for len(r.ready) == 0 {
		if r.err != nil {
			return r.err
		}
		if r.fill(); r.err != nil {
			return r.err
		}
		if len(r.calls) == 0 {
			return io.EOF
		}
		select {
		case <-r.calls[0].call.done:
			r.receive()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Buffered is how many chunks Next can return without waiting. A reader
// that buffers its own output flushes it when this is 0.
func (r *Reader) Buffered() int {
	if len(r.ready) == 0 && len(r.calls) > 0 {
		select {
		case <-r.calls[0].call.done:
			r.receive()
		default:
		}
	}
	return len(r.ready)
}

// Consume acknowledges the oldest n chunks handed out by Next as delivered:
// the broker forgets them, and Close will not give them back. It does not
// wait for the broker's answer; a failure shows in a later call.
func (r *Reader) Consume(n int) {
	n = min(n, r.handed)
	if n <= 0 {
		return
	}
	r.handed -= n
	r.acks = append(r.acks, r.c.async(CmdAck, []byte(r.pipe), []byte(strconv.Itoa(n))))
	// Keep the list short: forget the answered ones, noting a failure.
	for len(r.acks) > 0 {
		select {
		case <-r.acks[0].done:
			if err := r.acks[0].err; err != nil && r.err == nil {
				r.err = wrap("ack", r.pipe, err)
			}
			r.acks = r.acks[1:]
			continue
		default:
		}
		break
	}
}

// fill keeps Ahead TAKEs in flight, never asking for more than Max, nor
// for more per TAKE than the broker takes.
func (r *Reader) fill() {
	if !r.sized {
		lim, err := r.c.Limits(r.ctx)
		if err != nil {
			r.err = wrap("read", r.pipe, err)
			return
		}
		r.opt.Batch = min(r.opt.Batch, lim.MaxBatch)
		r.sized = true
	}
	for len(r.calls) < r.opt.Ahead {
		n := r.opt.Batch
		if r.opt.Max > 0 {
			n = min(n, r.opt.Max-r.received-r.requested)
		}
		if n <= 0 {
			return
		}
		k := r.c.async(CmdTake, []byte(r.pipe), []byte(strconv.Itoa(n)))
		r.calls = append(r.calls, readSent{call: k, n: n})
		r.requested += n
	}
}

// receive takes the oldest TAKE's reply, which has come.
func (r *Reader) receive() {
	s := r.calls[0]
	r.calls = r.calls[1:]
	r.requested -= s.n
	if s.call.err != nil {
		r.err = wrap("read", r.pipe, s.call.err)
		return
	}
	r.received += len(s.call.reply)
	r.ready = s.call.reply
	// Keep the pipeline full while this batch is handed out; but a Reader
	// with Ahead 1 never takes a chunk before the last is used: Next asks
	// for more when this batch is.
	if r.opt.Ahead > 1 {
		r.fill()
	}
}

// Close stops reading. The TAKEs in flight are cancelled, and every chunk
// taken and not consumed goes back to the head of the pipe, in the order it
// came: those handed out, those received and not handed out, and those the
// cancelled TAKEs had already been given. It waits at most the client's
// timeout for a silent broker. Close may be called more than once.
func (r *Reader) Close() error {
	if r.closed {
		return r.closeErr
	}
	r.closed = true
	var calls []*call
	if len(r.calls) > 0 {
		calls = append(calls, r.c.cancel(r.pipe))
		for _, s := range r.calls {
			calls = append(calls, s.call)
		}
		r.calls = nil
	}
	holding := r.handed > 0 || len(r.ready) > 0 || len(calls) > 0
	r.handed, r.ready = 0, nil
	if holding {
		calls = append(calls, r.c.async(CmdNack, []byte(r.pipe)))
	}
	var err error // what Next already returned is not said again
	for _, k := range append(r.acks, calls...) {
		<-k.done
		if k.err != nil && !errors.Is(k.err, ErrCancelled) {
			err = errors.Join(err, wrap(strings.ToLower(k.cmd), r.pipe, k.err))
		}
	}
	r.acks = nil
	if errors.Is(err, ErrConnLost) {
		err = r.c.Err() // one loss, said once
	}
	r.closeErr = err
	return err
}
