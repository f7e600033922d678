package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// limitedLog logs one kind of event that peers can cause at any rate (a
// failed handshake, a refused connection, a failed accept) without letting
// them flood the log: the first event of a quiet spell is logged at once, and
// those that follow within the next window are counted and logged as one
// line, "msg more=N" with the latest event's attributes, when the window
// ends. So a kind of event costs at most one line per window, and the counts
// in its lines add up to the number of events.
type limitedLog struct {
	log   *slog.Logger
	level slog.Level
	msg   string
	every time.Duration

	mu     sync.Mutex
	held   int         // events since the last line
	last   []any       // the latest held event's attributes
	timer  *time.Timer // ends the open window; nil while quiet
	closed bool
}

func newLimitedLog(log *slog.Logger, level slog.Level, msg string, every time.Duration) *limitedLog {
	return &limitedLog{log: log, level: level, msg: msg, every: every}
}

// event records one event with its attributes (slog key-value pairs).
func (l *limitedLog) event(args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.held++
		l.last = args
		return
	}
	l.log.Log(context.Background(), l.level, l.msg, args...)
	if !l.closed {
		l.timer = time.AfterFunc(l.every, l.windowEnd)
	}
}

// windowEnd logs what the window held, and keeps a window open after a
// summary, so that a steady stream gets one line per window.
func (l *limitedLog) windowEnd() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.timer == nil {
		return
	}
	if l.held == 0 {
		l.timer = nil
		return
	}
	l.flushLocked()
	l.timer.Reset(l.every)
}

func (l *limitedLog) flushLocked() {
	if l.held == 0 {
		return
	}
	args := append([]any{"more", l.held}, l.last...)
	l.log.Log(context.Background(), l.level, l.msg, args...)
	l.held, l.last = 0, nil
}

// close logs what is held at once and stops the window's timer; events
// after close are logged as they come.
func (l *limitedLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.flushLocked()
}
