// Command pushpull is the pure-zmq4 baseline: a PUSH socket sends one message
// per input line straight to a PULL socket, with no broker in between. It
// shows what zpipes costs on top of the messaging library it is built on.
//
// Usage:
//
//	pushpull push ENDPOINT FILE   send each line of FILE (without '\n')
//	pushpull pull ENDPOINT N      print N messages, each followed by '\n'
//
// The puller binds and the pusher dials, so the consumer can be started
// first and both processes can be launched inside the timed region.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/go-zeromq/zmq4"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pushpull:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("usage: pushpull push ENDPOINT FILE | pushpull pull ENDPOINT N")
	}
	ctx := context.Background()
	switch args[0] {
	case "push":
		return push(ctx, args[1], args[2])
	case "pull":
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 0 {
			return fmt.Errorf("bad N %q", args[2])
		}
		return pull(ctx, args[1], n)
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

func push(ctx context.Context, ep, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()

	// The pusher may start before the puller has bound; zmq4's default
	// retry interval (250ms) would dominate a short run, so retry often.
	sock := zmq4.NewPush(ctx,
		zmq4.WithDialerRetry(2*time.Millisecond),
		zmq4.WithDialerMaxRetries(5000))
	defer sock.Close()
	if err := sock.Dial(ep); err != nil {
		return fmt.Errorf("dial %s: %w", ep, err)
	}

	sc := bufio.NewScanner(bufio.NewReaderSize(f, 1<<20))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		// Copy: the scanner reuses its buffer, and a message must not
		// change under zmq4 even if a future version sends asynchronously.
		line := append([]byte(nil), sc.Bytes()...)
		if err := sock.Send(zmq4.NewMsg(line)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	// zmq4's Send returns only after the frame is written to the
	// connection, so every message is already on its way; the deferred
	// Close may race with the puller hanging up and its error means nothing.
	return nil
}

func pull(ctx context.Context, ep string, n int) error {
	sock := zmq4.NewPull(ctx)
	defer sock.Close()
	if err := sock.Listen(ep); err != nil {
		return fmt.Errorf("listen %s: %w", ep, err)
	}

	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	for i := 0; i < n; i++ {
		msg, err := sock.Recv()
		if err != nil {
			return fmt.Errorf("recv message %d: %w", i+1, err)
		}
		if len(msg.Frames) != 1 {
			return fmt.Errorf("message %d has %d frames, want 1", i+1, len(msg.Frames))
		}
		w.Write(msg.Frames[0])
		if err := w.WriteByte('\n'); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	// All N messages are in; the deferred Close can report "use of closed
	// network connection" when the pusher hung up first, which is harmless.
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
