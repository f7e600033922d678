// Package gcfloor makes the Go garbage collector wait until the heap has
// grown by at least a fixed number of bytes, not only by GOGC percent of
// what is live.
//
// A streaming broker keeps little live (the chunks between a writer and a
// reader that keeps up) and allocates a lot (every batch that passes
// through). With the default GOGC=100 and a few MiB live, the collector then
// runs dozens of times a second, and its marking, write barriers and
// sweeping took about a third of the broker's CPU in a 1M-line transfer.
// The runtime has a ceiling (GOMEMLIMIT) but no floor; the old trick, a
// large never-touched "ballast" allocation, raises the goal for every heap
// size. Here the GC percent is recomputed after each collection instead, so
// that the next one comes when the heap has grown by
//
//	max(live × GOGC/100, floor)
//
// A large live heap (a deep queue) is collected as with plain GOGC, so the
// memory bounds of a full broker do not move; a small one may carry up to
// floor bytes of garbage.
//
// The hook is a finalizer on a sentinel object, re-armed each cycle: the
// runtime runs it once per completed collection, on its finalizer goroutine.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// tuned records that Set installed its tuner, for tests.
var tuned atomic.Bool

// basePercent is the GC percent for a heap larger than the floor: Go's
// default.
const basePercent = 100

// minLive is the live heap assumed when less is live, or before the first
// collection has measured it: the runtime's own smallest heap goal is
// 4 MiB at GOGC=100.
const minLive = 4 << 20

// Set makes every later collection wait for the heap to grow by at least
// floor bytes. It does nothing if the user chose GOGC in the environment
// (their choice wins) or if floor ≤ 0. Call it once, from main.
func Set(floor int64) {
	if floor <= 0 {
		return
	}
	if _, ok := os.LookupEnv("GOGC"); ok {
		return
	}
	t := &tuner{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	tuned.Store(true)
	t.tune()
	t.arm()
}

type tuner struct {
	floor  int64
	sample []metrics.Sample
}

// sentinel is allocated on the heap and dropped at once, so that the next
// collection finds it unreachable and runs its finalizer.
type sentinel struct{ _ [16]byte }

func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		t.tune()
		t.arm()
	})
}

// tune sets the GC percent from the heap that the last cycle found live.
func (t *tuner) tune() {
	metrics.Read(t.sample)
	var live int64
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = int64(t.sample[0].Value.Uint64())
	}
	debug.SetGCPercent(percent(live, t.floor))
}

// percent is the GC percent that lets a heap of live bytes grow by
// max(live×basePercent/100, floor) before the next collection.
func percent(live, floor int64) int {
	live = max(live, minLive)
	return int(max(floor*100/live, basePercent))
}
