package broker

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zpipes/zpipes/internal/syncbuf"
)

// logBuffer collects log lines; the logger may write from a timer's
// goroutine.
type logBuffer struct{ syncbuf.Buffer }

// lines returns the lines logged so far whose message is msg.
func (b *logBuffer) lines(msg string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if logMsg(l) == msg {
			out = append(out, l)
		}
	}
	return out
}

// logMsg is the msg of a text handler's line.
func logMsg(line string) string {
	_, v, ok := strings.Cut(line, " msg=")
	if !ok {
		return ""
	}
	if q, err := strconv.QuotedPrefix(v); err == nil {
		m, _ := strconv.Unquote(q)
		return m
	}
	m, _, _ := strings.Cut(v, " ")
	return m
}

// events is how many events lines stand for: 1 per line, or its more=N.
func events(t testing.TB, lines []string) int {
	t.Helper()
	n := 0
	for _, l := range lines {
		_, after, ok := strings.Cut(l, " more=")
		if !ok {
			n++
			continue
		}
		v, err := strconv.Atoi(strings.Fields(after)[0])
		mustOK(t, err)
		n += v
	}
	return n
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestLimitedLogLogsFirstThenOneSummary(t *testing.T) {
	var b logBuffer
	l := newLimitedLog(b.logger(), slog.LevelInfo, "handshake failed", time.Hour)
	for i := range 10000 {
		l.event("n", i)
	}
	if got := b.lines("handshake failed"); len(got) != 1 || !strings.Contains(got[0], "n=0") || strings.Contains(got[0], "more=") {
		t.Fatalf("before the window ends: %q, want only the first event", got)
	}
	l.close()
	got := b.lines("handshake failed")
	if len(got) != 2 || !strings.Contains(got[1], "more=9999 n=9999") {
		t.Fatalf("after close: %q, want the first event and more=9999 with the latest attributes", got)
	}
}

func TestLimitedLogSummaryNeedsNoFurtherEvent(t *testing.T) {
	var b logBuffer
	l := newLimitedLog(b.logger(), slog.LevelWarn, "refused", time.Millisecond)
	defer l.close()
	for range 3 {
		l.event()
	}
	// The window ends by itself: the held events are logged without close.
	settle(t, 10*time.Second, "summary", func() (bool, string) {
		got := b.lines("refused")
		return events(t, got) == 3, fmt.Sprint(got)
	})
}

func TestLimitedLogAfterQuietSpellLogsAtOnce(t *testing.T) {
	var b logBuffer
	l := newLimitedLog(b.logger(), slog.LevelError, "accept failed", time.Millisecond)
	defer l.close()
	l.event("i", 1)
	settle(t, 10*time.Second, "quiet spell", func() (bool, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.timer == nil, "window still open"
	})
	l.event("i", 2)
	got := b.lines("accept failed")
	if len(got) != 2 || !strings.Contains(got[1], "i=2") || strings.Contains(got[1], "more=") {
		t.Fatalf("lines %q, want two events logged as they came", got)
	}
}

func TestLimitedLogCountsAddUpUnderConcurrency(t *testing.T) {
	var b logBuffer
	l := newLimitedLog(b.logger(), slog.LevelInfo, "e", time.Millisecond)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				l.event()
			}
		})
	}
	wg.Wait()
	l.close()
	if n := events(t, b.lines("e")); n != 8000 {
		t.Fatalf("lines stand for %d events, want 8000", n)
	}
}
