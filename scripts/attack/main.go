// Command attack runs one of the attacks of issue 13 against a zpipes
// broker, bounded in count and time, and prints what it saw on stdout as
// "label<TAB>value" lines, the same labels whatever the broker, so that
// attack.sh can set one broker's figures beside another's:
//
//	attack -e ipc://@NAME -pid PID [-budget BYTES] [-pipes N] ATTACK
//	attack -e ipc://@NAME pipe NAME
//
// The attacks:
//
//	list      -pipes pipes with 16-byte names, made by pipelined OPENs; then
//	          one connection sends 40 LISTs and never reads, for 10 s
//	inflight  one connection sends 400 MREADs and never reads; another
//	          pipelines 400 WRITEs of 1 MiB to the same pipe
//	unread    500 UNREADs of 1 MiB to a pipe that nobody read
//	names     -pipes pipes with 1024-byte names, each OPENed and given one
//	          1-byte chunk
//	empty     -pipes pipes with 1024-byte names, OPENed and left empty
//	tiny      one pipe, 1-byte chunks pipelined until the broker stops
//	          taking them
//	short     one pipe, 1-byte chunks each written by a connection of its
//	          own, 16 at a time, for at most 60 s
//
// While an attack runs, attack samples the broker's VmRSS every 100 ms
// (/proc/PID/status) and tries a fresh client every second: Dial, OPEN and
// CLOSE of a pipe made beforehand, each try within 1 s. -budget is the
// broker's --max-total-bytes, for RSS/budget. "pipe NAME" prints the pipe's
// chunks and bytes as LIST gives them. Only ipc:// endpoints. Used by
// attack.sh.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
	"github.com/zpipes/zpipes/broker"
)

const (
	probePipe = "attack-probe" // made before each attack, so a probe creates nothing
	mostPipes = 1_000_000      // so that a typo cannot exhaust the machine
	mib       = 1 << 20
)

var (
	endpoint string
	path     string // the socket: endpoint without ipc://
	budget   int
	rss      *sampler
)

func main() {
	flag.StringVar(&endpoint, "e", "", "broker endpoint, ipc://...")
	pid := flag.Int("pid", 0, "the broker's process id, for its RSS")
	flag.IntVar(&budget, "budget", 0, "the broker's --max-total-bytes, for RSS/budget")
	pipes := flag.Int("pipes", 200_000, "pipes to make (list, names, empty)")
	flag.Parse()
	var ok bool
	path, ok = strings.CutPrefix(endpoint, "ipc://")
	attacks := map[string]func(int){"list": list, "inflight": inflight, "unread": unread, "names": names, "empty": empty, "tiny": tiny, "short": shortWriters}
	if ok && flag.NArg() == 2 && flag.Arg(0) == "pipe" {
		row("pipe "+flag.Arg(1), describe(flag.Arg(1)))
		return
	}
	run := attacks[flag.Arg(0)]
	if !ok || run == nil || flag.NArg() != 1 || *pid <= 0 || *pipes < 1 || *pipes > mostPipes {
		fmt.Fprintf(os.Stderr, "usage: attack -e ipc://PATH -pid PID [-budget BYTES] [-pipes N<=%d] list|inflight|unread|names|empty|tiny|short\n"+
			"       attack -e ipc://PATH pipe NAME\n", mostPipes)
		os.Exit(2)
	}
	rss = startSampler(*pid)
	mustOpen(probePipe)
	row("RSS at start", mb(rss.now()))
	run(*pipes)
}

// list: many pipes, then LISTs that are never read.
func list(n int) {
	maker := mustDial(true)
	t := pipeline(maker, n, 4096, 3*time.Second, 90*time.Second, func(i int) [][]byte {
		return frames("OPEN", fmt.Sprintf("attack-%09d", i)) // 16 bytes
	})
	maker.close()
	row("pipes asked for (16-byte names, pipelined OPENs)", strconv.Itoa(n))
	row("OPEN OK", strconv.Itoa(t.count("OPEN OK")))
	row("OPEN ERROR too many pipes", strconv.Itoa(t.count("OPEN ERROR too many pipes")))
	row("other replies to OPEN", t.others("OPEN OK", "OPEN ERROR too many pipes"))
	row("making them took", t.took())
	row("RSS with the pipes made", mb(rss.now()))
	row("fresh client: WRITE of 1 byte to an open pipe, within 1 s", writeTo(probePipe))

	rss.reset()
	stop := startProbes()
	attacker := mustDial(false)
	for range 40 {
		attacker.send(frames("LIST")...)
	}
	flushed := attacker.flush()
	time.Sleep(10 * time.Second)
	row("LISTs sent, never read", "40"+failedIf(flushed))
	row("peak RSS over 10 s with them unread", mb(rss.peak()))
	row("fresh client: OPEN OK within 1 s, while attacked", stop())
	attacker.close()
	time.Sleep(time.Second)
	row("RSS 1 s after the attacker closed", mb(rss.now()))
	time.Sleep(5 * time.Second)
	row("RSS 6 s after the attacker closed", mb(rss.now()))
	stop = startProbes()
	time.Sleep(2 * time.Second)
	row("fresh client: OPEN OK within 1 s, afterwards", stop())
}

// inflight: replies built for a reader that never reads them.
func inflight(int) {
	const pipe = "attack-inflight"
	mustOpen(pipe)
	reader := mustDial(false)
	for range 400 {
		reader.send(frames("MREAD", pipe, "1000")...)
	}
	flushed := reader.flush()
	row("MREAD p 1000 sent on one connection, never read", "400"+failedIf(flushed))

	rss.reset()
	stop := startProbes()
	writer := mustDial(true)
	chunk := make([]byte, mib)
	t := pipeline(writer, 400, 400, 2*time.Second, 20*time.Second, func(int) [][]byte {
		return [][]byte{[]byte("WRITE"), []byte(pipe), chunk}
	})
	row("WRITEs of 1 MiB pipelined on another", "400")
	row("WRITE OK", strconv.Itoa(t.count("WRITE OK")))
	row("other replies to WRITE", t.others("WRITE OK"))
	row("writing stopped", t.took())
	row("peak RSS while writing", mb(rss.peak()))
	row("fresh client: OPEN OK within 1 s, while attacked", stop())
	row("the pipe in LIST, replies unread", describe(pipe))
	row("fresh client: WRITE of 1 byte to another pipe, within 1 s", writeOther())
	writer.close()
	reader.close()
	row("the pipe in LIST, 1 s after writer and reader closed", settle(pipe))
	row("RSS then", mb(rss.now()))
}

// unread: chunks given back that were never taken.
func unread(int) {
	const pipe = "attack-unread"
	mustOpen(pipe)
	rss.reset()
	stop := startProbes()
	p := mustDial(true)
	chunk := make([]byte, mib)
	t := pipeline(p, 500, 500, 2*time.Second, 20*time.Second, func(int) [][]byte {
		return [][]byte{[]byte("UNREAD"), []byte(pipe), chunk}
	})
	row("UNREADs of 1 MiB pipelined, the pipe never read", "500")
	row("UNREAD OK", strconv.Itoa(t.count("UNREAD OK")))
	row("UNREAD ERROR bad request", strconv.Itoa(t.count("UNREAD ERROR bad request")))
	row("other replies to UNREAD", t.others("UNREAD OK", "UNREAD ERROR bad request"))
	row("unreading stopped", t.took())
	row("peak RSS while unreading", mb(rss.peak()))
	row("fresh client: OPEN OK within 1 s, while attacked", stop())
	row("the pipe in LIST", describe(pipe))
	row("fresh client: WRITE of 1 byte to another pipe, within 1 s", writeOther())
	p.close()
	row("RSS 1 s after the attacker closed", mb(rssAfter(time.Second)))
}

// names: many pipes with the longest names, one byte in each.
func names(n int) { longNames(n, true) }

// empty: many pipes with the longest names, and nothing in them.
func empty(n int) { longNames(n, false) }

func longNames(n int, chunks bool) {
	rss.reset()
	stop := startProbes()
	p := mustDial(true)
	pad := strings.Repeat("n", 1024-16)
	chunk := []byte("x")
	per := 1
	if chunks {
		per = 2 // OPEN, then WRITE
	}
	t := pipeline(p, per*n, 4096, 3*time.Second, 120*time.Second, func(i int) [][]byte {
		name := []byte(fmt.Sprintf("attack-%09d%s", i/per, pad))
		if i%per == 0 {
			return [][]byte{[]byte("OPEN"), name}
		}
		return [][]byte{[]byte("WRITE"), name, chunk}
	})
	peak := rss.peak()
	if chunks {
		row("pipes asked for (1024-byte names, one 1-byte chunk each)", strconv.Itoa(n))
	} else {
		row("pipes asked for (1024-byte names, OPEN only)", strconv.Itoa(n))
	}
	row("OPEN OK", strconv.Itoa(t.count("OPEN OK")))
	row("OPEN ERROR too many pipes", strconv.Itoa(t.count("OPEN ERROR too many pipes")))
	if chunks {
		row("WRITE OK (chunks queued)", strconv.Itoa(t.count("WRITE OK")))
	}
	row("other replies", t.others("OPEN OK", "OPEN ERROR too many pipes", "WRITE OK"))
	row("pipelining stopped", t.took())
	row("fresh client: OPEN OK within 1 s, while attacked", stop())
	row("fresh client: WRITE of 1 byte to an open pipe, within 1 s", writeTo(probePipe))
	row("peak RSS", mb(peak))
	row("peak RSS / budget", ratio(peak, budget))
	if k := t.count("OPEN OK"); k > 0 {
		row("RSS per pipe made", fmt.Sprintf("%.0f B", float64(peak-rss.start)/float64(k)))
	}
	p.close()
}

// tiny: one pipe, the smallest chunks, until it is full.
func tiny(int) {
	const pipe = "attack-tiny"
	mustOpen(pipe)
	rss.reset()
	stop := startProbes()
	p := mustDial(true)
	t := pipeline(p, 4_000_000, 8192, 2*time.Second, 90*time.Second, func(int) [][]byte {
		return frames("WRITE", pipe, "x")
	})
	peak := rss.peak()
	ok := t.count("WRITE OK")
	row("WRITE OK (1-byte chunks, pipelined)", strconv.Itoa(ok))
	row("other replies", t.others("WRITE OK"))
	row("writing stopped", t.took())
	row("fresh client: OPEN OK within 1 s, while attacked", stop())
	row("the pipe in LIST", describe(pipe))
	row("peak RSS", mb(peak))
	row("peak RSS / budget", ratio(peak, budget))
	if ok > 0 {
		row("RSS per chunk queued", fmt.Sprintf("%.0f B", float64(peak-rss.start)/float64(ok)))
	}
	p.close()
}

// shortWriters: one pipe, 1-byte chunks, each written by a connection of
// its own (16 at a time), so that each chunk comes from another writer. It
// stops when a write has no OK within 5 s, which on a loaded machine may be
// slowness rather than a full pipe: a last write says which.
func shortWriters(int) {
	const pipe = "attack-short"
	mustOpen(pipe)
	rss.reset()
	stop := startProbes()
	deadline := time.Now().Add(60 * time.Second)
	var ok atomic.Int64
	var mu sync.Mutex
	var why string // why the workers stopped, set once
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				mu.Lock()
				stopped := why != ""
				if !stopped && time.Now().After(deadline) {
					why = "time limit 60s"
				}
				mu.Unlock()
				if stopped || ok.Load() >= 4_000_000 {
					return
				}
				err := withClient(5*time.Second, func(ctx context.Context, c *broker.Client) error {
					return c.Write(ctx, pipe, []byte("x"))
				})
				if err == nil {
					ok.Add(1)
					continue
				}
				mu.Lock()
				if why == "" {
					why = "a write got " + short(err) + " within 5 s"
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	peak := rss.peak()
	n := ok.Load()
	row("WRITE OK (1-byte chunks, a connection each)", strconv.FormatInt(n, 10))
	row("writing stopped", why)
	row("fresh client: OPEN OK within 1 s, while attacked", stop())
	row("the pipe in LIST", describe(pipe))
	row("then a WRITE of 1 byte to it, within 1 s (is it full?)", writeTo(pipe))
	row("peak RSS", mb(peak))
	row("peak RSS / budget", ratio(peak, budget))
	if n > 0 {
		row("RSS per chunk queued", fmt.Sprintf("%.0f B", float64(peak-rss.start)/float64(n)))
	}
}

// row prints one figure.
func row(label, value string) { fmt.Printf("%s\t%s\n", label, value) }

func frames(s ...string) [][]byte {
	f := make([][]byte, len(s))
	for i, x := range s {
		f[i] = []byte(x)
	}
	return f
}

func mb(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/mib) }

func ratio(b int64, of int) string {
	if of <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", float64(b)/float64(of))
}

func failedIf(err error) string {
	if err != nil {
		return " (sending failed: " + err.Error() + ")"
	}
	return ""
}

// The broker's memory.

// sampler reads the broker's VmRSS every 100 ms and keeps the peak since
// the last reset.
type sampler struct {
	pid       int
	start     int64 // VmRSS when sampling started
	max, last atomic.Int64
}

func startSampler(pid int) *sampler {
	s := &sampler{pid: pid}
	s.start = s.read()
	s.reset()
	go func() {
		for range time.Tick(100 * time.Millisecond) {
			v := s.read()
			s.last.Store(v)
			for m := s.max.Load(); v > m && !s.max.CompareAndSwap(m, v); m = s.max.Load() {
			}
		}
	}()
	return s
}

// read returns VmRSS in bytes, or 0 once the broker is gone.
func (s *sampler) read() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (s *sampler) now() int64 { v := s.read(); s.last.Store(v); return v }
func (s *sampler) reset()     { s.max.Store(s.now()) }
func (s *sampler) peak() int64 {
	s.now()
	return max(s.max.Load(), s.last.Load())
}

// rssAfter waits d and returns VmRSS then.
func rssAfter(d time.Duration) int64 { time.Sleep(d); return rss.now() }

// Fresh clients, through the broker package as the CLI would.

// mustOpen OPENs a pipe through a fresh client, or exits. Each attack
// opens probePipe first, so that probes create nothing (a broker at its
// pipe limit would refuse a new one).
func mustOpen(pipe string) {
	if err := withClient(5*time.Second, func(ctx context.Context, c *broker.Client) error { return c.Open(ctx, pipe) }); err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		os.Exit(1)
	}
}

// withClient dials a fresh client and runs f, all within d.
func withClient(d time.Duration, f func(context.Context, *broker.Client) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := broker.Dial(ctx, endpoint, broker.WithTimeout(d))
	if err != nil {
		return err
	}
	defer c.Close()
	return f(ctx, c)
}

// startProbes tries a fresh client every second until the returned
// function is called, which says how many got OK within 1 s.
func startProbes() func() string {
	quit, done := make(chan struct{}), make(chan string)
	go func() {
		var tries, ok int
		var slowest time.Duration
		fails := map[string]int{}
		for {
			t0 := time.Now()
			err := withClient(time.Second, func(ctx context.Context, c *broker.Client) error {
				if err := c.Open(ctx, probePipe); err != nil {
					return err
				}
				return c.ClosePipe(ctx, probePipe)
			})
			tries++
			if err == nil {
				ok++
				slowest = max(slowest, time.Since(t0))
			} else {
				fails[short(err)]++
			}
			select {
			case <-quit:
				s := fmt.Sprintf("%d/%d", ok, tries)
				if ok > 0 {
					s += fmt.Sprintf(" (slowest %d ms)", slowest.Milliseconds())
				}
				if len(fails) > 0 {
					s += "; " + summary(fails)
				}
				done <- s
				return
			case <-time.After(time.Until(t0.Add(time.Second))):
			}
		}
	}()
	return func() string { close(quit); return <-done }
}

// short names an error in a few words.
func short(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, broker.ErrNoAnswer):
		return "no answer"
	case errors.Is(err, broker.ErrRefused):
		return "refused"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// writeOther tries a 1-byte WRITE to a pipe of its own within 1 s.
func writeOther() string { return writeTo("attack-other") }

// writeTo tries to OPEN the pipe and WRITE 1 byte to it within 1 s.
func writeTo(pipe string) string {
	t0 := time.Now()
	err := withClient(time.Second, func(ctx context.Context, c *broker.Client) error {
		if err := c.Open(ctx, pipe); err != nil {
			return err
		}
		return c.Write(ctx, pipe, []byte("x"))
	})
	if err != nil {
		return "no: " + short(err)
	}
	return fmt.Sprintf("OK in %d ms", time.Since(t0).Milliseconds())
}

// describe says what LIST gives for a pipe.
func describe(pipe string) string {
	var s string
	err := withClient(10*time.Second, func(ctx context.Context, c *broker.Client) error {
		infos, err := c.List(ctx)
		if err != nil {
			return err
		}
		s = "not listed"
		for _, p := range infos {
			if p.Name == pipe {
				s = fmt.Sprintf("%d chunks, %d B, %d writers blocked", p.Chunks, p.Bytes, p.Blocked)
			}
		}
		return nil
	})
	if err != nil {
		return "LIST failed: " + short(err)
	}
	return s
}

// settle describes the pipe once it has been the same for 1 s (at most 10 s).
func settle(pipe string) string {
	last := describe(pipe)
	for range 10 {
		time.Sleep(time.Second)
		s := describe(pipe)
		if s == last {
			return s
		}
		last = s
	}
	return last + " (still changing after 10 s)"
}

// Raw ZMTP, for requests the client API would not send this way.

// peer is one ZMTP connection, a DEALER, that writes frames by hand. With
// reads it reads replies in a goroutine of its own, into replies; without,
// it never reads its socket.
type peer struct {
	nc      net.Conn
	w       *bufio.Writer
	r       *bufio.Reader
	replies chan string // the kind of each reply, in order
	err     error       // why replies was closed
}

// mustDial connects and handshakes as connflood does, or exits.
func mustDial(reads bool) *peer {
	nc, err := net.Dial("unix", path)
	if err == nil {
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = zmq4.Open(nc, null.Security(), zmq4.Dealer, nil, false, nil)
		nc.SetDeadline(time.Time{})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "attack: connect:", err)
		os.Exit(1)
	}
	p := &peer{nc: nc, w: bufio.NewWriterSize(nc, 256<<10), r: bufio.NewReaderSize(nc, 64<<10)}
	if reads {
		p.replies = make(chan string, 1<<16)
		go func() {
			for {
				k, err := p.reply()
				if err != nil {
					p.err = err
					close(p.replies)
					return
				}
				p.replies <- k
			}
		}()
	}
	return p
}

// send buffers one message: frames with MORE on all but the last.
func (p *peer) send(frames ...[]byte) error {
	var h [9]byte
	for i, f := range frames {
		flags := byte(0)
		if i < len(frames)-1 {
			flags = 0x01 // MORE
		}
		n := 2
		if len(f) > 255 {
			h[0] = flags | 0x02 // LONG
			binary.BigEndian.PutUint64(h[1:], uint64(len(f)))
			n = 9
		} else {
			h[0], h[1] = flags, byte(len(f))
		}
		p.w.Write(h[:n])
		p.w.Write(f)
	}
	_, err := p.w.Write(nil) // bufio keeps the first error
	return err
}

func (p *peer) flush() error { return p.w.Flush() }
func (p *peer) close()       { p.nc.Close() }

// reply reads one reply and names it: "OK", "ERROR reason" (the reason up
// to its first ": "), or "chunk" for a READ's. ZMTP commands (the broker's
// PINGs) are skipped; long frames are read and not kept.
func (p *peer) reply() (string, error) {
	var kind string
	for nframes := 0; ; {
		flags, err := p.r.ReadByte()
		if err != nil {
			return "", err
		}
		var size uint64
		if flags&0x02 != 0 {
			var b [8]byte
			if _, err := io.ReadFull(p.r, b[:]); err != nil {
				return "", err
			}
			size = binary.BigEndian.Uint64(b[:])
		} else {
			b, err := p.r.ReadByte()
			if err != nil {
				return "", err
			}
			size = uint64(b)
		}
		var body []byte
		if size <= 256 {
			body = make([]byte, size)
			_, err = io.ReadFull(p.r, body)
		} else {
			_, err = io.CopyN(io.Discard, p.r, int64(size))
		}
		if err != nil {
			return "", err
		}
		if flags&0x04 != 0 {
			continue // a command
		}
		switch nframes++; {
		case nframes == 1 && string(body) == "OK":
			kind = "OK"
		case nframes == 1 && string(body) == "ERROR":
			kind = "ERROR"
		case nframes == 1:
			kind = "chunk"
		case nframes == 2 && kind == "ERROR":
			reason, _, _ := strings.Cut(string(body), ": ")
			kind = "ERROR " + reason
		}
		if flags&0x01 == 0 {
			return kind, nil
		}
	}
}

// tally counts the replies to a pipeline by command and kind ("WRITE OK").
type tally struct {
	kinds   map[string]int
	answers int
	start   time.Time
	last    time.Time // of the last reply
	why     string    // why it stopped
}

func (t *tally) count(kind string) int { return t.kinds[kind] }

// others sums up the kinds not named, unanswered requests included.
func (t *tally) others(named ...string) string {
	rest := maps.Clone(t.kinds)
	for _, k := range named {
		delete(rest, k)
	}
	if len(rest) == 0 {
		return "none"
	}
	return summary(rest)
}

func (t *tally) took() string {
	return fmt.Sprintf("%s; last reply at %.1f s", t.why, t.last.Sub(t.start).Seconds())
}

// summary writes counts as "a ×3; b ×1", the most frequent first.
func summary(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, "; ")
}

// pipeline sends n requests on p (which reads), at most window unanswered at
// a time, and counts the replies by kind. It stops when all are answered,
// when none has come for idle, or after limit. Requests sent and not
// answered by then count as "CMD unanswered"; the sender may still be
// blocked on the socket, so close p after.
func pipeline(p *peer, n, window int, idle, limit time.Duration, req func(i int) [][]byte) *tally {
	t := &tally{kinds: map[string]int{}, start: time.Now()}
	t.last = t.start
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	sent := make(chan string, window) // the command of each request, in order
	quit := make(chan struct{})
	go func() {
		for i := range n {
			select {
			case <-credit:
			default:
				if p.flush() != nil {
					return
				}
				select {
				case <-credit:
				case <-quit:
					return
				}
			}
			f := req(i)
			sent <- string(f[0])
			if p.send(f...) != nil {
				return
			}
		}
		p.flush()
	}()
	deadline := time.After(limit)
	quiet := time.NewTimer(idle)
	for t.answers < n && t.why == "" {
		select {
		case k, ok := <-p.replies:
			if !ok {
				t.why = "connection lost: " + p.err.Error()
				break
			}
			t.kinds[<-sent+" "+k]++
			t.answers++
			t.last = time.Now()
			credit <- struct{}{}
			quiet.Reset(idle)
		case <-quiet.C:
			t.why = fmt.Sprintf("stopped: no reply for %v", idle)
		case <-deadline:
			t.why = fmt.Sprintf("stopped: time limit %v", limit)
		}
	}
	close(quit)
	if t.why == "" {
		t.why = "all answered"
	}
	for left := len(sent); left > 0; left-- {
		t.kinds[<-sent+" unanswered"]++
	}
	return t
}
