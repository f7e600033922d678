package main

import (
	"fmt"

	"github.com/zpipes/zpipes/broker"
)

// WriteCmd writes each argument as one chunk, in order.
type WriteCmd struct {
	Pipe   string   `arg:"" help:"Pipe name."`
	Chunks []string `arg:"" name:"chunk" help:"Chunks to write, one per argument."`
}

func (w *WriteCmd) Run(a *app) error {
	return a.withPipe(w.Pipe, func(c *broker.Client) error {
		// Pipelined: all WRITEs go out at once and the OKs are collected.
		calls := make([]*broker.Call, len(w.Chunks))
		for i, chunk := range w.Chunks {
			calls[i] = c.GoWrite(w.Pipe, []byte(chunk))
		}
		for _, call := range calls {
			<-call.Done
			if call.Err != nil {
				return fmt.Errorf("write %q: %w", w.Pipe, call.Err)
			}
		}
		return nil
	})
}
