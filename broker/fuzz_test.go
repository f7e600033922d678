package broker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Fuzz targets for hostile input: the request parser, the frame reader and
// a live broker driven by a decoded request script. Seeds are added with
// f.Add; crashers the fuzzer finds land in testdata/fuzz and become
// regression seeds. The request script is decoded and run in
// fuzzscript_test.go, against the model in fuzzmodel_test.go.

// splitFrames turns fuzz bytes into frames: the first byte is the separator.
func splitFrames(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	return bytes.Split(data[1:], data[:1])
}

// joinFrames is the inverse of splitFrames, for seeds.
func joinFrames(sep byte, frames ...string) []byte {
	b := []byte{sep}
	for i, f := range frames {
		if i > 0 {
			b = append(b, sep)
		}
		b = append(b, f...)
	}
	return b
}

// fuzzLimits maps three fuzz bytes to small limits, so every bound is
// reachable; 0 for all three means DefaultLimits.
func fuzzLimits(name, chunk, batch uint8) Limits {
	if name == 0 && chunk == 0 && batch == 0 {
		return DefaultLimits
	}
	return Limits{MaxName: 1 + int(name%32), MaxChunk: 1 + int(chunk%64), MaxBatch: 1 + int(batch%8)}
}

var parseSentinels = []error{ErrUnknownCommand, ErrBadRequest, ErrBadName, ErrTooLarge}

func FuzzParseRequest(f *testing.F) {
	for _, frames := range [][]string{
		{"OPEN", "p"},
		{"", "OPEN", "p"},
		{"CLOSE", "p"},
		{"WRITE", "p", "chunk"},
		{"WRITE", "p", ""},
		{"WRITE", "p"},
		{"MWRITE", "p", "a", "b", "c"},
		{"UNREAD", "p", "a", "b"},
		{"READ", "p"},
		{"MREAD", "p", "3"},
		{"MREAD", "p", "0"},
		{"MREAD", "p", "-1"},
		{"MREAD", "p", "+2"},
		{"MREAD", "p", "99999999999999999999"},
		{"CANCEL", "p"},
		{"LIST"},
		{"LIST", "x"},
		{"", ""},
		{""},
		{"open", "p"},
		{"OPEN", ""},
		{"OPEN", strings.Repeat("n", 40)},
		{"WRITE", "p", strings.Repeat("c", 100)},
		{"MWRITE", "p", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"},
	} {
		f.Add(joinFrames('|', frames...), uint8(8), uint8(16), uint8(3))
		f.Add(joinFrames(0, frames...), uint8(0), uint8(0), uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, name, chunk, batch uint8) {
		lim := fuzzLimits(name, chunk, batch)
		frames := splitFrames(data)
		orig := make([][]byte, len(frames))
		for i, fr := range frames {
			orig[i] = bytes.Clone(fr)
		}
		req, err := ParseRequest(frames, lim)
		for i := range frames {
			if !bytes.Equal(frames[i], orig[i]) {
				t.Fatalf("ParseRequest modified frame %d", i)
			}
		}
		if wantEnv := len(frames) > 0 && len(frames[0]) == 0; req.Envelope != wantEnv {
			t.Fatalf("Envelope = %v for frames %q", req.Envelope, frames)
		}
		if err != nil {
			i := slices.IndexFunc(parseSentinels, func(s error) bool { return errors.Is(err, s) })
			if i < 0 {
				t.Fatalf("error %q wraps no parse sentinel", err)
			}
			// The reason goes on the wire and must map back to its sentinel.
			if s := parseSentinels[i]; !errors.Is(remoteError([]byte(err.Error())), s) {
				t.Fatalf("reason %q does not map back to %q", err, s)
			}
			return
		}
		checkRequest(t, req, frames, lim)
	})
}

// checkRequest checks a parsed request against its frames and the limits.
func checkRequest(t *testing.T, req Request, frames [][]byte, lim Limits) {
	t.Helper()
	args := frames
	if req.Envelope {
		args = args[1:]
	}
	if len(args) == 0 || string(args[0]) != req.Cmd {
		t.Fatalf("Cmd %q is not the command frame of %q", req.Cmd, frames)
	}
	args = args[1:]
	switch req.Cmd {
	case CmdList:
		after := ""
		if len(args) == 1 {
			after = string(args[0])
		}
		if len(args) > 1 || req.After != after || len(after) > lim.MaxName || req.Pipe != "" || req.Chunks != nil {
			t.Fatalf("LIST parsed from %q as %+v", frames, req)
		}
		return
	case CmdLimits:
		if len(args) != 0 || req.Pipe != "" || req.Chunks != nil {
			t.Fatalf("LIMITS parsed from %q as %+v", frames, req)
		}
		return
	}
	if req.Pipe == "" || len(req.Pipe) > lim.MaxName || req.Pipe != string(args[0]) {
		t.Fatalf("pipe %q (limit %d) parsed from %q", req.Pipe, lim.MaxName, frames)
	}
	size := 0
	for _, c := range req.Chunks {
		if len(c) > lim.MaxChunk {
			t.Fatalf("chunk of %d bytes accepted, limit %d", len(c), lim.MaxChunk)
		}
		size += len(c)
	}
	if size != req.Size {
		t.Fatalf("Size %d, chunks hold %d bytes", req.Size, size)
	}
	switch req.Cmd {
	case CmdOpen, CmdClose, CmdRead, CmdCancel:
		if len(args) != 1 || req.Chunks != nil || req.Max != 1 {
			t.Fatalf("%s parsed from %q as %+v", req.Cmd, frames, req)
		}
	case CmdWrite:
		if len(req.Chunks) != 1 || !slices.EqualFunc(req.Chunks, args[1:], bytes.Equal) {
			t.Fatalf("WRITE parsed from %q as %+v", frames, req)
		}
	case CmdMWrite, CmdUnread:
		if len(req.Chunks) < 1 || len(req.Chunks) > lim.MaxBatch || !slices.EqualFunc(req.Chunks, args[1:], bytes.Equal) {
			t.Fatalf("%s parsed from %q as %+v (batch limit %d)", req.Cmd, frames, req, lim.MaxBatch)
		}
	case CmdMRead:
		n, err := strconv.Atoi(string(args[1]))
		if len(args) != 2 || err != nil || n != req.Max || req.Max < 1 || req.Max > lim.MaxBatch || req.Chunks != nil {
			t.Fatalf("MREAD parsed from %q as %+v (batch limit %d)", frames, req, lim.MaxBatch)
		}
	default:
		t.Fatalf("unknown command %q accepted", req.Cmd)
	}
}

func FuzzReadMessage(f *testing.F) {
	seeds := [][]byte{
		zmessage("OPEN", "p"),
		zmessage("", "WRITE", "p", "chunk"),
		append(zmessage("LIST"), zmessage("READ", "p")...),
		// Frames after a message's first are read from the buffer
		// (bufferedFrames): an envelope and limits there too.
		append(zmessage("LIST"), zmessage("", "WRITE", "p", "chunk")...),
		append(zmessage("LIST"), zmessage("MWRITE", "p", "a", "b", "c", "d", "e", "f", "g", "h", "i")...),
		append(zmessage("LIST"), append(zframe(flagMore, []byte("WRITE"), false), zframe(0, make([]byte, 700), true)...)...),
		zcommand("PING", []byte{0, 10, 'c', 't', 'x'}),
		zcommand("PING", nil),
		{flagCommand, 0},                   // command without a name length
		{flagCommand, 1, 9},                // name length past the body
		{flagCommand | flagMore, 1, 0},     // command with MORE
		{flagMore, 3, 'a', 'b'},            // truncated
		{flagLong, 0xff, 0xff, 0xff, 0xff}, // truncated long header
		{flagLong, 0x40, 0, 0, 0, 0, 0, 0, 1},
		{flagLong, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		zframe(0, []byte("short in long form"), true),
		append(zframe(flagMore, []byte("WRITE"), false), zcommand("PING", []byte{0, 0})...), // command inside a message
		bytes.Repeat([]byte{flagMore, 0}, 40),
		append(zframe(flagMore, bytes.Repeat([]byte("x"), 300), false), zmessage("tail")...),
		append(zframe(flagLong, make([]byte, 600), false), zmessage("after")...),
	}
	for _, s := range seeds {
		f.Add(s, uint16(512), uint8(8))
		f.Add(s, uint16(4), uint8(2))
	}
	f.Fuzz(func(t *testing.T, data []byte, maxBytes uint16, maxFrames uint8) {
		mb, mf := int(maxBytes), 1+int(maxFrames)
		w := bytesWire(data)
		var ms runtime.MemStats
		var got []message
		for len(got) < 1000 {
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			msg, err := w.readMessage(mb, mf)
			runtime.ReadMemStats(&ms)
			// Frame bodies (twice: scratch and the exact copy), their
			// headers and offsets, or one command body: nothing that a
			// claimed size alone can inflate. (Under the race detector
			// sync.Pool drops buffers at random, so discarding a frame
			// through io.Discard allocates: the bound is not checked.)
			if alloc, limit := ms.TotalAlloc-before, uint64(6*mb+64*mf+3*maxCommandSize+1<<12); alloc > limit && !raceEnabled {
				t.Fatalf("readMessage(%d, %d) allocated %d bytes, bound %d", mb, mf, alloc, limit)
			}
			if err != nil {
				break
			}
			checkMessage(t, msg, mb, mf)
			got = append(got, msg)
		}
		// A reader whose buffer holds 16 bytes takes nearly every frame
		// through the slow path (bufferedFrames finds few whole frames):
		// it must read the same messages.
		slow := &wire{r: bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(data)), 16)}
		for i, m := range got {
			again, err := slow.readMessage(mb, mf)
			if err != nil || again.command != m.command || again.envelope != m.envelope ||
				(again.err == nil) != (m.err == nil) || !slices.EqualFunc(again.frames, m.frames, bytes.Equal) {
				t.Fatalf("message %d read through a 16-byte buffer as %+v (err %v), was %+v", i, again, err, m)
			}
		}
		// What was read whole survives re-encoding unchanged.
		var enc bytes.Buffer
		ww := &wire{dst: &enc}
		var want []message
		for _, m := range got {
			switch {
			case m.err != nil:
				continue
			case m.command != "":
				mustOK(t, ww.writeCommand(m.command, m.frames[0]))
			default:
				mustOK(t, ww.writeMessage(false, m.frames))
			}
			want = append(want, m)
		}
		mustOK(t, ww.flush())
		rw := bytesWire(enc.Bytes())
		for i, m := range want {
			again, err := rw.readMessage(mb, mf)
			if err != nil {
				t.Fatalf("re-reading message %d: %v", i, err)
			}
			if again.command != m.command || again.envelope != m.envelope || !slices.EqualFunc(again.frames, m.frames, bytes.Equal) {
				t.Fatalf("message %d re-read as %+v, was %+v", i, again, m)
			}
		}
	})
}

// raceEnabled reports whether the test binary was built with -race.
var raceEnabled = func() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}()

// checkMessage checks one message readMessage returned without error.
func checkMessage(t *testing.T, msg message, maxBytes, maxFrames int) {
	t.Helper()
	switch {
	case msg.command != "":
		if len(msg.frames) != 1 || msg.err != nil || msg.envelope {
			t.Fatalf("command %q read as %+v", msg.command, msg)
		}
		if len(msg.command)+len(msg.frames[0]) > maxCommandSize {
			t.Fatalf("command of %d bytes accepted", len(msg.command)+len(msg.frames[0]))
		}
	case msg.err != nil:
		if !errors.Is(msg.err, ErrTooLarge) || msg.frames != nil {
			t.Fatalf("discarded message: %+v", msg)
		}
	default:
		if len(msg.frames) == 0 || len(msg.frames) > maxFrames {
			t.Fatalf("%d frames read, limit %d", len(msg.frames), maxFrames)
		}
		total := 0
		for _, fr := range msg.frames {
			total += len(fr)
			if cap(fr) != len(fr) {
				t.Fatalf("frame of %d bytes has capacity %d: appending to it would clobber the next", len(fr), cap(fr))
			}
		}
		if total > maxBytes {
			t.Fatalf("message of %d bytes read, limit %d", total, maxBytes)
		}
		if want := len(msg.frames) > 1 && len(msg.frames[0]) == 0; msg.envelope != want {
			t.Fatalf("envelope %v for frames %q", msg.envelope, msg.frames)
		}
	}
}

// Broker fuzzing: one broker serves every iteration of a fuzzing process
// (starting one per input would make each iteration cost milliseconds). An
// iteration leaves it empty, and LIST checks that; a failed iteration gets a
// fresh broker for the next, so a minimised crasher is judged on its own.

var fuzzLim = Limits{MaxName: 8, MaxChunk: 48, MaxBatch: 4}

type fuzzBroker struct {
	srv   *Server
	dirty bool
	store bool   // on a store that spills every write and compacts often
	dir   string // the store's directory
}

func (b *fuzzBroker) get(t testing.TB) *Server {
	if b.srv != nil && !b.dirty {
		return b.srv
	}
	b.close()
	cfg := Config{
		Endpoint: testEndpoint(),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Limits:   fuzzLim,
	}
	if b.store {
		dir, err := os.MkdirTemp("", "zpipes-fuzz-store-")
		if err != nil {
			t.Fatal(err)
		}
		b.dir = dir
		cfg.Store, cfg.spillAbove, cfg.storeSlack = dir, 1, 4<<10
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	b.srv, b.dirty = s, false
	return s
}

func (b *fuzzBroker) close() {
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
		b.dir = ""
	}
}

func FuzzBrokerCommands(f *testing.F) { fuzzBrokerCommands(f, false) }

// FuzzBrokerCommandsSpilled runs the same scripts against a broker on a
// store whose every write goes to disk only and whose log is compacted
// every few KiB: the model, which knows nothing of disks, must not tell
// the difference.
func FuzzBrokerCommandsSpilled(f *testing.F) { fuzzBrokerCommands(f, true) }

func fuzzBrokerCommands(f *testing.F, store bool) {
	b := fuzzBroker{store: store}
	f.Cleanup(b.close)
	for _, s := range [][]byte{
		{opOpen, 0, opWrite, 0, 3, 'a', 'b', 'c', opRead, 0, opClose, 0},
		{opOpen, 1, opMWrite, 1, 3, 1, 'x', 2, 'y', 'z', 0, opMRead, 1, 2, opList, opMRead, 1, 9},
		{opOpen, 0, opRead, 0, opWrite, 0, 1, 'q', opCancel, 0, opList},
		{opOpen, 0, opRead, 0, opRead, 1, opCancel, 1, opWrite, 0, 1, 'a', opCancel, 0, opList},
		{opUnread, 2, 2, 1, 'u', 1, 'v', opOpen, 2, opWrite, 2, 1, 'w', opUnread, 2, 1, 1, 't', opList},
		{opWrite, 3, 1, 'x', opRead, 3, opClose, 3, opCancel, 3},
		{opOpen | opEnvelope, 0, opWrite | opEnvelope, 0, 1, 'e', opRead | opEnvelope, 0, opClose | opEnvelope, 0},
		{opGarbage, 3, 4, 'O', 'P', 'E', 'N', 0, 3, 'x', 'y', 'z', opPing, 2, 0, 1},
		{opOpen, 0, opWrite, 0, 250, opMWrite, 0, 6, 1, 'a', 1, 'b', 1, 'c', 1, 'd', 1, 'e', 1, 'f'},
		{opGarbage, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{opOpen, 4, opOpen, 5},
		{opOpen, 0, opRead, 0, opPing, 3, 0, 0, 7, opCancel, 0},
		{opOpen, 0, opOpen, 0, opClose, 0, opClose, 0, opClose, 0},
		{opMRead, 0, 200},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := b.get(t)
		b.dirty = true
		runScript(t, s, data)
		if !t.Failed() {
			b.dirty = false
		}
	})
}

// FuzzServerHandshake feeds arbitrary bytes to the broker's side of the
// ZMTP handshake, as a hostile peer would send them: it must end, with a
// wire or an error, within its deadline, and panic nowhere (the broker
// recovers a panic in zmq4, but it should not need to).
func FuzzServerHandshake(f *testing.F) {
	var good bytes.Buffer
	greeting := make([]byte, 64)
	greeting[0], greeting[9], greeting[10], greeting[11] = 0xff, 0x7f, 3, 0
	copy(greeting[12:], "NULL")
	good.Write(greeting)
	good.Write(zcommand("READY", append([]byte{11}, append([]byte("Socket-Type"), 0, 0, 0, 6, 'D', 'E', 'A', 'L', 'E', 'R')...)))
	f.Add(good.Bytes())
	f.Add(append(good.Bytes(), zmessage("OPEN", "p")...))
	f.Add(greeting)
	f.Add(greeting[:10])
	f.Add(append(slices.Clone(greeting), flagCommand|flagLong, 0, 0, 0, 0, 0, 1, 0, 0))
	f.Add(append(slices.Clone(greeting), zcommand("READY", []byte{11, 'S', 'o', 'c', 'k', 'e', 't', '-', 'T', 'y', 'p', 'e', 0xff, 0xff, 0xff, 0xff})...))
	f.Add(append(slices.Clone(greeting), zcommand("READY", []byte{200})...))
	f.Add(append(slices.Clone(greeting), zcommand("ERROR", []byte{3, 'b', 'a', 'd'})...))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		server, peer := socketPair(t)
		defer server.Close()
		defer peer.Close()
		// The broker's greeting and READY fit in the socket buffer; the
		// peer's bytes may not, and end with a half-close, so every read
		// ends at once.
		go func() {
			peer.Write(data)
			peer.CloseWrite()
		}()
		start := time.Now()
		w, err := recoverHandshake(server, zmq4.Router, true, start.Add(time.Second))
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("handshake took %v", d)
		}
		var pe *handshakePanic
		if errors.As(err, &pe) {
			t.Fatal(err)
		}
		if err != nil {
			return
		}
		if w.peerType == "" {
			t.Fatalf("handshake accepted a peer without a socket type")
		}
		// The bytes after the handshake are the frame reader's.
		for {
			if _, err := w.readMessage(1<<16, 64); err != nil {
				break
			}
		}
	})
}

// FuzzFifo checks the segmented chunk queue against a slice: pushes at the
// tail, pops at the head and batches put back at the head, across segment
// boundaries.
func FuzzFifo(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 3, 1})
	f.Add(bytes.Repeat([]byte{0, 0, 0, 1}, 200))
	f.Add(append(bytes.Repeat([]byte{0}, 300), bytes.Repeat([]byte{2, 255, 1, 1}, 100)...))
	f.Fuzz(func(t *testing.T, ops []byte) {
		var q fifo[[]byte]
		var model [][]byte
		next := 0
		chunk := func() []byte { next++; return binary.BigEndian.AppendUint32(nil, uint32(next)) }
		for i := 0; i < len(ops); i++ {
			switch op := ops[i]; op % 4 {
			case 0: // push a run
				for range 1 + int(op>>2) {
					c := chunk()
					q.push(c)
					model = append(model, c)
				}
			case 1: // pop a run
				for range 1 + int(op>>2) {
					if len(model) == 0 {
						break
					}
					if got := q.peek(); !bytes.Equal(got, model[0]) {
						t.Fatalf("peek %x, want %x", got, model[0])
					}
					if got := q.pop(); !bytes.Equal(got, model[0]) {
						t.Fatalf("pop %x, want %x", got, model[0])
					}
					model = model[1:]
				}
			default: // put a batch back at the head
				var cs [][]byte
				for range int(op >> 1) {
					cs = append(cs, chunk())
				}
				q.pushFront(cs)
				model = append(slices.Clone(cs), model...)
			}
			if q.len() != len(model) {
				t.Fatalf("len %d, want %d", q.len(), len(model))
			}
		}
		for len(model) > 0 {
			if got := q.pop(); !bytes.Equal(got, model[0]) {
				t.Fatalf("draining: pop %x, want %x", got, model[0])
			}
			model = model[1:]
		}
		if q != (fifo[[]byte]{}) {
			t.Fatalf("drained queue holds %+v", q)
		}
	})
}
