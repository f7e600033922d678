package main

import "github.com/zpipes/zpipes/broker"

// WriteCmd writes each argument as one chunk, in order.
type WriteCmd struct {
	Pipe   string   `arg:"" predictor:"pipe" help:"Pipe name."`
	Chunks []string `arg:"" name:"chunk" help:"Chunks to write, one per argument."`
}

func (w *WriteCmd) Run(a *app) error {
	return a.withPipe(w.Pipe, func(c *broker.Client) error {
		return writeStream(a, c, "write", "chunk", w.Pipe, broker.WriterOptions{}, func(bw *broker.Writer) error {
			for _, chunk := range w.Chunks {
				if err := bw.Write([]byte(chunk)); err != nil {
					return err
				}
			}
			return nil
		})
	})
}
