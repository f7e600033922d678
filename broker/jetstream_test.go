package broker

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Tests of pipes kept in JetStream, against nats-servers the tests start
// in-process: JetStream on temporary directories, clients on random ports,
// a cluster's routes on ports picked free.

// startNATS runs n nats-servers with JetStream, in a cluster if n > 1, and
// returns them with the URL list a broker is given.
func startNATS(t testing.TB, n int) ([]*server.Server, string) {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	srvs := make([]*server.Server, n)
	var urls []string
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			SyncAlways: true, // what zpipes advises for durable single servers
			NoLog:      true,
			NoSigs:     true,
		}
		if n > 1 {
			opts.Cluster = server.ClusterOpts{Name: "zpipes-test", Host: "127.0.0.1", Port: ports[i]}
			opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		srvs[i] = s
		urls = append(urls, s.ClientURL())
		t.Cleanup(func() { stopNATS(s) })
	}
	return srvs, strings.Join(urls, ",")
}

func stopNATS(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startJSBroker runs a broker whose pipes are in the JetStream at urls, with
// short timers, so that tests of failures end soon.
func startJSBroker(t testing.TB, urls string, cfgs ...func(*Config)) *Server {
	t.Helper()
	return startServer(t, append([]func(*Config){func(c *Config) {
		c.Store = urls
		c.JetStream = JetStreamConfig{AckWait: 2 * time.Second, PinnedTTL: 2 * time.Second, Linger: 200 * time.Millisecond}
		c.Logger = quietLogger(t)
	}}, cfgs...)...)
}

func TestJetStreamWriteThenRead(t *testing.T) {
	_, urls := startNATS(t, 1)
	s := startJSBroker(t, urls)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", []byte("one")))
	mustOK(t, c.Write(ctx, "p", []byte("two"), []byte(""), []byte("four")))
	ps, err := c.List(ctx)
	mustOK(t, err)
	if len(ps) != 1 || ps[0].Name != "p" || ps[0].Opens != 1 || ps[0].Chunks == 0 {
		t.Fatalf("LIST: %+v", ps)
	}
	got, err := c.Read(ctx, "p")
	mustOK(t, err)
	if string(got) != "one" {
		t.Fatalf("READ: %q", got)
	}
	rest, err := readBatch(ctx, c, "p", 10)
	mustOK(t, err)
	if len(rest) != 3 || string(rest[0]) != "two" || string(rest[1]) != "" || string(rest[2]) != "four" {
		t.Fatalf("MREAD: %q", rest)
	}
	mustOK(t, c.ClosePipe(ctx, "p"))
	assertNoPipesEventually(t, c)
}

// assertNoPipesEventually waits for every pipe to go: a pipe is removed
// once closed and drained, and draining is told to JetStream
// asynchronously.
func assertNoPipesEventually(t *testing.T, c *Client) {
	t.Helper()
	waitFor(t, c, func(ps []PipeInfo) bool { return len(ps) == 0 })
}

func TestJetStreamMissingPipeErrors(t *testing.T) {
	_, urls := startNATS(t, 1)
	s := startJSBroker(t, urls)
	c := dialT(t, s)
	ctx := testCtx(t)
	if err := c.Write(ctx, "nope", []byte("x")); !errors.Is(err, ErrNoPipe) {
		t.Fatalf("WRITE to a missing pipe: %v", err)
	}
	if _, err := c.Read(ctx, "nope"); !errors.Is(err, ErrNoPipe) {
		t.Fatalf("READ of a missing pipe: %v", err)
	}
	if err := c.ClosePipe(ctx, "nope"); !errors.Is(err, ErrNoPipe) {
		t.Fatalf("CLOSE of a missing pipe: %v", err)
	}
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.ClosePipe(ctx, "p"))
	assertNoPipesEventually(t, c)
}

func TestJetStreamReadWaitsForWrite(t *testing.T) {
	_, urls := startNATS(t, 1)
	s := startJSBroker(t, urls)
	r, w := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, w.Open(ctx, "p"))
	got := make(chan string, 1)
	go func() {
		b, err := r.Read(ctx, "p")
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}()
	waitFor(t, w, func([]PipeInfo) bool { return readerWaits(s, "p") })
	mustOK(t, w.Write(ctx, "p", []byte("late")))
	if g := <-got; g != "late" {
		t.Fatalf("READ: %q", g)
	}
}

// readerWaits reports whether a READ of the pipe waits in the broker.
func readerWaits(s *Server, name string) bool {
	eng := s.eng
	eng.mu.Lock()
	r := eng.readers[name]
	eng.mu.Unlock()
	if r == nil {
		return false
	}
	ans := make(chan bool, 1)
	r.box.put(readerMsg{op: ropProbe, probe: ans})
	return <-ans
}

func TestJetStreamStreamsKeepOrder(t *testing.T) {
	_, urls := startNATS(t, 1)
	s := startJSBroker(t, urls)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	w, err := c.NewWriter(ctx, "p", WriterOptions{})
	mustOK(t, err)
	const n = 50000
	for _, s := range numbered(1, n) {
		mustOK(t, w.Write([]byte(s)))
	}
	acked, err := w.Close()
	mustOK(t, err)
	if acked != n {
		t.Fatalf("acknowledged %d of %d", acked, n)
	}
	if got := readAll(t, c, "p", n); !slices.Equal(got, numbered(1, n)) {
		t.Fatal("chunks read back differ from those written")
	}
}

func TestJetStreamNATSUnreachableAtStart(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	_, err := Listen(Config{Endpoint: testEndpoint(), Store: url})
	if err == nil || !strings.Contains(err.Error(), "cannot connect to NATS") || !strings.Contains(err.Error(), url) {
		t.Fatalf("Listen with NATS down: %v", err)
	}
}
