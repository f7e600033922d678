// Command unixsock is the physical baseline for a stream of lines between two
// processes: a plain Go unix-socket stream with bufio on both ends, no
// broker, no messaging library. Each line travels as a 4-byte big-endian
// length and its bytes, so the reader sees the same line boundaries zpipes
// and zmq4 preserve, at the least cost Go allows for them.
//
// Usage:
//
//	unixsock read ADDR N     accept one writer on ADDR; print its lines,
//	                         each followed by '\n'; fail unless exactly N came
//	unixsock write ADDR FILE dial ADDR (retrying until it is bound) and send
//	                         each line of FILE (without '\n')
//
// ADDR is a unix socket address: a path, or "@name" for an abstract socket
// on Linux. The reader binds and the writer dials, so bench/run.sh can start
// both inside the timed region, as it does for the other systems.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// bufSize is each end's bufio buffer: big enough that a 64-byte line costs
// a syscall only every few thousand lines, as a FIFO copied by cat(1) does.
const bufSize = 1 << 20

// dialFor is how long the writer keeps retrying a socket nobody has bound
// yet; the reader is started first, so this is only ever a few milliseconds.
const dialFor = 10 * time.Second

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "unixsock:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: unixsock read ADDR N | unixsock write ADDR FILE")
	}
	switch args[0] {
	case "read":
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 0 {
			return fmt.Errorf("bad N %q", args[2])
		}
		return read(args[1], n)
	case "write":
		return write(args[1], args[2])
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// read accepts one connection and copies its frames to stdout as lines
// until the writer closes the stream, then checks the count.
func read(addr string, n int) error {
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	conn, err := ln.Accept()
	ln.Close() // one writer only; a path socket's file goes with it
	if err != nil {
		return fmt.Errorf("accept on %s: %w", addr, err)
	}
	defer conn.Close()

	in := bufio.NewReaderSize(conn, bufSize)
	out := bufio.NewWriterSize(os.Stdout, bufSize)
	var hdr [4]byte
	line := make([]byte, 0, 64<<10)
	got := 0
	for {
		if _, err := io.ReadFull(in, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break // a clean end between frames
			}
			return fmt.Errorf("read header of line %d: %w", got+1, err)
		}
		size := int(binary.BigEndian.Uint32(hdr[:]))
		if cap(line) < size {
			line = make([]byte, 0, size)
		}
		line = line[:size]
		if _, err := io.ReadFull(in, line); err != nil {
			return fmt.Errorf("read line %d (%d bytes): %w", got+1, size, err)
		}
		out.Write(line)
		if err := out.WriteByte('\n'); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		got++
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if got != n {
		return fmt.Errorf("received %d lines, want %d", got, n)
	}
	return nil
}

// write sends every line of file as one frame, then closes the stream; the
// reader takes the close as the end.
func write(addr, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	conn, err := dial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()

	sc := bufio.NewScanner(bufio.NewReaderSize(f, bufSize))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	out := bufio.NewWriterSize(conn, bufSize)
	var hdr [4]byte
	for sc.Scan() {
		binary.BigEndian.PutUint32(hdr[:], uint32(len(sc.Bytes())))
		out.Write(hdr[:])
		if _, err := out.Write(sc.Bytes()); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return conn.Close()
}

// dial connects to addr, retrying every millisecond while nobody listens
// there yet (an abstract name refuses, a path does not exist).
func dial(addr string) (net.Conn, error) {
	deadline := time.Now().Add(dialFor)
	for {
		conn, err := net.Dial("unix", addr)
		if err == nil {
			return conn, nil
		}
		notYet := errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
		if !notYet || time.Now().After(deadline) {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		time.Sleep(time.Millisecond)
	}
}
