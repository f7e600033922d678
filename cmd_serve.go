package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/zpipes/zpipes/broker"
)

// ServeCmd runs the broker until SIGINT or SIGTERM.
type ServeCmd struct {
	Verbose       bool  `short:"v" help:"Log every connection and request (debug level)."`
	MaxChunk      int   `default:"16777216" placeholder:"BYTES" help:"Largest chunk accepted."`
	MaxPipeBytes  int   `default:"268435456" placeholder:"BYTES" help:"Bytes one pipe may queue; a WRITE to a full pipe waits for room."`
	MaxTotalBytes int   `default:"536870912" placeholder:"BYTES" help:"Bytes all pipes together may queue."`
	AllowUID      []int `name:"allow-uid" placeholder:"UID" help:"Also accept connections from this user (repeatable); by default only the broker's own user may connect."`
}

// Run serves until the context ends, then shuts down cleanly: waiting
// requests get an error and the log says what queued chunks are discarded.
func (s *ServeCmd) Run(a *app) error {
	level := slog.LevelInfo
	if s.Verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if os.Getenv("JOURNAL_STREAM") != "" {
		// Under systemd, journald stamps every line itself.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	log := slog.New(slog.NewTextHandler(a.stderr, opts))
	lim := broker.DefaultLimits
	lim.MaxChunk = s.MaxChunk
	srv, err := broker.Listen(broker.Config{
		Endpoint:      a.endpoint,
		Logger:        log,
		Limits:        lim,
		MaxPipeBytes:  s.MaxPipeBytes,
		MaxTotalBytes: s.MaxTotalBytes,
		AllowUIDs:     s.AllowUID,
	})
	if errors.Is(err, broker.ErrInUse) {
		return fmt.Errorf("serve: %w (is another broker running?)", err)
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	<-a.ctx.Done()
	log.Info("stopping")
	return srv.Close()
}
