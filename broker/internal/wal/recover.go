package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// recover scans the segments, cuts the log at the first damage, and opens
// the last segment for appending.
func (l *Log) recover() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	var nums []uint64
	for _, e := range ents {
		if n, ok := parseSegName(e.Name()); ok {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	// A gap cannot come from a crash: segments are created one after
	// another and removed oldest first. Guessing which side of it to keep
	// could throw away the newest checkpoint, so refuse.
	for i := 1; i < len(nums); i++ {
		if nums[i] != nums[i-1]+1 {
			return fmt.Errorf("segment %s follows %s: the segments between them are missing",
				segName(nums[i]), segName(nums[i-1]))
		}
	}
	for i, num := range nums {
		d, err := l.scan(num)
		if err != nil {
			return err
		}
		if d != nil {
			if err := l.dropFrom(num, d, nums[i+1:]); err != nil {
				return err
			}
			break
		}
	}
	if len(l.segs) == 0 {
		num := uint64(0)
		if len(nums) > 0 {
			num = nums[0] // every segment was dropped; start again where they started
		}
		if err := l.createFirst(num); err != nil {
			return err
		}
	}
	last := l.segs[len(l.segs)-1]
	l.f, err = os.OpenFile(segPath(l.dir, last.num), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	l.fseg, l.foff = last.num, last.size
	l.durable = Pos{last.num, last.size}
	l.writtenTo = l.durable
	l.rec.Segments = len(l.segs)
	for _, s := range l.segs {
		l.size += s.size
	}
	return nil
}

// scan checks one segment; a sound one joins l.segs. It returns the damage
// that ends the valid prefix, if it is in this segment.
func (l *Log) scan(num uint64) (*damage, error) {
	f, err := os.Open(segPath(l.dir, num))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var d *damage
	err = checkHeader(io.NewSectionReader(f, 0, headerSize), num)
	if errors.As(err, &d) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	rr := newRecordReader(f, st.Size())
	for {
		_, err := rr.next()
		if err == io.EOF {
			break
		}
		if errors.As(err, &d) {
			return d, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", segName(num), err)
		}
		l.rec.Records++
	}
	l.segs = append(l.segs, segInfo{num, st.Size()})
	return nil, nil
}

// dropFrom cuts segment num at the damage d and removes the segments in
// later, counting what goes in l.rec.
func (l *Log) dropFrom(num uint64, d *damage, later []uint64) error {
	l.rec.Reason = fmt.Sprintf("%s: %v", segName(num), d)
	name := segPath(l.dir, num)
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err == nil {
		l.rec.DroppedBytes += st.Size() - d.off
		l.rec.DroppedRecords += frames(f, max(d.off, headerSize), st.Size())
		if d.off == 0 { // the header itself: the file goes
			err = os.Remove(name)
		} else if err = f.Truncate(d.off); err == nil {
			err = fdatasync(f)
			l.segs = append(l.segs, segInfo{num, d.off})
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cut %s at offset %d: %w", segName(num), d.off, err)
	}
	for _, n := range later {
		name := segPath(l.dir, n)
		if f, err := os.Open(name); err == nil {
			if st, err := f.Stat(); err == nil {
				l.rec.DroppedBytes += st.Size()
				l.rec.DroppedRecords += frames(f, headerSize, st.Size())
			}
			f.Close()
		}
		if err := os.Remove(name); err != nil {
			return err
		}
	}
	return l.dirf.Sync()
}

// createFirst makes the first segment of an empty log durable before Open
// returns, so that the syncer always has a file to write.
func (l *Log) createFirst(num uint64) error {
	f, err := l.hooks.create(segPath(l.dir, num))
	if err != nil {
		return err
	}
	_, err = f.Write(appendHeader(nil, num))
	if err == nil {
		err = l.hooks.fdatasync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.dirf.Sync()
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", segName(num), err)
	}
	l.segs = append(l.segs, segInfo{num, headerSize})
	return nil
}

// Replay calls fn for every record, from the first segment on, in order.
// rec is valid only during the call. It stops at fn's first error and
// returns it. Replay is for rebuilding state at start, so it must come
// before the first Append.
func (l *Log) Replay(fn func(pos Pos, rec []byte) error) error {
	l.mu.Lock()
	segs, err := slices.Clone(l.segs), l.usable()
	if err == nil && l.appendedAny {
		err = errors.New("replay after append")
	}
	l.mu.Unlock()
	if err != nil {
		return err
	}
	for _, s := range segs {
		if err := l.replaySegment(s, fn); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) replaySegment(s segInfo, fn func(Pos, []byte) error) error {
	f, err := os.Open(segPath(l.dir, s.num))
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	rr := newRecordReader(f, s.size)
	for {
		off := rr.off
		rec, err := rr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil { // changed on disk since Open checked it
			return fmt.Errorf("replay %s: %w", segName(s.num), err)
		}
		if err := fn(Pos{s.num, off}, rec); err != nil {
			return err
		}
	}
}
