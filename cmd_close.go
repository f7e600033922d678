package main

import "github.com/zpipes/zpipes/broker"

// CloseCmd takes one from a pipe's open count. The pipe goes away when the
// count is zero and no chunks are queued; chunks already written stay.
type CloseCmd struct {
	Pipe string `arg:"" predictor:"pipe" help:"Pipe name."`
}

func (o *CloseCmd) Run(a *app) error {
	return a.withClient(func(c *broker.Client) error { return c.ClosePipe(a.ctx, o.Pipe) })
}
