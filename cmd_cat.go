package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/zpipes/zpipes/broker"
	"github.com/zpipes/zpipes/internal/gcfloor"
)

// CatCmd streams lines into a pipe (-w) or a pipe's chunks out as lines (-r).
type CatCmd struct {
	Pipe     string  `arg:"" predictor:"pipe" help:"Pipe name."`
	Read     bool    `short:"r" help:"Read: print each chunk on its own line, until stopped."`
	Write    bool    `short:"w" help:"Write: send each stdin line, without its newline, as one chunk."`
	Count    *int    `short:"n" placeholder:"N" help:"With -r: stop after N chunks, taking no more than N from the pipe (0: take none)."`
	Null     bool    `short:"0" help:"Lines end with NUL instead of newline, in both directions."`
	EOF      *string `name:"eof" placeholder:"MARKER" help:"With -w: send MARKER after the last line. With -r: stop at MARKER, without printing it; later chunks stay in the pipe."`
	Progress bool    `short:"p" help:"Show a live count of chunks, bytes and rate on stderr when it is a terminal, and a summary line at the end."`
	Retry    bool    `help:"With -r: when the broker goes away, wait for it to come back and go on reading, instead of failing."`
	Batch    int     `default:"8192" hidden:"" help:"Most chunks per request."`

	delivered int       // chunks printed so far, across reconnections
	progress  *progress // with -p
}

// Help is the detail under the summary in --help and zpipes(1).
func (c *CatCmd) Help() string {
	return `One of -r and -w is required. The pipe is opened for the command's life and
closed after; with -r it is created if needed and waited on. cat -w exits once
the broker has acknowledged every line, and says how many it did if it fails or
is interrupted; a line over the broker's chunk limit stops it before anything
after that line is sent. cat -r stopped by -n, --eof, SIGINT, SIGTERM or a
closed stdout puts every chunk it took and did not print back at the head of
the pipe.`
}

func (c *CatCmd) Validate() error {
	switch {
	case c.Read == c.Write:
		return errors.New("give one of -r (read) and -w (write)")
	case c.Count != nil && *c.Count < 0:
		return errors.New("-n must not be negative")
	case c.Count != nil && c.Write:
		return errors.New("-n goes with -r")
	case c.Retry && c.Write:
		return errors.New("--retry goes with -r")
	case c.Batch < 1 || c.Batch > broker.DefaultLimits.MaxBatch:
		return fmt.Errorf("--batch must be from 1 to %d", broker.DefaultLimits.MaxBatch)
	}
	return nil
}

func (c *CatCmd) Run(a *app) error {
	if c.Count != nil && *c.Count == 0 {
		return nil // like head -n 0: nothing to take
	}
	// The heap of a cat is a few batches, recycled fast: collect seldom.
	gcfloor.Set(16 << 20)
	if c.Progress {
		mode := "-r"
		if c.Write {
			mode = "-w"
		}
		c.progress = startProgress(a.stderr, fmt.Sprintf("cat %s %q", mode, c.Pipe))
		defer c.progress.finish()
	}
	if c.Write {
		return a.withPipe(c.Pipe, func(cl *broker.Client) error {
			return writeStream(a, cl, "cat -w", "line", c.Pipe, broker.WriterOptions{Batch: c.Batch, Acked: c.progress.add},
				func(w *broker.Writer) error {
					err := splitLines(a.stdin, separator(c.Null), w.WriteAll, w.Idle)
					if err == nil && c.EOF != nil {
						err = w.Write([]byte(*c.EOF))
					}
					return err
				})
		})
	}
	opt := broker.ReaderOptions{Batch: c.Batch}
	if c.Count != nil {
		opt.Max = *c.Count
	}
	read := func() error {
		return a.withPipe(c.Pipe, func(cl *broker.Client) error {
			n, err := readStream(a, cl, "cat -r", c.Pipe, opt, separator(c.Null), c.EOF, c.progress)
			c.delivered += n
			opt.Max = max(0, opt.Max-n)
			return err
		})
	}
	if !c.Retry {
		return read()
	}
	backoff := retryMin
	for {
		err := read()
		lost := errors.Is(err, broker.ErrConnLost) || errors.Is(err, broker.ErrNoBroker)
		if !lost || a.ctx.Err() != nil || opt.Max == 0 && c.Count != nil {
			return err
		}
		if backoff == retryMin {
			fmt.Fprintf(a.stderr, "zpipes: %s; reconnecting\n", errLine(err))
		}
		select {
		case <-a.ctx.Done():
			return fmt.Errorf("cat -r %q: interrupted after %d chunks while reconnecting", c.Pipe, c.delivered)
		case <-time.After(backoff):
		}
		if !errors.Is(err, broker.ErrNoBroker) {
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
