package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// restartable runs a broker on a store in dir; restart closes it (a clean
// stop) and starts another on the same dir and endpoint.
type restartable struct {
	t   *testing.T
	cfg Config
	s   *Server
}

func startStored(t *testing.T, dir string, cfgs ...func(*Config)) *restartable {
	t.Helper()
	cfg := Config{Endpoint: testEndpoint(), Logger: testLogger(t), Store: dir}
	for _, f := range cfgs {
		f(&cfg)
	}
	r := &restartable{t: t, cfg: cfg}
	r.start()
	t.Cleanup(func() { r.s.Close() })
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	s, err := Listen(r.cfg)
	if err != nil {
		r.t.Fatalf("listen on store: %v", err)
	}
	r.s = s
}

func (r *restartable) restart() {
	r.t.Helper()
	r.s.Close()
	r.start()
}

func (r *restartable) dial() *Client { return dialT(r.t, r.s) }

func TestStoreKeepsPipesAcrossARestart(t *testing.T) {
	r := startStored(t, t.TempDir())
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "kept")) // open, empty: kept for its open count
	mustOK(t, c.Open(ctx, "q"))
	// Three writers one after another, then one given back at the head.
	for _, batch := range [][]string{{"1", "2"}, {"3", "4"}, {"5"}} {
		w := r.dial()
		mustOK(t, w.Hold(ctx, "q"))
		mustOK(t, w.Write(ctx, "q", chunks(batch...)...))
		mustOK(t, w.ClosePipe(ctx, "q"))
	}
	// A chunk read (MREAD) and given back (UNREAD) is at the head again.
	got, err := readBatch(ctx, c, "q", 1)
	mustOK(t, err)
	mustOK(t, c.Unread(ctx, "q", got...))
	// A reader that took two and acknowledged one: the other comes back.
	rd := c.NewReader(ctx, "q", ReaderOptions{Batch: 2, Max: 2, Ahead: 1})
	for range 2 {
		_, err := rd.Next()
		mustOK(t, err)
	}
	rd.Consume(1)        // "1" is consumed; "2" is held
	_, err = c.List(ctx) // answered after the ACK: the ACK is in
	mustOK(t, err)
	c.Close()

	r.restart()
	c = r.dial()
	infos, err := c.List(ctx)
	mustOK(t, err)
	// "2" is back at the head, or in its writer's queue if the broker
	// stopped before it saw the reader go: the writers' count differs, the
	// order does not.
	for i := range infos {
		infos[i].Writers = 0
	}
	want := []PipeInfo{{Name: "kept", Opens: 1}, {Name: "q", Opens: 1, Chunks: 4, Bytes: 4}}
	if !slices.Equal(infos, want) {
		t.Fatalf("after restart: %+v, want %+v", infos, want)
	}
	if got := readAll(t, c, "q", 4); !slices.Equal(got, numbered(2, 5)) {
		t.Fatalf("after restart read %v, want 2..5 in order", got)
	}
}

// Writers writing at the same time keep taking turns after a restart, and
// each keeps its own order.
func TestStoreKeepsConcurrentWritersRoundRobin(t *testing.T) {
	r := startStored(t, t.TempDir())
	ctx := testCtx(t)
	a, b := r.dial(), r.dial()
	mustOK(t, a.Open(ctx, "p"))
	mustOK(t, a.Write(ctx, "p", chunks("a1", "a2", "a3")...))
	mustOK(t, b.Write(ctx, "p", chunks("b1", "b2", "b3")...))
	r.restart()
	got := readAll(t, r.dial(), "p", 6)
	for i := 0; i < 6; i += 2 {
		pair := []string{got[i][:1], got[i+1][:1]}
		slices.Sort(pair)
		if !slices.Equal(pair, []string{"a", "b"}) {
			t.Fatalf("after restart read %v: not in turns", got)
		}
	}
}

// A chunk read and delivered is gone for good; one taken and not yet
// delivered (the reader vanished) is there after a restart.
func TestStoreForgetsOnlyWhatWasDelivered(t *testing.T) {
	r := startStored(t, t.TempDir())
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", chunks(numbered(1, 10)...)...))
	got, err := readBatch(ctx, c, "p", 3) // a v0.1 MREAD: consumed once delivered
	mustOK(t, err)
	if len(got) != 3 {
		t.Fatalf("MREAD 3 got %d", len(got))
	}
	waitFor(t, c, func(ps []PipeInfo) bool { return ps[0].Chunks == 7 })
	r.restart()
	if got := readAll(t, r.dial(), "p", 7); !slices.Equal(got, numbered(4, 10)) {
		t.Fatalf("after restart: %v, want 4..10", got)
	}
}

// The log is compacted: it stays within a small factor of what is queued,
// and what is queued survives the compaction and a restart.
func TestStoreCompactsItsLog(t *testing.T) {
	dir := t.TempDir()
	r := startStored(t, dir, func(c *Config) { c.storeSlack = 64 << 10 })
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "p"))
	chunk := make([]byte, 1000)
	for i := range 2000 {
		copy(chunk, fmt.Sprintf("%08d", i))
		mustOK(t, c.Write(ctx, "p", chunk))
		if i >= 10 { // keep about ten queued
			got, err := readBatch(ctx, c, "p", 1)
			mustOK(t, err)
			if string(got[0][:8]) != fmt.Sprintf("%08d", i-10) {
				t.Fatalf("read %q, want %08d", got[0][:8], i-10)
			}
		}
	}
	waitFor(t, c, func(ps []PipeInfo) bool { return ps[0].Chunks == 10 })
	size := func() int64 {
		var n int64
		entries, err := os.ReadDir(dir)
		mustOK(t, err)
		for _, e := range entries {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	// 2 MB went through; what is live is 10 KB.
	if n := size(); n > 4*(64<<10)+(200<<10) {
		t.Fatalf("store holds %d bytes for 10 KB queued after 2 MB written", n)
	}
	r.restart()
	got := readAll(t, r.dial(), "p", 10)
	for i, g := range got {
		if g[:8] != fmt.Sprintf("%08d", 1990+i) {
			t.Fatalf("after restart chunk %d is %q", i, g[:8])
		}
	}
}

// A torn tail (the broker died mid-write, the power went) is dropped: the
// broker starts and serves every record before it.
func TestStoreStartsOnATornTail(t *testing.T) {
	dir := t.TempDir()
	r := startStored(t, dir)
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "p"))
	for i := range 10 {
		mustOK(t, c.Write(ctx, "p", []byte(fmt.Sprint(i))))
	}
	r.s.Close()
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	mustOK(t, err)
	last := segs[len(segs)-1]
	fi, err := os.Stat(last)
	mustOK(t, err)
	mustOK(t, os.Truncate(last, fi.Size()-3)) // into the last record
	r.start()
	got := readAll(t, r.dial(), "p", 9)
	if !slices.Equal(got, numbered(0, 8)) {
		t.Fatalf("after a torn tail: %v, want 0..8", got)
	}
}

func TestSecondBrokerOnAStoreIsRefused(t *testing.T) {
	dir := t.TempDir()
	startStored(t, dir)
	_, err := Listen(Config{Endpoint: testEndpoint(), Store: dir})
	if err == nil {
		t.Fatal("a second broker started on the same store")
	}
	t.Logf("refused: %v", err)
}

// failingStore fails every commit, as a full disk would: from another
// goroutine, or (sync) on the core's own, as a log that has failed does.
type failingStore struct {
	memStore
	sync    bool
	changes int
}

func (f *failingStore) wrote(string, uint64, []item) { f.changes++ }
func (f *failingStore) pending() bool                { return f.changes > 0 }
func (f *failingStore) durable() bool                { return true }
func (f *failingStore) commit(done func(error)) {
	f.changes = 0
	err := errors.New("no space left on device")
	if f.sync {
		done(err)
		return
	}
	go done(err)
}

// Nothing is acknowledged that was not stored: when the store fails, the
// write waiting for it gets an ERROR, and so does every later write.
func TestWritesFailWhenTheStoreFails(t *testing.T) {
	s := startServer(t, func(c *Config) { c.testStore = &failingStore{} })
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Hold(ctx, "p"))
	for range 2 {
		if err := c.Write(ctx, "p", []byte("x")); !errors.Is(err, ErrStore) {
			t.Fatalf("write on a failed store: %v, want ErrStore", err)
		}
	}
}

// A checkpoint writes a queue of any size: in parts, since one record of
// the log is bounded, and the parts come back in order.
func TestStoreCompactsAQueueLargerThanARecord(t *testing.T) {
	defer func(n int) { checkpointRecordBytes = n }(checkpointRecordBytes)
	checkpointRecordBytes = 16 << 10
	dir := t.TempDir()
	r := startStored(t, dir, func(c *Config) { c.storeSlack = 64 << 10 })
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "p"))
	mustOK(t, c.Write(ctx, "p", []byte("head")))
	got, err := readBatch(ctx, c, "p", 1)
	mustOK(t, err)
	mustOK(t, c.Unread(ctx, "p", got...)) // a given-back chunk, written in a part of its own
	const n = 100                         // 100 KB in one queue: several parts
	chunk := make([]byte, 1000)
	for i := range n {
		copy(chunk, fmt.Sprintf("%08d", i))
		mustOK(t, c.Write(ctx, "p", chunk))
	}
	// Churn through another pipe until the log is compacted.
	mustOK(t, c.Open(ctx, "churn"))
	for range 400 {
		mustOK(t, c.Write(ctx, "churn", chunk))
		_, err := readBatch(ctx, c, "churn", 1)
		mustOK(t, err)
	}
	r.restart()
	c = r.dial()
	all := readAll(t, c, "p", n+1)
	if all[0] != "head" {
		t.Fatalf("after compactions and a restart, the head is %q", all[0])
	}
	for i, g := range all[1:] {
		if g[:8] != fmt.Sprintf("%08d", i) {
			t.Fatalf("after compactions and a restart, chunk %d is %q", i, g[:8])
		}
	}
}

// A store that calls back on the core's goroutine, while connections keep
// the core's event queue full, does not freeze the broker: every write gets
// its ERROR.
func TestStoreCallingBackAtOnceDoesNotFreezeTheBroker(t *testing.T) {
	s := startServer(t, func(c *Config) { c.testStore = &failingStore{sync: true} })
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for w := range 8 {
		c := dialT(t, s)
		mustOK(t, c.Hold(ctx, fmt.Sprint("p", w)))
		wg.Go(func() {
			pipe := []byte(fmt.Sprint("p", w))
			calls := make([]*call, 300)
			for i := range calls {
				calls[i] = c.async(CmdWrite, pipe, []byte("x"))
			}
			for _, k := range calls {
				select {
				case <-k.done:
				case <-ctx.Done():
					t.Error("a write never answered: the broker froze")
					return
				}
				if !errors.Is(k.err, ErrStore) {
					t.Errorf("write on a failed store: %v", k.err)
					return
				}
			}
		})
	}
	wg.Wait()
}
