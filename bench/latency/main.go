// Command latency measures request latency through a running zpipes broker
// against a baseline measured in the same invocation:
//
//	zmq4 REQ/REP   a 64-byte request and a 2-byte reply between two pure-Go
//	               zmq4 sockets, the REP in a child process as the broker
//	               is (the baseline), and both in this process
//	raw unix       64 bytes to a child process over a plain unix socket and
//	               back (the floor: see unixrtt.go)
//	WRITE->OK      one client writes a 64-byte chunk and waits for the OK
//	WRITE->READ    one client writes a chunk while another's READ waits on
//	               the pipe: time from the write call to the chunk's arrival
//
// Every probe runs sequentially (one message in flight); the probes take
// turns in blocks so that machine noise hits them alike. It prints p50, p99
// and mean in microseconds, and the ratios to the baseline, on stdout,
// then WRITE->OK's and WRITE->READ's p50 over the raw unix round trip's.
// The baseline's REP runs in another process because the broker does: a
// round trip between processes costs a wake-up of the other side that one
// within a process does not, and on a small VM that dominates. The second
// zmq4 row shows the library alone, without it.
//
// Usage:
//
//	latency -e ENDPOINT [-n 20000] [-warmup 2000] [-size 64] [-blocks 10]
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/zpipes/zpipes/broker"
)

func main() {
	ep := flag.String("e", "", "endpoint of a running zpipes broker (required)")
	n := flag.Int("n", 20000, "measured round trips per probe")
	warmup := flag.Int("warmup", 2000, "unmeasured round trips per probe first")
	size := flag.Int("size", 64, "bytes per message")
	blocks := flag.Int("blocks", 10, "blocks the probes take turns in")
	repEP := flag.String("rep", "", "internal: serve the zmq4 REP baseline on this endpoint until stdin closes")
	echoAddr := flag.String("echo", "", "internal: echo -size byte messages on this unix socket address for one connection")
	flag.Parse()
	if *echoAddr != "" {
		if err := echoChild(*echoAddr, *size); err != nil {
			fmt.Fprintln(os.Stderr, "latency -echo:", err)
			os.Exit(1)
		}
		return
	}
	if *repEP != "" {
		if err := repChild(*repEP); err != nil {
			fmt.Fprintln(os.Stderr, "latency -rep:", err)
			os.Exit(1)
		}
		return
	}
	if *ep == "" || flag.NArg() != 0 || *n < 1 || *warmup < 0 || *size < 1 || *blocks < 1 {
		fmt.Fprintln(os.Stderr, "usage: latency -e ENDPOINT [-n N] [-warmup N] [-size BYTES] [-blocks N]")
		os.Exit(2)
	}
	if err := run(*ep, *n, *warmup, *size, *blocks); err != nil {
		fmt.Fprintln(os.Stderr, "latency:", err)
		os.Exit(1)
	}
}

// probe is one kind of round trip, set up once and run many times.
type probe struct {
	name    string
	once    func() (time.Duration, error) // one timed round trip
	close   func() error
	samples []time.Duration
}

func run(ep string, n, warmup, size, blocks int) error {
	ctx := context.Background()

	var probes []*probe
	defer func() {
		for _, p := range probes {
			if err := p.close(); err != nil {
				fmt.Fprintf(os.Stderr, "latency: closing %s: %v\n", p.name, err)
			}
		}
	}()
	e := env{ep: ep, suffix: randomHex(), msg: bytes.Repeat([]byte("x"), size)}
	for _, setup := range []func(context.Context, env) (*probe, error){
		reqRepChild, reqRepLocal, rawUnix, writeOK, writeRead,
	} {
		p, err := setup(ctx, e)
		if err != nil {
			return err
		}
		probes = append(probes, p)
	}

	for _, p := range probes {
		for range warmup {
			if _, err := p.once(); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
	}
	for b := range blocks {
		per := n / blocks
		if b < n%blocks {
			per++
		}
		for _, p := range probes {
			for range per {
				d, err := p.once()
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				p.samples = append(p.samples, d)
			}
		}
	}

	fmt.Printf("%d-byte messages, one in flight; %d round trips per probe after %d warm-up, in %d interleaved blocks\n",
		size, n, warmup, blocks)
	fmt.Printf("%-42s %8s %8s %8s %8s %9s %9s\n", "probe", "p50 µs", "p99 µs", "mean µs", "max µs", "p50/zmq4", "p99/zmq4")
	base := summarise(probes[0].samples)
	p50 := map[string]float64{}
	for _, p := range probes {
		s := summarise(p.samples)
		p50[p.name] = s.p50
		fmt.Printf("%-42s %8.1f %8.1f %8.1f %8.0f %8.2fx %8.2fx\n",
			p.name, s.p50, s.p99, s.mean, s.max, s.p50/base.p50, s.p99/base.p99)
	}
	floor := p50[rawUnixName]
	fmt.Printf("zpipes WRITE->OK p50 / raw unix round trip p50:    %6.2fx  (issue 10 target: <= 1.5x)\n",
		p50[writeOKName]/floor)
	fmt.Printf("zpipes WRITE->READ p50 / raw unix round trip p50:  %6.2fx\n", p50[writeReadName]/floor)
	return nil
}

type summary struct{ p50, p99, mean, max float64 } // microseconds

func summarise(ds []time.Duration) summary {
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	at := func(q float64) float64 { return us(s[min(len(s)-1, int(q*float64(len(s))))]) }
	return summary{p50: at(0.50), p99: at(0.99), mean: us(sum) / float64(len(s)), max: us(s[len(s)-1])}
}

// Probe names the closing ratios look up.
const (
	rawUnixName   = "raw unix socket round trip (floor)"
	writeOKName   = "zpipes WRITE->OK"
	writeReadName = "zpipes WRITE->READ (write to arrival)"
)

// env is what every probe is set up with.
type env struct {
	ep     string // the broker's endpoint
	suffix string // makes pipe names unique to this invocation
	msg    []byte // the message or chunk to send
}

func randomHex() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// serveRep answers every request on a zmq4 REP socket bound to ep with
// "OK", as the broker answers a WRITE, until stop is called.
func serveRep(ctx context.Context, ep string) (stop func(), err error) {
	rep := zmq4.NewRep(ctx)
	if err := rep.Listen(ep); err != nil {
		rep.Close()
		return nil, fmt.Errorf("zmq4 REP listen %s: %w", ep, err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		ok := zmq4.NewMsg([]byte("OK"))
		for {
			if _, err := rep.Recv(); err != nil {
				return // closed
			}
			if err := rep.Send(ok); err != nil {
				return
			}
		}
	}()
	return func() { rep.Close(); <-served }, nil
}

// repChild is the baseline's other process: it serves REP on ep, says
// "ready" on stdout and stops when stdin closes.
func repChild(ep string) error {
	stop, err := serveRep(context.Background(), ep)
	if err != nil {
		return err
	}
	defer stop()
	if _, err := fmt.Println("ready"); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

// reqRepChild is the baseline: this process's REQ against a REP in a child
// process, so that each round trip crosses processes as a broker's does.
func reqRepChild(ctx context.Context, e env) (*probe, error) {
	ep := "ipc://@zpipes-latency-rep-" + e.suffix
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-rep", ep)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start REP process: %w", err)
	}
	stopChild := func() {
		stdin.Close()
		cmd.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		stopChild()
		return nil, fmt.Errorf("REP process did not start: %q %v", line, err)
	}
	return reqProbe(ctx, "zmq4 REQ/REP, REP in a child (baseline)", ep, e.msg, stopChild)
}

// reqRepLocal is zmq4 REQ and REP in this process: the library alone.
func reqRepLocal(ctx context.Context, e env) (*probe, error) {
	ep := "ipc://@zpipes-latency-local-" + e.suffix
	stop, err := serveRep(ctx, ep)
	if err != nil {
		return nil, err
	}
	return reqProbe(ctx, "zmq4 REQ/REP, both in this process", ep, e.msg, stop)
}

// reqProbe times request-reply round trips from a REQ socket to the REP
// on ep; stopServer ends that REP.
func reqProbe(ctx context.Context, name, ep string, msg []byte, stopServer func()) (*probe, error) {
	req := zmq4.NewReq(ctx)
	closeAll := func() error {
		req.Close()
		stopServer()
		return nil
	}
	if err := req.Dial(ep); err != nil {
		closeAll()
		return nil, fmt.Errorf("zmq4 REQ dial %s: %w", ep, err)
	}
	request := zmq4.NewMsg(msg)
	return &probe{
		name: name,
		once: func() (time.Duration, error) {
			start := time.Now()
			if err := req.Send(request); err != nil {
				return 0, err
			}
			r, err := req.Recv()
			d := time.Since(start)
			if err == nil && (len(r.Frames) != 1 || string(r.Frames[0]) != "OK") {
				err = fmt.Errorf("unexpected reply %q", r.Frames)
			}
			return d, err
		},
		close: closeAll,
	}, nil
}

// writeOK writes chunks to a pipe nobody reads and times each acknowledgment.
// The chunks are read back and the pipe closed when the probe closes.
func writeOK(ctx context.Context, e env) (*probe, error) {
	pipe := "latency-write-" + e.suffix
	c, err := broker.Dial(ctx, e.ep)
	if err != nil {
		return nil, err
	}
	if err := c.Open(ctx, pipe); err != nil {
		c.Close()
		return nil, err
	}
	written := 0
	return &probe{
		name: writeOKName,
		once: func() (time.Duration, error) {
			start := time.Now()
			err := c.Write(ctx, pipe, e.msg)
			d := time.Since(start)
			if err == nil {
				written++
			}
			return d, err
		},
		close: func() error {
			defer c.Close()
			r := c.NewReader(ctx, pipe, broker.ReaderOptions{Max: written})
			for ; written > 0; written-- {
				if _, err := r.Next(); err != nil {
					r.Close()
					return err
				}
				r.Consume(1)
			}
			r.Close()
			return c.ClosePipe(ctx, pipe)
		},
	}, nil
}

// writeRead times a chunk from the writer's WRITE call to its arrival at a
// reader whose READ is already waiting in the broker (or at least sent).
func writeRead(ctx context.Context, e env) (*probe, error) {
	pipe := "latency-read-" + e.suffix
	w, err := broker.Dial(ctx, e.ep)
	if err != nil {
		return nil, err
	}
	r, err := broker.Dial(ctx, e.ep)
	if err != nil {
		w.Close()
		return nil, err
	}
	if err := w.Open(ctx, pipe); err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	// The reader goroutine keeps one READ outstanding; arrived carries the
	// time each chunk came in, or the error that ended the reader.
	type arrival struct {
		at  time.Time
		err error
	}
	arrived := make(chan arrival)
	stop := []byte("STOP")
	go func() {
		for {
			chunk, err := r.Read(ctx, pipe)
			at := time.Now()
			if err != nil || bytes.Equal(chunk, stop) {
				close(arrived)
				return
			}
			if len(chunk) != len(e.msg) {
				err = fmt.Errorf("read a chunk of %d bytes, wrote %d", len(chunk), len(e.msg))
			}
			arrived <- arrival{at, err}
		}
	}()
	return &probe{
		name: writeReadName,
		once: func() (time.Duration, error) {
			start := time.Now()
			if err := w.Write(ctx, pipe, e.msg); err != nil {
				return 0, err
			}
			a, ok := <-arrived
			if !ok {
				return 0, errors.New("reader stopped")
			}
			return a.at.Sub(start), a.err
		},
		close: func() error {
			defer r.Close()
			defer w.Close()
			err := w.Write(ctx, pipe, stop)
			if err == nil {
				for range arrived {
				}
				err = w.ClosePipe(ctx, pipe)
			}
			return err
		},
	}, nil
}
