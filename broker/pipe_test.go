package broker

import (
	"fmt"
	"slices"
	"testing"
)

// drain reads every chunk queued in p, in the order a reader would get them.
func drain(p *pipe) []string {
	var out []string
	for p.chunks > 0 {
		out = append(out, string(p.take().data))
	}
	return out
}

// items makes queue items of the names, with ids from 1.
func items(names ...string) []item {
	out := make([]item, len(names))
	for i, n := range names {
		out[i] = item{data: []byte(n), id: uint64(i + 1)}
	}
	return out
}

func chunks(names ...string) [][]byte {
	out := make([][]byte, len(names))
	for i, n := range names {
		out[i] = []byte(n)
	}
	return out
}

func TestSequentialWritersAreServedInTheOrderTheyRan(t *testing.T) {
	p := newPipe("q")
	p.enqueue(1, items("1", "2", "3"))
	p.finish(1)
	p.enqueue(2, items("4", "5"))
	p.finish(2)
	p.enqueue(3, items("6"))
	p.finish(3)
	p.enqueue(4, items("7"))
	if got, want := drain(p), []string{"1", "2", "3", "4", "5", "6", "7"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}

func TestConcurrentWritersTakeTurns(t *testing.T) {
	p := newPipe("q")
	p.enqueue(1, items("a1", "a2", "a3"))
	p.enqueue(2, items("b1", "b2"))
	p.enqueue(3, items("c1"))
	got := drain(p)
	want := []string{"a1", "b1", "c1", "a2", "b2", "a3"}
	// A new writer joins just before the writer whose turn it is, so the
	// exact interleaving starts wherever the turn was; what holds is one
	// chunk per writer per round, each writer in its own order.
	if len(got) != len(want) {
		t.Fatalf("read %v", got)
	}
	round := map[string]bool{}
	for _, c := range got[:3] {
		round[c[:1]] = true
	}
	if len(round) != 3 {
		t.Fatalf("first round %v serves a writer twice", got[:3])
	}
	for _, w := range []string{"a", "b", "c"} {
		var mine []string
		for _, c := range got {
			if c[:1] == w {
				mine = append(mine, c)
			}
		}
		if !slices.IsSorted(mine) {
			t.Fatalf("writer %s out of order: %v", w, got)
		}
	}
}

// A writer that starts after another finished waits only for the finished
// one's chunks, not for a heavy writer that is still writing: the light
// writer is still served within a round of the heavy one once the finished
// writer has drained.
func TestWriterAfterAFinishedOneWaitsOnlyForIt(t *testing.T) {
	p := newPipe("q")
	p.enqueue(1, items("h1", "h2", "h3", "h4", "h5", "h6")) // heavy, still writing
	p.enqueue(2, items("f1", "f2"))                         // writes and finishes
	p.finish(2)
	p.enqueue(3, items("l1")) // light, starts after 2 finished
	got := drain(p)
	pos := func(c string) int { return slices.Index(got, c) }
	if pos("l1") < pos("f2") {
		t.Fatalf("l1 served before the finished writer's f2: %v", got)
	}
	if pos("l1") > pos("f2")+2 {
		t.Fatalf("l1 not within a round after f2: %v", got)
	}
	if pos("h6") < pos("l1") {
		t.Fatalf("light writer waited for the heavy writer still writing: %v", got)
	}
}

// A writer whose queue ran dry and that writes again, without finishing,
// is the same writer: it does not fall behind writers that finished after
// it started.
func TestIdleWriterKeepsItsPlace(t *testing.T) {
	p := newPipe("q")
	p.enqueue(1, items("a1"))
	if got := drain(p); !slices.Equal(got, []string{"a1"}) {
		t.Fatalf("read %v", got)
	}
	p.enqueue(2, items("b1", "b2", "b3"))
	p.finish(2)
	p.enqueue(1, items("a2"))
	got := drain(p)
	if slices.Index(got, "a2") > 1 {
		t.Fatalf("writer 1, writing since before 2 finished, waited for all of 2: %v", got)
	}
}

func TestGivenBackChunksComeFirst(t *testing.T) {
	p := newPipe("q")
	p.enqueue(1, items("w1", "w2"))
	p.unread(items("r1", "r2"))
	if got, want := drain(p), []string{"r1", "r2", "w1", "w2"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}

func TestPipeCountsWhatItQueues(t *testing.T) {
	p := newPipe("q")
	p.enqueue(1, items("abc", ""))
	p.unread(items("de"))
	if p.chunks != 3 || p.bytes != 5+3*chunkOverhead || p.writerCount() != 1 {
		t.Fatalf("chunks %d bytes %d writers %d", p.chunks, p.bytes, p.writerCount())
	}
	drain(p)
	if p.chunks != 0 || p.bytes != 0 || p.writerCount() != 0 {
		t.Fatalf("after draining: chunks %d bytes %d writers %d", p.chunks, p.bytes, p.writerCount())
	}
}

// Many writers that each write and finish, with no reader, are read back
// in order, and admitting each costs no scan of the ones before it.
func TestManySequentialWritersStayInOrder(t *testing.T) {
	p := newPipe("q")
	const n = 10000
	for i := range n {
		p.enqueue(uint64(i+1), items(fmt.Sprint(i)))
		p.finish(uint64(i + 1))
	}
	got := drain(p)
	for i, c := range got {
		if c != fmt.Sprint(i) {
			t.Fatalf("chunk %d is %s", i, c)
		}
	}
	if len(got) != n || len(p.later) != 0 || len(p.finished) != 0 {
		t.Fatalf("read %d; left later %d finished %d", len(got), len(p.later), len(p.finished))
	}
}

// End to end: a writer that CLOSEs the pipe has finished, and whoever
// writes after that is read after it. (Disconnecting finishes a writer too,
// but the broker learns of it on its own time, so only the pipe-level tests
// above can order against it deterministically.)
func TestWriterAfterCloseIsReadAfter(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	r := dialT(t, s)
	mustOK(t, r.Open(ctx, "q"))
	for _, batch := range [][]string{{"1", "2", "3"}, {"4", "5"}, {"6"}} {
		w := dialT(t, s)
		mustOK(t, w.Open(ctx, "q"))
		mustOK(t, w.Write(ctx, "q", chunks(batch...)...))
		mustOK(t, w.ClosePipe(ctx, "q"))
	}
	if got := readAll(t, r, "q", 6); !slices.Equal(got, []string{"1", "2", "3", "4", "5", "6"}) {
		t.Fatalf("read %v", got)
	}
}

// A lone writer's runs are taken in a row, within the count and the bytes
// asked for, across runs of batches and of items read back from disk, with
// the ids each chunk was queued with; a chunk larger than the bytes asked
// for still goes when it is the first.
func TestLoneWriterIsTakenARunAtATime(t *testing.T) {
	p := newPipe("q")
	p.enqueueChunks(1, chunks("a", "bb", "ccc"), 10)
	p.enqueue(1, []item{{data: []byte("dddd"), id: 20}, {data: []byte("e"), id: 25}})
	p.enqueueChunks(1, chunks("ffffffff", "g"), 30)
	type got struct {
		data string
		id   uint64
	}
	take := func(max, maxBytes int) []got {
		var out []got
		for _, it := range p.dequeue(nil, max, maxBytes) {
			out = append(out, got{string(it.data), it.id})
		}
		return out
	}
	steps := []struct {
		max, maxBytes int
		want          []got
	}{
		{2, 100, []got{{"a", 10}, {"bb", 11}}},
		{10, 4, []got{{"ccc", 12}}},  // "dddd" would pass 4 bytes
		{10, 2, []got{{"dddd", 20}}}, // the first goes whatever its size
		{10, 100, []got{{"e", 25}, {"ffffffff", 30}, {"g", 31}}},
		{10, 100, nil},
	}
	for i, s := range steps {
		if got := take(s.max, s.maxBytes); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: took %v, want %v", i, got, s.want)
		}
	}
	if p.chunks != 0 || p.bytes != 0 || len(p.ring) != 0 {
		t.Fatalf("drained pipe counts %d chunks, %d bytes, %d writers in the ring", p.chunks, p.bytes, len(p.ring))
	}
}
