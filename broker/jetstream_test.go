package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/zpipes/zpipes/internal/natslocal"
)

// Tests of pipes kept in JetStream, against nats-servers the tests start
// in-process: JetStream on temporary directories, clients on random ports,
// a cluster's routes on ports picked free.

// startNATS runs n nats-servers with JetStream, in a cluster if n > 1, and
// returns them with the URL list a broker is given. Each fsyncs every
// write, as zpipes advises for durable single servers.
func startNATS(t testing.TB, n int) ([]*server.Server, string) {
	t.Helper()
	srvs, err := natslocal.Cluster(n, "zpipes-test", server.Options{SyncAlways: true, NoLog: true, NoSigs: true},
		func(int) string { return t.TempDir() })
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range srvs {
		t.Cleanup(func() { natslocal.Stop(s) })
	}
	return srvs, natslocal.URLs(srvs)
}

func freePort(t testing.TB) int {
	t.Helper()
	p, err := natslocal.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startJSBroker runs a broker whose pipes are in the JetStream at urls, with
// short timers, so that tests of failures end soon.
func startJSBroker(t testing.TB, urls string, cfgs ...func(*Config)) *Server {
	t.Helper()
	return startServer(t, append([]func(*Config){func(c *Config) {
		c.Store = urls
		c.JetStream = JetStreamConfig{AckWait: 2 * time.Second, PinnedTTL: 3 * time.Second, Linger: 200 * time.Millisecond}
		c.Logger = quietLogger(t)
	}}, cfgs...)...)
}

// startOneJSBroker starts one NATS server and a broker on it.
func startOneJSBroker(t *testing.T) *Server {
	t.Helper()
	_, urls := startNATS(t, 1)
	return startJSBroker(t, urls)
}

func TestJetStreamWriteThenRead(t *testing.T) {
	t.Parallel()
	s := startOneJSBroker(t)
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
	t.Parallel()
	s := startOneJSBroker(t)
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
	t.Parallel()
	s := startOneJSBroker(t)
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
	return r.box.put(readerMsg{op: ropProbe, probe: ans}) && <-ans
}

func TestJetStreamStreamsKeepOrder(t *testing.T) {
	t.Parallel()
	s := startOneJSBroker(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	const n = 20000
	streamNumbered(t, c, "p", n, WriterOptions{})
	if got := readAll(t, c, "p", n); !slices.Equal(got, numbered(1, n)) {
		t.Fatal("chunks read back differ from those written")
	}
}

// streamNumbered writes "1" to n through a Writer and requires every one
// acknowledged.
func streamNumbered(t *testing.T, c *Client, pipe string, n int, opt WriterOptions) {
	t.Helper()
	w, err := c.NewWriter(testCtx(t), pipe, opt)
	mustOK(t, err)
	for _, s := range numbered(1, n) {
		mustOK(t, w.Write([]byte(s)))
	}
	acked, err := w.Close()
	mustOK(t, err)
	if acked != n {
		t.Fatalf("acknowledged %d of %d", acked, n)
	}
}

func TestJetStreamNATSUnreachableAtStart(t *testing.T) {
	t.Parallel()
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	_, err := Listen(Config{Endpoint: testEndpoint(), Store: url})
	if err == nil || !strings.Contains(err.Error(), "cannot connect to NATS") || !strings.Contains(err.Error(), url) {
		t.Fatalf("Listen with NATS down: %v", err)
	}
}

// Two brokers stand for two machines: on a three-server cluster, or on
// one server where the test is about the brokers, not NATS.
func startTwoJSBrokers(t *testing.T, servers int) ([]*server.Server, *Server, *Server) {
	t.Helper()
	srvs, urls := startNATS(t, servers)
	return srvs, startJSBroker(t, urls), startJSBroker(t, urls)
}

func TestJetStreamWriterViaOneBrokerReaderViaAnother(t *testing.T) {
	t.Parallel()
	_, a, b := startTwoJSBrokers(t, 3)
	wc, rc := dialT(t, a), dialT(t, b)
	ctx := testCtx(t)
	mustOK(t, wc.Open(ctx, "p"))
	const n = 20000
	streamNumbered(t, wc, "p", n, WriterOptions{})
	if got := readAll(t, rc, "p", n); !slices.Equal(got, numbered(1, n)) {
		t.Fatal("chunks read via the other broker differ from those written")
	}
	mustOK(t, wc.ClosePipe(ctx, "p"))
	assertNoPipesEventually(t, rc)
}

func TestJetStreamSecondReaderOnAnotherBrokerRefused(t *testing.T) {
	t.Parallel()
	_, a, b := startTwoJSBrokers(t, 3)
	ra, rb := dialT(t, a), dialT(t, b)
	ctx := testCtx(t)
	mustOK(t, ra.Open(ctx, "p"))
	// The pipe is empty and was never read: JetStream has pinned nobody.
	waiting := ra.async(CmdRead, []byte("p"))
	waitFor(t, rb, func([]PipeInfo) bool { return readerWaits(a, "p") })
	if _, err := rb.Read(ctx, "p"); !errors.Is(err, ErrReaderBusy) {
		t.Fatalf("READ via B while one waits via A: %v, want %v", err, ErrReaderBusy)
	}
	mustOK(t, rb.Write(ctx, "p", []byte("second")))
	<-waiting.done
	if waiting.err != nil || string(waiting.reply[0]) != "second" {
		t.Fatalf("waiting READ via A: %q, %v", waiting.reply, waiting.err)
	}
}

// takeN TAKEs up to max chunks.
func takeN(t *testing.T, c *Client, pipe string, max int) []string {
	t.Helper()
	fs, err := c.do(testCtx(t), CmdTake, []byte(pipe), []byte(fmt.Sprint(max)))
	mustOK(t, err)
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

func TestJetStreamReaderBrokerGoneNextReaderGetsTheRestInOrder(t *testing.T) {
	t.Parallel()
	_, a, b := startTwoJSBrokers(t, 3)
	wc, ra, rb := dialT(t, b), dialT(t, a), dialT(t, b)
	ctx := testCtx(t)
	mustOK(t, wc.Open(ctx, "p"))
	const n = 3000
	streamNumbered(t, wc, "p", n, WriterOptions{Batch: 100}) // many messages
	// Via A: take 250 and acknowledge 130 of them, then A goes.
	var got []string
	for len(got) < 250 {
		got = append(got, takeN(t, ra, "p", 250-len(got))...)
	}
	if !slices.Equal(got, numbered(1, 250)) {
		t.Fatalf("taken via A: %v...", got[:10])
	}
	_, err := ra.do(ctx, CmdAck, []byte("p"), []byte("130"))
	mustOK(t, err)
	mustOK(t, a.Close())
	// Via B: every chunk not acknowledged, in order, none twice.
	if rest := readAll(t, rb, "p", n-130); !slices.Equal(rest, numbered(131, n)) {
		i := 0
		for i < len(rest) && rest[i] == fmt.Sprint(131+i) {
			i++
		}
		t.Fatalf("read via B after A went: first difference at %d: %v", i, rest[i:min(i+5, len(rest))])
	}
}

// The server the writer's broker is connected to goes, mid-stream: one
// of three, so the cluster keeps a majority and elects new leaders, and
// every chunk acknowledged is read, through the other broker.
func TestJetStreamLosingOneOfThreeServersLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	srvs, a, b := startTwoJSBrokers(t, 3)
	wc, rc := dialT(t, a), dialT(t, b)
	ctx := testCtx(t)
	mustOK(t, wc.Open(ctx, "p"))
	w, err := wc.NewWriter(ctx, "p", WriterOptions{Batch: 200})
	mustOK(t, err)
	const n = 20000
	for i, s := range numbered(1, n) {
		if i == n/2 {
			// Which one, decided before any goes: once it has, A
			// connects to another, which must stay.
			url := a.eng.nc.ConnectedUrl()
			k := slices.IndexFunc(srvs, func(s *server.Server) bool { return s.ClientURL() == url })
			if k < 0 {
				t.Fatalf("broker A is connected to none of the servers (%s)", url)
			}
			natslocal.Stop(srvs[k])
		}
		if err := w.Write([]byte(s)); err != nil {
			break // refused while the cluster elects leaders: allowed
		}
	}
	acked, err := w.Close()
	t.Logf("%d of %d acknowledged (%v)", acked, n, err)
	if acked == 0 {
		t.Fatalf("nothing acknowledged (%v)", err)
	}
	// A second writer, on the other broker, once the cluster takes writes
	// again: a reader once stalled here (docs/jetstream.md). The first
	// has not closed the pipe, so they write at the same time: its chunk
	// may come anywhere, and the first's in their order.
	wc2 := dialT(t, b)
	for err := wc2.Write(ctx, "p", []byte("after")); err != nil; err = wc2.Write(ctx, "p", []byte("after")) {
		if ctx.Err() != nil {
			t.Fatalf("the second writer never got in: %v", err)
		}
		t.Logf("second writer: %v; again", err)
	}
	got := readAll(t, rc, "p", acked+1)
	if i := slices.Index(got, "after"); i < 0 || !slices.Equal(slices.Delete(got, i, i+1), numbered(1, acked)) {
		t.Fatal("acknowledged chunks read back differ from those written")
	}
}

func TestJetStreamLightWriterNotStarvedAcrossBrokers(t *testing.T) {
	t.Parallel()
	_, a, b := startTwoJSBrokers(t, 3)
	heavy, light, rc := dialT(t, a), dialT(t, b), dialT(t, b)
	ctx := testCtx(t)
	mustOK(t, heavy.Open(ctx, "p"))
	w, err := heavy.NewWriter(ctx, "p", WriterOptions{Batch: 100})
	mustOK(t, err)
	for range 2000 {
		mustOK(t, w.Write([]byte("heavy")))
	}
	_, err = w.Close()
	mustOK(t, err)
	mustOK(t, light.Write(ctx, "p", []byte("light")))
	got := readAll(t, rc, "p", 3)
	if !slices.Contains(got[:2], "light") {
		t.Fatalf("the light writer's chunk was not among the first two read: %q", got)
	}
}

// A writer's batches larger than a NATS message are split, and a reader
// streams them through its window while they are written: 20 MiB of
// 1 KiB chunks, more than the window holds, in order.
func TestJetStreamLargeBatchesKeepOrderThroughTheWindow(t *testing.T) {
	t.Parallel()
	s := startOneJSBroker(t)
	wc, rc := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, wc.Open(ctx, "p"))
	const n = 20000
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("%01000d", i)
	}
	done := make(chan []string)
	go func() { done <- readAllQuiet(rc, "p", n) }()
	w, err := wc.NewWriter(ctx, "p", WriterOptions{})
	mustOK(t, err)
	for _, s := range want {
		mustOK(t, w.Write([]byte(s)))
	}
	_, err = w.Close()
	mustOK(t, err)
	if got := <-done; !slices.Equal(got, want) {
		t.Fatalf("read %d chunks, not the %d written in order", len(got), n)
	}
}

// readAllQuiet is readAll for another goroutine: it stops at an error.
func readAllQuiet(c *Client, pipe string, n int) []string {
	r := c.NewReader(context.Background(), pipe, ReaderOptions{Max: n})
	defer r.Close()
	var out []string
	for range n {
		chunk, err := r.Next()
		if err != nil {
			return out
		}
		out = append(out, string(chunk))
		r.Consume(1)
	}
	return out
}

// Open counts change by compare-and-set: OPENs racing through two brokers
// on a replicated bucket are all counted.
func TestJetStreamConcurrentOpensAcrossBrokersAllCount(t *testing.T) {
	t.Parallel()
	_, a, b := startTwoJSBrokers(t, 3)
	ctx := testCtx(t)
	const each = 8
	errs := make(chan error, 2*each)
	for _, s := range []*Server{a, b} {
		for range each {
			c := dialT(t, s)
			go func() { errs <- c.Open(ctx, "p") }()
		}
	}
	for range 2 * each {
		mustOK(t, <-errs)
	}
	ps, err := dialT(t, b).List(ctx)
	mustOK(t, err)
	if len(ps) != 1 || ps[0].Opens != 2*each {
		t.Fatalf("LIST after %d OPENs: %+v", 2*each, ps)
	}
}

// A broker whose NATS server goes away reconnects: a write made while it
// is away waits, and is stored and acknowledged once the server is back.
func TestJetStreamWriteWaitsForNATSToComeBack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := &server.Options{Host: "127.0.0.1", Port: freePort(t), JetStream: true,
		StoreDir: dir, SyncAlways: true, NoLog: true, NoSigs: true}
	ns := runNATS(t, opts)
	s := startJSBroker(t, ns.ClientURL())
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", []byte("before")))
	natslocal.Stop(ns)
	wrote := make(chan error, 1)
	go func() { wrote <- c.Write(ctx, "p", []byte("during")) }()
	runNATS(t, opts) // the same port and directory: the stream is back
	mustOK(t, <-wrote)
	got, err := readBatch(ctx, c, "p", 10)
	mustOK(t, err)
	if len(got) != 2 || string(got[0]) != "before" || string(got[1]) != "during" {
		t.Fatalf("read after the server came back: %q", got)
	}
	mustOK(t, s.Close()) // while NATS is up: the cleanups stop it first
}

// runNATS starts one nats-server with these options, stopped when the test
// ends.
func runNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	ns, err := natslocal.Run(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { natslocal.Stop(ns) })
	return ns
}

// BenchmarkEndToEndJetStream is BenchmarkEndToEnd through a broker whose
// pipes are in one embedded nats-server (file store, fsync on every write).
func BenchmarkEndToEndJetStream(b *testing.B) {
	_, urls := startNATS(b, 1)
	benchEndToEnd(b, startJSBroker(b, urls, func(c *Config) {
		c.Logger = slog.New(slog.DiscardHandler)
	}))
}

// What a reader gives back goes to the head, in order: chunks it TOOK and
// NACKs, chunks it READ and UNREADs; an ACK of more than it holds is
// refused.
func TestJetStreamGiveBackGoesToTheHeadInOrder(t *testing.T) {
	t.Parallel()
	s := startOneJSBroker(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	for _, s := range numbered(1, 10) {
		mustOK(t, c.Write(ctx, "p", []byte(s)))
	}
	var took []string
	for len(took) < 5 {
		took = append(took, takeN(t, c, "p", 5-len(took))...)
	}
	if !slices.Equal(took, numbered(1, 5)) {
		t.Fatalf("TAKE: %q", took)
	}
	if _, err := c.do(ctx, CmdAck, []byte("p"), []byte("6")); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("ACK of 6 with 5 held: %v", err)
	}
	_, err := c.do(ctx, CmdAck, []byte("p"), []byte("2"))
	mustOK(t, err)
	_, err = c.do(ctx, CmdNack, []byte("p"))
	mustOK(t, err)
	var got []string
	for len(got) < 3 {
		b, err := readBatch(ctx, c, "p", 3-len(got))
		mustOK(t, err)
		for _, ch := range b {
			got = append(got, string(ch))
		}
	}
	if !slices.Equal(got, numbered(3, 5)) {
		t.Fatalf("after ACK 2 and NACK: %q, want 3 to 5", got)
	}
	mustOK(t, c.Unread(ctx, "p", []byte("4"), []byte("5")))
	var rest []string
	for len(rest) < 7 {
		b, err := readBatch(ctx, c, "p", 7-len(rest))
		mustOK(t, err)
		for _, ch := range b {
			rest = append(rest, string(ch))
		}
	}
	if want := append([]string{"4", "5"}, numbered(6, 10)...); !slices.Equal(rest, want) {
		t.Fatalf("after UNREAD of 4 and 5: %q, want %q", rest, want)
	}
}

// Writers that run one after another, through different brokers, are read
// in that order, even when the reader finds both in its window.
func TestJetStreamSequentialWritersAcrossBrokersKeepTheirOrder(t *testing.T) {
	t.Parallel()
	_, a, b := startTwoJSBrokers(t, 3)
	ctx := testCtx(t)
	rc := dialT(t, b)
	mustOK(t, rc.Open(ctx, "p"))
	for i, s := range []*Server{a, b, a} {
		w := dialT(t, s)
		mustOK(t, w.Open(ctx, "p"))
		for _, s := range numbered(100*i+1, 100*i+100) {
			mustOK(t, w.Write(ctx, "p", []byte(s)))
		}
		// Its end, stored before the OK: whoever writes next is read after
		// it. (A disconnect ends it too, but only once its broker has seen
		// it and stored the end, which a writer on another broker cannot
		// wait for: with disconnects this test interleaved the writers in
		// 1 of 3 runs.)
		mustOK(t, w.ClosePipe(ctx, "p"))
	}
	if got := readAll(t, rc, "p", 300); !slices.Equal(got, numbered(1, 300)) {
		t.Fatalf("three writers one after another, read: %v...", got[:20])
	}
}

// A HOLD ends with its connection, and the pipe with it once empty.
func TestJetStreamHoldEndsWithTheConnection(t *testing.T) {
	t.Parallel()
	s := startOneJSBroker(t)
	h, c := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, h.Hold(ctx, "p"))
	waitFor(t, c, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Opens == 1 })
	h.Close()
	assertNoPipesEventually(t, c)
}

// A batch read in part by one broker after another: each records how much
// of it is gone, counting what the brokers before it took, so the next
// reader neither skips a chunk nor reads one again.
func TestJetStreamPartlyReadBatchPassesThroughTwoBrokersInOrder(t *testing.T) {
	t.Parallel()
	_, urls := startNATS(t, 1)
	ctx := testCtx(t)
	wc := dialT(t, startJSBroker(t, urls))
	mustOK(t, wc.Open(ctx, "p"))
	mustOK(t, wc.Write(ctx, "p", numberedChunks(1, 10)...)) // one message
	var got []string
	for _, n := range []int{3, 2} {
		s := startJSBroker(t, urls)
		c := dialT(t, s)
		var took []string
		for len(took) < n {
			took = append(took, takeN(t, c, "p", n-len(took))...)
		}
		_, err := c.do(ctx, CmdAck, []byte("p"), []byte(fmt.Sprint(n)))
		mustOK(t, err)
		got = append(got, took...)
		mustOK(t, s.Close()) // gives the batch back, with its progress
	}
	got = append(got, readAll(t, dialT(t, startJSBroker(t, urls)), "p", 5)...)
	if !slices.Equal(got, numbered(1, 10)) {
		t.Fatalf("read through three brokers in turn: %q", got)
	}
}

// A delivery that never reaches the reader (here another client takes it
// with the reader's pin, as a pull the reader stopped listening to would
// be answered) comes again only after the ack wait. The reader, seeing the
// gap in the consumer's deliveries, takes in nothing after it till then:
// the writer's chunks are read in the order written, not the later ones
// first.
func TestJetStreamADeliveryThatNeverCameIsWaitedFor(t *testing.T) {
	t.Parallel()
	_, urls := startNATS(t, 1)
	s := startJSBroker(t, urls)
	wc, rc := dialT(t, s), dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, wc.Open(ctx, "p"))
	mustOK(t, wc.Write(ctx, "p", []byte("1")))
	if got := takeN(t, rc, "p", 1); !slices.Equal(got, []string{"1"}) {
		t.Fatalf("TAKE: %q", got)
	}
	// Holding "1", the reader stays and keeps its pin; once no pull of
	// its waits, "2" goes to whoever pulls with that pin.
	js := jsAdmin(t, urls)
	cons, err := js.Consumer(ctx, jsStream, "p-"+pipeKey("p"))
	mustOK(t, err)
	var pin string
	for pin == "" {
		info, err := cons.Info(ctx)
		mustOK(t, err)
		if info.NumWaiting == 0 && len(info.PriorityGroups) > 0 {
			pin = info.PriorityGroups[0].PinnedClientID
		}
		if ctx.Err() != nil {
			t.Fatal("the reader's pull did not end")
		}
	}
	mustOK(t, wc.Write(ctx, "p", []byte("2")))
	req := fmt.Sprintf(`{"batch":1,"expires":%d,"group":%q,"id":%q}`, 5*time.Second, jsGroup, pin)
	stolen, err := js.Conn().RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+jsStream+".p-"+pipeKey("p"), []byte(req))
	mustOK(t, err)
	if c, err := decodeChunks(stolen.Data); err != nil || len(c) != 1 || string(c[0]) != "2" {
		t.Fatalf("the delivery taken from the reader: %q %v %q", stolen.Data, err, stolen.Header)
	}
	mustOK(t, wc.Write(ctx, "p", []byte("3")))
	mustOK(t, wc.Write(ctx, "p", []byte("4")))
	_, err = rc.do(ctx, CmdAck, []byte("p"), []byte("1"))
	mustOK(t, err)
	if got := readAll(t, rc, "p", 3); !slices.Equal(got, numbered(2, 4)) {
		t.Fatalf("read after a lost delivery: %q, want 2 to 4", got)
	}
}

// A read that cannot be served because every pull fails for good (here
// the stream was deleted under the broker) is answered ERROR once it has
// waited FailAfter, not left waiting for ever.
func TestJetStreamReadFailsWhenPullsKeepFailing(t *testing.T) {
	t.Parallel()
	_, urls := startNATS(t, 1)
	ctx := testCtx(t)
	s := startJSBroker(t, urls, func(c *Config) { c.JetStream.FailAfter = 300 * time.Millisecond })
	c := dialT(t, s)
	mustOK(t, c.Open(ctx, "p")) // no write: a writer's end could not be stored either
	js := jsAdmin(t, urls)
	mustOK(t, js.DeleteStream(ctx, jsStream)) // by an operator, or lost
	got, err := readBatch(ctx, c, "p", 1)
	if !errors.Is(err, ErrStore) {
		t.Fatalf("READ with the stream gone: %q, %v; want ErrStore", got, err)
	}
	mustOK(t, c.Err()) // an ERROR reply: the connection goes on
}

// A broker that dies keeps its lease on reading a pipe until the messages
// it held are due again (AckWait), however its death falls between two
// renewals, so that no other broker reads later messages before them.
func TestJetStreamLeaseOutlivesTheAckWait(t *testing.T) {
	for _, cfg := range []JetStreamConfig{
		{}, // the defaults
		{AckWait: 2 * time.Second, PinnedTTL: 3 * time.Second, Linger: 200 * time.Millisecond}, // the tests'
		{AckWait: 3 * time.Second, PinnedTTL: 3600 * time.Millisecond},
		{AckWait: time.Minute, Linger: 5 * time.Second},
	} {
		cfg.setDefaults()
		// Renewed every PinnedTTL/3, a tick late at worst, then dead.
		left := cfg.leaseTTL() - cfg.PinnedTTL/3 - cfg.tick()
		if left <= cfg.AckWait {
			t.Errorf("AckWait %v, PinnedTTL %v: a dead broker's lease ends %v after its death, before its messages are due again",
				cfg.AckWait, cfg.PinnedTTL, left)
		}
	}
}

// A broker that stops with a batch partly consumed records which of its
// chunks are gone, not how many: here the first five were taken and given
// back (NACK), the last five taken by another connection and acknowledged.
// The next reader reads the first five, and not the last five again.
func TestJetStreamPartlyConsumedBatchGoesOnWithTheRightChunks(t *testing.T) {
	t.Parallel()
	_, a, b := startTwoJSBrokers(t, 1)
	ctx := testCtx(t)
	wc := dialT(t, b)
	mustOK(t, wc.Open(ctx, "p"))
	mustOK(t, wc.Write(ctx, "p", numberedChunks(1, 10)...)) // one message
	c1, c2 := dialT(t, a), dialT(t, a)
	var t1, t2 []string
	for len(t1) < 5 {
		t1 = append(t1, takeN(t, c1, "p", 5-len(t1))...)
	}
	for len(t2) < 5 {
		t2 = append(t2, takeN(t, c2, "p", 5-len(t2))...)
	}
	_, err := c2.do(ctx, CmdAck, []byte("p"), []byte("5"))
	mustOK(t, err)
	_, err = c1.do(ctx, CmdNack, []byte("p"))
	mustOK(t, err)
	mustOK(t, a.Close()) // gives the batch back with its progress
	if got := readAll(t, wc, "p", 5); !slices.Equal(got, t1) {
		t.Fatalf("took %v (given back) and %v (acknowledged) via A; read via B: %v", t1, t2, got)
	}
}

// Progress is recorded as ranges of chunks consumed; a count, as brokers
// before recorded it, still reads as that many first chunks.
func TestJetStreamProgressRecords(t *testing.T) {
	var gone bitset
	for _, i := range []int{0, 1, 2, 5, 7, 8, 69} {
		gone.add(i, 70)
	}
	rs := gone.ranges()
	if want := [][2]int{{0, 3}, {5, 6}, {7, 9}, {69, 70}}; !slices.Equal(rs, want) {
		t.Fatalf("ranges %v, want %v", rs, want)
	}
	b, err := json.Marshal(map[uint64][][2]int{7: rs})
	mustOK(t, err)
	got := decodeProgress(b)
	if !slices.Equal(got[7], rs) || len(got) != 1 {
		t.Fatalf("decoded %v from %s", got, b)
	}
	old := decodeProgress([]byte(`{"12":4,"13":[[1,2]]}`))
	if !slices.Equal(old[12], [][2]int{{0, 4}}) || !slices.Equal(old[13], [][2]int{{1, 2}}) {
		t.Fatalf("decoded %v", old)
	}
}

// A writer's end stays in the window until the writer's chunks before it
// are consumed, and goes back with them: writers that wrote one after the
// other are read one after the other across a handover too.
func TestJetStreamWritersInTurnAcrossAHandover(t *testing.T) {
	t.Parallel()
	_, b, a := startTwoJSBrokers(t, 1)
	ctx := testCtx(t)
	keep := dialT(t, b)
	mustOK(t, keep.Open(ctx, "p"))
	for i := range 2 {
		w := dialT(t, b)
		mustOK(t, w.Open(ctx, "p"))
		mustOK(t, w.Write(ctx, "p", numberedChunks(100*i+1, 100*i+100)...))
		mustOK(t, w.ClosePipe(ctx, "p")) // its end stored
	}
	ra := dialT(t, a)
	took := takeN(t, ra, "p", 1)
	for len(took) < 1 {
		took = append(took, takeN(t, ra, "p", 1)...)
	}
	_, err := ra.do(ctx, CmdAck, []byte("p"), []byte("1"))
	mustOK(t, err)
	mustOK(t, a.Close()) // gives the window back, the first writer's end in it
	got := append(took, takeN(t, keep, "p", 1)...)
	// Time for the rest of what A gave back, and the second writer's
	// chunks, to reach B's window: the order must hold whether or not
	// they have.
	time.Sleep(500 * time.Millisecond)
	for len(got) < 200 {
		got = append(got, takeN(t, keep, "p", 1)...)
		_, err := keep.do(ctx, CmdAck, []byte("p"), []byte("1"))
		mustOK(t, err)
	}
	if !slices.Equal(got, numbered(1, 200)) {
		t.Fatalf("two writers one after the other, read across a handover: %v", got[:min(12, len(got))])
	}
}

// A read that waits while a pull brings its messages (more said to follow)
// is answered with what came when the pull is given up on: the rest may
// never come (the NATS connection dropped).
func TestJetStreamWaitingReadServedWhenTheRestOfAPullNeverComes(t *testing.T) {
	r := unitJSReader(t)
	r.leaseRev, r.fetching, r.fetchLeft, r.fetchStart = 1, true, 10, time.Now().Add(-time.Minute)
	ans := make(chan reply, 1)
	r.handle(readerMsg{op: ropRead, jc: &jsConn{}, req: &Request{Cmd: CmdMRead, Max: 10}, answer: ans})
	m := pulledMsg(r, "a")
	r.handle(readerMsg{op: ropArrived, msg: m})
	r.abandon() // the pull went on too long (its rest was lost)
	select {
	case <-ans:
	default:
		t.Fatalf("a read waits with %d chunks in the window (fetching %v)", r.win.chunks, r.fetching)
	}
}

// A CLOSE by a writer whose end cannot be stored (here the stream is gone,
// the bucket of open counts is not) is answered ERROR and changes nothing,
// so that it can be sent again. Answered OK, it would let a writer after
// it be read alongside it.
func TestJetStreamCloseFailsWhenTheWritersEndIsNotStored(t *testing.T) {
	t.Parallel()
	s, c, js := startJSWriter(t)
	ctx := testCtx(t)
	mustOK(t, js.DeleteStream(ctx, jsStream))
	if err := c.ClosePipe(ctx, "p"); !errors.Is(err, ErrStore) {
		t.Fatalf("CLOSE whose writer's end cannot be stored: %v, want ErrStore", err)
	}
	// Read from the bucket (ls would count chunks in the stream too).
	ent, err := s.eng.kv.Get(ctx, pipeKey("p"))
	mustOK(t, err)
	var rec jsPipeRecord
	mustOK(t, json.Unmarshal(ent.Value(), &rec))
	if rec.Opens != 1 {
		t.Fatalf("after the failed CLOSE the pipe is open %d times, want 1", rec.Opens)
	}
}

// Once a write of a connection failed to be stored, its later writes to
// that pipe fail too, even when JetStream would take them: stored, they
// would be read after a hole in its stream, as if nothing were missing.
func TestJetStreamWritesAfterAFailedWriteFail(t *testing.T) {
	t.Parallel()
	s, c, js := startJSWriter(t)
	ctx := testCtx(t)
	st, err := js.Stream(ctx, jsStream)
	mustOK(t, err)
	full := st.CachedInfo().Config
	full.MaxMsgSize = 1 // the stream refuses every chunk
	_, err = js.UpdateStream(ctx, full)
	mustOK(t, err)
	if err := c.Write(ctx, "p", []byte("2")); !errors.Is(err, ErrStore) {
		t.Fatalf("a write the stream refuses: %v, want ErrStore", err)
	}
	full.MaxMsgSize = -1
	_, err = js.UpdateStream(ctx, full)
	mustOK(t, err)
	if err := c.Write(ctx, "p", []byte("3")); !errors.Is(err, ErrStore) {
		t.Fatalf("a write after a failed one: %v, want ErrStore", err)
	}
	w := dialT(t, s) // another connection writes on
	mustOK(t, w.Write(ctx, "p", []byte("4")))
	if got := readAll(t, w, "p", 2); !slices.Equal(got, []string{"1", "4"}) {
		t.Fatalf("read %q, want [1 4]", got)
	}
}

// A broker that stops while a client reads (MREADs in flight) lets its
// connections send their last replies, and its readers learn which chunks
// those delivered, before they give their windows back: the next reader,
// on another broker, reads each chunk the client did not get, and none
// that it got.
func TestJetStreamReadRepliesAtShutdownAreNotReadAgain(t *testing.T) {
	t.Parallel()
	_, a, b := startTwoJSBrokers(t, 1)
	ctx := testCtx(t)
	wc := dialT(t, b)
	mustOK(t, wc.Open(ctx, "p"))
	const n = 20000
	for i := 0; i < n; i += 500 {
		mustOK(t, wc.Write(ctx, "p", numberedChunks(i+1, i+500)...))
	}
	rc := dialT(t, a)
	seen := map[string]int{}
	var inflight []*call
	closed := false
	aDone := make(chan struct{})
	for {
		for len(inflight) < 8 && !closed {
			inflight = append(inflight, rc.async(CmdMRead, []byte("p"), []byte("7")))
		}
		if len(inflight) == 0 {
			break
		}
		k := inflight[0]
		inflight = inflight[1:]
		select {
		case <-k.done:
		case <-time.After(5 * time.Second):
			t.Fatal("a read at shutdown was not answered")
		}
		if k.err == nil {
			for _, c := range k.reply {
				seen[string(c)]++
			}
		}
		if !closed && len(seen) >= 3000 {
			closed = true
			go func() { a.Close(); close(aDone) }()
		}
	}
	fromA := len(seen)
	<-aDone
	rb := dialT(t, b)
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		got, err := readBatch(rctx, rb, "p", 1000)
		cancel()
		if err != nil {
			t.Logf("read via B: %v", err)
			break
		}
		for _, c := range got {
			seen[string(c)]++
		}
	}
	var dup []string
	for _, s := range numbered(1, n) {
		if seen[s] > 1 {
			dup = append(dup, s)
		}
		if seen[s] == 0 {
			t.Errorf("chunk %s never read", s)
		}
	}
	if len(dup) > 0 {
		t.Fatalf("read via A (%d), then via B: %d chunks read twice, e.g. %v", fromA, len(dup), dup[:min(5, len(dup))])
	}
}

// jsAdmin is a JetStream client of the test's own, to do to the stream
// what an operator (or a failure) would, under the brokers.
func jsAdmin(t *testing.T, urls string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls)
	mustOK(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	mustOK(t, err)
	return js
}

// startJSWriter starts one NATS server, a broker on it and a client of it
// that has opened pipe p and written "1" there; js is the test's own
// JetStream client.
func startJSWriter(t *testing.T) (*Server, *Client, jetstream.JetStream) {
	t.Helper()
	_, urls := startNATS(t, 1)
	s := startJSBroker(t, urls)
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", []byte("1")))
	return s, c, jsAdmin(t, urls)
}

// A reader that stops takes into its window what its pulls brought just
// before (so that leave gives it back in order with the rest), answers
// the requests still in its mailbox, and closes the mailbox.
func TestJetStreamReaderStoppingTakesInWhatCame(t *testing.T) {
	r := unitJSReader(t)
	r.leaseRev, r.fetching, r.fetchLeft, r.fetchStart = 1, true, 10, time.Now()
	m := pulledMsg(r, "a")
	ans := make(chan reply, 1)
	r.box.put(readerMsg{op: ropArrived, msg: m})
	r.box.put(readerMsg{op: ropAck, jc: &jsConn{}, n: 1, answer: ans})
	r.drainAtStop()
	if len(r.msgs) != 1 || r.msgs[0].m != m {
		t.Fatalf("the message that came as the reader stopped is not in its window: %d messages", len(r.msgs))
	}
	if rep := <-ans; len(rep.frames) == 0 || string(rep.frames[0]) != "ERROR" {
		t.Fatalf("a request in the mailbox of a stopping reader: %q", rep.frames)
	}
	if r.box.put(readerMsg{op: ropProbe}) {
		t.Fatal("the mailbox of a stopped reader takes more")
	}
}

// unitJSReader is a reader of pipe "p" with no NATS behind it, for tests
// that hand it messages themselves.
func unitJSReader(t *testing.T) *jsReader {
	e := &jsEngine{cfg: JetStreamConfig{AckWait: 2 * time.Second, PinnedTTL: 3 * time.Second, Linger: time.Second},
		log: quietLogger(t)}
	e.readFailed = newLimitedLog(e.log, slog.LevelWarn, "x", time.Second)
	t.Cleanup(e.readFailed.close)
	return newJSReader(e, "p")
}

// pulledMsg is a message of one chunk as a pull brings it to r: the
// stream's first, delivered once.
func pulledMsg(r *jsReader, chunk string) *nats.Msg {
	return &nats.Msg{Subject: jsSubjects + r.key + ".w1", Data: appendChunk(nil, []byte(chunk)), Header: nats.Header{}, Sub: &nats.Subscription{},
		Reply: fmt.Sprintf("$JS.ACK.%s.p-%s.1.1.1.%d.5", jsStream, r.key, time.Now().UnixNano())}
}
