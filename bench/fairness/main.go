// Command fairness measures how soon a light writer's chunk reaches the
// reader of a pipe that a heavy writer keeps deep, through a running zpipes
// broker. Four connections take part:
//
//	heavy   pipelines MWRITEs of 1024 64-byte chunks (8 in flight, as
//	        zpipes cat -w does), keeping the pipe 10,000-30,000 chunks deep
//	reader  READs one chunk at a time, so every READ is one turn
//	light   once LIST shows the pipe deep, and after a random pause, WRITEs
//	        one marker chunk; repeated for each trial
//	control LISTs, and drains the pipe at the end
//
// For each marker it reports K: how many READs the reader sent after the
// marker's WRITE was acknowledged, up to and including the one that returned
// the marker. Round robin promises K <= 2 (the heavy writer may have the
// current turn); K = 0 means a READ already on its way returned it.
//
// Which READs went out after the OK is judged from timestamps, and a
// goroutine can be descheduled between an event and its timestamp: each READ
// is stamped just before and just after it is sent, the OK just after it is
// seen. K counts the READs surely sent after the OK (stamped before sending,
// later than the OK's stamp); K+ also counts those that may have been
// (stamped after sending, later than the OK's stamp). A K above 2 is a
// fairness bug; a K+ above 2 alone is the measurement's slack on a busy
// machine. It also reports how many chunks the reader received after the OK,
// marker included: that can add a READ answered before the WRITE.
//
// Usage:
//
//	fairness -e ENDPOINT [-trials 50] [-depth 10000] [-high 30000]
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zpipes/zpipes/broker"
)

const (
	batch    = 1024
	window   = 8
	chunkLen = 64
	history  = 64 // READs the reader remembers back from a marker
	marker   = "LIGHT-MARK-"
)

func main() {
	ep := flag.String("e", "", "endpoint of a running zpipes broker (required)")
	trials := flag.Int("trials", 50, "markers to write")
	depth := flag.Int("depth", 10000, "chunks queued before a marker is written")
	high := flag.Int("high", 30000, "chunks the heavy writer keeps queued at most")
	pause := flag.Duration("pause", 20*time.Millisecond, "longest random pause before each marker")
	flag.Parse()
	if *ep == "" || flag.NArg() != 0 || *trials < 1 || *depth < 1 || *high < *depth+batch || *pause < 0 {
		fmt.Fprintln(os.Stderr, "usage: fairness -e ENDPOINT [-trials N] [-depth CHUNKS] [-high CHUNKS >= depth+1024] [-pause D]")
		os.Exit(2)
	}
	if err := run(*ep, *trials, *depth, *high, *pause); err != nil {
		fmt.Fprintln(os.Stderr, "fairness:", err)
		os.Exit(1)
	}
}

// result is what one marker saw.
type result struct {
	k, kPlus int           // READs surely, and possibly, sent after the OK
	received int           // chunks received after the OK
	depth    int           // chunks queued when the marker was written
	ok       time.Duration // the marker's WRITE round trip
}

func run(ep string, trials, depth, high int, pause time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pipe := fmt.Sprintf("fairness-%012x", rand.Uint64()>>16)

	var clients []*broker.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range 4 {
		c, err := broker.Dial(ctx, ep)
		if err != nil {
			return err
		}
		clients = append(clients, c)
	}
	heavy, reader, light, control := clients[0], clients[1], clients[2], clients[3]
	if err := control.Open(ctx, pipe); err != nil {
		return err
	}

	var (
		received atomic.Int64 // chunks the reader has
		room     = make(chan struct{}, 1)
		markers  = make(chan arrival) // from the reader
		stop     = make(chan struct{})
		readDone = make(chan struct{}) // closed when the reader has stopped
		wg       sync.WaitGroup
		heavyErr error
		readErr  error
		acked    int64 // heavy chunks acknowledged, once heavy is done
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		acked, heavyErr = writeHeavy(heavy, pipe, int64(high), &received, room, stop)
	}()
	go func() {
		defer wg.Done()
		defer close(readDone)
		readErr = readOne(reader, pipe, &received, room, markers, stop)
	}()
	// Stop both on every way out, so a failure does not hang in Wait.
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer halt()

	var results []result
	for i := range trials {
		r, err := trial(ctx, light, control, pipe, i, depth, pause, markers, readDone)
		if err != nil {
			halt()
			return fmt.Errorf("marker %d: %w", i, errors.Join(err, heavyErr, readErr))
		}
		results = append(results, r)
	}
	halt()
	if err := errors.Join(heavyErr, readErr); err != nil {
		return err
	}

	// What is left is exactly the heavy chunks nobody read: drain them, so
	// the pipe goes away and the count is checked.
	left := int(acked) + trials - int(received.Load())
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	drain := control.NewReader(dctx, pipe, broker.ReaderOptions{Max: left})
	for left > 0 {
		if _, err := drain.Next(); err != nil {
			drain.Close()
			return fmt.Errorf("drain (%d chunks left): %w", left, err)
		}
		drain.Consume(1)
		left--
	}
	drain.Close()
	if err := control.ClosePipe(ctx, pipe); err != nil {
		return err
	}
	report(results, depth, high)
	return nil
}

// arrival is the reader's record of a marker.
type arrival struct {
	id     int
	before []time.Time // just before each of the last READs went out, the marker's last
	after  []time.Time // just after each went out
	recvd  []time.Time // when each of their replies came in
}

// trial waits until the pipe is deep, pauses, writes marker id and waits
// for the reader to get it.
func trial(ctx context.Context, light, control *broker.Client, pipe string, id, depth int, pause time.Duration, markers <-chan arrival, readDone <-chan struct{}) (result, error) {
	var r result
	deadline := time.Now().Add(10 * time.Second)
	for {
		infos, err := control.List(ctx)
		if err != nil {
			return r, err
		}
		i := slices.IndexFunc(infos, func(p broker.PipeInfo) bool { return p.Name == pipe })
		if i >= 0 && infos[i].Chunks > depth {
			r.depth = infos[i].Chunks
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("pipe not %d chunks deep after 10s", depth)
		}
		time.Sleep(time.Millisecond)
	}
	if pause > 0 {
		time.Sleep(rand.N(pause))
	}
	start := time.Now()
	if err := light.Write(ctx, pipe, []byte(marker+strconv.Itoa(id))); err != nil {
		return r, err
	}
	ok := time.Now()
	r.ok = ok.Sub(start)
	select {
	case a := <-markers:
		if a.id != id {
			return r, fmt.Errorf("reader got marker %d, want %d", a.id, id)
		}
		r.k = countAfter(a.before, ok)
		r.kPlus = countAfter(a.after, ok)
		r.received = countAfter(a.recvd, ok)
	case <-readDone:
		return r, errors.New("the reader stopped")
	case <-time.After(10 * time.Second):
		return r, errors.New("not delivered within 10s: the light writer is starved")
	}
	return r, nil
}

func countAfter(ts []time.Time, t time.Time) int {
	n := 0
	for _, x := range ts {
		if x.After(t) {
			n++
		}
	}
	return n
}

// writeHeavy streams batches, keeping at most high chunks sent and not yet
// read, until stop; it returns the chunks acknowledged.
func writeHeavy(c *broker.Client, pipe string, high int64, received *atomic.Int64, room <-chan struct{}, stop <-chan struct{}) (int64, error) {
	w, err := c.NewWriter(context.Background(), pipe, broker.WriterOptions{Batch: batch, Window: window})
	if err != nil {
		return 0, err
	}
	chunk := bytes.Repeat([]byte("h"), chunkLen)
	finish := func() (int64, error) {
		n, err := w.Close()
		if err != nil {
			err = fmt.Errorf("heavy writer: %w", err)
		}
		return int64(n), err
	}
	var sent int64
	for {
		select {
		case <-stop:
			return finish()
		default:
		}
		for sent-received.Load() > high-batch {
			select {
			case <-room:
			case <-stop:
				return finish()
			}
		}
		for range batch {
			if err := w.Write(chunk); err != nil {
				return finish()
			}
		}
		sent += batch
	}
}

// readOne reads one chunk at a time (one MREAD of 1 in flight, none ahead)
// until stop, reporting every marker with the times of the reads before
// it. A read outstanding at stop is taken back, so its chunk stays in the
// pipe.
func readOne(c *broker.Client, pipe string, received *atomic.Int64, room chan<- struct{}, markers chan<- arrival, stop <-chan struct{}) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	r := c.NewReader(ctx, pipe, broker.ReaderOptions{Batch: 1, Ahead: 1})
	defer r.Close()
	var before, after, recvd []time.Time
	for {
		// The request goes out inside Next: both stamps bracket it.
		before = append(before, time.Now())
		after = append(after, time.Now())
		chunk, err := r.Next()
		if ctx.Err() != nil {
			return nil
		}
		recvd = append(recvd, time.Now())
		if err != nil {
			return fmt.Errorf("reader: %w", err)
		}
		r.Consume(1)
		received.Add(1)
		select {
		case room <- struct{}{}:
		default:
		}
		if id, ok := bytes.CutPrefix(chunk, []byte(marker)); ok {
			n, err := strconv.Atoi(string(id))
			if err != nil {
				return fmt.Errorf("reader: bad marker %q", chunk)
			}
			from := max(0, len(recvd)-history)
			a := arrival{n, slices.Clone(before[from:]), slices.Clone(after[from:]), slices.Clone(recvd[from:])}
			select {
			case markers <- a:
			case <-stop:
				return nil
			}
		}
		if len(recvd) > 4*history {
			keep := len(recvd) - history
			before = append(before[:0], before[keep:]...)
			after = append(after[:0], after[keep:]...)
			recvd = append(recvd[:0], recvd[keep:]...)
		}
	}
}

func report(results []result, depth, high int) {
	fmt.Printf("light writer's marker vs a heavy writer (MWRITE %d x %d B, %d in flight, pipe kept %d-%d deep);\n",
		batch, chunkLen, window, depth, high)
	fmt.Printf("reader READs one chunk at a time; %d markers\n", len(results))
	fmt.Println("K = READs surely sent after the marker's OK, up to the one that returned it; K+ = possibly sent after")
	hist := map[[2]int]int{}
	var ks, kPluses, recvs, depths []int
	var oks []time.Duration
	for _, r := range results {
		hist[[2]int{r.k, r.kPlus}]++
		ks = append(ks, r.k)
		kPluses = append(kPluses, r.kPlus)
		recvs = append(recvs, r.received)
		depths = append(depths, r.depth)
		oks = append(oks, r.ok)
	}
	keys := slices.Collect(maps.Keys(hist))
	slices.SortFunc(keys, func(a, b [2]int) int { return cmp.Or(a[0]-b[0], a[1]-b[1]) })
	for _, key := range keys {
		fmt.Printf("  K=%d K+=%d  %4d markers\n", key[0], key[1], hist[key])
	}
	maxK := slices.Max(ks)
	verdict := "ok, want <= 2"
	if maxK > 2 {
		verdict = "UNFAIR, want <= 2"
	}
	slices.Sort(depths)
	slices.Sort(oks)
	fmt.Printf("max K %d (%s); max K+ %d; max chunks received after the OK, marker included: %d\n",
		maxK, verdict, slices.Max(kPluses), slices.Max(recvs))
	fmt.Printf("queue depth at marker: median %d; marker WRITE->OK: median %.0f µs, max %.0f µs\n",
		depths[len(depths)/2], us(oks[len(oks)/2]), us(oks[len(oks)-1]))
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
