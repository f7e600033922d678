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
// with a store (store.go, logstore.go, internal/wal) the broker process too.
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
// Inside the broker one goroutine owns every pipe and queue (core.loop);
// each connection has a reader and a writer goroutine that talk to it
// through channels and a non-blocking outbox.
//
// With a store that names NATS servers (--store nats://…) the pipes live in
// JetStream and every broker given the same servers serves the same pipes.
// Then Listen runs jsEngine (jetstream.go) in the core's place: a shared
// store must decide what the core decides from its own memory (whether a
// pipe exists, who its one reader is across machines, whose chunk is next),
// each decision takes a round trip, so the seam is the engine that answers
// requests, not the core's write-only journal (store.go). jetstream.go
// explains the mapping (a KV bucket of pipes, a subject per writer, chunks
// batched into messages, one consumer per pipe read through a fair window)
// and the alternatives.
//
// The client side is Client, one connection, with Writer and Reader for
// streams (stream.go): they keep batches in flight and hold the promises a
// stream needs — nothing sent after a refused chunk, an exact count of what
// the pipe received, and every chunk taken and not consumed given back.
package broker
