package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/zpipes/zpipes/broker"
)

// ReadCmd reads chunks one READ at a time, so it never takes more than it
// prints.
type ReadCmd struct {
	Pipe  string `arg:"" help:"Pipe name."`
	Count int    `short:"n" default:"1" help:"Number of chunks to read."`
	Null  bool   `short:"0" help:"End each chunk with NUL instead of newline."`
}

func (r *ReadCmd) Validate() error {
	if r.Count < 1 {
		return errors.New("-n must be at least 1")
	}
	return nil
}

func (r *ReadCmd) Run(a *app) error {
	sep := separator(r.Null)
	return a.withPipe(r.Pipe, func(c *broker.Client) error {
		for i := range r.Count {
			chunk, err := c.Read(a.ctx, r.Pipe)
			if a.ctx.Err() != nil {
				return fmt.Errorf("read %q: interrupted after %d chunks: %w", r.Pipe, i, err)
			}
			if err != nil {
				return err
			}
			if err := writeAll(a.stdout, append(chunk, sep)); err != nil {
				// The chunk never reached stdout: it goes back.
				return errors.Join(err, c.Unread(context.Background(), r.Pipe, chunk))
			}
		}
		return nil
	})
}

func separator(null bool) byte {
	if null {
		return 0
	}
	return '\n'
}
