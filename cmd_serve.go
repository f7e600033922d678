package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/zpipes/zpipes/broker"
	"github.com/zpipes/zpipes/internal/gcfloor"
	"golang.org/x/sys/unix"
)

// ServeCmd runs the broker until SIGINT, SIGTERM or SIGHUP.
type ServeCmd struct {
	Verbose       bool          `short:"v" help:"Log every connection and request (debug level)."`
	MaxChunk      byteSize      `default:"${max_chunk}" placeholder:"SIZE" group:"limits" help:"Largest chunk accepted."`
	MaxPipeBytes  byteSize      `default:"${max_pipe_bytes}" placeholder:"SIZE" group:"limits" help:"Bytes one pipe may queue; a WRITE to a full pipe waits for room."`
	MaxTotalBytes byteSize      `default:"${max_total_bytes}" placeholder:"SIZE" group:"limits" help:"Bytes all pipes together may queue."`
	MaxConns      int           `placeholder:"N" group:"limits" help:"Connections served at once, those still in their handshake included; a connection over the limit is closed as soon as it is accepted. Default: 4096, or the open-file limit less 64 if that is lower."`
	MaxPipes      int           `placeholder:"N" default:"${max_pipes}" group:"limits" help:"Pipes the broker holds at once; an OPEN that would create one more is refused with \"too many pipes\"."`
	AllowUID      []int         `name:"allow-uid" placeholder:"UID" help:"Also accept connections from this user (repeatable); by default only the broker's own user may connect."`
	Store         string        `placeholder:"DIR" type:"path" help:"Keep pipes and chunks in DIR, so they survive the broker's exit, crash and restart; a write is acknowledged once it is on disk. One broker per DIR. Without it, chunks live in memory."`
	SyncEvery     time.Duration `placeholder:"DURATION" help:"With --store: acknowledge writes before they are on disk and sync every DURATION (say 1s): faster, but a crash loses up to DURATION of acknowledged writes."`
}

// gcFloor is how much garbage the broker lets pile up before the Go
// collector runs, whatever little is live (see internal/gcfloor): a
// streaming broker holds a few MiB and allocates a batch per request.
const gcFloor = 32 << 20

// Run serves until the context ends, then shuts down cleanly: waiting
// requests get an error and the log says what queued chunks are discarded.
func (s *ServeCmd) Run(a *app) error {
	// A hangup (the terminal that ran `zpipes serve &` closing) would kill
	// the broker without a word; it stops it like SIGTERM instead. Under
	// nohup, which starts us with SIGHUP ignored, it stays ignored.
	hup := make(chan os.Signal, 1)
	if !signal.Ignored(syscall.SIGHUP) {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
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
	raiseFileLimit(log)
	gcfloor.Set(gcFloor)
	lim := broker.DefaultLimits
	lim.MaxChunk = int(s.MaxChunk)
	srv, err := broker.Listen(broker.Config{
		Endpoint:       a.endpoint,
		Logger:         log,
		Limits:         lim,
		MaxPipeBytes:   int(s.MaxPipeBytes),
		MaxTotalBytes:  int(s.MaxTotalBytes),
		AllowUIDs:      s.AllowUID,
		MaxConns:       s.MaxConns,
		MaxPipes:       s.MaxPipes,
		Store:          s.Store,
		StoreSyncEvery: s.SyncEvery,
	})
	if errors.Is(err, broker.ErrInUse) {
		return fmt.Errorf("serve: %w (is another broker running?)", err)
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	select {
	case <-a.ctx.Done():
		log.Info("stopping")
	case <-hup:
		log.Info("stopping", "signal", "SIGHUP")
	}
	return srv.Close()
}

// Help is the detail of zpipes serve --help.
func (ServeCmd) Help() string {
	return `The broker runs in the foreground and logs to stderr. SIGINT, SIGTERM and
SIGHUP stop it cleanly: it stops accepting connections, answers waiting
requests with "broker shutting down", logs what queued chunks it discards
(with --store: syncs the store, and they are kept), and exits 0. A second SIGINT or SIGTERM exits at once. Started with SIGHUP
ignored (nohup), it keeps ignoring it.

At start it raises its open-file limit to the hard limit (see ulimit -Hn).
Connections over --max-conns, and those that do not finish the ZMTP
handshake within 5 s, are closed; repeated log lines about them are
summarised at most once a second.

With --store DIR, every change is written to a log in DIR before it is
acknowledged, and replayed at start: pipes, open counts, writers' queues and
every chunk not consumed survive a crash; a torn or corrupt tail is dropped
and logged. The log is compacted as readers advance (at most about twice the
queued bytes plus 64 MiB on disk). The backlog may be larger than memory:
past 16 MiB of chunks in memory, writes stay on disk only and come back into
memory as the reader reaches them. With --store, --max-pipe-bytes and
--max-total-bytes bound what is queued, on disk or in memory (the
backpressure writers see, and the disk the queue may take), not the
broker's memory; raise them to queue more.`
}

// raiseFileLimit lifts the soft limit on open files to the hard limit, so
// that connections, not the limit, are what --max-conns bounds. (The Go
// runtime already does this at start-up; this keeps it if that changes, and
// logs the figures.)
func raiseFileLimit(log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		log.Debug("cannot read the open-file limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		soft := lim.Cur
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			log.Debug("cannot raise the open-file limit", "soft", soft, "hard", lim.Max, "err", err)
			return
		}
	}
	log.Debug("open-file limit", "soft", lim.Cur, "hard", lim.Max)
}
