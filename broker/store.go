package broker

import "fmt"

// store keeps what must outlive the broker process. The core tells it of
// every change that matters, in order, under the core's lock; it never
// blocks the core. memStore keeps nothing: the broker of old, whose chunks
// live as long as the process. logStore (logstore.go) appends each change to
// a write-ahead log on disk and rebuilds the pipes from it at start.
//
// What a store records, and when:
//   - opened: an OPEN (+1) or a CLOSE (-1). HOLDs end with their
//     connection, so they are not recorded: a restart ends them all.
//   - wrote: a writer's chunks, queued in the writer's queue, which is
//     named by the id of its first chunk. (With a logStore whose memory is
//     full, the core calls its spillWrote instead, and keeps only where the
//     chunks lie: spill.go.)
//   - finished: a writer CLOSEd the pipe or went away, so writers after it
//     are read after it.
//   - consumed: chunks gone for good: a READ or MREAD reply written to its
//     connection, a TAKE acknowledged.
//   - returned: chunks back at the head of the pipe: chunks a reader held
//     or never received (known ids), or an UNREAD's new chunks (fresh).
//
// A chunk taken and not yet consumed is recorded nowhere: if the broker
// dies, it is still in its queue when the log is replayed, and is served
// again (at least once).
type store interface {
	opened(pipe string, delta int)
	wrote(pipe string, queue uint64, items []item)
	finished(pipe string, queue uint64)
	consumed(items []item)
	returned(pipe string, items []item, fresh bool)

	// pending reports whether changes were told since the last commit.
	pending() bool
	// durable reports whether replies must wait for commit: then a reply
	// to a change leaves only once the change is on disk.
	durable() bool
	// commit asks that every change so far be made durable, and calls
	// done (from another goroutine) once it is, or with the error.
	commit(done func(error))
	// compact rewrites the log from the core's state when it has grown
	// well past what is live; only the core calls it.
	compact(co *core) error
	close() error
}

// memStore keeps nothing: chunks live as long as the broker.
type memStore struct{}

func (memStore) opened(string, int)            {}
func (memStore) wrote(string, uint64, []item)  {}
func (memStore) finished(string, uint64)       {}
func (memStore) consumed([]item)               {}
func (memStore) returned(string, []item, bool) {}
func (memStore) pending() bool                 { return false }
func (memStore) durable() bool                 { return false }
func (memStore) commit(done func(error))       { done(nil) }
func (memStore) compact(*core) error           { return nil }
func (memStore) close() error                  { return nil }

// The core's side of the store: changes committed at the end of each
// event, and the replies that wait for them.

type inflightItem struct {
	p *pipe
	item
}

type deferredReply struct {
	c   *conn
	t   *task
	r   reply
	gen uint64
}

// commitDone says the store has made every change up to gen durable, or
// failed to.
type commitDone struct {
	gen uint64
	err error
}

// committed sends the replies that waited for changes up to gen.
func (co *core) committed(gen uint64, err error) {
	if err != nil {
		co.storeFailed(err)
	}
	n := 0
	for n < len(co.deferred) && co.deferred[n].gen <= gen {
		d := co.deferred[n]
		if co.storeErr != nil && d.t.req.isWrite() {
			// Not stored: not acknowledged.
			d.r = errorReply(fmt.Errorf("%w: %v", ErrStore, co.storeErr))
		}
		co.send(d.c, d.r)
		n++
	}
	clear(co.deferred[:n])
	co.deferred = co.deferred[n:]
}

func (co *core) storeFailed(err error) {
	if co.storeErr == nil {
		co.storeErr = err
		co.log.Error("store failed: writes are refused from now on", "err", err)
	}
}

// recover rebuilds the pipes from a store's log, before the broker serves.
func (co *core) recover(ls *logStore) error {
	rec := ls.log.Recovered()
	if rec.DroppedBytes > 0 || rec.DroppedRecords > 0 {
		co.log.Warn("store: dropped a damaged tail", "dropped_bytes", rec.DroppedBytes,
			"dropped_records", rec.DroppedRecords, "reason", rec.Reason)
	}
	n, err := replayLog(ls, co)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	chunks := 0
	for _, p := range co.pipes {
		chunks += p.chunks
	}
	co.log.Info("store recovered", "records", n, "pipes", len(co.pipes), "chunks", chunks, "bytes", co.total)
	return nil
}
