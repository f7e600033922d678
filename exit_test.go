package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zpipes/zpipes/broker"
)

// zpipesBin is the test binary under the name "zpipes", which
// testscript.Main (in TestMain) runs as the command itself.
func zpipesBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "zpipes")
	if err := os.Symlink(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// startBroker runs a broker in-process on a fresh endpoint.
func startBroker(t *testing.T, cfgs ...func(*broker.Config)) (*broker.Server, *broker.Client) {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	cfg := broker.Config{Endpoint: "ipc://@zpipes-test-" + hex.EncodeToString(b)}
	for _, f := range cfgs {
		f(&cfg)
	}
	s, err := broker.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := broker.Dial(context.Background(), s.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if !errors.As(err, &ee) {
		t.Fatalf("run: %v", err)
	}
	return ee.ExitCode()
}

// waitList polls the broker's LIST until cond holds.
func waitList(t *testing.T, c *broker.Client, what string, cond func([]broker.PipeInfo) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		ps, err := c.List(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if cond(ps) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("never saw %s; last LIST: %+v", what, ps)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// settleT polls cond until it holds, failing the test after 10 s.
func settleT(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never saw %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling an outcome, not ordering events
	}
}

// waitReader waits until the broker shows a READ waiting on the pipe.
func waitReader(t *testing.T, c *broker.Client, pipe string) {
	t.Helper()
	waitList(t, c, "a reader on "+pipe, func(ps []broker.PipeInfo) bool {
		return len(ps) == 1 && ps[0].Name == pipe && ps[0].Reader
	})
}

// drain takes every chunk left in the pipe, as many as LIST counts.
func drain(t *testing.T, c *broker.Client, pipe string) []string {
	t.Helper()
	ctx := context.Background()
	ps, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		if p.Name != pipe {
			continue
		}
		r := c.NewReader(ctx, pipe, broker.ReaderOptions{Max: p.Chunks})
		for range p.Chunks {
			chunk, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(chunk))
			r.Consume(1)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestReaderStoppedBySignalExits128PlusSignal(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			s, c := startBroker(t)
			cmd := exec.Command(zpipesBin(t), "-e", s.Endpoint(), "cat", "-r", "p")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitReader(t, c, "p")
			cmd.Process.Signal(tc.sig)
			if code := exitCode(t, cmd.Wait()); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if got := stderr.String(); !strings.Contains(got, "interrupted after 0 chunks") || strings.Count(got, "\n") != 1 {
				t.Fatalf("stderr %q, want one line saying it was interrupted", got)
			}
		})
	}
}

func TestReaderWithClosedStdoutGivesChunksBack(t *testing.T) {
	s, c := startBroker(t)
	ctx := context.Background()
	if err := c.Open(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, "p", []byte("a"), []byte("b"), []byte("c")); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // the consumer is gone before anything is written
	cmd := exec.Command(zpipesBin(t), "-e", s.Endpoint(), "cat", "-r", "p")
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	w.Close()
	if code := exitCode(t, err); code != 141 {
		t.Fatalf("exit %d, want 141; stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "broken pipe") {
		t.Fatalf("stderr %q", stderr.String())
	}
	if got := drain(t, c, "p"); strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("left in pipe: %q, want a,b,c in order", got)
	}
}

// startWriter starts zpipes with args against the broker and a pipe to its
// stdin; stderr collects what it says.
func startWriter(t *testing.T, s *broker.Server, args ...string) (cmd *exec.Cmd, stdin io.WriteCloser, stderr *bytes.Buffer) {
	t.Helper()
	cmd = exec.Command(zpipesBin(t), append([]string{"-e", s.Endpoint()}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr = new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdin, stderr
}

// needPython skips the test without /usr/bin/python3 and pyzmq, except
// under CI, where it fails.
func needPython(t *testing.T) string {
	t.Helper()
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import zmq").CombinedOutput(); err != nil {
		msg := "needs " + python + " with zmq (apt-get install python3-zmq): " + strings.TrimSpace(string(out))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return python
}

func TestWriterInterruptedReportsWhatItWrote(t *testing.T) {
	s, c := startBroker(t)
	cmd, stdin, stderr := startWriter(t, s, "cat", "-w", "p")
	io.WriteString(stdin, "1\n2\n3\n")
	// Once the broker holds all three, interrupt; stdin stays open.
	waitList(t, c, "3 chunks", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks == 3 })
	cmd.Process.Signal(syscall.SIGINT)
	code := exitCode(t, cmd.Wait())
	stdin.Close()
	if code != 130 {
		t.Fatalf("exit %d, want 130; stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted: 3 chunks written") {
		t.Fatalf("stderr %q", stderr.String())
	}
}

func TestExitStatuses(t *testing.T) {
	s, _ := startBroker(t)
	bin := zpipesBin(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"ok", []string{"-e", s.Endpoint(), "open", "p"}, 0, ""},
		{"broker error", []string{"-e", s.Endpoint(), "close", "nope"}, 1, `zpipes: close "nope": no such pipe`},
		{"usage", []string{"cat", "p"}, 2, "give one of -r (read) and -w (write)"},
		{"no broker", []string{"-e", "ipc://@zpipes-test-nobody-" + t.Name(), "open", "p"}, 3, "no broker at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(bin, tc.args...)
			cmd.Stderr = &stderr
			if code := exitCode(t, cmd.Run()); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.msg) {
				t.Fatalf("stderr %q, want %q", stderr.String(), tc.msg)
			}
		})
	}
}

// A consumer sees each line as soon as the pipe goes idle, not when a
// buffer fills or the reader exits.
func TestReaderFlushesWhenPipeIsIdle(t *testing.T) {
	s, c := startBroker(t)
	cmd := exec.Command(zpipesBin(t), "-e", s.Endpoint(), "cat", "-r", "p")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGINT)
	waitReader(t, c, "p")
	lines := make(chan string)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
	}()
	if err := c.Write(context.Background(), "p", []byte("first")); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-lines:
		if line != "first\n" {
			t.Fatalf("read %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the line never reached the consumer while the reader ran")
	}
}

// The libzmq interoperability script of the broker package, against the
// real `zpipes serve` process rather than a broker in the test's process.
func TestInteropWithServeCommand(t *testing.T) {
	python := needPython(t)
	b := make([]byte, 8)
	rand.Read(b)
	ep := "ipc://@zpipes-test-" + hex.EncodeToString(b)
	serve := startServe(t, ep)
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		if code := exitCode(t, serve.Wait()); code != 0 {
			t.Errorf("serve exited %d after SIGTERM", code)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "broker/testdata/interop.py", ep).CombinedOutput()
	t.Logf("interop.py:\n%s", out)
	if err != nil {
		t.Fatalf("interop.py against zpipes serve: %v", err)
	}
}

// smallPipe makes a broker whose pipes fill after a few hundred short lines.
func smallPipe(c *broker.Config) {
	c.Limits = broker.DefaultLimits
	c.Limits.MaxChunk = 1000
	c.MaxPipeBytes, c.MaxTotalBytes = 16<<10, 16<<10
}

// A writer blocked on a full pipe stops at the first SIGINT or SIGTERM, says
// exactly how many chunks the pipe received, releases its open, and nothing
// it sent lands afterwards.
func TestWriterBlockedOnFullPipeStopsOnSignal(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
		args []string
	}{
		{syscall.SIGINT, 130, []string{"cat", "-w", "p"}},
		{syscall.SIGTERM, 143, []string{"cat", "-w", "p"}},
		{syscall.SIGTERM, 143, append([]string{"write", "p"}, strings.Split(strings.Repeat(strings.Repeat("w", 100)+" ", 500), " ")...)},
	} {
		t.Run(tc.args[0]+"-"+tc.sig.String(), func(t *testing.T) {
			s, c := startBroker(t, smallPipe)
			cmd, stdin, stderr := startWriter(t, s, tc.args...)
			go func() {
				// Far more than the pipe holds; stdin stays open after.
				for i := range 5000 {
					if _, err := fmt.Fprintf(stdin, "%0100d\n", i); err != nil {
						return
					}
				}
			}()
			waitList(t, c, "a blocked write", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Blocked == 1 })
			cmd.Process.Signal(tc.sig)
			code := exitCode(t, cmd.Wait())
			stdin.Close()
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			var n int
			if _, err := fmt.Sscanf(stderr.String()[strings.Index(stderr.String(), "interrupted: "):], "interrupted: %d chunks written", &n); err != nil || strings.Count(stderr.String(), "\n") != 1 {
				t.Fatalf("stderr %q, want one line with the count written", stderr.String())
			}
			waitList(t, c, "the pipe closed and unblocked", func(ps []broker.PipeInfo) bool {
				return len(ps) == 1 && ps[0].Opens == 0 && ps[0].Blocked == 0
			})
			if got := drain(t, c, "p"); len(got) != n {
				t.Fatalf("the pipe holds %d chunks, the writer said %d", len(got), n)
			}
			// Room now: a write the broker still held back would land.
			if err := c.Open(context.Background(), "p"); err != nil {
				t.Fatal(err)
			}
			if ps, err := c.List(context.Background()); err != nil || ps[0].Chunks != 0 {
				t.Fatalf("after draining: %+v, %v", ps, err)
			}
		})
	}
}

// read interrupted while it waits says so in words, without the library's
// "context canceled".
func TestReadInterruptedSaysSo(t *testing.T) {
	s, c := startBroker(t)
	cmd := exec.Command(zpipesBin(t), "-e", s.Endpoint(), "read", "p")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitReader(t, c, "p")
	cmd.Process.Signal(syscall.SIGINT)
	if code := exitCode(t, cmd.Wait()); code != 130 {
		t.Fatalf("exit %d, want 130; stderr: %s", code, stderr.String())
	}
	if got := stderr.String(); got != "zpipes: read \"p\": interrupted after 0 chunks\n" {
		t.Fatalf("stderr %q", got)
	}
}

// Something that accepts connections and never answers (a broker stopped
// with SIGSTOP, say) is broker trouble: exit 3, one line that says what to
// check, no library internals.
func TestFrozenBrokerExits3(t *testing.T) {
	b := make([]byte, 8)
	rand.Read(b)
	ep := "ipc://@zpipes-test-frozen-" + hex.EncodeToString(b)
	ln, err := net.Listen("unix", strings.TrimPrefix(ep, "ipc://"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			defer nc.Close() // held open, never answered
		}
	}()
	cmd := exec.Command(zpipesBin(t), "-e", ep, "--timeout", "300ms", "ls")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if code := exitCode(t, cmd.Run()); code != 3 {
		t.Fatalf("exit %d, want 3; stderr: %s", code, stderr.String())
	}
	got := stderr.String()
	if !strings.Contains(got, "did not answer within 300ms (is it stopped?)") || strings.Contains(got, "zmq4") || strings.Count(got, "\n") != 1 {
		t.Fatalf("stderr %q", got)
	}
}

// A cat -r killed by SIGKILL mid-stream loses nothing: every line is either
// printed or still in the pipe, in order; a line it printed and had not yet
// acknowledged may be in both (at least once).
func TestReaderKilledBySIGKILLLosesNothing(t *testing.T) {
	s, c := startBroker(t)
	ctx := context.Background()
	const n = 50000
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, "%06d", i)
	}
	if err := c.Open(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 5000 {
		if err := c.Write(ctx, "p", lines[i:i+5000]...); err != nil {
			t.Fatal(err)
		}
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// A slow consumer: cat -r writes into a pipe that is read a little at a
	// time, so the reader is killed with chunks in every state.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(zpipesBin(t), "-e", s.Endpoint(), "cat", "-r", "p")
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, pr)
		copied <- err
	}()
	waitList(t, c, "the reader under way", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks < n-20000 })
	cmd.Process.Kill()
	cmd.Wait()
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	printed, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	// SIGKILL can cut a write to stdout anywhere: a line without its
	// newline is torn, not printed (its chunk was never acknowledged).
	if i := bytes.LastIndexByte(printed, '\n'); i+1 < len(printed) {
		printed = printed[:i+1]
	}
	got := strings.Fields(string(printed))
	waitList(t, c, "the reader's chunks given back", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks+len(got) >= n })
	left := drain(t, c, "p")
	seen := make(map[string]int)
	for _, l := range append(got, left...) {
		seen[l]++
	}
	dups := 0
	for _, l := range lines {
		switch seen[string(l)] {
		case 0:
			t.Fatalf("line %s lost (printed %d, left %d)", l, len(got), len(left))
		case 2:
			dups++
		}
	}
	for name, ls := range map[string][]string{"printed": got, "left in the pipe": left} {
		for i := 1; i < len(ls); i++ {
			if ls[i] < ls[i-1] {
				t.Fatalf("lines %s out of order: %s after %s (at %d of %d)", name, ls[i], ls[i-1], i, len(ls))
			}
		}
	}
	t.Logf("printed %d, left in the pipe %d, printed and given back (at least once) %d", len(got), len(left), dups)
}

// A command killed by SIGKILL does not leave the pipe's open count raised:
// its open was a HOLD, which ends with its connection.
func TestKilledCommandLeavesNoOpenBehind(t *testing.T) {
	s, c := startBroker(t)
	cmd := exec.Command(zpipesBin(t), "-e", s.Endpoint(), "cat", "-r", "p")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitReader(t, c, "p")
	cmd.Process.Kill()
	cmd.Wait()
	waitList(t, c, "the pipe gone", func(ps []broker.PipeInfo) bool { return len(ps) == 0 })
}
