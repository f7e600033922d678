package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
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
	Store         string        `placeholder:"DIR|nats://HOST:PORT,..." help:"Keep pipes and chunks in DIR, so they survive the broker's exit, crash and restart; a write is acknowledged once it is on disk. One broker per DIR. Or keep them in NATS JetStream at nats://HOST:PORT[,HOST2:PORT...] (tls:// too): every broker given the same servers serves the same pipes. Without it, chunks live in memory."`
	SyncEvery     time.Duration `placeholder:"DURATION" help:"With --store DIR: acknowledge writes before they are on disk and sync every DURATION (say 1s): faster, but a crash loses up to DURATION of acknowledged writes."`

	Replicas  int    `placeholder:"N" group:"nats" help:"With --store nats://...: replicas of the stream and bucket zpipes creates. Default: 3 if the cluster has at least 3 servers, else 1."`
	NATSCreds string `name:"nats-creds" placeholder:"FILE" type:"path" group:"nats" help:"NATS credentials file (user JWT and NKey seed)."`
	NATSUser  string `name:"nats-user" placeholder:"USER" group:"nats" help:"NATS user name (with --nats-password)."`
	NATSPass  string `name:"nats-password" placeholder:"PASSWORD" env:"ZPIPES_NATS_PASSWORD" group:"nats" help:"NATS password (better from $ZPIPES_NATS_PASSWORD than on the command line)."`
	NATSToken string `name:"nats-token" placeholder:"TOKEN" env:"ZPIPES_NATS_TOKEN" group:"nats" help:"NATS token (better from $ZPIPES_NATS_TOKEN)."`
	NATSCA    string `name:"nats-ca" placeholder:"FILE" type:"path" group:"nats" help:"PEM file of the CA that signed the NATS servers' certificates."`
	NATSCert  string `name:"nats-cert" placeholder:"FILE" type:"path" group:"nats" help:"PEM client certificate for NATS (mutual TLS), with --nats-key."`
	NATSKey   string `name:"nats-key" placeholder:"FILE" type:"path" group:"nats" help:"PEM private key of --nats-cert."`
}

// gcFloor is how much garbage the broker lets pile up before the Go
// collector runs, whatever little is live (see internal/gcfloor): a
// streaming broker holds a few MiB and allocates a batch per request. It is
// at most half of --max-total-bytes, so that a small budget still bounds
// the broker's memory (README, Limits: scripts/attack.sh's figures).
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
	gcfloor.Set(min(gcFloor, int64(s.MaxTotalBytes)/2))
	lim := broker.DefaultLimits
	lim.MaxChunk = int(s.MaxChunk)
	store := s.Store
	if store != "" && !broker.IsJetStream(store) {
		store = kong.ExpandPath(store)
	}
	srv, err := broker.Listen(broker.Config{
		Endpoint:       a.endpoint,
		Logger:         log,
		Limits:         lim,
		MaxPipeBytes:   int(s.MaxPipeBytes),
		MaxTotalBytes:  int(s.MaxTotalBytes),
		AllowUIDs:      s.AllowUID,
		MaxConns:       s.MaxConns,
		MaxPipes:       s.MaxPipes,
		Store:          store,
		StoreSyncEvery: s.SyncEvery,
		JetStream: broker.JetStreamConfig{
			Replicas: s.Replicas,
			Creds:    s.NATSCreds,
			User:     s.NATSUser,
			Password: s.NATSPass,
			Token:    s.NATSToken,
			CA:       s.NATSCA,
			Cert:     s.NATSCert,
			Key:      s.NATSKey,
		},
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
memory as the reader reaches them. With --store DIR, --max-pipe-bytes and
--max-total-bytes bound what is queued, on disk or in memory (the
backpressure writers see, and the disk the queue may take), not the
broker's memory; raise them to queue more.

With --store nats://HOST:PORT[,...] the pipes live in NATS JetStream (a stream
ZPIPES and a key-value bucket zpipes_pipes, created if missing): brokers on
several machines given the same servers serve the same pipes, with the same
promises (per-writer order, fair turns among writers, one reader per pipe
across all brokers, chunks taken by a reader that goes away read again by the
next, in order). A write is acknowledged once JetStream has stored it. While
the NATS connection is lost the broker reconnects; requests wait, or fail
with an error after about 10 s. Pipes, open counts and writers survive any
broker; ls shows every broker's pipes (chunks counts stored batches). Chunks
are limited to what one NATS message carries (the servers' max_payload).`
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
