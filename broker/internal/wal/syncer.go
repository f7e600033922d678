package wal

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// run is the syncer: the one goroutine that writes and fsyncs segment files
// and calls Sync callbacks. Each round it takes everything pending at once —
// all the bytes appended and all the Sync requests made since the last round
// — so requests that arrive during an fsync are covered together by the
// next one: that is the group commit. With SyncEvery set, rounds that only
// write (the appender's buffer grew past writeChunk) alternate with periodic
// ones that also fsync.
func (l *Log) run() {
	defer close(l.exited)
	var tick <-chan time.Time
	if l.opt.SyncEvery > 0 {
		t := time.NewTicker(l.opt.SyncEvery)
		defer t.Stop()
		tick = t.C
	}
	var waiting []waiter
	var spare []piece
	for {
		periodic := false
		select {
		case <-l.wake:
		case <-tick:
			periodic = true
		}
		l.mu.Lock()
		pieces := l.pending
		l.pending, spare = spare[:0], nil
		l.pendingBytes = 0
		waiting = append(waiting, l.waiters...)
		clear(l.waiters)
		l.waiters = l.waiters[:0]
		closing, err := l.closing, l.err
		l.mu.Unlock()
		l.space.Broadcast()

		if err == nil {
			err = l.write(pieces)
		}
		spare = pieces
		if err == nil && l.written > l.synced {
			asked := len(waiting) > 0 && waiting[len(waiting)-1].target > l.synced
			if closing || periodic || (asked && l.opt.SyncEvery == 0) {
				err = l.sync()
			}
		}
		if err != nil {
			err = l.fail(err)
		}
		n := 0
		for ; n < len(waiting) && (err != nil || waiting[n].target <= l.synced); n++ {
			waiting[n].done(err)
		}
		left := copy(waiting, waiting[n:])
		clear(waiting[left:])
		waiting = waiting[:left]
		if closing {
			return
		}
	}
}

// write writes pieces to their segments, creating each new segment after
// making the one before it durable: an acknowledged record must never sit
// after a segment that could be lost.
func (l *Log) write(pieces []piece) error {
	for i := range pieces {
		p := &pieces[i]
		if p.seg != l.fseg {
			if err := l.syncFile(); err != nil {
				return err
			}
			if err := l.f.Close(); err != nil {
				return fmt.Errorf("close %s: %w", segName(l.fseg), err)
			}
			f, err := l.hooks.create(segPath(l.dir, p.seg))
			if err != nil {
				return fmt.Errorf("create %s: %w", segName(p.seg), err)
			}
			l.f, l.fseg, l.foff = f, p.seg, 0
			l.dirDirty = true
		}
		off := l.foff
		n, err := l.f.WriteAt(p.data, off)
		l.foff += int64(n)
		l.dirty = true
		if err != nil {
			return fmt.Errorf("write %s at offset %d: %w", segName(l.fseg), off, err)
		}
		l.written += int64(len(p.data))
	}
	// Hand the buffers back for reuse, but not those a huge record needed.
	l.mu.Lock()
	for i := range pieces {
		if b := pieces[i].data; len(l.free) < maxFree && cap(b) == writeChunk {
			l.free = append(l.free, b[:0])
		}
		pieces[i].data = nil
	}
	l.writtenTo = Pos{l.fseg, l.foff}
	l.mu.Unlock()
	l.wrote.Broadcast()
	return nil
}

// sync makes everything written durable.
func (l *Log) sync() error {
	if err := l.syncFile(); err != nil {
		return err
	}
	if l.dirDirty {
		if err := l.dirf.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", l.dir, err)
		}
		l.dirDirty = false
	}
	l.synced = l.written
	l.mu.Lock()
	l.durable = Pos{l.fseg, l.foff}
	l.mu.Unlock()
	return nil
}

func (l *Log) syncFile() error {
	if !l.dirty {
		return nil
	}
	if err := l.hooks.fdatasync(l.f); err != nil {
		return fmt.Errorf("fdatasync %s: %w", segName(l.fseg), err)
	}
	l.dirty = false
	return nil
}

// fail records the error that stops the log. After a failed write or fsync
// nothing says which of the buffered bytes reached the disk (a failed fsync
// may even have dropped dirty pages), so the log accepts nothing more rather
// than acknowledge what may not be stored. fail returns the error every
// later request gets.
func (l *Log) fail(err error) error {
	l.mu.Lock()
	if l.err == nil {
		l.err = fmt.Errorf("log %q failed: %w", l.dir, err)
	}
	err = l.err
	clear(l.pending)
	l.pending = l.pending[:0]
	l.pendingBytes = 0
	l.mu.Unlock()
	l.space.Broadcast()
	l.wrote.Broadcast()
	return err
}

// fdatasync flushes a file's data and the metadata needed to read it back
// (its size), but not its times: one disk flush instead of two on most
// filesystems.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// createSegment creates a new segment file; one that exists already is an
// error, never overwritten.
func createSegment(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}
