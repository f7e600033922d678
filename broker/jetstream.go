package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The engine of --store nats://… (the design is in the package doc): the
// connection to NATS, the stream and the bucket, and the loop that owns
// the connections and hands their requests to their workers (jsconn.go).
// The pipe table is in jspipes.go, reading in jsreader.go, jsfetch.go and
// jslease.go.

// JetStreamConfig says how to reach and use NATS JetStream.
type JetStreamConfig struct {
	Creds    string // a .creds file (user JWT and NKey seed)
	User     string // user and password, or
	Password string
	Token    string // a token
	CA       string // PEM file of the CA that signed the servers' certificates
	Cert     string // PEM client certificate and key, for mutual TLS
	Key      string

	// Replicas of the stream and bucket when zpipes creates them: default
	// 3 if the cluster has at least three servers, else 1.
	Replicas int
	// AckWait is how long a reading broker that died keeps its messages
	// before JetStream redelivers them; PinnedTTL how long its pin lasts
	// without a pull, and at least how long its lease on the pipe outlives
	// it (see leaseTTL). PinnedTTL is longer, so the next reader comes once
	// the dead broker's messages are due again, and gets them first, in
	// order. Defaults 10 s and 12 s; tests shorten them.
	AckWait   time.Duration
	PinnedTTL time.Duration
	// Linger is how long a broker keeps reading a pipe nobody reads
	// through it any more, before it gives its window back. Default 1 s.
	Linger time.Duration
	// FailAfter is how long a read waits while every attempt to reach
	// JetStream for it fails (NATS away, the stream gone) before it is
	// answered ERROR. Default 10 s.
	FailAfter time.Duration
}

// setDefaults fills in the zero fields.
func (cfg *JetStreamConfig) setDefaults() {
	if cfg.AckWait == 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.PinnedTTL <= cfg.AckWait {
		cfg.PinnedTTL = cfg.AckWait + cfg.AckWait/5
	}
	if cfg.Linger == 0 {
		cfg.Linger = time.Second
	}
	if cfg.FailAfter == 0 {
		cfg.FailAfter = jsOpTimeout
	}
}

// tick is how often a reader looks at its pulls, pin and lease.
func (cfg *JetStreamConfig) tick() time.Duration { return min(cfg.AckWait/3, cfg.Linger) }

// leaseTTL is how long a lease lasts from its last renewal. Renewed every
// PinnedTTL/3, a tick late at worst, it always has PinnedTTL left: a
// broker that dies holds it that long, longer than AckWait, so that its
// messages are due again before any other broker may read the pipe.
func (cfg *JetStreamConfig) leaseTTL() time.Duration {
	return cfg.PinnedTTL + cfg.PinnedTTL/3 + cfg.tick()
}

// IsJetStream reports whether a store names NATS servers rather than a
// directory.
func IsJetStream(store string) bool {
	return strings.HasPrefix(store, "nats://") || strings.HasPrefix(store, "tls://")
}

// JetStream names.
const (
	jsStream       = "ZPIPES"
	jsSubjects     = "zpipes.d." // chunks: zpipes.d.<pipe>.<writer>
	jsEnds         = "zpipes.e." // writers' ends: zpipes.e.<pipe>.<writer>
	jsBucket       = "zpipes_pipes"
	jsKeyPrefix    = "$KV." + jsBucket + "."
	jsGroup        = "zpipes"
	jsMaxPayload   = 1 << 20 // the server's default; asked of the connection
	jsHeaderRoom   = 4096    // subject, headers and framing in a message
	jsOpTimeout    = 10 * time.Second
	jsWindowBytes  = 8 << 20 // read-ahead per pipe
	jsFetchWait    = time.Second
	jsPublishRetry = 30 * time.Second // how long a write retries before ERROR
)

// pipeKey is a pipe's name in subjects, consumer and key names: names
// are any bytes up to MaxName, longer than a subject token or a file name
// may be.
func pipeKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:16])
}

// jsPipeRecord is a pipe's entry in the bucket.
type jsPipeRecord struct {
	Name  []byte `json:"name"`
	Opens int    `json:"opens"`
}

// jsEngine answers requests from pipes kept in JetStream. Its loop owns the
// connections; each connection's requests run in order in its own
// goroutine (jsConn), since most of them wait on the network; each pipe
// read through this broker has one goroutine that owns its window
// (jsReader).
type jsEngine struct {
	s        *Server
	log      *slog.Logger
	cfg      JetStreamConfig
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream
	kv       jetstream.KeyValue
	kvStream jetstream.Stream // the bucket's stream, for LIST
	id       string           // this broker's name in writers' subjects
	maxMsg   int              // chunk bytes per message
	closed   chan struct{}
	ctx      context.Context // ends when the broker stops
	stop     context.CancelFunc
	conns    map[uint64]*jsConn // owned by loop
	connWG   sync.WaitGroup     // the connections' goroutines
	// Readers stop after the connections (which tell them they are gone),
	// when readersQuit closes.
	readerWG    sync.WaitGroup
	readersQuit chan struct{}
	mu          sync.Mutex // guards readers, the registry only
	readers     map[string]*jsReader
	// Failures that repeat while NATS is away: a line a second.
	readFailed *limitedLog
}

// openJetStream connects to the servers and makes sure the stream and
// the bucket exist.
func openJetStream(urls string, cfg JetStreamConfig, log *slog.Logger) (*jsEngine, error) {
	cfg.setDefaults()
	id := make([]byte, 6)
	rand.Read(id)
	e := &jsEngine{
		log:         log,
		cfg:         cfg,
		id:          hex.EncodeToString(id),
		closed:      make(chan struct{}),
		readersQuit: make(chan struct{}),
		readers:     make(map[string]*jsReader),
		conns:       make(map[uint64]*jsConn),
	}
	e.ctx, e.stop = context.WithCancel(context.Background())
	e.readFailed = newLimitedLog(log, slog.LevelWarn, "jetstream: reading a pipe failed; retrying", time.Second)
	opts := []nats.Option{
		nats.Name("zpipes broker " + e.id),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // closed by us
			}
			log.Error("jetstream: lost the NATS connection; reconnecting, requests wait meanwhile", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("jetstream: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(e.closed) }),
	}
	switch {
	case cfg.Creds != "":
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.CA != "" {
		opts = append(opts, nats.RootCAs(cfg.CA))
	}
	if cfg.Cert != "" || cfg.Key != "" {
		opts = append(opts, nats.ClientCert(cfg.Cert, cfg.Key))
	}
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		e.readFailed.close()
		return nil, fmt.Errorf("store %s: cannot connect to NATS: %w (is nats-server running with JetStream, and reachable?)", urls, err)
	}
	e.nc = nc
	if err := e.setUp(urls); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *jsEngine) setUp(urls string) error {
	js, err := jetstream.New(e.nc)
	if err != nil {
		return fmt.Errorf("store %s: %w", urls, err)
	}
	e.js = js
	ctx, cancel := context.WithTimeout(context.Background(), jsOpTimeout)
	defer cancel()
	replicas := e.cfg.Replicas
	if replicas == 0 {
		replicas = 1
		if len(e.nc.Servers()) >= 3 {
			replicas = 3
		}
	}
	e.maxMsg = int(e.nc.MaxPayload()) - jsHeaderRoom
	if e.maxMsg < 1024 {
		return fmt.Errorf("store %s: the server's max_payload %d is too small", urls, e.nc.MaxPayload())
	}
	st, err := js.Stream(ctx, jsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        jsStream,
			Description: "zpipes: the chunks of pipes, one subject per writer",
			Subjects:    []string{jsSubjects + ">", jsEnds + ">"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  2 * time.Minute,
		})
	}
	if err != nil {
		return fmt.Errorf("store %s: stream %s: %w (is JetStream enabled on the server?)", urls, jsStream, err)
	}
	e.stream = st
	kv, err := js.KeyValue(ctx, jsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      jsBucket,
			Description: "zpipes: pipes and their open counts",
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		})
	}
	if err != nil {
		return fmt.Errorf("store %s: bucket %s: %w", urls, jsBucket, err)
	}
	// A replicated bucket just made answers reads (direct gets) only once
	// its servers run it; until then a read finds no responders.
	for {
		_, err := kv.Get(ctx, "ready")
		if !errors.Is(err, nats.ErrNoResponders) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store %s: bucket %s: %w", urls, jsBucket, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	e.kv = kv
	if e.kvStream, err = js.Stream(ctx, "KV_"+jsBucket); err != nil {
		return fmt.Errorf("store %s: bucket %s: %w", urls, jsBucket, err)
	}
	e.log.Info("jetstream store", "servers", e.nc.ConnectedUrlRedacted(), "replicas", st.CachedInfo().Config.Replicas,
		"max_payload", e.nc.MaxPayload(), "broker", e.id)
	return nil
}

// publish stores one message; JetStream drops a second with the same id
// within its duplicate window (2 minutes).
func (e *jsEngine) publish(ctx context.Context, subj, id string, data []byte) error {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := e.js.PublishMsg(actx, &nats.Msg{Subject: subj, Data: data}, jetstream.WithMsgID(id))
	return err
}

// retryable reports whether a failed publish may succeed if tried again:
// the server was unreachable, or answered that it is busy (a leader
// election), rather than refusing the message.
func retryable(err error) bool {
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		// 503: no leader yet; 10158: the same message id is still being
		// stored (a first try that timed out), so try again to learn how
		// it ended.
		return je.APIError().Code == 503 || je.APIError().ErrorCode == 10158
	}
	return true
}

// close closes the NATS connection and waits until nats.go's goroutines
// are done with it.
func (e *jsEngine) close() {
	e.nc.Close()
	<-e.closed
	e.readFailed.close()
}

// limitChunk lowers a chunk limit to what one message can carry.
func (e *jsEngine) limitChunk(lim *Limits) {
	if lim.MaxChunk > e.maxMsg-16 {
		e.log.Info("jetstream store: chunks are limited by the server's max_payload", "max_chunk", e.maxMsg-16)
		lim.MaxChunk = e.maxMsg - 16
	}
}

// loop is the engine's goroutine: it owns the connections, starts one
// worker for each, and routes read replies back to the pipes' readers.
func (e *jsEngine) loop() {
	s := e.s
	defer s.wg.Done()
	defer close(s.done)
	for {
		select {
		case ev := <-s.events:
			e.handle(ev)
		case <-s.mailWake:
			s.takeMail() // nothing notifies an engine; drained anyway
		case <-s.quit:
			e.shutdown()
			return
		}
	}
}

func (e *jsEngine) handle(ev event) {
	c := ev.conn
	switch {
	case ev.up:
		jc := newJSConn(e, c)
		e.conns[c.id] = jc
		e.connWG.Add(1)
		go jc.run()
	case ev.down:
		if jc := e.conns[c.id]; jc != nil {
			delete(e.conns, c.id)
			close(jc.gone)
		}
	case ev.task != nil:
		if jc := e.conns[c.id]; jc != nil {
			jc.box.put(ev.task)
		}
	case ev.returned != nil:
		for _, r := range ev.returned {
			e.toReader(r.pipe.name, readerMsg{op: ropReturned, items: r.items})
		}
	case ev.delivered != nil:
		for _, r := range ev.delivered {
			e.toReader(r.pipe.name, readerMsg{op: ropDelivered, items: r.items})
		}
	case ev.books != nil:
		ev.books <- [3]int{}
	}
}

// shutdown stops every connection's worker, lets the connections' writers
// send their last replies, then stops every reader (which give their
// windows back) and closes the NATS connection. The readers learn which
// of their chunks those last replies delivered before they give anything
// back: a chunk a client had is not read again by the next reader.
func (e *jsEngine) shutdown() {
	e.stop()
	for id, jc := range e.conns {
		close(jc.gone)
		delete(e.conns, id)
	}
	e.connWG.Wait()
	// A connection's writer ends within drainTimeout, and leaves the
	// server's set of sockets then, which no socket joins once the broker
	// stops. The bound is for the unforeseen (a handshake under way).
	limit := time.After(4 * drainTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case ev := <-e.s.events:
			switch {
			case ev.up: // a connection that came as the broker stopped
				ev.conn.w.close()
				ev.conn.out.shutdown()
			case ev.delivered != nil || ev.returned != nil:
				e.handle(ev)
			}
		case <-tick.C:
			waiting = e.s.conns() > 0
		case <-limit:
			e.log.Debug("jetstream: connections still open at shutdown; what they deliver now may be read again")
			waiting = false
		}
	}
	close(e.readersQuit)
	e.readerWG.Wait()
	e.close()
	e.log.Info("shutting down", "store", "jetstream")
}

// reader returns the pipe's reader on this broker, starting one.
func (e *jsEngine) reader(name string) *jsReader {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.readers[name]
	if r == nil {
		r = newJSReader(e, name)
		e.readers[name] = r
		e.readerWG.Add(1)
		go r.loop()
	}
	return r
}

// toReader hands a message to the pipe's reader, starting one if it has
// gone meanwhile (a reader leaves only when idle, so rarely).
func (e *jsEngine) toReader(name string, m readerMsg) {
	for !e.reader(name).box.put(m) {
	}
}

// forget removes a reader from the registry, unless messages reached it
// meanwhile; it reports whether it did.
func (e *jsEngine) forget(r *jsReader) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !r.box.closeIfEmpty() {
		return false
	}
	delete(e.readers, r.name)
	return true
}
