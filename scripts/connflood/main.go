// Command connflood opens many connections to a zpipes broker and holds
// them: -idle connections that finish the ZMTP handshake as a DEALER and
// then say nothing, and -silent sockets that connect and never send a byte.
// Once every connection has been tried, or -within has passed (the rest are
// skipped), it prints one line of counts and "ready"; it holds them for
// -hold (or until SIGINT/SIGTERM), closes them and exits.
//
//	connflood -e ipc://@NAME [-idle N] [-silent N] [-within D] [-hold D]
//
// Only ipc:// endpoints (Unix sockets) are accepted. Used by conns.sh.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

const most = 50000 // connections, so a typo cannot exhaust the machine

func main() {
	ep := flag.String("e", "", "broker endpoint, ipc://...")
	idle := flag.Int("idle", 0, "connections that handshake, then stay idle")
	silent := flag.Int("silent", 0, "sockets that never send a byte")
	within := flag.Duration("within", 20*time.Second, "give up opening more after this long (at most 60s)")
	hold := flag.Duration("hold", 5*time.Second, "how long to hold them (at most 60s)")
	flag.Parse()
	path, ok := strings.CutPrefix(*ep, "ipc://")
	if !ok || *idle < 0 || *silent < 0 || *idle+*silent > most || *hold > time.Minute || *within > time.Minute {
		fmt.Fprintf(os.Stderr, "usage: connflood -e ipc://PATH [-idle N] [-silent N] [-within D<=60s] [-hold D<=60s]; at most %d connections\n", most)
		os.Exit(2)
	}
	deadline := time.Now().Add(*within)

	var (
		mu    sync.Mutex
		conns []net.Conn
		n     struct{ silent, ok, refused, failed, skipped atomic.Int64 }
	)
	keep := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	// Silent sockets first, one by one: each only needs a connect.
	for range *silent {
		if time.Now().After(deadline) {
			n.skipped.Add(1)
			continue
		}
		c, err := dial(path, deadline)
		if err != nil {
			n.failed.Add(1)
			continue
		}
		n.silent.Add(1)
		keep(c)
	}
	// Handshakes in parallel, as many clients starting at once would.
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range jobs {
				if time.Now().After(deadline) {
					n.skipped.Add(1)
					continue
				}
				c, err := dial(path, deadline)
				if err != nil {
					n.failed.Add(1)
					continue
				}
				hs := time.Now().Add(2 * time.Second)
				if hs.After(deadline) {
					hs = deadline
				}
				c.SetDeadline(hs)
				_, err = zmq4.Open(c, null.Security(), zmq4.Dealer, nil, false, nil)
				c.SetDeadline(time.Time{})
				switch {
				case err == nil:
					n.ok.Add(1)
					keep(c)
				case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
					n.refused.Add(1) // the broker closed it
					c.Close()
				default:
					n.failed.Add(1)
					c.Close()
				}
			}
		})
	}
	for range *idle {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	fmt.Printf("silent %d connected; idle %d handshaked, %d refused; %d failed (no handshake within 2 s, or no connect); %d skipped (out of time)\nready\n",
		n.silent.Load(), n.ok.Load(), n.refused.Load(), n.failed.Load(), n.skipped.Load())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-time.After(*hold):
	case <-stop:
	}
	for _, c := range conns {
		c.Close()
	}
}

// dial connects, retrying while the broker's listen backlog is full.
func dial(path string, deadline time.Time) (net.Conn, error) {
	for {
		c, err := net.Dial("unix", path)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
