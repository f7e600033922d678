package wal

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Errors a caller tells apart with errors.Is.
var (
	ErrLocked   = errors.New("locked")
	ErrVersion  = errors.New("unsupported format version")
	ErrClosed   = errors.New("log closed")
	ErrTooLarge = errors.New("record too large")
)

// Options tune a Log. The zero value is usable.
type Options struct {
	// SegmentBytes is the size past which appends go to a new segment file;
	// 0 means 64 MiB. A segment holds at least one record whatever its size.
	SegmentBytes int64

	// SyncEvery is 0 for a log where every Sync request is made durable by
	// an fsync of its own or one shared with the requests made meanwhile
	// (group commit). A positive SyncEvery fsyncs at most this often, as
	// Redis's "appendfsync everysec" does: Sync callbacks then fire after
	// the next periodic fsync, and a crash loses at most the last SyncEvery
	// (plus one fsync's duration) of acknowledged-to-the-log appends — but
	// nothing whose Sync callback has fired.
	SyncEvery time.Duration

	hooks *hooks // tests only
}

// hooks replace the log's system calls in tests.
type hooks struct {
	fdatasync func(*os.File) error                // a segment's data
	create    func(name string) (*os.File, error) // a new segment file
}

// Recovery is what Open found. Records and Segments are what was kept; the
// rest describes what was dropped at the first torn or corrupt record, with
// Reason empty if nothing was.
type Recovery struct {
	Records        int    // valid records kept
	Segments       int    // segment files kept
	DroppedBytes   int64  // bytes cut from the damaged segment and in the segments after it
	DroppedRecords int    // a best estimate: records framed by their length fields in what was dropped
	Reason         string // where and why scanning stopped, e.g. "0000000000000002.wal: offset 4096: checksum mismatch"
}

// Pos is the position of a record: its segment's number and its byte
// offset in that segment's file.
type Pos struct {
	Segment uint64
	Offset  int64
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", segName(p.Segment), p.Offset) }

const (
	defaultSegmentBytes = 64 << 20
	// writeChunk is how much Append buffers before it asks the syncer to
	// write it out even though nobody asked for a Sync.
	writeChunk = 1 << 20
	// maxPending is how much Append buffers before it waits for the syncer:
	// the bound on memory when appends outrun the disk.
	maxPending = 16 << 20
	// maxFree is how many written buffers are kept for reuse.
	maxFree = 8
)

// Log is an append-only log of records in segment files in one directory.
// Append, Sync, Roll, Mark, DropBefore, Size and Replay are meant to be
// called from one goroutine (the broker's core); a single background
// goroutine, the syncer, writes and fsyncs the files and calls Sync
// callbacks.
type Log struct {
	dir   string
	opt   Options
	hooks hooks
	lock  *os.File // holds the flock on LOCK
	dirf  *os.File // for fsyncs of the directory
	rec   Recovery

	wake   chan struct{} // asks the syncer to look at the pending state
	exited chan struct{} // closed when the syncer returns

	closeOnce sync.Once
	closeErr  error

	mu    sync.Mutex
	space sync.Cond // broadcast when the syncer takes pending bytes or the log fails
	wrote sync.Cond // broadcast when the syncer has written, or the log fails or closes
	// The appender's state, under mu.
	segs         []segInfo // every segment, oldest first; records go to the last
	size         int64     // bytes in all segments, buffered ones included
	pending      []piece   // appended bytes the syncer has not taken yet, in order
	pendingBytes int
	appended     int64    // bytes ever put in pending since Open: log sequence numbers
	waiters      []waiter // Sync requests the syncer has not taken yet
	free         [][]byte // buffers the syncer has written, for reuse
	durable      Pos      // where the last fsync left the log
	writtenTo    Pos      // where the last write left the log: what ReadRange may read
	readers      map[uint64]*os.File
	err          error // the first write or fsync error: the log has failed
	closing      bool
	appendedAny  bool

	// The syncer's own state.
	f        *os.File // the segment being written
	fseg     uint64
	foff     int64
	dirty    bool  // f has writes not yet fsynced
	dirDirty bool  // a segment was created since the directory was fsynced
	written  int64 // sequence number up to which pending bytes are written
	synced   int64 // sequence number up to which they are durable
}

type segInfo struct {
	num  uint64
	size int64
}

// piece is buffered bytes for one segment; the first piece of a segment
// starts with its header and makes the syncer create the file.
type piece struct {
	seg  uint64
	data []byte
}

type waiter struct {
	target int64 // durable once synced reaches this
	done   func(error)
}

// Open opens the log in dir, creating it if dir holds none. dir must
// exist. Open takes an exclusive flock on dir/LOCK: a second Open of the
// same dir, from this process or another, fails at once with ErrLocked.
// It checks dir/VERSION (writing it for a new log) and refuses another
// format with ErrVersion. Then it verifies every record's checksum: at the
// first torn or corrupt record it keeps the valid prefix, truncating that
// segment and removing the segments after it, and says what it dropped in
// Recovered.
func Open(dir string, opt Options) (*Log, error) {
	wrap := func(err error) error { return fmt.Errorf("open log %q: %w", dir, err) }
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = defaultSegmentBytes
	}
	l := &Log{dir: dir, opt: opt, wake: make(chan struct{}, 1), exited: make(chan struct{})}
	l.space.L = &l.mu
	l.wrote.L = &l.mu
	l.hooks = hooks{fdatasync: fdatasync, create: createSegment}
	if opt.hooks != nil {
		if opt.hooks.fdatasync != nil {
			l.hooks.fdatasync = opt.hooks.fdatasync
		}
		if opt.hooks.create != nil {
			l.hooks.create = opt.hooks.create
		}
	}
	if err := checkDir(dir); err != nil {
		return nil, wrap(err)
	}
	var err error
	if l.lock, err = lockDir(dir); err != nil {
		return nil, wrap(err)
	}
	if l.dirf, err = os.Open(dir); err == nil {
		if err = checkVersion(dir, l.dirf); err == nil {
			err = l.recover()
		}
	}
	if err != nil {
		l.closeFiles()
		return nil, wrap(err)
	}
	go l.run()
	return l, nil
}

// Recovered reports what Open found and dropped.
func (l *Log) Recovered() Recovery { return l.rec }

// usable is nil, or why the log takes no more requests. Called under mu.
func (l *Log) usable() error {
	if l.closing {
		return ErrClosed
	}
	return l.err
}

// Append adds records at the end of the log and returns the position of
// the first. The records are copied into a buffer that the syncer writes
// out; they are durable only once a Sync requested after this Append has
// completed. Append waits only when the syncer is more than maxPending
// bytes behind. After a write or fsync error every Append returns that
// error.
func (l *Log) Append(recs ...[]byte) (Pos, error) {
	for _, r := range recs {
		if len(r) > MaxRecordBytes {
			return Pos{}, fmt.Errorf("append a record of %d bytes: %w (the limit is %d)", len(r), ErrTooLarge, MaxRecordBytes)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return Pos{}, err
	}
	l.appendedAny = true
	cur := &l.segs[len(l.segs)-1]
	first := Pos{cur.num, cur.size}
	for i, r := range recs {
		n := int64(recordHeader + len(r))
		if cur.size > headerSize && cur.size+n > l.opt.SegmentBytes {
			l.roll()
			cur = &l.segs[len(l.segs)-1]
			if i == 0 {
				first = Pos{cur.num, cur.size}
			}
		}
		p := l.tail(cur.num, int(n))
		p.data = appendRecord(p.data, r)
		cur.size += n
		l.size += n
		l.appended += n
		l.pendingBytes += int(n)
	}
	if l.pendingBytes >= writeChunk {
		l.signal()
	}
	for l.pendingBytes >= maxPending && l.err == nil && !l.closing {
		l.space.Wait()
	}
	return first, nil
}

// tail is the pending piece that n bytes for segment num go to. A full
// buffer is followed by a new one rather than grown, so that no appended
// byte is copied twice.
func (l *Log) tail(num uint64, n int) *piece {
	if i := len(l.pending) - 1; i >= 0 && l.pending[i].seg == num && len(l.pending[i].data)+n <= cap(l.pending[i].data) {
		return &l.pending[i]
	}
	var b []byte
	if i := len(l.free) - 1; i >= 0 && n <= cap(l.free[i]) {
		b, l.free = l.free[i], l.free[:i]
	} else {
		b = make([]byte, 0, max(n, writeChunk))
	}
	l.pending = append(l.pending, piece{seg: num, data: b})
	return &l.pending[len(l.pending)-1]
}

// roll starts the next segment. Called under mu.
func (l *Log) roll() {
	num := l.segs[len(l.segs)-1].num + 1
	l.segs = append(l.segs, segInfo{num, headerSize})
	p := l.tail(num, headerSize)
	p.data = appendHeader(p.data, num)
	l.size += headerSize
	l.appended += headerSize
	l.pendingBytes += headerSize
}

// Roll makes the next Append start a new segment, so that a checkpoint can
// begin at a segment boundary and DropBefore can later remove everything
// before it. It does nothing if the current segment has no records yet.
func (l *Log) Roll() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if l.segs[len(l.segs)-1].size > headerSize {
		l.roll()
	}
	return nil
}

// Sync asks that everything appended so far be made durable, and calls done
// from the syncer goroutine once it is, with nil, or with the error that
// failed the log. Sync requests made while an fsync is in progress share
// the next one. done callbacks are called in the order of the Sync calls;
// they must not block or call Close. After Close, done is called at once
// with ErrClosed.
func (l *Log) Sync(done func(error)) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		done(ErrClosed)
		return
	}
	l.waiters = append(l.waiters, waiter{target: l.appended, done: done})
	now := l.opt.SyncEvery == 0 || l.err != nil
	l.mu.Unlock()
	if now {
		l.signal()
	}
}

func (l *Log) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Mark returns the position the next Append will give its first record,
// unless that record makes the segment roll.
func (l *Log) Mark() Pos {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.segs[len(l.segs)-1]
	return Pos{cur.num, cur.size}
}

// DropBefore removes the segment files that lie entirely before pos, oldest
// first. It is for after a checkpoint that starts at pos is durable, and it
// refuses a pos past what has been fsynced, since removing those segments
// could leave nothing to replay.
func (l *Log) DropBefore(pos Pos) error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return ErrClosed
	}
	if pos.Segment > l.durable.Segment {
		d := l.durable
		l.mu.Unlock()
		return fmt.Errorf("drop before %v: only %v is durable; Sync first", pos, d)
	}
	var gone []segInfo
	for len(l.segs) > 1 && l.segs[0].num < pos.Segment {
		gone = append(gone, l.segs[0])
		l.size -= l.segs[0].size
		l.segs = l.segs[1:]
	}
	l.closeReaders(l.segs[0].num)
	l.mu.Unlock()
	for _, s := range gone {
		if err := os.Remove(segPath(l.dir, s.num)); err != nil {
			return fmt.Errorf("drop before %v: %w", pos, err)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := l.dirf.Sync(); err != nil {
		return fmt.Errorf("drop before %v: %w", pos, err)
	}
	return nil
}

// Size is the bytes in all segments, those still buffered included.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// Close makes everything appended durable, calls every pending Sync
// callback, stops the syncer and releases the lock. It returns the error
// that failed the log, if any. Close is idempotent.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		l.space.Broadcast()
		l.wrote.Broadcast()
		l.signal()
		<-l.exited
		l.mu.Lock()
		l.closeErr = l.err
		l.closeReaders(^uint64(0))
		l.mu.Unlock()
		if err := l.f.Close(); l.closeErr == nil {
			l.closeErr = err
		}
		l.closeFiles()
	})
	return l.closeErr
}

// closeFiles closes the directory and releases the lock.
func (l *Log) closeFiles() {
	if l.dirf != nil {
		l.dirf.Close()
	}
	if l.lock != nil {
		l.lock.Close()
	}
}
