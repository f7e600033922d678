package main

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
)

// progress counts what a cat moved. On a terminal it redraws one status
// line on stderr four times a second; finish prints a summary line. A nil
// *progress counts nothing, so callers need not check for -p.
type progress struct {
	what          string
	w             *os.File
	live          bool
	start         time.Time
	chunks, bytes atomic.Int64
	stop, done    chan struct{}
}

func startProgress(w *os.File, what string) *progress {
	p := &progress{what: what, w: w, live: isatty.IsTerminal(w.Fd()), start: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *progress) add(chunks, bytes int) {
	if p != nil {
		p.chunks.Add(int64(chunks))
		p.bytes.Add(int64(bytes))
	}
}

func (p *progress) run() {
	defer close(p.done)
	if !p.live {
		<-p.stop
		return
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last, lastAt := int64(0), p.start
	for {
		select {
		case <-p.stop:
			fmt.Fprint(p.w, "\r\x1b[K") // clear the live line
			return
		case now := <-t.C:
			n := p.chunks.Load()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			fmt.Fprintf(p.w, "\r\x1b[K%s chunks  %s  %s chunks/s", count(n), size(p.bytes.Load()), count(int64(rate)))
		}
	}
}

func (p *progress) finish() {
	close(p.stop)
	<-p.done
	d := time.Since(p.start)
	n, b := p.chunks.Load(), p.bytes.Load()
	fmt.Fprintf(p.w, "zpipes: %s: %s chunks, %s in %s (%s chunks/s)\n",
		p.what, count(n), size(b), d.Round(time.Millisecond), count(int64(float64(n)/d.Seconds())))
}

// count formats n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// size formats a byte count in powers of 1024.
func size(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
