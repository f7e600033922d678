package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zpipes/zpipes/broker"
	"github.com/zpipes/zpipes/internal/syncbuf"
)

// startEach queues n chunks and starts zpipes each -P 2 on them with a
// command that marks its start in dir and waits for dir/go.
func startEach(t *testing.T, n int) (c *broker.Client, cmd *exec.Cmd, dir string, stdout, stderr *syncbuf.Buffer) {
	t.Helper()
	s, c := startBroker(t)
	ctx := context.Background()
	if err := c.Open(ctx, "jobs"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := c.Write(ctx, "jobs", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	dir = t.TempDir()
	script := `read x; touch "$DIR/started.$x"; while [ ! -e "$DIR/go" ]; do sleep 0.01; done; echo "$x"`
	cmd = exec.Command(zpipesBin(t), "-e", s.Endpoint(), "each", "-P", "2", "jobs", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "DIR="+dir)
	stdout, stderr = new(syncbuf.Buffer), new(syncbuf.Buffer)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		started, _ := filepath.Glob(filepath.Join(dir, "started.*"))
		if len(started) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("commands started: %v", started)
		}
		time.Sleep(5 * time.Millisecond) // polling for an event, bounded above
	}
	return c, cmd, dir, stdout, stderr
}

// SIGINT: nothing new starts, the running commands finish and are
// acknowledged, each exits 130; the rest stay in the pipe.
func TestEachInterruptedLetsRunningCommandsFinish(t *testing.T) {
	c, cmd, dir, stdout, stderr := startEach(t, 10)
	cmd.Process.Signal(syscall.SIGINT)
	// Each says it is stopping once it has seen the signal: only then may
	// the commands finish, or one finishing first would rightly make room
	// for a third.
	want := `zpipes: each "jobs": stopping; waiting for 2 running commands (signal again to kill them)`
	settleT(t, "each saying it stops", func() bool { return strings.Contains(stderr.String(), want) })
	waitList(t, c, "each stopped taking", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks == 8 })
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd.Wait()); code != 130 {
		t.Fatalf("exit %d, want 130; stderr: %s", code, stderr)
	}
	if got := strings.Fields(stdout.String()); len(got) != 2 {
		t.Fatalf("commands finished: %q, want the 2 running", got)
	}
	if !strings.Contains(stderr.String(), "interrupted after 2 commands succeeded") {
		t.Fatalf("stderr %q", stderr)
	}
	waitList(t, c, "8 left", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks == 8 && ps[0].Opens == 1 })
}

// A second signal kills the running commands, and their chunks go back.
func TestEachSecondSignalKillsCommandsAndGivesTheirChunksBack(t *testing.T) {
	c, cmd, _, stdout, stderr := startEach(t, 10)
	cmd.Process.Signal(syscall.SIGINT)
	waitList(t, c, "each stopped taking", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks == 8 })
	cmd.Process.Signal(syscall.SIGTERM)
	if code := exitCode(t, cmd.Wait()); code != 143 {
		t.Fatalf("exit %d, want 143; stderr: %s", code, stderr)
	}
	if stdout.Len() != 0 {
		t.Fatalf("killed commands printed %q", stdout)
	}
	waitList(t, c, "all 10 back", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks == 10 })
	if got := drain(t, c, "jobs"); got[0] != "0" || got[1] != "1" {
		t.Fatalf("the killed commands' chunks are not back at the head: %v", got)
	}
}
