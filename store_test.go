package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/zpipes/zpipes/broker"
)

// startServe runs `zpipes serve` with args as a process on a fresh
// endpoint and waits until it answers.
func startServe(t *testing.T, ep string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(zpipesBin(t), append([]string{"-e", ep, "serve"}, args...)...)
	var log bytes.Buffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait() // an error if the test waited already
		if t.Failed() {
			t.Logf("serve %v log:\n%s", args, log.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := broker.Dial(ctx, ep)
		if err == nil {
			c.Close()
			return cmd
		}
		select {
		case <-ctx.Done():
			t.Fatalf("serve never answered: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// SIGKILL of a --store broker while cat -w streams, then a restart: every
// line the writer saw acknowledged is there, in order, without holes or
// duplicates.
func TestStoreBrokerKilledKeepsEveryAcknowledgedLine(t *testing.T) {
	b := make([]byte, 8)
	rand.Read(b)
	ep := "ipc://@zpipes-test-" + hex.EncodeToString(b)
	dir := t.TempDir()
	serve := startServe(t, ep, "--store", dir)

	writer := exec.Command(zpipesBin(t), "-e", ep, "cat", "-w", "p")
	stdin, err := writer.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var werr bytes.Buffer
	writer.Stderr = &werr
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for i := 1; ; i++ {
			if _, err := fmt.Fprintf(stdin, "%d\n", i); err != nil {
				return
			}
		}
	}()
	c, err := broker.Dial(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	waitList(t, c, "lines stored", func(ps []broker.PipeInfo) bool { return len(ps) == 1 && ps[0].Chunks > 20000 })
	c.Close()
	serve.Process.Kill()
	serve.Wait()
	writer.Wait()
	stdin.Close()
	<-fed
	m := regexp.MustCompile(`\((\d+) chunks written\)`).FindStringSubmatch(werr.String())
	if m == nil {
		t.Fatalf("writer said %q, want its count", werr.String())
	}
	acked, _ := strconv.Atoi(m[1])

	startServe(t, ep, "--store", dir)
	c, err = broker.Dial(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := drain(t, c, "p")
	if len(got) < acked {
		t.Fatalf("acknowledged %d lines, %d after the restart", acked, len(got))
	}
	for i, l := range got {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("line %d after the restart is %q: a hole or a duplicate", i+1, l)
		}
	}
	t.Logf("acknowledged %d, stored %d (%d more were on disk when the broker died)", acked, len(got), len(got)-acked)
}
