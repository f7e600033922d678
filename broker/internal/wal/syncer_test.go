package wal

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// slowDisk is an fdatasync hook that counts calls and can hold one until
// the test lets it go.
type slowDisk struct {
	calls   atomic.Int32
	hold    atomic.Bool   // hold the next call
	entered chan struct{} // a held call has started
	release chan struct{} // let it finish
}

func newSlowDisk() *slowDisk {
	return &slowDisk{entered: make(chan struct{}), release: make(chan struct{})}
}

func (d *slowDisk) fdatasync(f *os.File) error {
	d.calls.Add(1)
	if d.hold.CompareAndSwap(true, false) {
		close(d.entered)
		<-d.release
	}
	return fdatasync(f)
}

func TestSyncsDuringOneFsyncShareTheNext(t *testing.T) {
	disk := newSlowDisk()
	l := openT(t, t.TempDir(), Options{hooks: &hooks{fdatasync: disk.fdatasync}})
	disk.calls.Store(0) // Open's own

	var order []int // appended to by the syncer only
	all := make(chan struct{})
	const n = 100
	done := func(i int) func(error) {
		return func(err error) {
			if err != nil {
				t.Errorf("Sync %d: %v", i, err)
			}
			order = append(order, i)
			if i == n {
				close(all)
			}
		}
	}
	disk.hold.Store(true)
	_, err := l.Append(record(0))
	mustOK(t, err)
	l.Sync(done(0))
	<-disk.entered // the syncer is inside fsync 1
	for i := 1; i <= n; i++ {
		_, err := l.Append(record(i))
		mustOK(t, err)
		l.Sync(done(i))
	}
	close(disk.release)
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		t.Fatal("Sync callbacks never all called")
	}
	if got := disk.calls.Load(); got != 2 {
		t.Errorf("%d fsyncs for %d Syncs made during the first: want 2", got, n+1)
	}
	for i, got := range order {
		if got != i {
			t.Fatalf("callbacks called in the order %v", order)
		}
	}
}

func TestSyncCallbacksInOrder(t *testing.T) {
	for _, every := range []time.Duration{0, time.Millisecond} {
		l := openT(t, t.TempDir(), Options{SyncEvery: every, SegmentBytes: 8192})
		var order []int
		all := make(chan struct{})
		const n = 1000
		for i := range n {
			if i%3 != 0 { // some Syncs with nothing new to sync
				_, err := l.Append(record(i))
				mustOK(t, err)
			}
			l.Sync(func(err error) {
				if err != nil {
					t.Errorf("Sync %d: %v", i, err)
				}
				order = append(order, i)
				if i == n-1 {
					close(all)
				}
			})
		}
		select {
		case <-all:
		case <-time.After(20 * time.Second):
			t.Fatalf("SyncEvery %v: Sync callbacks never all called", every)
		}
		for i, got := range order {
			if got != i {
				t.Fatalf("SyncEvery %v: callbacks called in the order %v", every, order)
			}
		}
	}
}

func TestPeriodicSyncWaitsForTheTick(t *testing.T) {
	disk := newSlowDisk()
	l, err := Open(t.TempDir(), Options{SyncEvery: time.Hour, hooks: &hooks{fdatasync: disk.fdatasync}})
	mustOK(t, err)
	disk.calls.Store(0)
	called := make(chan error, 1)
	_, err = l.Append(make([]byte, 3*writeChunk)) // written out, not fsynced
	mustOK(t, err)
	l.Sync(func(err error) { called <- err })
	mustOK(t, l.Close()) // the hour is not up: Close's fsync is the first
	select {
	case err := <-called:
		mustOK(t, err)
	default:
		t.Fatal("Close returned before the pending Sync callback was called")
	}
	if got := disk.calls.Load(); got != 1 {
		t.Errorf("%d fsyncs, want only Close's", got)
	}
}

// devFull makes every segment after the first /dev/full, where writes fail
// as they do on a full disk.
func devFull(name string) (*os.File, error) {
	if filepath.Base(name) == segName(0) {
		return createSegment(name)
	}
	return os.OpenFile("/dev/full", os.O_WRONLY, 0)
}

func TestDiskFullAtOpenIsAnError(t *testing.T) {
	full := func(string) (*os.File, error) { return os.OpenFile("/dev/full", os.O_WRONLY, 0) }
	_, err := Open(t.TempDir(), Options{hooks: &hooks{create: full}})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Open on a full disk: %v, want ENOSPC", err)
	}
}

func TestDiskFullFailsTheLog(t *testing.T) {
	l := openT(t, t.TempDir(), Options{hooks: &hooks{create: devFull}})
	appendN(t, l, 0, 10, 10) // segment 0 is a real file
	mustOK(t, l.Roll())      // segment 1 is /dev/full
	_, err := l.Append(record(10))
	mustOK(t, err)
	var errs []error
	for range 3 {
		l.Sync(func(err error) { errs = append(errs, err) })
	}
	err = syncWait(t, l)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Sync: %v, want ENOSPC", err)
	}
	for i, err := range errs {
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Sync %d: %v, want ENOSPC", i, err)
		}
	}
	if _, err := l.Append(record(11)); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Append after the failure: %v, want ENOSPC", err)
	}
	if err := syncWait(t, l); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Sync after the failure: %v, want ENOSPC", err)
	}
	if err := l.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Close: %v, want ENOSPC", err)
	}
}

func TestDiskFullWakesABlockedAppend(t *testing.T) {
	release := make(chan struct{})
	slowFull := func(name string) (*os.File, error) {
		if filepath.Base(name) != segName(0) {
			<-release
		}
		return devFull(name)
	}
	l := openT(t, t.TempDir(), Options{hooks: &hooks{create: slowFull}})
	_, err := l.Append(record(0))
	mustOK(t, err)
	mustOK(t, l.Roll()) // the syncer will be stuck creating segment 1
	appended := make(chan error, 1)
	go func() {
		big := make([]byte, 1<<20)
		for {
			if _, err := l.Append(big); err != nil {
				appended <- err
				return
			}
		}
	}()
	// Wait until the appender has filled the buffer and waits for room.
	deadline := time.Now().Add(20 * time.Second)
	for full := false; !full; {
		l.mu.Lock()
		full = l.pendingBytes >= maxPending
		l.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the appender never filled the buffer")
		}
		runtime.Gosched()
	}
	close(release)
	select {
	case err := <-appended:
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append: %v, want ENOSPC", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Append still waiting after the disk filled")
	}
}

func TestFailedFsyncFailsTheLog(t *testing.T) {
	broken := errors.New("EIO from the test")
	var fail atomic.Bool
	hook := func(f *os.File) error {
		if fail.Load() {
			return broken
		}
		return fdatasync(f)
	}
	l := openT(t, t.TempDir(), Options{hooks: &hooks{fdatasync: hook}})
	appendN(t, l, 0, 10, 10)
	fail.Store(true)
	_, err := l.Append(record(10))
	mustOK(t, err)
	if err := syncWait(t, l); !errors.Is(err, broken) {
		t.Fatalf("Sync: %v, want the fsync error", err)
	}
	fail.Store(false) // a later fsync that works must not acknowledge anything
	if _, err := l.Append(record(11)); !errors.Is(err, broken) {
		t.Errorf("Append after the failure: %v, want the fsync error", err)
	}
	if err := syncWait(t, l); !errors.Is(err, broken) {
		t.Errorf("Sync after the failure: %v, want the fsync error", err)
	}
}
