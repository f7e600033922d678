package broker

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zpipes/zpipes/broker/internal/wal"
)

// Spilling (spill.go): with a tiny spillAbove, almost every queued chunk
// lives in the store's log only, and everything a queue promises must hold
// as it does in memory.

// spillTiny makes a stored broker spill everything past 2 KiB of chunks in
// memory and compact its log every 64 KiB or so.
func spillTiny(c *Config) { c.spillAbove, c.storeSlack = 2<<10, 64<<10 }

// books asks the core for its total, fixed and spilled bytes.
func books(t *testing.T, s *Server) (total, fixed, spilled int) {
	t.Helper()
	ch := make(chan [3]int, 1)
	if !s.send(event{books: ch}) {
		t.Fatal("broker gone")
	}
	b := <-ch
	return b[0], b[1], b[2]
}

// line is the i-th chunk of writer w: its name, number and padding to
// 100 bytes.
func line(w string, i int) []byte {
	s := fmt.Sprintf("%s%06d", w, i)
	return []byte(s + strings.Repeat(".", 100-len(s)))
}

// writeLines writes chunks from..to-1 of writer w, batch at a time.
func writeLines(t *testing.T, c *Client, pipe, w string, from, to, batch int) {
	t.Helper()
	ctx := testCtx(t)
	for i := from; i < to; i += batch {
		var cs [][]byte
		for j := i; j < min(i+batch, to); j++ {
			cs = append(cs, line(w, j))
		}
		mustOK(t, c.Write(ctx, pipe, cs...))
	}
}

// checkWriters checks that got holds each writer's lines from..n-1 in
// order, nothing else and nothing twice.
func checkWriters(t *testing.T, got []string, from map[string]int, n int) {
	t.Helper()
	next := maps(from)
	for i, g := range got {
		w := g[:1]
		want := string(line(w, next[w]))
		if g != want {
			t.Fatalf("chunk %d is %.10q, want %.10q", i, g, want)
		}
		next[w]++
	}
	for w, i := range next {
		if i != n {
			t.Fatalf("writer %s: read up to %d, want %d", w, i, n)
		}
	}
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Writers that write at once while their queues spill keep their turns and
// their order; a writer that starts after them is read after them; a chunk
// given back is read first.
func TestSpilledQueuesKeepTheirOrderAndTurns(t *testing.T) {
	r := startStored(t, t.TempDir(), spillTiny)
	ctx := testCtx(t)
	a, b := r.dial(), r.dial()
	mustOK(t, a.Open(ctx, "p"))
	mustOK(t, b.Hold(ctx, "p"))
	const n = 300 // 30 KB each: all but the first 2 KiB on disk
	for i := 0; i < n; i += 10 {
		writeLines(t, a, "p", "a", i, i+10, 10)
		writeLines(t, b, "p", "b", i, i+10, 3)
	}
	mustOK(t, b.ClosePipe(ctx, "p")) // b finishes; a goes on writing
	mustOK(t, a.ClosePipe(ctx, "p"))
	later := r.dial()
	mustOK(t, later.Hold(ctx, "p"))
	writeLines(t, later, "p", "c", 0, n, 50)
	total, _, spilled := books(t, r.s)
	if spilled == 0 || total-spilled > 2<<10+100*60 {
		t.Fatalf("%d bytes queued, %d on disk only: want all but about 2 KiB spilled", total, spilled)
	}
	// One chunk read and given back comes first.
	first, err := readBatch(ctx, a, "p", 1)
	mustOK(t, err)
	mustOK(t, a.Unread(ctx, "p", first...))

	got := readAll(t, a, "p", 3*n)
	// a and b take turns until both are done, then c.
	for i := 0; i < 2*n; i += 2 {
		if pair := got[i][:1] + got[i+1][:1]; pair != "ab" {
			t.Fatalf("chunks %d and %d are from %s: not in turns", i, i+1, pair)
		}
	}
	checkWriters(t, got, map[string]int{"a": 0, "b": 0, "c": 0}, n)
	if total, _, spilled := books(t, r.s); total != 0 || spilled != 0 {
		t.Fatalf("drained: %d bytes counted, %d spilled", total, spilled)
	}
}

// A spilled queue comes back after a restart in its order: what a reader
// consumed before stays consumed, what it took and did not acknowledge
// comes again, and chunks given back stay ahead of the queue.
func TestSpilledQueueComesBackAfterARestart(t *testing.T) {
	r := startStored(t, t.TempDir(), spillTiny)
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "p"))
	const n = 1000
	writeLines(t, c, "p", "a", 0, n, 7)
	// Consume 100 (MREADs, consumed once delivered), give 2 back.
	var read []string
	for len(read) < 100 {
		got, err := readBatch(ctx, c, "p", 100-len(read))
		mustOK(t, err)
		for _, g := range got {
			read = append(read, string(g))
		}
	}
	checkWriters(t, read, map[string]int{"a": 0}, 100)
	mustOK(t, c.Unread(ctx, "p", []byte(read[98]), []byte(read[99])))
	// Take 50 and acknowledge 20: 30 held when the broker goes.
	rd := c.NewReader(ctx, "p", ReaderOptions{Batch: 50, Max: 50, Ahead: 1})
	for range 50 {
		_, err := rd.Next()
		mustOK(t, err)
	}
	rd.Consume(20)
	waitFor(t, c, func(ps []PipeInfo) bool { return ps[0].Taken == 30 })
	r.restart()
	c = r.dial()
	ps := waitFor(t, c, func([]PipeInfo) bool { return true })
	if len(ps) != 1 || ps[0].Chunks != n-118 || ps[0].Bytes != 100*(n-118) {
		t.Fatalf("after restart: %+v, want %d chunks of 100 bytes", ps, n-118)
	}
	// 98..99 were given back, then taken again (the reader's first two)
	// and consumed with 20..117 after them; 118 and on come back.
	got := readAll(t, c, "p", n-118)
	checkWriters(t, got, map[string]int{"a": 118}, n)
	if total, _, spilled := books(t, r.s); total != 0 || spilled != 0 {
		t.Fatalf("drained: %d bytes counted, %d spilled", total, spilled)
	}
}

// A broker killed at any moment (its files copied as they are, which is
// what a SIGKILL leaves) comes back with every acknowledged chunk of a
// spilled queue, in order, without gaps or duplicates.
func TestSpilledQueueSurvivesACrash(t *testing.T) {
	dir := t.TempDir()
	r := startStored(t, dir, spillTiny)
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "p"))
	const n = 2000
	acked := 0
	var crashes []string
	for i := 0; i < n; i += 20 {
		writeLines(t, c, "p", "a", i, i+20, 20)
		acked = i + 20
		if i%500 == 0 {
			// Read some as we go, so consumed records are in the log too.
			_, err := readBatch(ctx, c, "p", 5)
			mustOK(t, err)
		}
		if i == 1000 {
			crashes = append(crashes, copyStore(t, dir))
		}
	}
	crashes = append(crashes, copyStore(t, dir))
	for k, crashed := range crashes {
		s := startServer(t, func(cfg *Config) { cfg.Store = crashed; spillTiny(cfg) })
		cc := dialT(t, s)
		ps := waitFor(t, cc, func([]PipeInfo) bool { return true })
		if len(ps) != 1 {
			t.Fatalf("crash %d: pipes %+v", k, ps)
		}
		got := readAll(t, cc, "p", ps[0].Chunks)
		// Consumed chunks are a prefix; the rest runs to what was
		// acknowledged at the copy, or later.
		if len(got) == 0 {
			t.Fatalf("crash %d: nothing back", k)
		}
		var first int
		fmt.Sscanf(got[0][1:7], "%d", &first)
		checkWriters(t, got, map[string]int{"a": first}, first+len(got))
		if k == len(crashes)-1 && first+len(got) != acked {
			t.Fatalf("crash %d: back up to %d, %d acknowledged", k, first+len(got), acked)
		}
		if k == 0 && first+len(got) < 1020 {
			t.Fatalf("crash %d: back up to %d, 1020 were acknowledged before it", k, first+len(got))
		}
	}
}

// copyStore copies a store's segment files and VERSION as they are now,
// while the broker runs: what it would leave if it were killed.
func copyStore(t *testing.T, dir string) string {
	t.Helper()
	to := t.TempDir()
	names, err := filepath.Glob(filepath.Join(dir, "*"))
	mustOK(t, err)
	for _, name := range names {
		if filepath.Base(name) == "LOCK" {
			continue
		}
		src, err := os.Open(name)
		mustOK(t, err)
		dst, err := os.Create(filepath.Join(to, filepath.Base(name)))
		mustOK(t, err)
		_, err = io.Copy(dst, src)
		mustOK(t, err)
		mustOK(t, src.Close())
		mustOK(t, dst.Close())
	}
	return to
}

// A compaction copies spilled queues without bringing them into memory,
// and what it copied reads back in order, before and after a restart; the
// log stays within its bound.
func TestCompactionCopiesSpilledQueues(t *testing.T) {
	dir := t.TempDir()
	r := startStored(t, dir, spillTiny)
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "big"))
	const n = 2000 // 200 KB, past the slack: on disk, copied by each compaction
	writeLines(t, c, "big", "a", 0, n, 25)
	// Churn another pipe through the log: 2 MB in, 2 MB out.
	w := r.dial()
	mustOK(t, w.Open(ctx, "churn"))
	for i := range 200 {
		writeLines(t, w, "churn", "x", i*100, i*100+100, 100)
		got, err := readBatch(ctx, w, "churn", 100)
		mustOK(t, err)
		if len(got) != 100 {
			// MREAD takes what is there: the writer wrote it all first.
			t.Fatalf("churn read %d of 100", len(got))
		}
	}
	total, _, spilled := books(t, r.s)
	// In memory: at most 2 KiB queued, and the last churn read's 100
	// chunks until its reply is written.
	if total-spilled > 2<<10+100*148 {
		t.Fatalf("after compactions %d bytes counted, only %d of them on disk", total, spilled)
	}
	var size int64
	entries, err := os.ReadDir(dir)
	mustOK(t, err)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			size += fi.Size()
		}
	}
	// 2 MB went through; 200 KB are live: at most twice that plus the
	// slack, and a segment being compacted.
	if size > 2*int64(total)+4*(64<<10) {
		t.Fatalf("store holds %d bytes for %d queued", size, total)
	}
	half := readAll(t, c, "big", n/2)
	checkWriters(t, half, map[string]int{"a": 0}, n/2)
	r.restart()
	got := readAll(t, r.dial(), "big", n/2)
	checkWriters(t, got, map[string]int{"a": n / 2}, n)
}

// The head of a spilled queue is in memory and its tail on disk; the
// reader reaching the tail in the middle of a batch gets the batch whole.
func TestReadAcrossTheSpilledBoundary(t *testing.T) {
	r := startStored(t, t.TempDir(), spillTiny)
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "p"))
	writeLines(t, c, "p", "a", 0, 100, 1) // 2 KiB in memory, the rest spilled
	var got []string
	for len(got) < 100 {
		b, err := readBatch(ctx, c, "p", 33)
		mustOK(t, err)
		for _, g := range b {
			got = append(got, string(g))
		}
	}
	checkWriters(t, got, map[string]int{"a": 0}, 100)
	if !slices.IsSorted(got) {
		t.Fatal("not in order")
	}
}

// BenchmarkRefill measures what a reader reaching a spilled queue costs
// the core: reading back one record of a thousand 1 KiB chunks (an MWRITE
// of `cat -w`) from the page cache, the common case.
func BenchmarkRefill(b *testing.B) {
	ls, err := openLogStore(b.TempDir(), wal.Options{}, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer ls.close()
	chunks := make([][]byte, 1000)
	for i := range chunks {
		chunks[i] = make([]byte, 1024)
	}
	var exts []extent
	for i := range 64 { // 64 MiB, one segment
		e, err := ls.spillWrote("p", 1, chunks, uint64(1+i*len(chunks)))
		if err != nil {
			b.Fatal(err)
		}
		exts = append(exts, e)
	}
	done := make(chan error, 1)
	ls.commit(func(err error) { done <- err })
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(chunks) * 1024))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e := exts[i%len(exts)]
		items, _, err := ls.load(1, e.seg, e.from, e.to)
		if err != nil || len(items) != len(chunks) {
			b.Fatalf("load: %d items, %v", len(items), err)
		}
	}
}

// A compaction keeps segments that are mostly a spilled backlog where they
// are, and refers to them from the checkpoint instead of copying them; the
// consumed segments before them go. What replay found consumed in kept
// segments stays consumed through another checkpoint and restart.
func TestCompactionKeepsSegmentsOfASpilledBacklog(t *testing.T) {
	dir := t.TempDir()
	r := startStored(t, dir, spillTiny, func(c *Config) { c.storeSegment, c.storeSlack = 64<<10, 16<<10 })
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "big"))
	const n = 4000 // 400 KB: seven segments
	writeLines(t, c, "big", "a", 0, n, 100)
	segs := func() []string {
		names, err := filepath.Glob(filepath.Join(dir, "*.wal"))
		mustOK(t, err)
		for i := range names {
			names[i] = filepath.Base(names[i])
		}
		return names
	}
	before := segs()
	lastBig := before[len(before)-1] // holds the end of the backlog
	next := 0
	// consume takes and acknowledges chunks up to upTo: acknowledged, they
	// are consumed for good before the next restart.
	consume := func(upTo int) {
		t.Helper()
		got := readAll(t, c, "big", upTo-next)
		checkWriters(t, got, map[string]int{"a": next}, upTo)
		next = upTo
		_, err := c.List(ctx) // answered after the ACKs
		mustOK(t, err)
	}
	// Reading three quarters makes the log twice what is live: compacted.
	consume(3000)
	ps := waitFor(t, c, func([]PipeInfo) bool { return !slices.Contains(segs(), before[0]) })
	if !slices.Contains(segs(), lastBig) {
		t.Fatalf("the compaction copied the backlog: %s is gone (segments before %v, after %v)", lastBig, before, segs())
	}
	if ps[0].Chunks != n-3000 {
		t.Fatalf("after the compaction: %+v, want %d chunks", ps, n-3000)
	}
	r.restart() // replay reads the kept segments
	c = r.dial()
	consume(3500) // consumed ids in a kept extent: dead for the next checkpoint
	r.restart()
	c = r.dial()
	consume(3600)
	r.restart()
	got := readAll(t, r.dial(), "big", n-3600)
	checkWriters(t, got, map[string]int{"a": 3600}, n)
}

// Chunks replay found consumed that lie in a segment a later checkpoint
// keeps stay consumed: the checkpoint records them as dead (recDead).
func TestKeptSegmentsRememberWhatWasConsumed(t *testing.T) {
	dir := t.TempDir()
	r := startStored(t, dir, spillTiny, func(c *Config) { c.storeSegment, c.storeSlack = 64<<10, 16<<10 })
	ctx := testCtx(t)
	c := r.dial()
	mustOK(t, c.Open(ctx, "big"))
	const n = 1000 // 1 MB of 1000-byte chunks: sixteen segments
	big := func(i int) []byte { return append(line("a", i), make([]byte, 900)...) }
	for i := 0; i < n; i += 10 {
		var cs [][]byte
		for j := i; j < i+10; j++ {
			cs = append(cs, big(j))
		}
		mustOK(t, c.Write(ctx, "big", cs...))
	}
	check := func(got []string, from int) {
		t.Helper()
		for i, g := range got {
			if g != string(big(from+i)) {
				t.Fatalf("chunk %d is %.10q, want %.10q", i, g, big(from+i))
			}
		}
	}
	check(readAll(t, c, "big", 505), 0) // half, and into a record of ten
	_, err := c.List(ctx)               // answered after the ACKs
	mustOK(t, err)
	r.restart() // 0..504 consumed: dead in the backlog's extents
	// Churn another pipe, leaving big untouched, until a compaction keeps
	// the backlog's segments and drops the first.
	w := r.dial()
	mustOK(t, w.Open(ctx, "churn"))
	first := filepath.Join(dir, "0000000000000000.wal")
	for i := 0; ; i++ {
		if _, err := os.Stat(first); os.IsNotExist(err) {
			break
		}
		if i == 1000 {
			t.Fatal("no compaction dropped the first segment")
		}
		mustOK(t, w.Write(ctx, "churn", big(i)))
		_, err := readBatch(ctx, w, "churn", 1)
		mustOK(t, err)
	}
	r.restart()
	got := readAll(t, r.dial(), "big", n-505)
	check(got, 505)
}

// Streaming writers and a streaming reader at once, while queues spill and
// the log is compacted and kept in small segments, and a restart in the
// middle: each writer's chunks come back complete, once each, in order.
func TestStreamsThroughSpilledQueuesAndARestart(t *testing.T) {
	r := startStored(t, t.TempDir(), spillTiny, func(c *Config) { c.storeSegment = 64 << 10 })
	ctx := testCtx(t)
	const writers, n = 4, 3000
	c := r.dial()
	mustOK(t, c.Open(ctx, "p"))
	var wg sync.WaitGroup
	for w := range writers {
		wc := r.dial()
		wg.Go(func() {
			sw, err := wc.NewWriter(ctx, "p", WriterOptions{Batch: 1 + w*17})
			if err != nil {
				t.Error(err)
				return
			}
			for i := range n {
				if err := sw.Write(line(string(rune('a'+w)), i)); err != nil {
					t.Error(err)
					return
				}
			}
			if _, err := sw.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	// Read about half while they write.
	first := readAll(t, c, "p", writers*n/2)
	wg.Wait()
	_, err := c.List(ctx) // answered after the ACKs
	mustOK(t, err)
	r.restart()
	rest := readAll(t, r.dial(), "p", writers*n-len(first))
	checkWriters(t, append(first, rest...), map[string]int{"a": 0, "b": 0, "c": 0, "d": 0}, n)
	if total, _, spilled := books(t, r.s); total != 0 || spilled != 0 {
		t.Fatalf("drained: %d bytes counted, %d spilled", total, spilled)
	}
}
