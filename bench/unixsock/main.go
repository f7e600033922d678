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
//	unixsock relay ADDR NEXT accept one writer on ADDR, dial NEXT (retrying)
//	                         and copy the stream's bytes there until the
//	                         writer closes it
//
// The relay is the two-hop reference: writer -> relay -> reader is the
// shape of every broker, and the relay does the least any broker can do
// with the bytes: it reads them into its own memory and writes them out,
// looking at none of them (no parsing, no queue, no reply). A broker has to
// have the bytes in user space to frame and queue them, so the relay copies
// through a buffer rather than splicing. What the relay moves is a ceiling
// for any broker on the machine; what the one-hop stream moves is a ceiling
// for no broker at all.
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
		return errors.New("usage: unixsock read ADDR N | unixsock write ADDR FILE | unixsock relay ADDR NEXT")
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
	case "relay":
		return relay(args[1], args[2])
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// accept listens on addr and takes one connection; nobody else may come.
func accept(addr string) (net.Conn, error) {
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	conn, err := ln.Accept()
	ln.Close() // one writer only; a path socket's file goes with it
	if err != nil {
		return nil, fmt.Errorf("accept on %s: %w", addr, err)
	}
	return conn, nil
}

// relay accepts one writer on addr and copies what it sends to next, one
// read and one write per buffer, then closes next when the writer is done.
func relay(addr, next string) error {
	in, err := accept(addr)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := dial(next)
	if err != nil {
		return err
	}
	defer out.Close()
	buf := make([]byte, bufSize)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				return fmt.Errorf("send: %w", werr)
			}
		}
		if errors.Is(err, io.EOF) {
			return out.Close()
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
	}
}

// read accepts one connection and copies its frames to stdout as lines
// until the writer closes the stream, then checks the count.
func read(addr string, n int) error {
	conn, err := accept(addr)
	if err != nil {
		return err
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
