package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

func TestClientGivesUpOnSilentBroker(t *testing.T) {
	ep := testEndpoint()
	ln, err := listen(ep)
	mustOK(t, err)
	defer ln.Close()
	accepted := make(chan *wire, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		w, err := handshake(nc, zmq4.Router, nil, true, time.Now().Add(5*time.Second))
		if err != nil {
			nc.Close()
			return
		}
		accepted <- w // and never answer anything
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
