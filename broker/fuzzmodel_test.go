package broker

import (
	"encoding/json"
	"fmt"
	"slices"
)

// fuzzReq is a request of a script, with the reply the model expects.
type fuzzReq struct {
	frames  []string // as sent, envelope included
	parsed  Request
	err     error // expected error reply
	reply   []string
	done    bool     // answered, in the model
	cancels bool     // a CANCEL marked this read or write
	early   []string // the reply of a request that acted on arrival (ACK)
}

// fuzzModel is the broker as one connection sees it when it is the only
// one: the pipes, and the requests in the order sent.
type fuzzModel struct {
	pipes map[string]*modelPipe
	took  map[string]taken // what READ and MREAD took, which UNREAD may give back
	reqs  []*fuzzReq
	head  int // first request not yet answered
}

// modelPipe holds chunks given back (served first) and written chunks,
// which all come from one writer here, so they are served in order.
type modelPipe struct {
	opens    int
	returned [][]byte
	written  [][]byte
	held     [][]byte // taken with TAKE, not acknowledged
}

func (p *modelPipe) chunks() int { return len(p.returned) + len(p.written) }

func newFuzzModel() *fuzzModel {
	return &fuzzModel{pipes: make(map[string]*modelPipe), took: make(map[string]taken)}
}

func (m *fuzzModel) names() []string {
	var ns []string
	for n := range m.pipes {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// waiting is the read the connection waits on, if any.
func (m *fuzzModel) waiting() *fuzzReq {
	if m.head < len(m.reqs) {
		return m.reqs[m.head]
	}
	return nil
}

// submit adds a request and runs what the broker would run.
func (m *fuzzModel) submit(frames []string) {
	q := &fuzzReq{frames: frames}
	fs := make([][]byte, len(frames))
	total := 0
	for i, f := range frames {
		fs[i] = []byte(f)
		// The frame reader's limits, checked frame by frame: the first
		// one broken is the one reported.
		total += len(f)
		switch {
		case q.err != nil:
		case total > fuzzLim.maxMessage():
			q.err = fmt.Errorf("%w: message over %d bytes", ErrTooLarge, fuzzLim.maxMessage())
		case i+1 > fuzzLim.maxFrames():
			q.err = fmt.Errorf("%w: message over %d frames", ErrTooLarge, fuzzLim.maxFrames())
		}
	}
	if q.err != nil {
		q.parsed.Envelope = len(frames) > 1 && frames[0] == ""
	} else {
		q.parsed, q.err = ParseRequest(fs, fuzzLim)
	}
	if q.err == nil && q.parsed.Cmd == CmdAck {
		// An ACK acts on arrival, its reply in turn.
		q.early = m.ack(q)
	}
	if q.err == nil && q.parsed.Cmd == CmdCancel {
		// A CANCEL acts on arrival, on reads and writes still waiting
		// their turn.
		for _, r := range m.reqs[m.head:] {
			if r.err == nil && (r.parsed.isRead() || r.parsed.isWrite()) && r.parsed.Pipe == q.parsed.Pipe {
				r.cancels = true
			}
		}
	}
	m.reqs = append(m.reqs, q)
	for m.head < len(m.reqs) && m.exec(m.reqs[m.head]) {
		m.reqs[m.head].done = true
		m.head++
	}
}

// exec answers a request, or reports false if it must wait.
func (m *fuzzModel) exec(q *fuzzReq) bool {
	var reply []string
	if q.parsed.Envelope {
		reply = []string{""}
	}
	ok := func(frames ...string) bool {
		q.reply = append(append(reply, StatusOK), frames...)
		return true
	}
	fail := func(err error) bool {
		q.reply = append(reply, StatusError, err.Error())
		return true
	}
	if q.err != nil {
		return fail(q.err)
	}
	if q.early != nil {
		q.reply = append(reply, q.early...)
		return true
	}
	req := q.parsed
	p := m.pipes[req.Pipe]
	switch req.Cmd {
	case CmdList:
		infos := []PipeInfo{}
		for _, n := range m.names() {
			p := m.pipes[n]
			bytes := 0
			for _, c := range append(slices.Clone(p.returned), p.written...) {
				bytes += len(c)
			}
			writers := 0
			if len(p.written) > 0 {
				writers = 1
			}
			infos = append(infos, PipeInfo{Name: n, Opens: p.opens, Chunks: p.chunks(), Bytes: bytes, Taken: len(p.held), Writers: writers})
		}
		b, _ := json.Marshal(infos)
		return ok(string(b))
	case CmdOpen, CmdHold:
		if p == nil {
			p = &modelPipe{}
			m.pipes[req.Pipe] = p
		}
		p.opens++
		return ok()
	case CmdCancel:
		return ok()
	case CmdUnread:
		took := m.took[req.Pipe]
		if len(req.Chunks) > took.chunks || req.Size > took.bytes {
			return fail(fmt.Errorf("%w: UNREAD of %d chunks (%d bytes); this connection took %d (%d bytes) from the pipe",
				ErrBadRequest, len(req.Chunks), req.Size, took.chunks, took.bytes))
		}
		m.took[req.Pipe] = taken{took.chunks - len(req.Chunks), took.bytes - req.Size}
		if p == nil {
			p = &modelPipe{}
			m.pipes[req.Pipe] = p
		}
		p.returned = append(slices.Clone(req.Chunks), p.returned...)
		return ok()
	}
	if p == nil {
		return fail(ErrNoPipe)
	}
	switch req.Cmd {
	case CmdClose:
		if p.opens == 0 {
			return fail(ErrNotOpen)
		}
		p.opens--
		m.removeIfUnused(req.Pipe)
		return ok()
	case CmdWrite, CmdMWrite:
		if q.cancels {
			return fail(ErrCancelled)
		}
		p.written = append(p.written, req.Chunks...)
		return ok()
	case CmdNack:
		p.returned = append(p.held, p.returned...)
		p.held = nil
		return ok()
	default: // READ, MREAD, TAKE
		if q.cancels {
			return fail(ErrCancelled)
		}
		if p.chunks() == 0 {
			return false
		}
		var out []string
		size := 0
		for len(out) < req.Max && p.chunks() > 0 {
			var c []byte
			if len(p.returned) > 0 {
				c = p.returned[0]
			} else {
				c = p.written[0]
			}
			if len(out) > 0 && size+len(c) > maxReplyBytes {
				break
			}
			if len(p.returned) > 0 {
				p.returned = p.returned[1:]
			} else {
				p.written = p.written[1:]
			}
			out = append(out, string(c))
			size += len(c)
		}
		if req.Cmd == CmdTake {
			for _, c := range out {
				p.held = append(p.held, []byte(c))
			}
			return ok(out...)
		}
		took := m.took[req.Pipe]
		m.took[req.Pipe] = taken{took.chunks + len(out), took.bytes + size}
		m.removeIfUnused(req.Pipe)
		if req.Cmd == CmdRead {
			q.reply = append(reply, out...)
			return true
		}
		return ok(out...)
	}
}

func (m *fuzzModel) removeIfUnused(name string) {
	if p := m.pipes[name]; p.opens == 0 && p.chunks() == 0 && len(p.held) == 0 {
		delete(m.pipes, name)
	}
}

// ack runs an ACK as it arrives and returns its reply, without envelope.
func (m *fuzzModel) ack(q *fuzzReq) []string {
	p := m.pipes[q.parsed.Pipe]
	if p == nil {
		return []string{StatusError, ErrNoPipe.Error()}
	}
	if q.parsed.Max > len(p.held) {
		return []string{StatusError, fmt.Errorf("%w: ACK %d, but %d chunks are held", ErrBadRequest, q.parsed.Max, len(p.held)).Error()}
	}
	p.held = p.held[q.parsed.Max:]
	m.removeIfUnused(q.parsed.Pipe)
	return []string{StatusOK}
}
