package broker

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/zpipes/zpipes/broker/internal/wal"
	"golang.org/x/sys/unix"
)

// Config says where and how a broker serves. Zero fields take defaults.
type Config struct {
	Endpoint string       // default DefaultEndpoint
	Logger   *slog.Logger // default: discard
	Limits   Limits       // default DefaultLimits

	// MaxPipeBytes bounds what one pipe queues; a WRITE to a full pipe is
	// answered once a reader makes room. MaxTotalBytes bounds all pipes
	// together. Both count each chunk's bytes plus a small overhead.
	MaxPipeBytes  int // default 256 MiB
	MaxTotalBytes int // default 512 MiB

	// AllowUIDs lists the users, besides the broker's own, whose processes
	// may connect. Everybody else is refused before the handshake.
	AllowUIDs []int

	// HandshakeTimeout bounds the ZMTP greeting of a new connection: a
	// peer that connects and says nothing is closed after it.
	HandshakeTimeout time.Duration // default 5s

	// MaxConns bounds the connections open at once, those still in their
	// handshake included. One over it is closed as soon as it is accepted,
	// before its handshake, so peers cannot take every file descriptor.
	MaxConns int // default DefaultMaxConns()

	// MaxPipes bounds the pipes the broker holds; an OPEN or HOLD that
	// would create one more is answered "too many pipes".
	MaxPipes int // default DefaultMaxPipes

	// Store, if set, is the directory of a durable store: pipes, open
	// counts, writers' queues and chunks survive the broker's exit, crash
	// and restart, and a write is acknowledged only once it is on disk
	// (group commit). Empty: chunks live in memory, as long as the broker.
	Store string
	// StoreSyncEvery, if set, acknowledges writes before they are on disk
	// and makes them durable this often: a crash may lose what was
	// acknowledged in that window, for more writes per second.
	StoreSyncEvery time.Duration
	// JetStream says how to use a Store that names NATS servers
	// (nats://host:4222[,host2:4222…]): then the pipes live in JetStream,
	// shared by every broker pointed at it (see the package doc).
	JetStream JetStreamConfig

	// logEvery is the window of the logs that summarise events peers can
	// repeat at any rate (see limitedLog). Tests lengthen it.
	logEvery time.Duration // default 1s

	// storeSlack, if set, replaces compactSlack, so tests compact often;
	// testStore, if set, is the store.
	storeSlack int64
	testStore  store
	// spillAbove, if set, replaces spillAbove (spill.go), so tests spill
	// small queues; storeSegment, if set, is the log's segment size, so
	// tests have many segments.
	spillAbove   int
	storeSegment int64
	// beforeAccept, if set, runs before each accept: tests hold the
	// accept loop with it.
	beforeAccept func()
}

// The default byte limits, when Config leaves them zero.
const (
	DefaultMaxPipeBytes  = 256 << 20
	DefaultMaxTotalBytes = 512 << 20
)

// DefaultMaxPipes is the pipe limit when Config.MaxPipes is zero: enough
// for any use of names, few enough that empty pipes (about a kilobyte
// each, with their names) cannot run the broker out of memory.
const DefaultMaxPipes = 100_000

// DefaultMaxConns is the connection limit when Config.MaxConns is zero:
// 4096, or the process's file descriptor limit less a headroom for the
// broker's own files if that is lower.
func DefaultMaxConns() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return maxConnsFor(1024) // the usual soft limit
	}
	return maxConnsFor(rl.Cur)
}

func maxConnsFor(fds uint64) int {
	const most, headroom = 4096, 64
	switch {
	case fds >= most+headroom:
		return most
	case fds > 2*headroom:
		return int(fds - headroom)
	}
	return max(1, int(fds/2))
}

func (c *Config) setDefaults() error {
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Limits == (Limits{}) {
		c.Limits = DefaultLimits
	}
	if c.MaxPipeBytes == 0 {
		c.MaxPipeBytes = DefaultMaxPipeBytes
	}
	if c.MaxTotalBytes == 0 {
		c.MaxTotalBytes = DefaultMaxTotalBytes
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = handshakeLimit
	}
	if c.MaxPipes == 0 {
		c.MaxPipes = DefaultMaxPipes
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns()
	}
	if c.logEvery == 0 {
		c.logEvery = time.Second
	}
	l := c.Limits
	switch {
	case l.MaxName < 1 || l.MaxChunk < 1 || l.MaxBatch < 1:
		return errors.New("limits must be positive")
	case c.MaxConns < 0:
		return fmt.Errorf("connection limit %d is negative", c.MaxConns)
	case c.MaxPipeBytes < l.MaxChunk+chunkOverhead:
		return fmt.Errorf("pipe limit %d cannot hold one chunk of the chunk limit %d, which counts %d bytes with its overhead", c.MaxPipeBytes, l.MaxChunk, l.MaxChunk+chunkOverhead)
	case c.MaxTotalBytes < c.MaxPipeBytes:
		return fmt.Errorf("total limit %d is below the pipe limit %d", c.MaxTotalBytes, c.MaxPipeBytes)
	}
	return nil
}

// Server is a running broker. Start one with Listen; stop it with Close.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ln     *listener
	allow  []int
	events chan event // to the JetStream engine's goroutine
	co     *core      // without one, the core, run under coreMu
	coreMu sync.Mutex
	quit   chan struct{} // closed by Close: the core shuts down
	done   chan struct{} // closed when the core has exited
	nextID atomic.Uint64
	eng    *jsEngine // the pipes' engine with a JetStream store; else the core

	wg        sync.WaitGroup // every goroutine the server started
	closeOnce sync.Once

	mu      sync.Mutex
	sockets map[net.Conn]struct{} // every open connection, to force at Close

	// The store's events (commits done, compactions done), which must
	// never wait for the core: see notify.
	mailMu   sync.Mutex
	mail     []event
	mailWake chan struct{}

	// What peers can make happen at any rate is logged summarised.
	handshakeFailed *limitedLog
	refusedUser     *limitedLog
	refusedFull     *limitedLog
	acceptFailed    *limitedLog
	requestFailed   *limitedLog
}

// event is what connection goroutines tell the core.
type event struct {
	conn      *conn
	up        bool         // a new connection
	down      bool         // the connection is gone
	task      *task        // a request
	returned  []reply      // read replies that were never delivered
	delivered []reply      // read replies written to their connection
	committed *commitDone  // the store made changes durable
	books     chan [3]int  // tests: the core answers its total, fixed and spilled bytes
	compacted *compactDone // the store's checkpoint is durable
}

// Listen binds the endpoint and starts serving. It fails at once if another
// broker already serves the endpoint.
func Listen(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	var st store = memStore{}
	if cfg.testStore != nil {
		st = cfg.testStore
	}
	var eng *jsEngine
	if IsJetStream(cfg.Store) {
		var err error
		if eng, err = openJetStream(cfg.Store, cfg.JetStream, cfg.Logger); err != nil {
			return nil, err
		}
		eng.limitChunk(&cfg.Limits)
	} else if cfg.Store != "" {
		ls, err := openLogStore(cfg.Store, wal.Options{SyncEvery: cfg.StoreSyncEvery, SegmentBytes: cfg.storeSegment}, cfg.Logger)
		if err != nil {
			return nil, err
		}
		if cfg.storeSlack > 0 {
			ls.slack = cfg.storeSlack
		}
		st = ls
	}
	ln, err := listen(cfg.Endpoint)
	if err != nil {
		st.close()
		if eng != nil {
			eng.close()
		}
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		ln:       ln,
		allow:    append([]int{os.Getuid()}, cfg.AllowUIDs...),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		sockets:  make(map[net.Conn]struct{}),
		mailWake: make(chan struct{}, 1),
	}
	every := cfg.logEvery
	s.handshakeFailed = newLimitedLog(s.log, slog.LevelInfo, "handshake failed", every)
	s.refusedUser = newLimitedLog(s.log, slog.LevelWarn, "refused connection from another user", every)
	s.refusedFull = newLimitedLog(s.log, slog.LevelWarn, "refused connection: too many connections", every)
	s.acceptFailed = newLimitedLog(s.log, slog.LevelError, "accept failed", every)
	s.requestFailed = newLimitedLog(s.log, slog.LevelInfo, "request failed", every)
	if eng != nil {
		eng.s, s.eng, s.events = s, eng, make(chan event, 256)
		s.wg.Add(2)
		go s.acceptLoop()
		go eng.loop()
		s.log.Info("listening", "endpoint", cfg.Endpoint, "max_conns", cfg.MaxConns, "store", "jetstream")
		return s, nil
	}
	co := newCore(s)
	co.store = st
	_, mem := st.(memStore)
	co.persist = !mem
	if ls, ok := st.(*logStore); ok {
		co.disk, co.spillAbove = ls, spillAbove
		if cfg.spillAbove > 0 {
			co.spillAbove = cfg.spillAbove
		}
		if err := co.recover(ls); err != nil {
			ln.Close()
			st.close()
			return nil, err
		}
	}
	s.co = co
	s.wg.Add(2)
	go s.acceptLoop()
	go co.loop()
	s.log.Info("listening", "endpoint", cfg.Endpoint, "max_conns", cfg.MaxConns)
	return s, nil
}

// Endpoint is the endpoint the server listens on.
func (s *Server) Endpoint() string { return s.cfg.Endpoint }

// Close stops the broker: it stops accepting, answers waiting requests with
// an error, logs what queued chunks it discards, and returns once every
// goroutine it started has ended. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.ln.Close()
		close(s.quit)
		<-s.done
		// Writers send their last replies within drainTimeout; then anything
		// left (handshakes, stalled peers) is cut off.
		t := time.AfterFunc(2*drainTimeout, s.closeConns)
		s.wg.Wait()
		t.Stop()
		for _, l := range []*limitedLog{s.handshakeFailed, s.refusedUser, s.refusedFull, s.acceptFailed, s.requestFailed} {
			l.close()
		}
	})
	return nil
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.sockets {
		c.Close()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.quit:
		return false
	default:
	}
	s.sockets[c] = struct{}{}
	return true
}

// conns is the number of open connections.
func (s *Server) conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sockets)
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.sockets, c)
	s.mu.Unlock()
}

// notify hands an event to the core from a goroutine that must never wait
// on it (the store's): once the broker is stopping, the event is dropped.
func (s *Server) notify(ev event) {
	// Never the core's lock: the core may itself be waiting on the store
	// (a full log buffer), or calling it (a commit called back at once),
	// so the event goes into a mailbox the core's loop empties.
	s.mailMu.Lock()
	s.mail = append(s.mail, ev)
	s.mailMu.Unlock()
	signal(s.mailWake)
}

// takeMail empties the store's mailbox, for the core.
func (s *Server) takeMail() []event {
	s.mailMu.Lock()
	defer s.mailMu.Unlock()
	m := s.mail
	s.mail = nil
	return m
}

// send hands an event to the core, or the JetStream engine; false once it
// is gone.
func (s *Server) send(ev event) bool {
	if s.co != nil {
		return s.co.dispatch(ev)
	}
	select {
	case s.events <- ev:
		return true
	case <-s.done:
		return false
	}
}

// acceptBackoff is the pause after an accept failure (out of file
// descriptors and the like) that followed one of prev: doubling while the
// failures go on, up to a second, so the broker neither spins nor floods its
// log, and the listener stays.
func acceptBackoff(prev time.Duration) time.Duration {
	const least, most = 5 * time.Millisecond, time.Second
	return min(max(2*prev, least), most)
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		if s.cfg.beforeAccept != nil {
			s.cfg.beforeAccept()
		}
		nc, err := s.ln.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			backoff = acceptBackoff(backoff)
			s.acceptFailed.event("err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
				continue
			case <-s.quit:
				t.Stop()
				return
			}
		}
		backoff = 0
		// Only this goroutine adds connections, so the count cannot grow
		// between the check and track.
		if s.conns() >= s.cfg.MaxConns {
			s.refusedFull.event("max_conns", s.cfg.MaxConns)
			nc.Close()
			continue
		}
		if !s.permitted(nc) || !s.track(nc) {
			nc.Close()
			continue
		}
		s.wg.Add(1)
		go s.start(nc)
	}
}

// permitted checks the peer's uid. An abstract socket has no file mode, so
// this is the only thing that keeps other users out.
func (s *Server) permitted(nc *net.UnixConn) bool {
	cred, err := peerCred(nc)
	if err != nil {
		s.log.Warn("refused connection: cannot read peer credentials", "err", err)
		return false
	}
	if slices.Contains(s.allow, int(cred.Uid)) {
		return true
	}
	s.refusedUser.event("uid", cred.Uid, "pid", cred.Pid)
	return false
}

// start handshakes a new connection in its own goroutine, so a peer that
// never finishes its greeting delays nobody, then runs its reader and writer.
func (s *Server) start(nc *net.UnixConn) {
	defer s.wg.Done()
	defer func() {
		// zmq4 parses the peer's handshake; a bug there must cost one
		// connection, not the broker.
		if r := recover(); r != nil {
			s.log.Error("handshake panicked", "panic", r)
			nc.Close()
			s.untrack(nc)
		}
	}()
	w, err := handshake(nc, zmq4.Router, nil, true, time.Now().Add(s.cfg.HandshakeTimeout))
	if err != nil {
		s.handshakeFailed.event("err", err)
		nc.Close()
		s.untrack(nc)
		return
	}
	c := &conn{id: s.nextID.Add(1), w: w, out: newOutbox()}
	if !s.send(event{conn: c, up: true}) {
		nc.Close()
		s.untrack(nc)
		return
	}
	s.log.Debug("connected", "conn", c.id, "type", w.peerType, "identity", fmt.Sprintf("%x", w.peerID))
	s.wg.Add(2)
	go s.readLoop(c)
	go s.writeLoop(c)
}
