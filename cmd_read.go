package main

import (
	"errors"

	"github.com/zpipes/zpipes/broker"
)

// ReadCmd reads chunks one at a time, so it never takes more than it prints.
type ReadCmd struct {
	Pipe  string `arg:"" predictor:"pipe" help:"Pipe name."`
	Count int    `short:"n" default:"1" help:"Number of chunks to read (0: none)."`
	Null  bool   `short:"0" help:"End each chunk with NUL instead of newline."`
}

func (r *ReadCmd) Validate() error {
	if r.Count < 0 {
		return errors.New("-n must not be negative")
	}
	return nil
}

func (r *ReadCmd) Run(a *app) error {
	if r.Count == 0 {
		return nil // like head -n 0: nothing to take
	}
	return a.withPipe(r.Pipe, func(c *broker.Client) error {
		// One chunk per request and none ahead: a SIGKILL loses nothing.
		opt := broker.ReaderOptions{Batch: 1, Ahead: 1, Max: r.Count}
		_, err := readStream(a, c, "read", r.Pipe, opt, separator(r.Null), nil, nil)
		return err
	})
}

func separator(null bool) byte {
	if null {
		return 0
	}
	return '\n'
}
