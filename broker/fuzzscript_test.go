package broker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// The request script FuzzBrokerCommands decodes from its input, and
// runScript, which pipelines it to a live broker and checks each reply
// against fuzzModel (fuzzmodel_test.go).

// Script opcodes: the low 4 bits choose the operation, opEnvelope sends it
// REQ-style, with an empty first frame.
const (
	opOpen byte = iota
	opClose
	opWrite
	opMWrite
	opRead
	opMRead
	opCancel
	opUnread
	opList
	opGarbage // frames straight from the script
	opPing    // a ZMTP PING command
	opTake
	opAck
	opNack
	opHold
	numOps

	opEnvelope byte = 0x80
)

// script decodes fuzz bytes; reading past the end yields zeros.
type script struct {
	b []byte
}

func (s *script) more() bool { return len(s.b) > 0 }

func (s *script) byte() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

// name is a pipe name from a tiny alphabet, so requests collide; a few
// codes give names the broker must refuse.
func (s *script) name() string {
	switch n := s.byte() % 8; n {
	case 4:
		return ""
	case 5:
		return strings.Repeat("n", fuzzLim.MaxName+1)
	default:
		return string(rune('a' + n%4))
	}
}

// data is a length byte and that many bytes. Lengths from 200 up stand for
// big runs of filler, over the chunk limit or the message limit.
func (s *script) data() string {
	n := int(s.byte())
	if n >= 200 {
		return strings.Repeat("B", fuzzLim.MaxChunk+(n-200)*30)
	}
	n = min(n, len(s.b))
	d := string(s.b[:n])
	s.b = s.b[n:]
	return d
}

// runScript sends the script's requests pipelined on one connection and
// checks the replies against a model of the broker.
func runScript(t *testing.T, s *Server, data []byte) {
	p := dialRaw(t, s, zmq4.Dealer)
	defer p.w.close()
	// Fuzzing has no per-input timeout: a stuck write must fail, not hang.
	p.w.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	m := newFuzzModel()
	sc := &script{b: data}
	var pings [][]byte
	for n := 0; sc.more() && n < 40; n++ {
		op := sc.byte()
		env := op&opEnvelope != 0
		var frames []string
		switch op & 0x0f % numOps {
		case opOpen:
			frames = []string{CmdOpen, sc.name()}
		case opClose:
			frames = []string{CmdClose, sc.name()}
		case opWrite:
			frames = []string{CmdWrite, sc.name(), sc.data()}
		case opMWrite, opUnread:
			cmd := CmdMWrite
			if op&0x0f%numOps == opUnread {
				cmd = CmdUnread
			}
			frames = []string{cmd, sc.name()}
			for k := int(sc.byte() % 7); k > 0; k-- {
				frames = append(frames, sc.data())
			}
		case opRead:
			frames = []string{CmdRead, sc.name()}
		case opMRead:
			name := sc.name()
			c := sc.byte()
			count := strconv.Itoa(int(c % 8))
			if c >= 0xf0 {
				count = "x" + count
			}
			frames = []string{CmdMRead, name, count}
		case opCancel:
			frames = []string{CmdCancel, sc.name()}
		case opTake:
			frames = []string{CmdTake, sc.name(), strconv.Itoa(int(sc.byte() % 8))}
		case opAck:
			frames = []string{CmdAck, sc.name(), strconv.Itoa(int(sc.byte() % 8))}
		case opNack:
			frames = []string{CmdNack, sc.name()}
		case opHold:
			frames = []string{CmdHold, sc.name()}
		case opList:
			frames = []string{CmdList}
		case opGarbage:
			for k := 1 + int(sc.byte()%10); k > 0; k-- {
				frames = append(frames, sc.data())
			}
		case opPing:
			body := []byte(sc.data())
			// A command frame holds at most 255 bytes: name and body.
			body = body[:min(len(body), 255-1-len("PING"))]
			if err := p.w.writeCommand("PING", body); err != nil {
				t.Fatal(err)
			}
			if len(body) >= 2 {
				body = body[2:min(len(body), 2+16)] // the context, at most 16 bytes, is echoed
			}
			pings = append(pings, body)
			continue
		}
		if env {
			frames = append([]string{""}, frames...)
		}
		m.submit(frames)
		fs := make([][]byte, len(frames))
		for i, fr := range frames {
			fs[i] = []byte(fr)
		}
		if err := p.w.writeMessage(false, fs); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.w.flush(); err != nil {
		t.Fatal(err)
	}
	r := &replyReader{t: t, p: p}
	r.expect(m)
	// A read still waiting is the only thing that holds the connection:
	// cancel it, as a client giving up would.
	for m.waiting() != nil {
		p.send(CmdCancel, m.waiting().parsed.Pipe)
		m.submit([]string{CmdCancel, m.waiting().parsed.Pipe})
		r.expect(m)
	}
	// Give back what is held, take everything back in order: nothing
	// acknowledged is lost, and one writer's chunks come back as written.
	// Then close what is open.
	for _, name := range m.names() {
		if len(m.pipes[name].held) > 0 {
			p.send(CmdNack, name)
			m.submit([]string{CmdNack, name})
			r.expect(m)
		}
	}
	for _, name := range m.names() {
		for m.pipes[name] != nil && m.pipes[name].chunks() > 0 {
			p.send(CmdMRead, name, "3")
			m.submit([]string{CmdMRead, name, "3"})
			r.expect(m)
		}
		for m.pipes[name] != nil && m.pipes[name].opens > 0 {
			p.send(CmdClose, name)
			m.submit([]string{CmdClose, name})
			r.expect(m)
		}
	}
	if len(m.pipes) != 0 {
		t.Fatalf("model left with pipes %v", m.names())
	}
	// Exactly one reply each: the next reply is this LIST's, and the broker
	// is as empty as the model.
	p.send(CmdList)
	m.submit([]string{CmdList})
	r.expect(m)
	// The books balance: once the replies are written, an empty broker
	// counts nothing against its limits.
	settle(t, 5*time.Second, "the broker's books", func() (bool, string) {
		books := make(chan [3]int, 1)
		if !s.send(event{books: books}) {
			t.Fatal("broker gone")
		}
		b := <-books
		return b == [3]int{}, fmt.Sprintf("total %d, fixed %d, spilled %d", b[0], b[1], b[2])
	})
	if len(r.pongs) != len(pings) {
		t.Fatalf("%d PINGs, %d PONGs", len(pings), len(r.pongs))
	}
	for i := range pings {
		if !bytes.Equal(r.pongs[i], pings[i]) {
			t.Fatalf("PONG %d carries %q, want %q", i, r.pongs[i], pings[i])
		}
	}
}

// replyReader reads replies, setting PONGs aside.
type replyReader struct {
	t     *testing.T
	p     *rawPeer
	pongs [][]byte
	next  int // index in the model's requests of the next reply
}

// expect reads a reply for each request the model has answered since the
// last call and checks it.
func (r *replyReader) expect(m *fuzzModel) {
	r.t.Helper()
	for ; r.next < len(m.reqs) && m.reqs[r.next].done; r.next++ {
		q := m.reqs[r.next]
		var got []string
		for {
			r.p.w.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			msg, err := r.p.w.readMessage(1<<30, 1<<20)
			if err != nil {
				r.t.Fatalf("reply to request %d %.40q: %v", r.next, q.frames, err)
			}
			if msg.command == "PONG" {
				r.pongs = append(r.pongs, msg.frames[0])
				continue
			}
			if msg.command != "" {
				r.t.Fatalf("unexpected command %q", msg.command)
			}
			got = make([]string, len(msg.frames))
			for i, f := range msg.frames {
				got[i] = string(f)
			}
			break
		}
		want := q.reply
		if q.parsed.Cmd == CmdList && q.err == nil {
			// Compare LIST as data, not as JSON text.
			var infos []PipeInfo
			if len(got) < 2 || json.Unmarshal([]byte(got[len(got)-1]), &infos) != nil {
				r.t.Fatalf("LIST reply %q", got)
			}
			if infos == nil {
				infos = []PipeInfo{}
			}
			b, _ := json.Marshal(infos)
			got[len(got)-1] = string(b)
		}
		if !slices.Equal(got, want) {
			r.t.Fatalf("request %d %.60q:\n got reply %.200q\nwant reply %.200q", r.next, q.frames, got, want)
		}
	}
}
