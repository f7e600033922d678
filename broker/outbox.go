package broker

import (
	"sync"
	"time"
)

// Per-connection bounds on requests read but not yet answered on the wire.
// When a client stops reading its replies, the broker stops reading its
// requests: the client is throttled, nobody else is.
const (
	maxInflight      = 4096
	maxInflightBytes = 16 << 20
)

// reply is one message queued for a connection's writer.
type reply struct {
	envelope bool
	frames   [][]byte
	cost     int    // request bytes to release once written
	pipe     *pipe  // for replies carrying chunks: where they came from
	items    []item // the chunks in frames, to give back if never sent
	command  string // a ZMTP command (PONG) instead of a message
	credit   bool   // whether the reply answers a counted request
	encoded  bool   // already in the wire's buffer, partly written (sendNow)
}

// outbox is the queue between the core (and the reader, for PONGs) and a
// connection's writer goroutine. Pushing never blocks, so a stalled client
// can never stall the core.
type outbox struct {
	mu       sync.Mutex
	queue    []reply
	inflight int // requests read and not yet answered on the wire
	bytes    int // their bytes
	dead     bool
	writing  bool          // the writer goroutine has a batch: the wire is its
	wake     chan struct{} // writer: there is work
	room     chan struct{} // reader: inflight went down
	stop     chan struct{} // closed once: drain, then close the connection
	stopOnce sync.Once
}

func newOutbox() *outbox {
	return &outbox{
		wake: make(chan struct{}, 1),
		room: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// push queues a reply. It reports false if the connection is dead, in which
// case the caller still owns any chunks in the reply.
func (o *outbox) push(r reply) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead {
		return false
	}
	// What a reply carries counts with the requests, so a connection that
	// does not read its replies stops being read before its replies cost
	// more than maxInflightBytes and one reply.
	o.bytes += r.size()
	o.queue = append(o.queue, r)
	signal(o.wake)
	return true
}

// size is the bytes of the reply's frames.
func (r *reply) size() int {
	n := 0
	for _, f := range r.frames {
		n += len(f)
	}
	return n
}

// admit waits until the connection may read another request, or it closes.
// While it waits the peer hears nothing from us, and its PINGs go unread
// behind its requests; so that it does not take the broker for dead, the
// connection is sent a PING of its own now and then.
func (o *outbox) admit() bool {
	var tick <-chan time.Time
	for {
		o.mu.Lock()
		if o.dead {
			o.mu.Unlock()
			return false
		}
		if o.inflight < maxInflight && o.bytes < maxInflightBytes {
			o.inflight++
			o.mu.Unlock()
			return true
		}
		o.mu.Unlock()
		if tick == nil {
			t := time.NewTicker(throttleHeartbeat)
			defer t.Stop()
			tick = t.C
		}
		select {
		case <-o.room:
		case <-o.stop:
			return false
		case <-tick:
			// Only into an empty outbox: a peer that reads nothing does not
			// need heartbeats piling up behind its replies.
			o.mu.Lock()
			idle := len(o.queue) == 0
			o.mu.Unlock()
			if idle {
				o.push(reply{command: "PING", frames: [][]byte{{0, 0}}})
			}
		}
	}
}

// throttleHeartbeat is how often a throttled connection is pinged.
const throttleHeartbeat = 500 * time.Millisecond

// charge adds the size of a request just read to the inflight bytes.
func (o *outbox) charge(cost int) {
	o.mu.Lock()
	o.bytes += cost
	o.mu.Unlock()
}

// shutdown asks the writer to send what is queued and close.
func (o *outbox) shutdown() { o.stopOnce.Do(func() { close(o.stop) }) }

// take removes everything queued, for the writer, which has the wire until
// it calls idle.
func (o *outbox) take(buf []reply) []reply {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.writing = true
	buf = append(buf, o.queue...)
	clear(o.queue)
	o.queue = o.queue[:0]
	return buf
}

// idle says the writer is done with the wire.
func (o *outbox) idle() {
	o.mu.Lock()
	o.writing = false
	o.mu.Unlock()
}

// directMax is the largest reply sendNow writes itself: the short answers a
// client waits on (OK, ERROR), not batches of chunks.
const directMax = 4 << 10

// sendNow writes a short reply without chunks to the socket from the
// calling goroutine (the core's) when the connection's writer is idle with
// nothing queued: no other goroutine is woken to answer a request. It never
// waits for room in the socket: what the kernel does not take goes to the
// writer, in order. It reports false if it did nothing (the reply is to be
// pushed).
func (o *outbox) sendNow(w *wire, r reply) bool {
	if len(r.items) > 0 || r.command != "" || r.size() > directMax {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead || o.writing || len(o.queue) > 0 {
		return false
	}
	// Holding o.mu keeps the writer (take) off the wire meanwhile.
	w.takeSent()
	err := w.writeMessage(r.envelope, r.frames)
	whole := false
	if err == nil {
		whole, err = w.flushNow()
	}
	w.takeSent()
	if whole && err == nil {
		o.inflight--
		o.bytes -= r.cost
		signal(o.room)
		return true
	}
	// The rest (or the error) is the writer's, with the reply.
	r.encoded = true
	o.bytes += r.size()
	o.queue = append(o.queue, r)
	signal(o.wake)
	return true
}

// release returns the credit of written replies.
func (o *outbox) release(rs []reply) {
	n, b := 0, 0
	for _, r := range rs {
		b += r.size()
		if r.credit {
			n++
			b += r.cost
		}
	}
	if n == 0 && b == 0 {
		return
	}
	o.mu.Lock()
	o.inflight -= n
	o.bytes -= b
	o.mu.Unlock()
	signal(o.room)
}

// kill marks the outbox dead and returns what was never written.
func (o *outbox) kill() []reply {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dead = true
	left := o.queue
	o.queue = nil
	return left
}
