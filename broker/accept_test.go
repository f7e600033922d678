package broker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"golang.org/x/sys/unix"
)

// closedByBroker reads nc until the broker closes it, returning how many
// bytes came first; it fails the test if the broker never does.
func closedByBroker(t testing.TB, nc net.Conn) int {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, nc)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection not closed by the broker: %v", err)
	}
	return int(n)
}

// onceAnHour makes summarised log lines wait for Close, so a test can count
// them exactly.
func onceAnHour(b *logBuffer) func(*Config) {
	return func(c *Config) {
		c.Logger = b.logger()
		c.logEvery = time.Hour
	}
}

func TestConnectionsOverMaxConnsAreClosedBeforeHandshake(t *testing.T) {
	var logs logBuffer
	s := startServer(t, onceAnHour(&logs), func(c *Config) { c.MaxConns = 2 })
	first := dialT(t, s)
	dialT(t, s)
	const over = 5
	for range over {
		nc, err := dialUnix(s.Endpoint())
		mustOK(t, err)
		defer nc.Close()
		// Not even the broker's greeting: it was closed before its handshake.
		if n := closedByBroker(t, nc); n != 0 {
			t.Fatalf("connection over the limit got %d bytes first", n)
		}
	}
	// A connection that goes away makes room for another.
	first.Close()
	refused := over
	settle(t, 10*time.Second, "a free connection", func() (bool, string) {
		c, err := Dial(testCtx(t), s.Endpoint())
		if err != nil {
			refused++
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	s.Close()
	const msg = "refused connection: too many connections"
	if got := logs.lines(msg); len(got) != 2 || events(t, got) != refused || !strings.Contains(got[0], "max_conns=2") {
		t.Fatalf("log lines %q, want one line and one summary for %d refusals", got, refused)
	}
}

func TestSilentSocketIsClosedAfterHandshakeTimeout(t *testing.T) {
	s := startServer(t, func(c *Config) { c.HandshakeTimeout = 50 * time.Millisecond })
	nc, err := dialUnix(s.Endpoint())
	mustOK(t, err)
	defer nc.Close()
	closedByBroker(t, nc)
	settle(t, 10*time.Second, "connection count", func() (bool, string) {
		n := s.conns()
		return n == 0, fmt.Sprintf("%d connections", n)
	})
}

// A peer that sends its greeting and then stalls is closed at the same
// deadline: the timeout bounds the whole handshake, not each read.
func TestStalledHandshakeIsClosedAfterHandshakeTimeout(t *testing.T) {
	s := startServer(t, func(c *Config) { c.HandshakeTimeout = 50 * time.Millisecond })
	nc, err := dialUnix(s.Endpoint())
	mustOK(t, err)
	defer nc.Close()
	g := zmtpGreeting()
	_, err = nc.Write(g[:len(g)-1])
	mustOK(t, err)
	closedByBroker(t, nc)
}

// Trap: a connection that never sends its greeting must not hold up others
// (zmq4's own accept loop handshakes inline).
func TestSilentConnectionDoesNotBlockOthers(t *testing.T) {
	s := startServer(t)
	for range 3 {
		nc, err := dialUnix(s.Endpoint())
		mustOK(t, err)
		defer nc.Close()
	}
	c := dialT(t, s)
	mustOK(t, c.Open(testCtx(t), "p"))
}

func TestHandshakeTimeoutsAreSummarisedInLog(t *testing.T) {
	var logs logBuffer
	s := startServer(t, onceAnHour(&logs), func(c *Config) { c.HandshakeTimeout = 50 * time.Millisecond })
	const silent = 50
	var socks []net.Conn
	for range silent {
		nc, err := dialUnix(s.Endpoint())
		mustOK(t, err)
		defer nc.Close()
		socks = append(socks, nc)
	}
	for _, nc := range socks {
		closedByBroker(t, nc) // the broker logs before it closes
	}
	s.Close()
	if got := logs.lines("handshake failed"); len(got) != 2 || events(t, got) != silent {
		t.Fatalf("log lines %q, want one line and one summary for %d timeouts", got, silent)
	}
}

func TestAcceptBackoffDoublesUpToASecond(t *testing.T) {
	var got []time.Duration
	d := time.Duration(0)
	for range 10 {
		d = acceptBackoff(d)
		got = append(got, d)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("backoffs %v, want %v ms", got, want)
		}
	}
}

// Out of file descriptors, the broker keeps its listener, logs the failures
// summarised, and serves again once descriptors are free.
func TestAcceptFailuresAreSummarisedAndServingResumes(t *testing.T) {
	var logs logBuffer
	gate := make(chan struct{})
	s := startServer(t, onceAnHour(&logs), func(c *Config) {
		// The accept loop waits until the connections below are queued
		// and no descriptor is left, so they cannot be accepted early.
		first := true
		c.beforeAccept = func() {
			if first {
				first = false
				return // the loop's first accept happens before the test
			}
			<-gate
		}
	})
	// Connections the kernel has queued for the broker to accept.
	var pending []net.Conn
	for range 3 {
		nc, err := dialUnix(s.Endpoint())
		mustOK(t, err)
		defer nc.Close()
		pending = append(pending, nc)
	}
	var lim unix.Rlimit
	mustOK(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &lim))
	restore := sync.OnceFunc(func() { mustOK(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)) })
	defer restore()
	// No descriptor can be allocated at all: accept fails with EMFILE.
	mustOK(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 0, Max: lim.Max}))
	close(gate)
	settle(t, 20*time.Second, "accept failures", func() (bool, string) {
		s.acceptFailed.mu.Lock()
		defer s.acceptFailed.mu.Unlock()
		return s.acceptFailed.held >= 2, fmt.Sprintf("%d held", s.acceptFailed.held)
	})
	restore()
	for _, nc := range pending {
		_, err := handshake(nc, zmq4.Dealer, nil, false, time.Now().Add(10*time.Second))
		mustOK(t, err)
	}
	s.Close()
	got := logs.lines("accept failed")
	if len(got) != 2 || !strings.Contains(got[0], "too many open files") || !strings.Contains(got[1], "more=") {
		t.Fatalf("log lines %q, want one line and one summary", got)
	}
}

func TestDefaultMaxConnsLeavesFileDescriptorsToSpare(t *testing.T) {
	for _, tc := range []struct {
		fds  uint64
		want int
	}{
		{unix.RLIM_INFINITY, 4096},
		{1 << 20, 4096},
		{4160, 4096},
		{1024, 960},
		{100, 50},
		{1, 1},
		{0, 1},
	} {
		if got := maxConnsFor(tc.fds); got != tc.want {
			t.Errorf("maxConnsFor(%d) = %d, want %d", tc.fds, got, tc.want)
		}
	}
	var lim unix.Rlimit
	mustOK(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &lim))
	if n := DefaultMaxConns(); uint64(n) >= lim.Cur {
		t.Fatalf("DefaultMaxConns() = %d with a limit of %d descriptors", n, lim.Cur)
	}
}

// A client run as another user is refused unless that user is allowed.
func TestOtherUsersAreRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("running a client as another user needs root (CI runs as root)")
	}
	// The test binary must be executable by the other user.
	dir, err := os.MkdirTemp("", "zpipes-uid-")
	mustOK(t, err)
	defer os.RemoveAll(dir)
	mustOK(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "broker.test")
	copyFile(t, os.Args[0], bin)
	const nobody = 65534
	run := func(ep string) (int, string) {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "ZPIPES_TEST_DIAL="+ep)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		mustOK(t, err)
		return 0, string(out)
	}
	s := startServer(t)
	// The refused client learns whose broker it is and what to do.
	if code, out := run(s.Endpoint()); code != 5 || !strings.Contains(out, fmt.Sprintf("belongs to uid %d", os.Getuid())) || !strings.Contains(out, "ZPIPES_ENDPOINT") {
		t.Fatalf("client as uid %d: exit %d (%s), want refused", nobody, code, out)
	}
	allowed := startServer(t, func(c *Config) { c.AllowUIDs = []int{nobody} })
	if code, out := run(allowed.Endpoint()); code != 0 {
		t.Fatalf("allowed uid %d: exit %d (%s)", nobody, code, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	mustOK(t, err)
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	mustOK(t, err)
	_, err = io.Copy(dst, src)
	mustOK(t, err)
	mustOK(t, dst.Close())
}
