package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// The pipe table, kept in the bucket: open counts by compare-and-set, a
// pipe's removal, LIST; and the mailboxes of the engine's goroutines.

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
	return listReply(infos, more)
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
