package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/zpipes/zpipes/broker"
)

// EachCmd runs a command once per chunk and acknowledges the chunk only
// when the command succeeds: at-least-once job processing in one line.
type EachCmd struct {
	Pipe       string   `arg:"" predictor:"pipe" help:"Pipe name."`
	Command    []string `arg:"" passthrough:"" placeholder:"COMMAND" help:"The command and its arguments, after --."`
	Parallel   int      `short:"P" default:"1" placeholder:"N" help:"Run up to N commands at once."`
	Count      *int     `short:"n" placeholder:"N" help:"Stop after N commands have succeeded (0: run none)."`
	Retries    int      `placeholder:"K" help:"Run a failing command up to K more times on the same chunk."`
	DeadLetter string   `name:"dead-letter" placeholder:"PIPE" help:"Move a chunk whose command still fails (after --retries) to PIPE and go on, instead of stopping."`
}

// Help is the detail under the summary in --help and zpipes(1).
func (e *EachCmd) Help() string {
	return `For each chunk, runs COMMAND with the chunk on its standard input and
ZPIPES_PIPE, ZPIPES_SEQ (1 for the first chunk this run takes) and
ZPIPES_ATTEMPT in its environment. Exit status 0 acknowledges the chunk: the
broker forgets it. A command that fails puts its chunk back at the head of the
pipe, and each stops with exit status 1 naming the command and its status;
with --retries K it is run again first, and with --dead-letter the chunk then
goes to that pipe and each goes on.

Nothing is lost whoever dies: a chunk is acknowledged only after its command
succeeded, so if each, the command or the machine dies first, the chunk is
processed again (at least once: make the command safe to repeat). With -P N,
commands finish in any order; a chunk is acknowledged once it and every chunk
taken before it are done, so a failure or a crash can also repeat chunks
whose commands had succeeded after it.

SIGINT or SIGTERM: no new command starts, the running ones finish (each says
on stderr how many it waits for) and are acknowledged if they succeed, and
each exits 130 or 143; a second signal kills them, and their chunks go back to
the pipe.`
}

func (e *EachCmd) Validate() error {
	if len(e.Command) > 0 && e.Command[0] == "--" {
		e.Command = e.Command[1:] // kong keeps the separator
	}
	switch {
	case len(e.Command) == 0:
		return errors.New("give the command to run, after --")
	case e.Parallel < 1:
		return errors.New("-P must be at least 1")
	case e.Count != nil && *e.Count < 0:
		return errors.New("-n must not be negative")
	case e.Retries < 0:
		return errors.New("--retries must not be negative")
	case e.DeadLetter != "" && e.DeadLetter == e.Pipe:
		return errors.New("--dead-letter must name another pipe")
	}
	return nil
}

// job is one chunk being processed.
type job struct {
	seq     int // 1 for the first chunk this run took
	chunk   []byte
	attempt int
	done    bool  // succeeded, or moved to the dead-letter pipe
	err     error // the last run's failure
}

func (e *EachCmd) Run(a *app) error {
	if e.Count != nil && *e.Count == 0 {
		return nil
	}
	return a.withPipe(e.Pipe, func(c *broker.Client) error {
		r := c.NewReader(a.ctx, e.Pipe, broker.ReaderOptions{Batch: e.Parallel, Ahead: 1})
		run := &eachRun{cmd: e, a: a, r: r, results: make(chan *job, e.Parallel)}
		defer run.closeDeadLetter()
		err := run.loop()
		return errors.Join(err, r.Close())
	})
}

// eachRun is the state of one each: the chunks handed out, in the order
// taken, and the commands running.
type eachRun struct {
	cmd       *EachCmd
	a         *app
	r         *broker.Reader
	window    []*job // taken and not yet acknowledged, in order
	running   int
	succeeded int
	taken     int
	results   chan *job

	mu    sync.Mutex
	wake  context.CancelFunc  // ends the reader's wait when a command finishes
	procs map[*os.Process]int // running commands, for a second signal

	dlq *broker.Client // the dead-letter pipe's connection, dialled when needed
}

func (run *eachRun) loop() error {
	e, a := run.cmd, run.a
	killAll := func() {
		run.mu.Lock()
		defer run.mu.Unlock()
		for p := range run.procs {
			p.Kill()
		}
	}
	a.abort.Store(&killAll)
	defer a.abort.Store(nil)
	var (
		failed    *job
		announced bool // that a signal stops us
	)
	handle := func(j *job) error {
		run.running--
		gaveUp, err := run.finished(j)
		if gaveUp && failed == nil {
			failed = j
		}
		return err
	}
	for {
		// Results first: acknowledgements, retries, failures.
		for len(run.results) > 0 {
			if err := handle(<-run.results); err != nil {
				return err
			}
		}
		stopping := failed != nil || a.ctx.Err() != nil ||
			e.Count != nil && run.succeeded+run.running >= *e.Count
		if stopping && run.running == 0 {
			break
		}
		if a.ctx.Err() != nil && !announced {
			// Say why we do not exit yet, and how not to wait.
			announced = true
			fmt.Fprintf(a.stderr, "zpipes: each %q: stopping; waiting for %d running %s (signal again to kill %s)\n",
				e.Pipe, run.running, plural(run.running, "command", "commands"), plural(run.running, "it", "them"))
		}
		if stopping || run.running == e.Parallel {
			var done <-chan struct{}
			if !announced {
				done = a.ctx.Done()
			}
			select {
			case j := <-run.results:
				if err := handle(j); err != nil {
					return err
				}
			case <-done:
			}
			continue
		}
		chunk, err := run.next()
		switch {
		case a.ctx.Err() != nil:
			continue // stopping: let the running ones finish
		case errors.Is(err, context.Canceled):
			continue // a command finished while we waited
		case err != nil:
			return err
		}
		run.taken++
		j := &job{seq: run.taken, chunk: chunk}
		run.window = append(run.window, j)
		run.start(j)
	}
	switch {
	case failed != nil:
		return fmt.Errorf("each %q: %s on chunk %d (%d succeeded); the chunk is back at the head of the pipe",
			e.Pipe, failed.err, failed.seq, run.succeeded)
	case a.ctx.Err() != nil:
		return fmt.Errorf("each %q: interrupted after %d commands succeeded", e.Pipe, run.succeeded)
	}
	return nil
}

// next waits for a chunk until one comes, the context ends, or a running
// command finishes.
func (run *eachRun) next() ([]byte, error) {
	ctx, cancel := context.WithCancel(run.a.ctx)
	defer cancel()
	run.mu.Lock()
	run.wake = cancel
	run.mu.Unlock()
	if len(run.results) > 0 {
		cancel()
	}
	defer func() {
		run.mu.Lock()
		run.wake = nil
		run.mu.Unlock()
	}()
	return run.r.NextContext(ctx)
}

// start runs the command on a job's chunk in a goroutine of its own.
func (run *eachRun) start(j *job) {
	e, a := run.cmd, run.a
	j.attempt++
	cmd := exec.Command(e.Command[0], e.Command[1:]...)
	cmd.Stdin = bytes.NewReader(j.chunk)
	cmd.Stdout, cmd.Stderr = a.stdout, a.stderr
	cmd.Env = append(os.Environ(),
		"ZPIPES_PIPE="+e.Pipe,
		"ZPIPES_SEQ="+strconv.Itoa(j.seq),
		"ZPIPES_ATTEMPT="+strconv.Itoa(j.attempt))
	run.running++
	if err := cmd.Start(); err != nil {
		j.err = fmt.Errorf("command %q: %w", strings.Join(e.Command, " "), err)
		run.results <- j
		return
	}
	run.mu.Lock()
	if run.procs == nil {
		run.procs = make(map[*os.Process]int)
	}
	run.procs[cmd.Process] = j.seq
	run.mu.Unlock()
	go func() {
		err := cmd.Wait()
		j.err = nil
		if err != nil {
			j.err = fmt.Errorf("command %q %s", strings.Join(e.Command, " "), exitText(err))
		}
		run.mu.Lock()
		delete(run.procs, cmd.Process)
		if run.wake != nil {
			run.wake()
		}
		run.mu.Unlock()
		run.results <- j
	}()
}

// exitText says how a command ended: "exited 3", "was killed by signal 9".
func exitText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() >= 0 {
			return "exited " + strconv.Itoa(ee.ExitCode())
		}
		return "was ended by " + ee.String()
	}
	return "failed: " + err.Error()
}

// finished handles a command's end: a success is acknowledged once every
// chunk taken before it is done; a failure is run again, moved to the
// dead-letter pipe, or given up on (gaveUp), for the caller to stop on.
func (run *eachRun) finished(j *job) (gaveUp bool, err error) {
	e := run.cmd
	switch {
	case j.err == nil:
		j.done = true
		run.succeeded++
	case j.attempt <= e.Retries && run.a.ctx.Err() == nil:
		run.start(j)
		return false, nil
	case e.DeadLetter != "":
		if err := run.deadLetter(j); err != nil {
			return false, err
		}
		fmt.Fprintf(run.a.stderr, "zpipes: each %q: %s on chunk %d; moved to %q\n", e.Pipe, j.err, j.seq, e.DeadLetter)
		j.done = true
	default:
		return true, nil
	}
	n := 0
	for n < len(run.window) && run.window[n].done {
		n++
	}
	if n > 0 {
		run.r.Consume(n)
		clear(run.window[:n])
		run.window = run.window[n:]
	}
	return false, nil
}

// deadLetter writes a chunk to the dead-letter pipe, on a connection of its
// own: this one may have a TAKE waiting, which holds its later requests.
func (run *eachRun) deadLetter(j *job) error {
	if run.dlq == nil {
		c, err := run.a.dial()
		if err != nil {
			return err
		}
		if err := c.Hold(run.a.ctx, run.cmd.DeadLetter); err != nil {
			c.Close()
			return err
		}
		run.dlq = c
	}
	return run.dlq.Write(context.Background(), run.cmd.DeadLetter, j.chunk)
}

// closeDeadLetter lets the dead-letter pipe go: its chunks keep it.
func (run *eachRun) closeDeadLetter() {
	if run.dlq != nil {
		run.dlq.ClosePipe(context.Background(), run.cmd.DeadLetter)
		run.dlq.Close()
	}
}

// plural picks the word for n things.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
