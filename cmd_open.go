package main

import "github.com/zpipes/zpipes/broker"

// OpenCmd adds one to a pipe's open count, creating it if needed. Like
// mkfifo, the pipe stays after the command exits, until a CLOSE.
type OpenCmd struct {
	Pipe string `arg:"" predictor:"pipe" help:"Pipe name."`
}

func (o *OpenCmd) Run(a *app) error {
	return a.withClient(func(c *broker.Client) error { return c.Open(a.ctx, o.Pipe) })
}
