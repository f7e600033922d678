package main

import (
	"bufio"
	"errors"
	"io"
	"os"
)

// splitLines reads records ending in sep from r (the last may lack it) and
// hands each to emit, without its separator, as a slice that is valid only
// during the call. When the input has nothing more buffered and the next
// read may wait (r is not a regular file), it calls idle first, so that a
// writer can send what it holds rather than sit on an interactive
// producer's lines. Errors from emit and idle are returned as they are; a
// read error is wrapped in errStdin.
func splitLines(r io.Reader, sep byte, emit func([]byte) error, idle func() error) error {
	br := bufio.NewReaderSize(r, 256<<10)
	waits := true
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			waits = false // a file never makes a read wait: batch freely
		}
	}
	var long []byte // a line longer than the buffer, gathered
	for {
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
		default:
			return errStdin{err}
		}
		line := frag
		if long != nil {
			line = append(long, frag...)
		}
		if err := emit(line); err != nil {
			return err
		}
		long = nil
		if err != nil { // EOF after a last line without separator
			return nil
		}
		if waits && br.Buffered() == 0 {
			if err := idle(); err != nil {
				return err
			}
		}
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
