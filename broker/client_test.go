package broker

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"golang.org/x/sys/unix"
)

func TestClientGivesUpOnSilentBroker(t *testing.T) {
	ep := testEndpoint()
	ln, err := listen(ep)
	mustOK(t, err)
	defer ln.Close()
	accepted := make(chan *wire, 1)
	go func() {
		if w, err := acceptWire(ln); err == nil {
			accepted <- w // and never answer anything
		}
	}()
	c, err := Dial(testCtx(t), ep, WithTimeout(300*time.Millisecond))
	mustOK(t, err)
	defer c.Close()
	w := <-accepted
	defer w.close()
	start := time.Now()
	err = c.Open(context.Background(), "p")
	if !errors.Is(err, ErrConnLost) {
		t.Fatalf("OPEN to a silent broker: %v, want ErrConnLost", err)
	}
	t.Logf("gave up after %v", time.Since(start))
}

func TestClientNoticesBrokerClose(t *testing.T) {
	s, err := Listen(Config{Endpoint: testEndpoint()})
	mustOK(t, err)
	c, err := Dial(testCtx(t), s.Endpoint())
	mustOK(t, err)
	defer c.Close()
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	call := c.async(CmdRead, []byte("p"))
	watcher, err := Dial(ctx, s.Endpoint())
	mustOK(t, err)
	defer watcher.Close()
	waitFor(t, watcher, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Reader })
	s.Close()
	<-call.done
	if !errors.Is(call.err, ErrShutdown) {
		t.Fatalf("waiting READ at shutdown: %v, want ErrShutdown", call.err)
	}
	if err := c.Open(ctx, "p"); !errors.Is(err, ErrConnLost) {
		t.Fatalf("request after shutdown: %v, want ErrConnLost", err)
	}
}

// A synchronous call reads its own reply when nothing else is in flight;
// if its context ends first, it returns at once and the client's read loop
// reads on: the late reply goes to the abandoned call, the next reply to
// the next call.
func TestCallWhoseContextEndsLeavesTheRepliesInStep(t *testing.T) {
	ep := testEndpoint()
	ln, err := listen(ep)
	mustOK(t, err)
	defer ln.Close()
	answer := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		w, err := acceptWire(ln)
		if err != nil {
			served <- err
			return
		}
		defer w.close()
		for i := range 2 {
			if _, err := w.readMessage(1<<20, 100); err != nil {
				served <- err
				return
			}
			if i == 0 {
				<-answer // the first reply only once its caller gave up
			}
			w.writeMessage(false, [][]byte{[]byte("OK")})
			if err := w.flush(); err != nil {
				served <- err
				return
			}
		}
		served <- nil
	}()
	c, err := Dial(testCtx(t), ep)
	mustOK(t, err)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if err := c.Open(ctx, "p"); !errors.Is(err, context.Canceled) {
		t.Fatalf("OPEN whose context ended: %v, want context.Canceled", err)
	}
	close(answer)
	mustOK(t, c.Open(testCtx(t), "q"))
	mustOK(t, <-served)
	mustOK(t, c.Err())
}

// A synchronous call whose reply has begun to arrive, and stalls (a broker
// stopped in the middle of a long reply), still returns when its context
// ends, and the client stays in step: the read loop reads the rest of that
// reply when it comes, and the next call gets its own.
func TestCallCutWhileItsReplyArrivesReturnsAtOnce(t *testing.T) {
	ep := testEndpoint()
	ln, err := listen(ep)
	mustOK(t, err)
	defer ln.Close()
	halfRead := make(chan struct{})
	rest := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			w, err := acceptWire(ln)
			if err != nil {
				return err
			}
			defer w.close()
			if _, err := w.readMessage(1<<20, 100); err != nil {
				return err
			}
			nc := w.nc
			reply := zmessage("OK", strings.Repeat("[", 4000))
			if _, err := nc.Write(reply[:len(reply)/2]); err != nil {
				return err
			}
			if err := waitUnsent(nc, 0); err != nil { // the client has the first half
				return err
			}
			close(halfRead)
			<-rest
			if _, err := nc.Write(reply[len(reply)/2:]); err != nil {
				return err
			}
			if _, err := w.readMessage(1<<20, 100); err != nil {
				return err
			}
			w.writeMessage(false, [][]byte{[]byte("OK")})
			return w.flush()
		}()
	}()
	c, err := Dial(testCtx(t), ep, WithTimeout(5*time.Second))
	mustOK(t, err)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-halfRead
		cancel()
	}()
	if _, err := c.List(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("LIST whose context ended in the middle of its reply: %v, want context.Canceled", err)
	}
	// Before the fix, the call returned only when the client gave up on
	// the broker, the connection with it.
	mustOK(t, c.Err())
	close(rest)
	mustOK(t, c.Open(testCtx(t), "q"))
	mustOK(t, <-served)
	mustOK(t, c.Err())
}

// acceptWire accepts one client on ln and greets it as a broker does: a
// broker of the test's own, that answers what and when the test says.
func acceptWire(ln *listener) (*wire, error) {
	nc, err := ln.Accept()
	if err != nil {
		return nil, err
	}
	w, err := handshake(nc, zmq4.Router, nil, true, time.Now().Add(5*time.Second))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return w, nil
}

// waitUnsent waits until the peer has read all but n bytes of what was
// written to nc (SIOCOUTQ on a unix socket).
func waitUnsent(nc net.Conn, n int) error {
	raw, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	for {
		var queued int
		var ioErr error
		if err := raw.Control(func(fd uintptr) { queued, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
			return err
		}
		if ioErr != nil {
			return ioErr
		}
		if queued <= n {
			return nil
		}
		time.Sleep(time.Millisecond) // polling a condition, not a guess at timing
	}
}

// Dial gives up on a broker that accepts and never answers (stopped) when
// its context ends, not only at the timeout: Ctrl-C works at once.
func TestDialEndsWithItsContext(t *testing.T) {
	ep := testEndpoint()
	ln, err := listen(ep)
	mustOK(t, err)
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			defer nc.Close()
			io.Copy(io.Discard, nc) // never a greeting back
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	c, err := Dial(ctx, ep, WithTimeout(time.Hour))
	if err == nil {
		c.Close()
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial to a broker that never answers, its context cancelled: %v", err)
	}
}
