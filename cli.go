package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/zpipes/zpipes/broker"
)

// app is what every command runs with: the standard streams, the broker's
// endpoint, and a context that the first SIGINT or SIGTERM cancels.
type app struct {
	ctx      context.Context
	cancel   context.CancelFunc
	stdin    *os.File
	stdout   *os.File
	stderr   *os.File
	endpoint string
	timeout  time.Duration

	sigs   chan os.Signal
	caught chan os.Signal // the signal that cancelled ctx, if any

	exited bool // kong exited early (--help, --version)
	code   int

	// abort, if set, runs when a second signal ends the process at once:
	// each kills the commands it runs.
	abort atomic.Pointer[func()]
}

func newApp(stdin, stdout, stderr *os.File) *app {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr,
		sigs: make(chan os.Signal, 2), caught: make(chan os.Signal, 1)}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	// SIGPIPE is caught so that a closed stdout is an EPIPE error the
	// commands handle (giving unwritten chunks back), not a silent death.
	signal.Notify(a.sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	go a.watchSignals()
	return a
}

// watchSignals cancels the context on the first SIGINT or SIGTERM, so
// commands stop cleanly; a second one exits at once (after abort).
func (a *app) watchSignals() {
	first := true
	for sig := range a.sigs {
		if sig == syscall.SIGPIPE {
			continue
		}
		if !first {
			if abort := a.abort.Load(); abort != nil {
				(*abort)()
			}
			os.Exit(128 + int(sig.(syscall.Signal)))
		}
		first = false
		a.caught <- sig
		a.cancel()
	}
}

// profile writes a CPU profile of the command to $ZPIPES_CPUPROFILE, with
// "%p" replaced by the process id (several zpipes processes run at once in
// a pipeline). It returns the function that finishes the profile.
func profile() func() {
	path := os.Getenv("ZPIPES_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid())))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "zpipes: cpu profile: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func (a *app) stop() {
	signal.Stop(a.sigs)
	close(a.sigs)
	a.cancel()
}

func (a *app) exitEarly(code int) { a.exited, a.code = true, code }

func (a *app) usage(parser *kong.Kong, err error) int {
	fmt.Fprintf(a.stderr, "zpipes: %v\n", err)
	var perr *kong.ParseError
	if errors.As(err, &perr) && perr.Context != nil {
		parser.Stdout = a.stderr
		perr.Context.PrintUsage(true)
	}
	return exitUsage
}

// dial connects to the broker, or explains how to start one.
func (a *app) dial() (*broker.Client, error) {
	return broker.Dial(a.ctx, a.endpoint, broker.WithTimeout(a.timeout))
}

// errStdout marks a failed write to stdout.
type errStdout struct{ err error }

func (e errStdout) Error() string { return "write to stdout: " + e.err.Error() }
func (e errStdout) Unwrap() error { return e.err }

// exit reports err on one line of stderr and maps it to an exit status.
func (a *app) exit(err error) int {
	if err == nil {
		return exitOK
	}
	code := exitError
	var remote *broker.RemoteError
	var out errStdout
	select {
	case sig := <-a.caught:
		code = 128 + int(sig.(syscall.Signal))
	default:
		switch {
		case errors.As(err, &out) && errors.Is(err, syscall.EPIPE):
			code = exitBrokenOut
		case brokerTrouble(err):
			code = exitNoBroker
		case errors.As(err, &remote):
			code = exitError
		}
	}
	msg := errLine(err)
	if errors.Is(err, context.Canceled) {
		// A command interrupted before it could say what it had done.
		msg = "interrupted"
	}
	fmt.Fprintf(a.stderr, "zpipes: %s\n", msg)
	return code
}

// brokerTrouble reports whether err means the broker is not there to
// serve us: none, frozen, gone, or refusing us.
func brokerTrouble(err error) bool {
	for _, e := range []error{broker.ErrNoBroker, broker.ErrConnLost, broker.ErrNoAnswer, broker.ErrRefused} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// errLine is err's text on one line, even for joined errors.
func errLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// withPipe opens a pipe for the length of fn and closes it after, whatever
// fn returns: client commands hold the pipe only while they use it.
func (a *app) withPipe(pipe string, fn func(c *broker.Client) error) error {
	return a.withClient(func(c *broker.Client) error {
		// A hold, not an OPEN: if this process dies, its open dies with it.
		if err := c.Hold(a.ctx, pipe); err != nil {
			return err
		}
		err := fn(c)
		if errors.Is(err, broker.ErrConnLost) {
			return err // nobody is there to CLOSE to
		}
		// Close even when interrupted, so the pipe can go away at once
		// rather than when the connection ends.
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		return errors.Join(err, c.ClosePipe(ctx, pipe))
	})
}

// withClient connects to the broker for the length of fn.
func (a *app) withClient(fn func(c *broker.Client) error) error {
	c, err := a.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// writeAll writes b to w, marking a failure as stdout's.
func writeAll(w io.Writer, b []byte) error {
	if _, err := w.Write(b); err != nil {
		return errStdout{err}
	}
	return nil
}
