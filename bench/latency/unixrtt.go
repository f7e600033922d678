package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// The physical floor under every probe here: a raw round trip of one
// message over a unix socket between two Go processes, with no framing, no
// library and no broker. WRITE->OK can only be as fast as this plus the
// broker's own work, so its p50 over this one's says how much zpipes adds
// on top of the hand-off the machine charges for any round trip (issue 10
// wants at most 1.5x).

// echoChild is the round trip's other process: it listens on addr, says
// "ready" on stdout, accepts one connection and sends back every size-byte
// message it receives until the connection closes.
func echoChild(addr string, size int) error {
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	defer ln.Close()
	if _, err := fmt.Println("ready"); err != nil {
		return err
	}
	conn, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("accept on %s: %w", addr, err)
	}
	defer conn.Close()
	buf := make([]byte, size)
	for {
		if _, err := io.ReadFull(conn, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the prober hung up between messages
			}
			return fmt.Errorf("echo read: %w", err)
		}
		if _, err := conn.Write(buf); err != nil {
			return fmt.Errorf("echo write: %w", err)
		}
	}
}

// rawUnix times one message to the echo child and back: a write and a read
// on a plain unix-socket connection, nothing else.
func rawUnix(_ context.Context, e env) (*probe, error) {
	addr := "@zpipes-latency-unix-" + e.suffix
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-echo", addr, "-size", strconv.Itoa(len(e.msg)))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start echo process: %w", err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("echo process did not start: %q %v", line, err)
	}
	conn, err := net.Dial("unix", addr)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	reply := make([]byte, len(e.msg))
	return &probe{
		name: rawUnixName,
		once: func() (time.Duration, error) {
			start := time.Now()
			if _, err := conn.Write(e.msg); err != nil {
				return 0, err
			}
			_, err := io.ReadFull(conn, reply)
			return time.Since(start), err
		},
		close: func() error {
			conn.Close() // the child sees EOF and exits
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("echo process: %w", err)
			}
			return nil
		},
	}, nil
}
