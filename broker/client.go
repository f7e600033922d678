package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"
)

// DefaultTimeout is how long a client waits without any sign of life from
// the broker, while a request is outstanding, before it gives up.
const DefaultTimeout = 5 * time.Second

// Client is a connection to a broker. Requests are answered in the order
// they are sent, and any number may be in flight: Writer and Reader keep
// batches in flight on one. It is safe for concurrent use, but the broker
// runs a connection's requests in order, so a READ waiting on one pipe
// holds everything sent after it, including a CANCEL for another pipe: read
// pipes concurrently through separate Clients.
type Client struct {
	endpoint string
	w        *wire
	timeout  time.Duration

	wmu sync.Mutex // serialises writes, and queueing with them

	mu      sync.Mutex
	calls   []*call       // sent, not yet answered, in order
	err     error         // why the connection failed; set once
	reading readerState   // who reads replies (see readFor)
	wake    chan struct{} // the read loop: read

	limitsOnce sync.Once
	limits     BrokerLimits
	limitsErr  error

	lastSeen atomic.Int64 // unix nanos of the last sign of life
	done     chan struct{}
	wg       sync.WaitGroup
}

// call is a request in flight. done receives the call once reply or err
// is set.
type call struct {
	cmd   string
	reply [][]byte // READ: the chunk; others: the frames after "OK"
	err   error
	done  chan *call
}

// Option configures Dial.
type Option func(*Client)

// WithTimeout sets how long the client waits for a broker that has gone
// silent. The broker is pinged after a third of it.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// Dial connects to the broker at endpoint and completes the ZMTP handshake
// within the client's timeout.
func Dial(ctx context.Context, endpoint string, opts ...Option) (*Client, error) {
	c := &Client{endpoint: endpoint, timeout: DefaultTimeout, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	for _, o := range opts {
		o(c)
	}
	nc, err := dial(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// A broker that accepts and never answers (stopped) holds the
	// handshake until the deadline; ctx's end cuts it short.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	w, err := handshake(nc, zmq4.Dealer, nil, false, deadline)
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() == nil {
			err = handshakeError(nc, endpoint, c.timeout, err)
		}
		nc.Close()
		return nil, err
	}
	c.w = w
	c.lastSeen.Store(time.Now().UnixNano())
	c.wg.Add(2)
	go c.loop()
	go c.watch()
	return c, nil
}

// Endpoint is the broker endpoint the client is connected to.
func (c *Client) Endpoint() string { return c.endpoint }

// Close closes the connection. Calls still in flight fail with ErrConnLost.
// Requests already sent are executed by the broker only if it read them.
func (c *Client) Close() error {
	c.fail(errClientClosed)
	c.wg.Wait()
	return nil
}

// Err reports why the connection failed, or nil while it works as far as
// the client knows. With no call in flight nobody reads the connection, so
// a broker that went away meanwhile shows here once the next call fails.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// fail closes the connection once and fails every call in flight.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = &troubleError{kind: ErrConnLost, msg: fmt.Sprintf("connection to the broker at %s lost: %s", c.endpoint, lossReason(err))}
	calls := c.calls
	c.calls = nil
	c.mu.Unlock()
	close(c.done)
	c.w.close()
	for _, k := range calls {
		k.err = c.err
		k.done <- k
	}
}

// async sends a request without waiting for its reply. args are the frames
// after the command: the pipe name first, for every command but LIST and
// LIMITS.
func (c *Client) async(cmd string, args ...[]byte) *call {
	k, _ := c.send(cmd, encodeRequest(cmd, args), false)
	return k
}

// encodeRequest writes a request of the command and its frames.
func encodeRequest(cmd string, args [][]byte) func(*wire) error {
	return func(w *wire) error {
		frames := make([][]byte, 0, 1+len(args))
		frames = append(frames, []byte(cmd))
		frames = append(frames, args...)
		return w.writeMessage(false, frames)
	}
}

// asyncEncoded sends a request already encoded as ZMTP frames (see
// batchEncoder) without waiting for its reply. The bytes may be reused as
// soon as it returns.
func (c *Client) asyncEncoded(cmd string, msg []byte) *call {
	k, _ := c.send(cmd, func(w *wire) error { return w.writeEncoded(msg) }, false)
	return k
}

// send registers a call and writes its request with encode. With direct,
// if no other call is in flight, the caller is to read the reply itself
// (readFor), and send says so.
func (c *Client) send(cmd string, encode func(*wire) error, direct bool) (k *call, self bool) {
	k = &call{cmd: cmd, done: make(chan *call, 1)}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		k.err = c.err
		k.done <- k
		return k, false
	}
	if len(c.calls) == 0 {
		// The silence that counts starts now, not when the client went idle.
		c.lastSeen.Store(time.Now().UnixNano())
	}
	c.calls = append(c.calls, k)
	switch {
	case c.reading != readNobody:
	case direct:
		c.reading, self = readCaller, true
	default:
		c.reading = readLoop
		signal(c.wake)
	}
	c.mu.Unlock()
	err := encode(c.w)
	if err == nil {
		err = c.w.flush()
	}
	if err != nil {
		go c.fail(err) // fail takes c.mu and completes this call too
	}
	return k, self
}

// do sends a request and waits for its reply. If ctx ends first, do returns
// ctx.Err() and the reply, when it comes, is dropped: use it only for
// requests that are safe to abandon (not reads).
func (c *Client) do(ctx context.Context, cmd string, args ...[]byte) ([][]byte, error) {
	k, self := c.send(cmd, encodeRequest(cmd, args), true)
	if self {
		if err := c.readFor(ctx, k); err != nil {
			return nil, err
		}
	}
	select {
	case <-k.done:
		return k.reply, k.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Who reads the replies. The read loop does while calls are in flight,
// except that a synchronous call (do) made when no other is in flight reads
// its reply itself: a reply handed from the read loop to its caller wakes
// another thread, which on a small VM costs about what the round trip to
// the broker does (docs/performance.md). Nobody reads while nothing is in
// flight.
type readerState int

const (
	readNobody readerState = iota
	readLoop               // the read loop goroutine
	readCaller             // the caller of a do (readFor)
)

// readFor reads replies, and hands them to their calls, until k has its
// own; then the read loop takes over if other calls came meanwhile. If ctx
// ends first while it waits for the next reply, it returns ctx's error
// and leaves the reading to the read loop. Only the wait before a message
// can be cut short, so readFor reads a message only when it is whole in
// the buffer: one still arriving (a long reply, or a broker stopped in the
// middle of one) is left to the read loop, while do waits where ctx can
// end the wait. Either way the stream stays in step.
func (c *Client) readFor(ctx context.Context, k *call) error {
	defer c.handOver()
	var ctxEnd waitCut
	stop := context.AfterFunc(ctx, func() { ctxEnd.cut(c.w.nc) })
	defer stop()
	for len(k.done) == 0 { // answered: do receives it
		if err := ctxEnd.wait(c.w); err != nil {
			if ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				return ctx.Err()
			}
			c.fail(err)
			continue // k has failed too
		}
		if !c.w.messageBuffered() {
			return nil // k is in flight: handOver gives the read loop the rest
		}
		if err := c.readReply(); err != nil {
			c.fail(err)
		}
	}
	return nil
}

// handOver ends a caller's turn at reading: to the read loop if calls are
// still in flight.
func (c *Client) handOver() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading != readCaller {
		return
	}
	c.reading = readNobody
	if len(c.calls) > 0 {
		c.reading = readLoop
		signal(c.wake)
	}
}

// waitCut is a wait for the next message that another goroutine can cut
// short (a context's end), by a read deadline set only during the wait.
type waitCut struct {
	mu      sync.Mutex
	waiting bool
	cutOff  bool // cut: the wait ends, and no other begins
	moved   bool // the deadline was set
}

// wait waits until the next message has begun to arrive, or the wait is
// cut (os.ErrDeadlineExceeded).
func (wc *waitCut) wait(w *wire) error {
	wc.mu.Lock()
	if wc.cutOff {
		wc.mu.Unlock()
		return os.ErrDeadlineExceeded
	}
	wc.waiting = true
	wc.mu.Unlock()
	_, err := w.r.Peek(1)
	wc.mu.Lock()
	defer wc.mu.Unlock()
	wc.waiting = false
	if wc.moved {
		// Back to no deadline before anything reads the message.
		w.nc.SetReadDeadline(time.Time{})
		wc.moved = false
	}
	return err // nil if the message came first, even if cut: it is read, then the wait ends
}

// cut ends the wait, now or when it begins.
func (wc *waitCut) cut(nc net.Conn) {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	wc.cutOff = true
	if wc.waiting {
		nc.SetReadDeadline(time.Unix(1, 0))
		wc.moved = true
	}
}

// loop reads replies while the read loop has the reading.
func (c *Client) loop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		for {
			c.mu.Lock()
			if c.reading == readLoop && len(c.calls) == 0 {
				c.reading = readNobody
			}
			ours := c.reading == readLoop
			c.mu.Unlock()
			if !ours {
				break
			}
			if err := c.readReply(); err != nil {
				c.fail(err)
				return
			}
		}
	}
}

// readReply reads the next message and hands a reply to its call.
func (c *Client) readReply() error {
	msg, err := c.w.readMessage(1<<62, 1<<30)
	if err != nil {
		return err
	}
	c.lastSeen.Store(time.Now().UnixNano())
	if msg.command != "" {
		return nil // PONG, or anything else the broker says outside replies
	}
	c.mu.Lock()
	if len(c.calls) == 0 {
		c.mu.Unlock()
		return fmt.Errorf("%w: reply to no request", ErrBadReply)
	}
	k := c.calls[0]
	c.calls[0] = nil
	c.calls = c.calls[1:]
	c.mu.Unlock()
	frames := msg.frames
	if msg.envelope {
		frames = frames[1:]
	}
	k.reply, k.err = parseReply(k.cmd, frames)
	k.done <- k
	return nil
}

// watch pings a silent broker while requests are outstanding (a READ may
// rightly wait for hours) and gives up on it after the timeout.
func (c *Client) watch() {
	defer c.wg.Done()
	t := time.NewTicker(c.timeout / 3)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			c.mu.Lock()
			busy := len(c.calls) > 0
			c.mu.Unlock()
			if !busy {
				continue
			}
			silent := now.Sub(time.Unix(0, c.lastSeen.Load()))
			if silent >= c.timeout {
				c.fail(fmt.Errorf("broker silent for %v", silent.Round(time.Millisecond)))
				return
			}
			if silent >= c.timeout/3 && c.wmu.TryLock() {
				// TryLock: if a write is stuck, the broker is not reading
				// and the timeout will tell.
				err := c.w.writeCommand("PING", []byte{0, 0})
				if err == nil {
					err = c.w.flush()
				}
				c.wmu.Unlock()
				if err != nil {
					c.fail(err)
					return
				}
			}
		}
	}
}

// Open adds one to the pipe's open count, creating the pipe if needed.
func (c *Client) Open(ctx context.Context, pipe string) error {
	_, err := c.do(ctx, CmdOpen, []byte(pipe))
	return wrap("open", pipe, err)
}

// Hold adds one to the pipe's open count for as long as this connection
// lasts, creating the pipe if needed: ClosePipe ends it, and so does the
// connection's end, however it ends. Commands that use a pipe for a while
// hold it rather than Open it, so a process killed by SIGKILL does not
// leave it open for good.
func (c *Client) Hold(ctx context.Context, pipe string) error {
	_, err := c.do(ctx, CmdHold, []byte(pipe))
	return wrap("open", pipe, err)
}

// ClosePipe takes one from the pipe's open count (ending one of this
// connection's holds first, if it has any).
func (c *Client) ClosePipe(ctx context.Context, pipe string) error {
	_, err := c.do(ctx, CmdClose, []byte(pipe))
	return wrap("close", pipe, err)
}

// Write queues chunks in the pipe, in order, as one request (all or
// nothing), and returns once the broker has them. To stream many chunks,
// use a Writer.
func (c *Client) Write(ctx context.Context, pipe string, chunks ...[]byte) error {
	cmd := CmdMWrite
	if len(chunks) == 1 {
		cmd = CmdWrite
	}
	_, err := c.do(ctx, cmd, append([][]byte{[]byte(pipe)}, chunks...)...)
	return wrap("write", pipe, err)
}

// Read takes one chunk from the pipe, waiting until there is one. If ctx
// ends first, the read is taken back and nothing is lost; the error is then
// ctx's. To read many chunks, use a Reader.
func (c *Client) Read(ctx context.Context, pipe string) ([]byte, error) {
	r := c.NewReader(ctx, pipe, ReaderOptions{Batch: 1, Ahead: 1, Max: 1})
	chunk, err := r.Next()
	if err == nil {
		r.Consume(1)
	}
	return chunk, errors.Join(err, r.Close())
}

// cancel sends CANCEL for the pipe: the connection's unanswered reads and
// writes of it answer "cancelled" rather than wait.
func (c *Client) cancel(pipe string) *call { return c.async(CmdCancel, []byte(pipe)) }

// Unread puts chunks back at the head of the pipe, in order, ahead of
// everything queued. The broker takes them even when the pipe is full.
func (c *Client) Unread(ctx context.Context, pipe string, chunks ...[]byte) error {
	_, err := c.do(ctx, CmdUnread, append([][]byte{[]byte(pipe)}, chunks...)...)
	return wrap("unread", pipe, err)
}

// List describes every pipe the broker has, by name. The broker answers
// LIST a page at a time; List asks for every page.
func (c *Client) List(ctx context.Context) ([]PipeInfo, error) {
	var all []PipeInfo
	var args [][]byte
	for {
		reply, err := c.do(ctx, CmdList, args...)
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		if len(reply) != 1 && len(reply) != 2 {
			return nil, fmt.Errorf("list: %w: %d frames", ErrBadReply, len(reply))
		}
		var infos []PipeInfo
		if err := json.Unmarshal(reply[0], &infos); err != nil {
			return nil, fmt.Errorf("list: %w: %v", ErrBadReply, err)
		}
		all = append(all, infos...)
		if len(reply) == 1 {
			return all, nil
		}
		args = [][]byte{reply[1]} // the next page starts after this name
	}
}

// Limits returns what the broker accepts (LIMITS), asked once per Client.
func (c *Client) Limits(ctx context.Context) (BrokerLimits, error) {
	c.limitsOnce.Do(func() {
		reply, err := c.do(ctx, CmdLimits)
		switch {
		case err != nil:
			c.limitsErr = fmt.Errorf("limits: %w", err)
		case len(reply) != 1:
			c.limitsErr = fmt.Errorf("limits: %w: %d frames", ErrBadReply, len(reply))
		default:
			if err := json.Unmarshal(reply[0], &c.limits); err != nil || c.limits.MaxChunk < 1 || c.limits.MaxBatch < 1 || c.limits.MaxMessage < 1 {
				c.limitsErr = fmt.Errorf("limits: %w: %q", ErrBadReply, reply[0])
			}
		}
	})
	return c.limits, c.limitsErr
}

func wrap(op, pipe string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %q: %w", op, pipe, err)
}

// lossReason says in words why a connection failed, without the socket
// layer's internals.
func lossReason(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "the broker closed the connection (did it stop?)"
	case errors.Is(err, errClientClosed):
		return "client closed"
	}
	return err.Error()
}

var errClientClosed = errors.New("client closed")

// handshakeError explains a failed ZMTP handshake: a broker that does not
// answer (stopped, or not a zpipes broker), or one that closed the
// connection on us, most likely because we are not its user.
func handshakeError(nc *net.UnixConn, endpoint string, timeout time.Duration, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &troubleError{kind: ErrNoAnswer, msg: fmt.Sprintf("the broker at %s did not answer within %v (is it stopped?)", endpoint, timeout)}
	}
	if cred, err := peerCred(nc); err == nil && int(cred.Uid) != os.Getuid() {
		return &troubleError{kind: ErrRefused, msg: fmt.Sprintf("the broker at %s belongs to uid %d and does not accept us: set ZPIPES_ENDPOINT (or -e) to a broker of your own", endpoint, cred.Uid)}
	}
	return &troubleError{kind: ErrRefused, msg: fmt.Sprintf("the broker at %s closed the connection during the handshake (is it at its connection limit?)", endpoint)}
}

// troubleError says in a sentence of its own what went wrong with the
// broker, and unwraps to the sentinel for errors.Is.
type troubleError struct {
	kind error
	msg  string
}

func (e *troubleError) Error() string { return e.msg }
func (e *troubleError) Unwrap() error { return e.kind }
