package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/zpipes/zpipes/broker"
)

// CatCmd streams lines into a pipe (-w) or a pipe's chunks out as lines (-r).
type CatCmd struct {
	Pipe     string  `arg:"" help:"Pipe name."`
	Read     bool    `short:"r" help:"Read: print each chunk on its own line, until stopped."`
	Write    bool    `short:"w" help:"Write: send each stdin line, without its newline, as one chunk."`
	Count    int     `short:"n" placeholder:"N" help:"With -r: stop after N chunks, taking no more than N from the pipe."`
	Null     bool    `short:"0" help:"Lines end with NUL instead of newline, in both directions."`
	EOF      *string `name:"eof" placeholder:"MARKER" help:"With -w: send MARKER after the last line. With -r: stop at MARKER, without printing it; later chunks stay in the pipe."`
	Progress bool    `short:"p" help:"Show a live count of chunks, bytes and rate on stderr when it is a terminal, and a summary line at the end."`
	Retry    bool    `help:"With -r: when the broker goes away, wait for it to come back and go on reading, instead of failing."`
	Batch    int     `default:"8192" hidden:"" help:"Most chunks per request."`

	delivered int       // chunks printed so far, across reconnections
	progress  *progress // with -p
}

// Batching bounds: a batch goes out when it holds Batch chunks or
// batchBytes bytes, or as soon as stdin has nothing more buffered, so an
// interactive producer's lines are not held back.
const (
	batchBytes = 1024 << 10
	window     = 4 // batches in flight while writing
	readAhead  = 2 // MREADs in flight while reading
)

// Help is the detail under the summary in --help and zpipes(1).
func (c *CatCmd) Help() string {
	return `One of -r and -w is required. The pipe is opened for the command's life and
closed after; with -r it is created if needed and waited on. cat -w exits once
the broker has acknowledged every line; cat -r stopped by -n, --eof, SIGINT,
SIGTERM or a closed stdout puts every chunk it took and did not print back at
the head of the pipe.`
}

func (c *CatCmd) Validate() error {
	switch {
	case c.Read == c.Write:
		return errors.New("give one of -r (read) and -w (write)")
	case c.Count < 0:
		return errors.New("-n must not be negative")
	case c.Count > 0 && c.Write:
		return errors.New("-n goes with -r")
	case c.Retry && c.Write:
		return errors.New("--retry goes with -r")
	case c.Batch < 1 || c.Batch > broker.DefaultLimits.MaxBatch:
		return fmt.Errorf("--batch must be from 1 to %d", broker.DefaultLimits.MaxBatch)
	}
	return nil
}

func (c *CatCmd) Run(a *app) error {
	// The heap of a cat is a few batches, recycled fast: collect seldom.
	debug.SetGCPercent(400)
	if c.Progress {
		mode := "-r"
		if c.Write {
			mode = "-w"
		}
		c.progress = startProgress(a.stderr, fmt.Sprintf("cat %s %q", mode, c.Pipe))
		defer c.progress.finish()
	}
	if c.Write {
		return a.withPipe(c.Pipe, func(cl *broker.Client) error { return c.write(a, cl) })
	}
	read := func() error {
		return a.withPipe(c.Pipe, func(cl *broker.Client) error { return c.read(a, cl) })
	}
	if !c.Retry {
		return read()
	}
	backoff := retryMin
	for {
		err := read()
		lost := errors.Is(err, broker.ErrConnLost) || errors.Is(err, broker.ErrNoBroker)
		if !lost || a.ctx.Err() != nil {
			return err
		}
		if backoff == retryMin {
			fmt.Fprintf(a.stderr, "zpipes: %v; reconnecting\n", err)
		}
		select {
		case <-a.ctx.Done():
			return fmt.Errorf("cat -r %q: interrupted after %d chunks while reconnecting", c.Pipe, c.delivered)
		case <-time.After(backoff):
		}
		if err == nil || !errors.Is(err, broker.ErrNoBroker) {
			backoff = retryMin // connected, then lost again: start over
		}
		backoff = min(2*backoff, retryMax)
	}
}

// Reconnection backoff of cat -r --retry.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
)

type batch struct {
	chunks [][]byte
	buf    []byte // the chunks' memory, to reuse once they are sent
	err    error  // the read error that ended stdin, other than EOF
}

// write sends stdin's lines, pipelined, and returns once every chunk sent
// is acknowledged: exiting earlier could drop what is still unsent.
func (c *CatCmd) write(a *app, cl *broker.Client) error {
	batches := make(chan batch, window)
	// Sent batches' buffers go back to the reader: Client.Go has written
	// the chunks to the socket by the time it returns.
	free := make(chan []byte, window+1)
	go readBatches(a.stdin, separator(c.Null), c.Batch, batches, free)

	var (
		inflight []*broker.Call
		counts   []int // chunks in each write in flight
		sizes    []int // and their bytes
		written  int
		readErr  error
	)
	// settle accounts for the oldest write in flight, answered by call.
	settle := func(call *broker.Call) error {
		c.progress.add(counts[0], sizes[0])
		inflight, written, counts, sizes = inflight[1:], written+counts[0], counts[1:], sizes[1:]
		if call.Err != nil {
			return fmt.Errorf("write %q: %w (%d chunks written)", c.Pipe, call.Err, written)
		}
		return nil
	}
	wait := func() error { return settle(<-inflight[0].Done) }
	send := func(chunks [][]byte) {
		inflight = append(inflight, cl.GoWrite(c.Pipe, chunks...))
		counts = append(counts, len(chunks))
		size := 0
		for _, ch := range chunks {
			size += len(ch)
		}
		sizes = append(sizes, size)
	}
	interrupted := false
loop:
	for {
		var oldest <-chan *broker.Call
		if len(inflight) > 0 {
			oldest = inflight[0].Done
		}
		select {
		case b, ok := <-batches:
			if !ok {
				break loop
			}
			if b.err != nil {
				readErr = b.err
				break loop
			}
			if len(inflight) == window {
				if err := wait(); err != nil {
					return err
				}
			}
			send(b.chunks)
			select {
			case free <- b.buf:
			default:
			}
		case call := <-oldest:
			if err := settle(call); err != nil {
				return err
			}
		case <-a.ctx.Done():
			interrupted = true
			break loop
		}
	}
	if !interrupted && readErr == nil && c.EOF != nil {
		send([][]byte{[]byte(*c.EOF)})
	}
	for len(inflight) > 0 {
		if err := wait(); err != nil {
			return err
		}
	}
	switch {
	case readErr != nil:
		return fmt.Errorf("read stdin: %w (%d chunks written)", readErr, written)
	case interrupted:
		return fmt.Errorf("cat -w %q: interrupted: %d chunks written", c.Pipe, written)
	}
	return nil
}

// readBatches splits r into lines, of any length, and sends them in
// batches. Each batch's lines share one buffer.
func readBatches(r io.Reader, sep byte, max int, out chan<- batch, free <-chan []byte) {
	defer close(out)
	br := bufio.NewReaderSize(r, 256<<10)
	buf := make([]byte, 0, batchBytes)
	var ends []int
	lineStart := 0 // where the line being read begins in buf
	emit := func() {
		if len(ends) == 0 {
			return
		}
		chunks := make([][]byte, len(ends))
		start := 0
		for i, end := range ends {
			chunks[i] = buf[start:end:end]
			start = end
		}
		out <- batch{chunks: chunks, buf: buf}
		select {
		case buf = <-free:
			buf = buf[:0]
		default:
			buf = make([]byte, 0, batchBytes)
		}
		ends, lineStart = ends[:0], 0
	}
	for {
		frag, err := br.ReadSlice(sep)
		more := errors.Is(err, bufio.ErrBufferFull) // the line goes on
		atEOF := errors.Is(err, io.EOF)
		switch {
		case err == nil:
			frag = frag[:len(frag)-1]
		case more:
		case atEOF:
			if len(frag) == 0 && len(buf) == lineStart {
				emit() // input ended with a separator, or was empty
				return
			}
		default:
			emit()
			out <- batch{err: err}
			return
		}
		if len(ends) > 0 && len(buf)+len(frag) > batchBytes {
			// Keep batches bounded: send the complete lines, and carry
			// the line begun so far over to the next batch.
			partial := bytes.Clone(buf[lineStart:])
			buf = buf[:lineStart]
			emit()
			buf = append(buf, partial...)
		}
		buf = append(buf, frag...)
		if more {
			continue
		}
		ends = append(ends, len(buf))
		lineStart = len(buf)
		if len(ends) >= max || len(buf) >= batchBytes || br.Buffered() == 0 || atEOF {
			emit()
		}
		if atEOF {
			return
		}
	}
}

// read prints chunks, with MREADs pipelined, until -n, --eof, a signal, a
// closed stdout or a failure stops it. Whatever it took from the pipe and
// did not write to stdout goes back to the head of the pipe, in order.
func (c *CatCmd) read(a *app, cl *broker.Client) error {
	out := &chunkWriter{w: a.stdout, sep: separator(c.Null)}
	var (
		calls     []*broker.Call
		asked     []int
		requested int      // chunks asked for by calls in flight
		leftover  [][]byte // taken but not to be printed
		err       error
	)
	for {
		for len(calls) < readAhead {
			n := c.Batch
			if c.Count > 0 {
				n = min(n, c.Count-c.delivered-requested)
			}
			if n <= 0 {
				break
			}
			calls = append(calls, cl.GoReadBatch(c.Pipe, n))
			asked = append(asked, n)
			requested += n
		}
		if len(calls) == 0 {
			break // -n reached
		}
		head := calls[0]
		select {
		case <-head.Done:
		default:
			// The pipe is idle: let the consumer see what we have.
			if err = out.flush(); err != nil {
				break
			}
			select {
			case <-head.Done:
			case <-a.ctx.Done():
				err = fmt.Errorf("cat -r %q: interrupted after %d chunks", c.Pipe, c.delivered)
			}
		}
		if err != nil {
			break
		}
		calls, requested, asked = calls[1:], requested-asked[0], asked[1:]
		if head.Err != nil {
			err = fmt.Errorf("read %q: %w", c.Pipe, head.Err)
			break
		}
		stop := false
		for i, chunk := range head.Reply {
			if c.EOF != nil && bytes.Equal(chunk, []byte(*c.EOF)) {
				leftover, stop = head.Reply[i+1:], true
				break
			}
			c.delivered++
			c.progress.add(1, len(chunk))
			out.add(chunk)
		}
		if err = out.flushIfFull(); err != nil || stop {
			break
		}
	}
	if err == nil {
		err = out.flush()
	}
	// Unprinted chunks were taken first, then the rest of the batch that
	// held the marker, then whatever the reads in flight bring.
	leftover = append(out.unwritten(), leftover...)
	if len(calls) > 0 || len(leftover) > 0 {
		err = errors.Join(err, cl.Reclaim(c.Pipe, leftover, calls...))
	}
	return err
}

// chunkWriter buffers chunks for stdout and knows, after a failed write,
// which chunks did not get out.
type chunkWriter struct {
	w      io.Writer
	sep    byte
	buf    []byte
	ends   []int
	chunks [][]byte
}

func (o *chunkWriter) add(c []byte) {
	o.buf = append(o.buf, c...)
	o.buf = append(o.buf, o.sep)
	o.ends = append(o.ends, len(o.buf))
	o.chunks = append(o.chunks, c)
}

func (o *chunkWriter) flushIfFull() error {
	if len(o.buf) < 256<<10 {
		return nil
	}
	return o.flush()
}

func (o *chunkWriter) flush() error {
	if len(o.buf) == 0 {
		return nil
	}
	n, err := o.w.Write(o.buf)
	if err != nil {
		// Chunks not written in full are kept for unwritten.
		i := 0
		for i < len(o.ends) && o.ends[i] <= n {
			i++
		}
		o.chunks, o.ends, o.buf = o.chunks[i:], nil, nil
		return errStdout{err}
	}
	o.buf, o.ends, o.chunks = o.buf[:0], o.ends[:0], o.chunks[:0]
	return nil
}

// unwritten returns the chunks added and not written.
func (o *chunkWriter) unwritten() [][]byte { return o.chunks }

// progress counts what a cat moved. On a terminal it redraws one status
// line on stderr four times a second; finish prints a summary line. A nil
// *progress counts nothing, so callers need not check for -p.
type progress struct {
	what          string
	w             *os.File
	live          bool
	start         time.Time
	chunks, bytes atomic.Int64
	stop, done    chan struct{}
}

func startProgress(w *os.File, what string) *progress {
	p := &progress{what: what, w: w, live: isatty.IsTerminal(w.Fd()), start: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *progress) add(chunks, bytes int) {
	if p != nil {
		p.chunks.Add(int64(chunks))
		p.bytes.Add(int64(bytes))
	}
}

func (p *progress) run() {
	defer close(p.done)
	if !p.live {
		<-p.stop
		return
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last, lastAt := int64(0), p.start
	for {
		select {
		case <-p.stop:
			fmt.Fprint(p.w, "\r\x1b[K") // clear the live line
			return
		case now := <-t.C:
			n := p.chunks.Load()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			fmt.Fprintf(p.w, "\r\x1b[K%s chunks  %s  %s chunks/s", count(n), size(p.bytes.Load()), count(int64(rate)))
		}
	}
}

func (p *progress) finish() {
	close(p.stop)
	<-p.done
	d := time.Since(p.start)
	n, b := p.chunks.Load(), p.bytes.Load()
	fmt.Fprintf(p.w, "zpipes: %s: %s chunks, %s in %s (%s chunks/s)\n",
		p.what, count(n), size(b), d.Round(time.Millisecond), count(int64(float64(n)/d.Seconds())))
}

// count formats n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// size formats a byte count in powers of 1024.
func size(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
