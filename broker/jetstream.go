package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Pipes kept in NATS JetStream (`zpipes serve --store nats://…`).
//
// With a JetStream store the pipes are not the broker's: every broker
// pointed at the same JetStream serves the same pipes, so what the local
// core decides alone from its own memory (does the pipe exist, who is its
// reader, whose chunk is next) is decided by JetStream, over the network.
// The core's decisions are synchronous and in memory; these take a round
// trip. So the seam is not store (a journal the core writes and never
// asks), but the engine that answers requests: Listen runs either the core
// (memory, or --store DIR) or jsEngine, and both consume the server's
// events (connections up and down, requests, read replies delivered or
// returned) and answer on the connections' outboxes. What only the shared
// store decides is in jsEngine's three parts:
//
//   - The pipe table is a KV bucket (zpipes_pipes): one key per pipe (a
//     hash of its name) holding its name and open count, changed by
//     compare-and-set. A pipe exists while its key does; the key goes
//     when the count is zero and the pipe's subjects hold no message.
//     LIST reads the bucket and the stream's per-subject counts.
//   - Chunks are messages in one stream (ZPIPES, work-queue retention:
//     a message goes once acknowledged). Each writing connection has its
//     own subject, zpipes.d.<pipe hash>.<broker>-<connection>, so the
//     writer of every message is known to the reader. A message is a
//     batch: every chunk of the consecutive WRITEs and MWRITEs one
//     connection sent to one pipe while the previous batch was being
//     stored, up to the server's max payload (jswrite.go). JetStream's
//     cost is per message (about 70 k messages/s on the machines here),
//     so one message per chunk would cap 64-byte lines at 70 k/s, while
//     batches move millions. A WRITE is acknowledged once JetStream has
//     acknowledged every message holding its chunks (a publish ack: with
//     replicas, once a majority has it); retries carry the same
//     Nats-Msg-Id, so a retry after a lost ack is not stored twice. When a
//     writer CLOSEs the pipe or goes away it publishes an empty message,
//     its end: writers that start after it are read after it.
//   - Reading: each pipe has one durable consumer (explicit acks) in a
//     pinned priority group, so JetStream delivers to one broker at a time.
//     JetStream pins a client only with a delivered message, so two
//     brokers could each have a reader waiting on an empty pipe: a broker
//     reads a pipe only while it holds the pipe's lease, a key in the
//     bucket taken by compare-and-set and renewed while it reads
//     (jsreader.go); a broker asked to read a pipe whose lease another
//     holds answers "another reader is waiting". The reading broker fetches messages ahead into a
//     window (jsreader.go), a local pipe (pipe.go) whose writers' queues
//     are the subjects: reads take one chunk per writer in turn, with the
//     same rule for writers that ended, so fairness and the order of
//     sequential writers hold among everything in the window, whichever
//     broker wrote it. A message is acknowledged once each of its chunks is
//     consumed (a READ reply written, a TAKE acknowledged). When the
//     broker stops reading a pipe (idle for a while, or shutting down) it
//     gives back, in stream order, every message it holds (Nak, which
//     JetStream redelivers in the order the naks arrive) and unpins the
//     consumer, so the next reader anywhere gets them in order. If the
//     broker dies instead, JetStream redelivers its messages after the ack
//     wait, in stream order, and the next reader comes after that: the pin
//     and the lease on the pipe last longer than the ack wait.
//
// Alternatives measured or tried (docs/jetstream.md): one message per
// chunk (simple, ~70 k chunks/s, rejected); fairness by one consumer per
// writer read in turns (exact fairness whatever the backlog, but a
// consumer per writer to create, discover and delete: not built, so
// fairness here holds within the read-ahead window, jsWindowBytes, and a
// light writer behind a heavy writer's backlog larger than that waits for
// the part of it ahead); giving back with ResetConsumerToSequence (in
// order, but it would also replay acknowledged messages of a stream that
// keeps them); one reader by the pin alone (not enough, above).
//
// What the broker cannot promise here: a batch is acknowledged as one
// message, so if a reading broker dies (not a clean stop), chunks of a
// partly consumed message already delivered are delivered again (at least
// once, as with --store DIR after a crash). HOLDs are open counts in the
// bucket like OPENs, ended by the broker when the connection goes: a
// broker that dies leaves its HOLDs counted. The byte limits bound the
// read-ahead window, not the pipes: JetStream's own limits bound those.
//
// Durability: zpipes cannot set the file store's fsync; it is the server's
// (jetstream { sync_interval }). With three replicas a publish is
// acknowledged once two servers have it, so losing one server loses
// nothing acknowledged whatever the interval; with one replica, run the
// server with sync_interval: always, or a power loss can lose up to the
// interval's acknowledged writes. The tests' servers sync always.

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
	// before JetStream redelivers them; PinnedTTL how long its pin (and
	// its lease on the pipe) lasts without a pull. PinnedTTL is longer,
	// so the next reader comes once the dead broker's messages are due
	// again, and gets them first, in order. Defaults 10 s and 12 s; tests
	// shorten them.
	AckWait   time.Duration
	PinnedTTL time.Duration
	// Linger is how long a broker keeps reading a pipe nobody reads
	// through it any more, before it gives its window back. Default 1 s.
	Linger time.Duration
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
	if cfg.AckWait == 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.PinnedTTL <= cfg.AckWait {
		cfg.PinnedTTL = cfg.AckWait + cfg.AckWait/5
	}
	if cfg.Linger == 0 {
		cfg.Linger = time.Second
	}
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
		return je.APIError().Code == 503
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
		ev.books <- [2]int{0, 0}
	}
}

// shutdown stops every connection's worker and every reader (which give
// their windows back), then closes the NATS connection.
func (e *jsEngine) shutdown() {
	e.stop()
	for id, jc := range e.conns {
		close(jc.gone)
		delete(e.conns, id)
	}
	e.connWG.Wait()
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

// Open counts: compare-and-set on the pipe's key.

// addOpens adds delta to the pipe's open count and returns the new count.
// With create, a missing pipe is made; without, it is ErrNoPipe.
func (e *jsEngine) addOpens(ctx context.Context, name string, delta int, create bool) (int, error) {
	key := pipeKey(name)
	for {
		ent, err := e.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if !create {
				return 0, ErrNoPipe
			}
			b, _ := json.Marshal(jsPipeRecord{Name: []byte(name), Opens: delta})
			_, err = e.kv.Create(ctx, key, b)
			if casConflict(err) {
				continue // created meanwhile by another broker
			}
			if err != nil {
				return 0, fmt.Errorf("%w: %v", ErrStore, err)
			}
			return delta, nil
		}
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrStore, err)
		}
		var rec jsPipeRecord
		if err := json.Unmarshal(ent.Value(), &rec); err != nil {
			return 0, fmt.Errorf("%w: pipe record: %v", ErrStore, err)
		}
		if rec.Opens+delta < 0 {
			return 0, ErrNotOpen
		}
		rec.Opens += delta
		b, _ := json.Marshal(rec)
		_, err = e.kv.Update(ctx, key, b, ent.Revision())
		if casConflict(err) {
			continue // changed meanwhile: again from its new value
		}
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrStore, err)
		}
		return rec.Opens, nil
	}
}

// casConflict reports whether a create or compare-and-set lost to another
// change of the key: a replicated bucket reports it as a revision mismatch
// (10164), a single server as "key exists" (10071).
func casConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// exists reports whether the pipe has a key.
func (e *jsEngine) exists(ctx context.Context, name string) (bool, error) {
	_, err := e.kv.Get(ctx, pipeKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrStore, err)
	}
	return true, nil
}

// removeIfUnused deletes the pipe if nobody holds it open, no broker
// reads it and its subjects hold no chunk, and its consumer with it.
func (e *jsEngine) removeIfUnused(ctx context.Context, name string) {
	key := pipeKey(name)
	ent, err := e.kv.Get(ctx, key)
	if err != nil {
		return
	}
	var rec jsPipeRecord
	if json.Unmarshal(ent.Value(), &rec) != nil || rec.Opens > 0 {
		return
	}
	if _, err := e.kv.Get(ctx, leaseKey(key)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		return // a broker reads it (or the bucket did not answer)
	}
	info, err := e.stream.Info(ctx, jetstream.WithSubjectFilter(jsSubjects+key+".>"))
	if err != nil || len(info.State.Subjects) > 0 {
		return
	}
	if err := e.kv.Delete(ctx, key, jetstream.LastRevision(ent.Revision())); err != nil {
		return // opened meanwhile
	}
	// Writers' ends nobody read: no chunk is left for them to order.
	if err := e.stream.Purge(ctx, jetstream.WithPurgeSubject(jsEnds+key+".>")); err != nil {
		e.log.Debug("jetstream: purging a removed pipe's writers' ends failed", "pipe", abbrev([]byte(name)), "err", err)
	}
	e.kv.Delete(ctx, progressKey(key))
	if err := e.stream.DeleteConsumer(ctx, "p-"+key); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		e.log.Debug("jetstream: deleting a pipe's consumer failed", "pipe", abbrev([]byte(name)), "err", err)
	}
}

// list answers a page of the pipes of every broker, by name: open counts
// from the bucket, messages (batches, not chunks) and writers from the
// stream's per-subject counts.
func (e *jsEngine) list(ctx context.Context, after string) reply {
	// The bucket's stream says which keys have entries (deleted ones
	// too: Get skips those), in one request, where the bucket's key
	// lister would watch it.
	ks, err := e.kvStream.Info(ctx, jetstream.WithSubjectFilter(jsKeyPrefix+">"))
	if err != nil {
		return errorReply(fmt.Errorf("%w: %v", ErrStore, err))
	}
	var infos []PipeInfo
	for subj := range ks.State.Subjects {
		key := strings.TrimPrefix(subj, jsKeyPrefix)
		if strings.Contains(key, ".") {
			continue // a reader's progress, not a pipe
		}
		ent, err := e.kv.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile
		}
		var rec jsPipeRecord
		if json.Unmarshal(ent.Value(), &rec) != nil || (after != "" && string(rec.Name) <= after) {
			continue
		}
		infos = append(infos, PipeInfo{Name: string(rec.Name), Opens: rec.Opens})
	}
	slices.SortFunc(infos, func(a, b PipeInfo) int { return strings.Compare(a.Name, b.Name) })
	more := len(infos) > listPage
	if more {
		infos = infos[:listPage]
	}
	if len(infos) > 0 {
		st, err := e.stream.Info(ctx, jetstream.WithSubjectFilter(jsSubjects+">"))
		if err != nil {
			return errorReply(fmt.Errorf("%w: %v", ErrStore, err))
		}
		byKey := make(map[string]*PipeInfo, len(infos))
		for i := range infos {
			byKey[pipeKey(infos[i].Name)] = &infos[i]
		}
		for subj, n := range st.State.Subjects {
			key, _, _ := strings.Cut(strings.TrimPrefix(subj, jsSubjects), ".")
			if p := byKey[key]; p != nil {
				p.Chunks += int(n)
				p.Writers++
			}
		}
	}
	b, err := json.Marshal(infos)
	if err != nil {
		return errorReply(err)
	}
	frames := [][]byte{okFrame, b}
	if more {
		frames = append(frames, []byte(infos[len(infos)-1].Name))
	}
	return reply{frames: frames}
}

// mailbox is a queue that never blocks who puts into it: the engine's
// loop must never wait for a connection's worker or a reader.
type mailbox[T any] struct {
	mu     sync.Mutex
	items  []T
	closed bool
	wake   chan struct{}
}

func newMailbox[T any]() *mailbox[T] { return &mailbox[T]{wake: make(chan struct{}, 1)} }

// put queues v; false if the mailbox was closed.
func (m *mailbox[T]) put(v T) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	m.items = append(m.items, v)
	m.mu.Unlock()
	signal(m.wake)
	return true
}

func (m *mailbox[T]) take() []T {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.items
	m.items = nil
	return v
}

// closeIfEmpty closes the mailbox if nothing waits in it.
func (m *mailbox[T]) closeIfEmpty() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.items) > 0 {
		return false
	}
	m.closed = true
	return true
}
