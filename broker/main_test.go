package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if helperMain() {
		return
	}
	goleak.VerifyTestMain(m)
}

// testEndpoint is a fresh abstract endpoint, so tests never collide.
func testEndpoint() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "ipc://@zpipes-test-" + hex.EncodeToString(b)
}

// testLogger sends broker logs to the test log, shown on failure.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// quietLogger passes only warnings and errors to the test log: garbage
// makes the broker log every bad request.
func quietLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startServer runs a broker on its own endpoint for the test's duration.
func startServer(t testing.TB, cfgs ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{Endpoint: testEndpoint(), Logger: testLogger(t)}
	for _, f := range cfgs {
		f(&cfg)
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dialT connects a client that is closed when the test ends.
func dialT(t testing.TB, s *Server, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(testCtx(t), s.Endpoint(), opts...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testCtx bounds every wait in a test, so a bug fails instead of hanging.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustOK(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls LIST until cond holds: the broker's state is the event.
func waitFor(t testing.TB, c *Client, cond func([]PipeInfo) bool) []PipeInfo {
	t.Helper()
	ctx := testCtx(t)
	for {
		ps, err := c.List(ctx)
		mustOK(t, err)
		if cond(ps) {
			return ps
		}
		select {
		case <-ctx.Done():
			t.Fatalf("condition never held; last LIST: %+v", ps)
		case <-time.After(time.Millisecond):
		}
	}
}

// settle polls cond until it holds, failing the test after d.
func settle(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	wait := time.Millisecond
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never settled: %s", what, state)
		}
		time.Sleep(wait) // polling an outcome, not ordering events
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// heapInuse is the heap in use after a full collection.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// assertNoPipes checks that every pipe is gone: all closed and drained.
func assertNoPipes(t *testing.T, c *Client) {
	t.Helper()
	ps, err := c.List(testCtx(t))
	mustOK(t, err)
	if len(ps) != 0 {
		t.Fatalf("pipes left: %+v", ps)
	}
}

// rawPeer is a ZMTP peer driven frame by frame, for what Client never sends.
type rawPeer struct {
	t testing.TB
	w *wire
}

func dialRaw(t testing.TB, s *Server, typ zmq4.SocketType) *rawPeer {
	t.Helper()
	nc, err := net.Dial("unix", s.Endpoint()[len("ipc://"):])
	if err != nil {
		t.Fatal(err)
	}
	w, err := handshake(nc, typ, nil, false, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.close() })
	return &rawPeer{t: t, w: w}
}

func (p *rawPeer) send(frames ...string) {
	p.t.Helper()
	fs := make([][]byte, len(frames))
	for i, f := range frames {
		fs[i] = []byte(f)
	}
	if err := p.w.writeMessage(false, fs); err != nil {
		p.t.Fatal(err)
	}
	if err := p.w.flush(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) recv() []string {
	p.t.Helper()
	p.w.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, err := p.w.readMessage(1<<30, 1<<20)
	if err != nil {
		p.t.Fatalf("recv: %v", err)
	}
	out := make([]string, len(msg.frames))
	for i, f := range msg.frames {
		out[i] = string(f)
	}
	return out
}

// helperMain runs the test binary as a helper process when asked to by an
// environment variable (see TestKilledReaderIsNotSentChunks).
func helperMain() bool {
	if ep := os.Getenv("ZPIPES_TEST_DIAL"); ep != "" {
		c, err := Dial(context.Background(), ep)
		if err == nil {
			err = c.Open(context.Background(), "p")
		}
		if err != nil {
			os.Stdout.WriteString(err.Error())
			os.Exit(5)
		}
		os.Exit(0)
	}
	ep := os.Getenv("ZPIPES_TEST_READER")
	if ep == "" {
		return false
	}
	c, err := Dial(context.Background(), ep)
	if err != nil {
		os.Exit(3)
	}
	call := c.async(CmdRead, []byte(os.Getenv("ZPIPES_TEST_PIPE")))
	os.Stdout.WriteString("waiting\n")
	<-call.done
	os.Exit(4) // never reached: the test kills this process first
	return true
}

func dialUnix(endpoint string) (net.Conn, error) {
	return net.Dial("unix", endpoint[len("ipc://"):])
}

// readBatch takes from 1 to max chunks with one MREAD.
func readBatch(ctx context.Context, c *Client, pipe string, max int) ([][]byte, error) {
	k := c.async(CmdMRead, []byte(pipe), []byte(strconv.Itoa(max)))
	select {
	case <-k.done:
		return k.reply, wrap("read", pipe, k.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// smallLimits is a broker with a 1000-byte chunk limit and both byte limits
// at size, for tests of what happens at the limits.
func smallLimits(size int) func(*Config) {
	return func(c *Config) {
		c.Limits = DefaultLimits
		c.Limits.MaxChunk = 1000
		c.MaxPipeBytes, c.MaxTotalBytes = size, size
	}
}
