// Package broker is the zpipes broker and its client: named pipes of chunks
// kept in memory, and optionally in a write-ahead log on disk or in NATS
// JetStream, spoken to over ZeroMQ.
//
// A pipe is a named queue of chunks (any bytes, empty included). Any number
// of connections write to it; at most one waits to read from it at a time.
// Each writing connection has its own FIFO in the pipe, and reads take one
// chunk per writer in turn, so a light writer's chunk is served within one
// round however much a heavy writer has queued. A writer that starts after
// another has finished (CLOSEd the pipe or disconnected) is served after
// all of that writer's chunks, so writers that run one after another keep
// their order. Chunks a reader gives back go ahead of all of them. A pipe
// exists while its open count (OPENs minus CLOSEs, whoever sent them, and
// HOLDs, which end with their connection) is above zero or it holds chunks;
// then it is removed. Chunks outlive the connections that wrote them, and
// with a store (store.go, logstore.go, internal/wal) the broker process too;
// with a store, a long queue's chunks wait on disk only and come back into
// memory as the reader reaches them (spill.go).
//
// A reader that TAKEs chunks holds them until it ACKs them; if it goes
// away first they go back to the head of the pipe, so a reader killed by
// SIGKILL loses nothing (stream.go's Reader reads this way). Everything the
// broker holds for clients, queued, taken, or in replies not yet written,
// counts against its limits.
//
// Every request gets exactly one reply, and a connection's requests run in
// the order sent: a READ waiting for a chunk, or a WRITE waiting for room
// in a full pipe, holds back that connection's later requests and nobody
// else's. A connection that goes away takes its unexecuted requests with it;
// chunks taken for it but never written to its socket go back to the pipe.
//
// On the wire the broker is a ROUTER at an ipc endpoint (ZMTP 3, NULL
// security), so libzmq DEALER and REQ sockets are clients as they are; see
// protocol.go and zpipes(7). zmq4 performs each connection's greeting and
// handshake; the broker owns the connections and frames messages itself,
// because zmq4's own ROUTER drops replies to departed peers silently, stalls
// every peer behind one that stops reading, reports no disconnects and
// handshakes inside its accept loop.
//
// Inside the broker one lock guards every pipe and queue (the core,
// core.go), and the goroutine that has an event for the core runs it: a
// connection's reader answers the request it read, its writer records the
// replies it wrote. Each connection has a reader and a writer goroutine;
// replies go out through a non-blocking outbox, or straight to the socket
// when they are short and the connection's writer is idle.
//
// The client side is Client, one connection; a synchronous call made
// while no other is in flight reads its own reply, others are read by the
// client's read loop (client.go, readFor). Writer and Reader are for
// streams (stream.go): they keep batches in flight and hold the promises a
// stream needs — nothing sent after a refused chunk, an exact count of what
// the pipe received, and every chunk taken and not consumed given back.
//
// # Pipes across machines: --store nats://...
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
//     stored, up to the server's max payload (jsconn.go). JetStream's
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
//     (jslease.go); a broker asked to read a pipe whose lease another
//     holds answers "another reader is waiting". The reading broker fetches messages ahead into a
//     window (jsreader.go, jsfetch.go), a local pipe (pipe.go) whose writers' queues
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
// once, as with --store DIR after a crash). LIST reports open counts,
// writers, and batches as chunks; not bytes, taken, blocked or reader. A
// drained pipe with no opens goes when the broker reading it stops (its
// linger), not at the read that drained it. HOLDs are open counts in the
// bucket like OPENs, ended by the broker when the connection goes: a
// broker that dies leaves its HOLDs counted. --max-pipes,
// --max-pipe-bytes and --max-total-bytes do not apply: JetStream's own
// limits bound the pipes, and a constant (8 MiB) each pipe's read-ahead.
// Order depends on every delivery reaching the reader: the reader pulls
// through one subscription kept for its life, and a gap in the consumer's
// delivery numbers (a delivery lost with a dropped connection or a leader
// change) makes it wait until the lost one comes again, an ack wait later,
// before it takes in anything after it. Not ruled out (docs/jetstream.md):
// the server puts a redelivery back at the end of its queue if the pull it
// meant it for expires at that instant; the reader logs an error if a
// writer's messages ever come out of order.
//
// Durability: zpipes cannot set the file store's fsync; it is the server's
// (jetstream { sync_interval }). With three replicas a publish is
// acknowledged once two servers have it, so losing one server loses
// nothing acknowledged whatever the interval; with one replica, run the
// server with sync_interval: always, or a power loss can lose up to the
// interval's acknowledged writes. The tests' servers sync always.
package broker
