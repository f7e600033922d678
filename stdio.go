package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/zpipes/zpipes/broker"
)

// splitLines reads records ending in sep from r (the last may lack it) and
// hands them to emit, without their separators, as slices that are valid
// only during the call: every record that is whole in the read buffer in
// one call, so that a writer takes a buffer's lines at once. When the input
// has nothing more buffered and the next read may wait (r is not a regular
// file), it calls idle first, so that a writer can send what it holds
// rather than sit on an interactive producer's lines. Errors from emit and
// idle are returned as they are; a read error is wrapped in errStdin.
func splitLines(r io.Reader, sep byte, emit func([][]byte) error, idle func() error) error {
	br := bufio.NewReaderSize(r, 256<<10)
	waits := true
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			waits = false // a file never makes a read wait: batch freely
		}
	}
	var (
		lines [][]byte
		long  []byte // a line longer than the buffer, gathered
	)
	for {
		used, last := 0, false
		lines = lines[:0]
		if long == nil {
			lines, used = wholeLines(br, sep, lines)
		}
		if len(lines) == 0 {
			// A line not yet whole in the buffer: read until it is.
			frag, err := br.ReadSlice(sep)
			switch {
			case err == nil:
				frag = frag[:len(frag)-1]
			case errors.Is(err, bufio.ErrBufferFull):
				long = append(long, frag...)
				continue
			case errors.Is(err, io.EOF):
				if len(frag) == 0 && long == nil {
					return nil // input ended with a separator, or was empty
				}
				last = true // a last line without separator
			default:
				return errStdin{err}
			}
			if long != nil {
				frag = append(long, frag...)
				long = nil
			}
			lines = append(lines, frag)
		}
		err := emit(lines)
		br.Discard(used)
		if err != nil || last {
			return err
		}
		if waits && br.Buffered() == 0 {
			if err := idle(); err != nil {
				return err
			}
		}
	}
}

// wholeLines appends to lines the records that are whole in br's buffer,
// without reading, and says how many bytes they take with their
// separators; the slices are valid until br is next read or discarded.
func wholeLines(br *bufio.Reader, sep byte, lines [][]byte) ([][]byte, int) {
	buf, _ := br.Peek(br.Buffered())
	used := 0
	for {
		i := bytes.IndexByte(buf[used:], sep)
		if i < 0 {
			return lines, used
		}
		lines = append(lines, buf[used:used+i])
		used += i + 1
	}
}

// errStdin marks a failed read of standard input.
type errStdin struct{ err error }

func (e errStdin) Error() string { return "read stdin: " + e.err.Error() }
func (e errStdin) Unwrap() error { return e.err }

// chunkWriter buffers chunks for standard output, each followed by the
// separator, and after a flush says how many got out whole.
type chunkWriter struct {
	w    io.Writer
	sep  byte
	buf  []byte
	ends []int // where each buffered chunk ends in buf
}

func (o *chunkWriter) add(c []byte) {
	o.buf = append(o.buf, c...)
	o.buf = append(o.buf, o.sep)
	o.ends = append(o.ends, len(o.buf))
}

// full reports whether enough is buffered to be worth a write.
func (o *chunkWriter) full() bool { return len(o.buf) >= 256<<10 }

// flush writes what is buffered. It returns how many chunks were written
// whole; on an error the others are dropped from the buffer, unwritten.
func (o *chunkWriter) flush() (int, error) {
	if len(o.buf) == 0 {
		return 0, nil
	}
	n, err := o.w.Write(o.buf)
	k := len(o.ends)
	if err != nil {
		k = 0
		for k < len(o.ends) && o.ends[k] <= n {
			k++
		}
		err = errStdout{err}
	}
	o.buf, o.ends = o.buf[:0], o.ends[:0]
	return k, err
}

// writeStream runs feed, which writes chunks to a Writer on the pipe, and
// reports how many the pipe received when anything stops it short; unit
// names what a chunk was made from (a line, an argument). feed
// runs in a goroutine of its own, so a signal is heard even while it waits
// on its input.
func writeStream(a *app, cl *broker.Client, what, unit, pipe string, opt broker.WriterOptions, feed func(*broker.Writer) error) error {
	w, err := cl.NewWriter(a.ctx, pipe, opt)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- feed(w) }()
	var ferr error
	select {
	case ferr = <-done:
	case <-a.ctx.Done():
	}
	n, err := w.Close()
	var big *broker.ChunkTooLargeError
	switch {
	case a.ctx.Err() != nil:
		return fmt.Errorf("%s %q: interrupted: %d chunks written", what, pipe, n)
	case errors.As(err, &big):
		return fmt.Errorf("%s %q: %s %d has %d bytes, over the broker's chunk limit of %d (%d chunks written)",
			what, pipe, unit, big.Index, big.Size, big.Limit, n)
	case err != nil:
		return fmt.Errorf("%w (%d chunks written)", err, n)
	case ferr != nil:
		return fmt.Errorf("%w (%d chunks written)", ferr, n)
	}
	return nil
}

// readStream prints chunks from the pipe, each followed by sep, until the
// Reader's Max, the marker eof (taken, not printed), a signal, a closed
// stdout or a failure stops it. Output is buffered and flushed whenever the
// pipe goes idle. It returns how many chunks it printed; every chunk it
// took and did not print goes back to the head of the pipe.
func readStream(a *app, cl *broker.Client, what, pipe string, opt broker.ReaderOptions, sep byte, eof *string, prog *progress) (printed int, err error) {
	r := cl.NewReader(a.ctx, pipe, opt)
	out := &chunkWriter{w: a.stdout, sep: sep}
	defer func() {
		cerr := r.Close()
		if !errors.Is(err, broker.ErrConnLost) { // the same loss, said once
			err = errors.Join(err, cerr)
		}
	}()
	flush := func() error {
		n, err := out.flush()
		r.Consume(n)
		printed += n
		return err
	}
	for {
		if r.Buffered() == 0 {
			if err := flush(); err != nil {
				return printed, err
			}
		}
		chunks, err := r.NextAll()
		switch {
		case err == io.EOF:
			return printed, flush()
		case a.ctx.Err() != nil:
			return printed, fmt.Errorf("%s %q: interrupted after %d chunks", what, pipe, printed)
		case err != nil:
			return printed, err
		}
		for _, chunk := range chunks {
			if eof != nil && bytes.Equal(chunk, []byte(*eof)) {
				// The chunks after the marker are handed out and not
				// consumed: Close gives them back.
				err := flush()
				if err == nil {
					r.Consume(1) // the marker is taken, not printed
				}
				return printed, err
			}
			prog.add(1, len(chunk))
			out.add(chunk)
			if out.full() {
				if err := flush(); err != nil {
					return printed, err
				}
			}
		}
	}
}
