package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
)

// DefaultTimeout is how long a client waits without any sign of life from
// the broker, while a request is outstanding, before it gives up.
const DefaultTimeout = 5 * time.Second

// Client is a connection to a broker. Requests are answered in the order
// they are sent; any number may be in flight (see Go). It is safe for
// concurrent use, but the broker runs a connection's requests in order, so
// a READ waiting on one pipe holds everything sent after it, including a
// CANCEL for another pipe: read pipes concurrently through separate Clients.
type Client struct {
	endpoint string
	w        *wire
	timeout  time.Duration

	wmu sync.Mutex // serialises writes, and queueing with them

	mu    sync.Mutex
	calls []*Call // sent, not yet answered, in order
	err   error   // why the connection failed; set once

	lastSeen atomic.Int64 // unix nanos of the last sign of life
	done     chan struct{}
	wg       sync.WaitGroup
}

// Call is a request in flight. Done receives the call once Reply or Err
// is set.
type Call struct {
	Cmd   string
	Reply [][]byte // READ: the chunk; others: the frames after "OK"
	Err   error
	Done  chan *Call
}

// Option configures Dial.
type Option func(*Client)

// WithTimeout sets how long the client waits for a broker that has gone
// silent. The broker is pinged after a third of it.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// Dial connects to the broker at endpoint and completes the ZMTP handshake
// within the client's timeout.
func Dial(ctx context.Context, endpoint string, opts ...Option) (*Client, error) {
	c := &Client{endpoint: endpoint, timeout: DefaultTimeout, done: make(chan struct{})}
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
	w, err := handshake(nc, zmq4.Dealer, nil, false, deadline)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake with broker at %s: %w", endpoint, err)
	}
	c.w = w
	c.lastSeen.Store(time.Now().UnixNano())
	c.wg.Add(2)
	go c.readLoop()
	go c.watch()
	return c, nil
}

// Endpoint is the broker endpoint the client is connected to.
func (c *Client) Endpoint() string { return c.endpoint }

// Close closes the connection. Calls still in flight fail with ErrConnLost.
// Requests already sent are executed by the broker only if it read them.
func (c *Client) Close() error {
	c.fail(errors.New("client closed"))
	c.wg.Wait()
	return nil
}

// Err reports why the connection failed, or nil while it works.
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
	c.err = fmt.Errorf("%w (%s): %w", ErrConnLost, c.endpoint, err)
	calls := c.calls
	c.calls = nil
	c.mu.Unlock()
	close(c.done)
	c.w.close()
	for _, call := range calls {
		call.Err = c.err
		call.Done <- call
	}
}

// Go sends a request without waiting for its reply. args are the frames
// after the command: the pipe name first, for every command but LIST.
func (c *Client) Go(cmd string, args ...[]byte) *Call {
	call := &Call{Cmd: cmd, Done: make(chan *Call, 1)}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		call.Err = c.err
		call.Done <- call
		return call
	}
	if len(c.calls) == 0 {
		// The silence that counts starts now, not when the client went idle.
		c.lastSeen.Store(time.Now().UnixNano())
	}
	c.calls = append(c.calls, call)
	c.mu.Unlock()
	frames := make([][]byte, 0, 1+len(args))
	frames = append(frames, []byte(cmd))
	frames = append(frames, args...)
	err := c.w.writeMessage(false, frames)
	if err == nil {
		err = c.w.flush()
	}
	if err != nil {
		go c.fail(err) // fail takes c.mu and completes this call too
	}
	return call
}

// Do sends a request and waits for its reply. If ctx ends first, Do returns
// ctx.Err() and the reply, when it comes, is dropped: use it only for
// requests that are safe to abandon (not reads).
func (c *Client) Do(ctx context.Context, cmd string, args ...[]byte) ([][]byte, error) {
	call := c.Go(cmd, args...)
	select {
	case <-call.Done:
		return call.Reply, call.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) readLoop() {
	defer c.wg.Done()
	for {
		msg, err := c.w.readMessage(1<<62, 1<<30)
		if err != nil {
			c.fail(err)
			return
		}
		c.lastSeen.Store(time.Now().UnixNano())
		if msg.command != "" {
			continue // PONG, or anything else the broker says outside replies
		}
		c.mu.Lock()
		if len(c.calls) == 0 {
			c.mu.Unlock()
			c.fail(fmt.Errorf("%w: reply to no request", ErrBadReply))
			return
		}
		call := c.calls[0]
		c.calls[0] = nil
		c.calls = c.calls[1:]
		c.mu.Unlock()
		frames := msg.frames
		if msg.envelope {
			frames = frames[1:]
		}
		call.Reply, call.Err = parseReply(call.Cmd, frames)
		call.Done <- call
	}
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
	_, err := c.Do(ctx, CmdOpen, []byte(pipe))
	return wrap("open", pipe, err)
}

// ClosePipe takes one from the pipe's open count.
func (c *Client) ClosePipe(ctx context.Context, pipe string) error {
	_, err := c.Do(ctx, CmdClose, []byte(pipe))
	return wrap("close", pipe, err)
}

// Write queues chunks in the pipe, in order, and returns once the broker
// has them: one WRITE for one chunk, one MWRITE for several.
func (c *Client) Write(ctx context.Context, pipe string, chunks ...[]byte) error {
	call := c.GoWrite(pipe, chunks...)
	select {
	case <-call.Done:
		return wrap("write", pipe, call.Err)
	case <-ctx.Done():
		return wrap("write", pipe, ctx.Err())
	}
}

// GoWrite sends the request Write sends without waiting for its reply.
func (c *Client) GoWrite(pipe string, chunks ...[]byte) *Call {
	cmd := CmdMWrite
	if len(chunks) == 1 {
		cmd = CmdWrite
	}
	return c.Go(cmd, append([][]byte{[]byte(pipe)}, chunks...)...)
}

// Read takes one chunk from the pipe, waiting until there is one.
func (c *Client) Read(ctx context.Context, pipe string) ([]byte, error) {
	chunks, err := c.read(ctx, pipe, c.Go(CmdRead, []byte(pipe)))
	if err != nil {
		return nil, err
	}
	return chunks[0], nil
}

// ReadBatch takes from 1 to max chunks from the pipe, waiting only while
// it is empty.
func (c *Client) ReadBatch(ctx context.Context, pipe string, max int) ([][]byte, error) {
	return c.read(ctx, pipe, c.GoReadBatch(pipe, max))
}

// GoReadBatch sends the MREAD ReadBatch sends without waiting for its
// reply. Unlike ReadBatch it does not take the read back if the caller
// gives up: see Reclaim.
func (c *Client) GoReadBatch(pipe string, max int) *Call {
	return c.Go(CmdMRead, []byte(pipe), []byte(strconv.Itoa(max)))
}

// read waits for a read call. If ctx ends first the read is taken back: it
// is cancelled, and chunks that were already on their way are put back at
// the head of the pipe, so nothing is lost.
func (c *Client) read(ctx context.Context, pipe string, call *Call) ([][]byte, error) {
	select {
	case <-call.Done:
		return call.Reply, wrap("read", pipe, call.Err)
	case <-ctx.Done():
	}
	err := c.Reclaim(pipe, nil, call)
	return nil, errors.Join(ctx.Err(), err)
}

// Reclaim takes back reads in flight on a pipe: it sends CANCEL, waits for
// the calls' replies and puts back at the head of the pipe, in order, the
// leftover chunks (taken earlier and not used) and those the calls carried.
// It waits at most the client's timeout for a silent broker.
func (c *Client) Reclaim(pipe string, leftover [][]byte, calls ...*Call) error {
	var cancel *Call
	if len(calls) > 0 {
		cancel = c.Go(CmdCancel, []byte(pipe))
	}
	back := leftover
	for _, call := range calls {
		<-call.Done
		if call.Err == nil {
			back = append(back, call.Reply...)
		}
	}
	var err error
	if cancel != nil {
		<-cancel.Done
		err = wrap("cancel", pipe, cancel.Err)
	}
	if len(back) > 0 {
		err = errors.Join(err, c.Unread(context.Background(), pipe, back...))
	}
	return err
}

// Unread puts chunks back at the head of the pipe, in order, ahead of
// everything queued. The broker takes them even when the pipe is full.
func (c *Client) Unread(ctx context.Context, pipe string, chunks ...[]byte) error {
	_, err := c.Do(ctx, CmdUnread, append([][]byte{[]byte(pipe)}, chunks...)...)
	return wrap("unread", pipe, err)
}

// List describes every pipe the broker has.
func (c *Client) List(ctx context.Context) ([]PipeInfo, error) {
	reply, err := c.Do(ctx, CmdList)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	if len(reply) != 1 {
		return nil, fmt.Errorf("list: %w: %d frames", ErrBadReply, len(reply))
	}
	var infos []PipeInfo
	if err := json.Unmarshal(reply[0], &infos); err != nil {
		return nil, fmt.Errorf("list: %w: %v", ErrBadReply, err)
	}
	return infos, nil
}

func wrap(op, pipe string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %q: %w", op, pipe, err)
}
