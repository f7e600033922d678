package broker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
)

// ZMTP 3 frame flags.
const (
	flagMore    = 0x01
	flagLong    = 0x02
	flagCommand = 0x04
)

const (
	greetingSize   = 64       // ZMTP 3 greeting
	maxCommandSize = 16 << 10 // a READY or PING command is a few short fields
	bufferSize     = 64 << 10 // per-connection read and write buffers
	handshakeLimit = time.Second * 5
)

// wire is one ZMTP connection. zmq4 performs the greeting and the NULL
// security handshake (so zpipes speaks exactly what libzmq expects); after
// that, wire frames messages itself, reading through a buffer and writing
// whole batches of messages per syscall. That is what lets the
// broker see every disconnect, bound every read, never block one peer on
// another's socket, and coalesce many small frames into one syscall — the
// things zmq4's own sockets cannot do (see docs/zmq4.md).
//
// Reads and writes may run in two goroutines; neither side is safe for
// concurrent use by more than one goroutine.
type wire struct {
	nc       net.Conn
	r        *bufio.Reader
	dst      io.Writer       // where flush writes: nc
	peerType string          // the peer's Socket-Type, e.g. "DEALER"
	peerID   []byte          // the peer's Identity; empty if it set none
	scratch  []byte          // frame bodies of the message being read
	out      []byte          // messages encoded, not yet written
	vecs     net.Buffers     // with out[mark:], the bytes to write, when large bodies are not copied into out
	vecBytes int             // bytes in vecs
	mark     int             // where out's bytes not yet in vecs start
	ends     []int           // where each message ends, in the bytes to write
	sent     int             // messages written whole, for takeSent
	raw      syscall.RawConn // dst's, for flushNow; made on first use
	offs     []int           // frame boundaries in scratch
}

// guardedConn is the net.Conn zmq4 handshakes over. Reads come from the
// wire's buffer, so bytes that arrive early stay for the frame reader, and
// the header of the peer's READY command is checked before zmq4 sees it:
// zmq4 allocates whatever size a frame header claims.
type guardedConn struct {
	net.Conn
	r    *bufio.Reader
	read int
}

func (g *guardedConn) Read(p []byte) (int, error) {
	if g.read == greetingSize {
		if err := checkReady(g.r); err != nil {
			return 0, err
		}
	}
	if g.read < greetingSize && len(p) > greetingSize-g.read {
		p = p[:greetingSize-g.read]
	}
	n, err := g.r.Read(p)
	g.read += n
	return n, err
}

// checkReady validates the peer's READY command before zmq4 parses it:
// zmq4 allocates whatever size a frame header claims, indexes properties
// without bounds checks and panics on a socket type it does not know.
func checkReady(r *bufio.Reader) error {
	h, err := r.Peek(2)
	if err != nil {
		return err
	}
	if h[0]&flagCommand == 0 || h[0]&flagMore != 0 {
		return errors.New("zmtp: expected a READY command after the greeting")
	}
	hdr, size := 2, uint64(h[1])
	if h[0]&flagLong != 0 {
		if h, err = r.Peek(9); err != nil {
			return err
		}
		hdr, size = 9, binary.BigEndian.Uint64(h[1:])
	}
	if size > maxCommandSize {
		return fmt.Errorf("zmtp: READY command of %d bytes", size)
	}
	frame, err := r.Peek(hdr + int(size))
	if err != nil {
		return err
	}
	body := frame[hdr:]
	if len(body) < 6 || body[0] != 5 || string(body[1:6]) != "READY" {
		return errors.New("zmtp: expected a READY command after the greeting")
	}
	props := body[6:]
	typed := false
	title := cases.Title(language.Und, cases.NoLower) // not safe to share
	for len(props) > 0 {
		n := int(props[0])
		if n == 0 || len(props) < 1+n+4 {
			return errors.New("zmtp: malformed READY property")
		}
		name := string(props[1 : 1+n])
		vlen := binary.BigEndian.Uint32(props[1+n:])
		if uint64(len(props)-(1+n+4)) < uint64(vlen) {
			return errors.New("zmtp: malformed READY property")
		}
		value := string(props[1+n+4 : 1+n+4+int(vlen)])
		// zmq4 title-cases names and keeps the last value of each: every
		// property it would read as the socket type must be a known one.
		if title.String(name) == "Socket-Type" {
			if !knownSocketTypes[value] {
				return fmt.Errorf("zmtp: unknown socket type %q", value)
			}
			typed = true
		}
		props = props[1+n+4+int(vlen):]
	}
	if !typed {
		return errors.New("zmtp: READY without a socket type")
	}
	return nil
}

// knownSocketTypes are the ZMTP socket types zmq4 can check compatibility of.
var knownSocketTypes = map[string]bool{
	"PAIR": true, "PUB": true, "SUB": true, "REQ": true, "REP": true, "DEALER": true,
	"ROUTER": true, "PULL": true, "PUSH": true, "XPUB": true, "XSUB": true,
}

// handshake runs the ZMTP greeting and READY exchange on nc within the
// deadline. sockType is this side's socket type; id its identity, if any.
func handshake(nc net.Conn, sockType zmq4.SocketType, id []byte, server bool, deadline time.Time) (_ *wire, err error) {
	defer func() {
		// checkReady keeps known panics out of zmq4; should another input
		// reach one, it costs this connection, not the process.
		if v := recover(); v != nil {
			err = fmt.Errorf("zmtp handshake: %v", v)
		}
	}()
	w := &wire{
		nc:  nc,
		r:   bufio.NewReaderSize(nc, bufferSize),
		dst: nc,
	}
	if err := nc.SetDeadline(deadline); err != nil {
		return nil, err
	}
	zc, err := zmq4.Open(&guardedConn{Conn: nc, r: w.r}, null.Security(), sockType, id, server, nil)
	if err != nil {
		return nil, err
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	w.peerType = zc.Peer.Meta["Socket-Type"]
	w.peerID = []byte(zc.Peer.Meta["Identity"])
	return w, nil
}

// message is one received ZMTP message or command.
type message struct {
	frames   [][]byte
	envelope bool   // the first frame was empty (REQ-style)
	command  string // non-empty for a ZMTP command such as PING
	err      error  // set when the message broke a limit and was discarded
}

// readMessage reads the next message. A message that breaks a limit is read
// to its end and discarded, and returned with err set, so the stream stays in
// step and the sender can be told why. Any other error means the connection
// is unusable. All frames of a message share one allocation, sized exactly,
// so a queued chunk keeps nothing else alive but its batch.
func (w *wire) readMessage(maxBytes, maxFrames int) (message, error) {
	var (
		msg     message
		total   int
		nframes int
	)
	w.scratch = w.scratch[:0]
	w.offs = w.offs[:0]
	for {
		if msg.err == nil && w.r.Buffered() >= 2 && w.bufferedFrames(&nframes, &total, maxBytes, maxFrames) {
			break
		}
		flags, size, err := w.readHeader()
		if err != nil {
			return msg, err
		}
		if flags&flagCommand != 0 {
			if nframes > 0 || flags&flagMore != 0 || size > maxCommandSize {
				return msg, fmt.Errorf("zmtp: bad command frame (%d bytes)", size)
			}
			body := make([]byte, size)
			if _, err := io.ReadFull(w.r, body); err != nil {
				return msg, err
			}
			if len(body) == 0 || body[0] == 0 || int(body[0]) > len(body)-1 {
				return msg, errors.New("zmtp: bad command frame")
			}
			return message{command: string(body[1 : 1+body[0]]), frames: [][]byte{body[1+body[0]:]}}, nil
		}
		if nframes == 0 && size == 0 && flags&flagMore != 0 {
			msg.envelope = true
		}
		nframes++
		total += int(min(size, uint64(maxBytes)+1))
		switch {
		case msg.err != nil:
		case size > uint64(maxBytes) || total > maxBytes:
			msg.err = fmt.Errorf("%w: message over %d bytes", ErrTooLarge, maxBytes)
		case nframes > maxFrames:
			msg.err = fmt.Errorf("%w: message over %d frames", ErrTooLarge, maxFrames)
		}
		if msg.err != nil {
			if _, err := io.CopyN(io.Discard, w.r, int64(size)); err != nil {
				return msg, err
			}
		} else {
			// Grow as the bytes arrive, not by what the header claims, so
			// a peer cannot reserve memory it never sends.
			for left := int(size); left > 0; {
				n := min(left, bufferSize)
				start := len(w.scratch)
				w.scratch = append(w.scratch, make([]byte, n)...)
				if _, err := io.ReadFull(w.r, w.scratch[start:]); err != nil {
					return msg, err
				}
				left -= n
			}
			w.offs = append(w.offs, len(w.scratch))
		}
		if flags&flagMore == 0 {
			break
		}
	}
	if msg.err != nil {
		return msg, nil
	}
	// One exact copy, which the compiler makes without zeroing first
	// (make and copy of a local, side by side).
	scratch := w.scratch
	buf := make([]byte, len(scratch))
	copy(buf, scratch)
	msg.frames = make([][]byte, len(w.offs))
	start := 0
	for i, end := range w.offs {
		msg.frames[i] = buf[start:end:end]
		start = end
	}
	if cap(w.scratch) > 4<<20 {
		w.scratch = nil // do not pin one huge message's buffer forever
	}
	return msg, nil
}

// bufferedFrames is readMessage's fast path: it takes the data frames that
// lie whole in the read buffer, appending their bodies to scratch, with no
// call per frame. It leaves to readMessage whatever needs care: a command
// frame, an envelope delimiter, a frame not yet whole in the buffer, and
// one past the limits. It reports whether it took the message's last frame.
func (w *wire) bufferedFrames(nframes, total *int, maxBytes, maxFrames int) (end bool) {
	buf, _ := w.r.Peek(w.r.Buffered())
	i := 0
	for !end {
		flags, hdr, size, ok := frameHeader(buf[i:])
		if !ok || flags&flagCommand != 0 || size > uint64(len(buf)-i-hdr) ||
			*nframes == 0 && size == 0 && flags&flagMore != 0 ||
			*nframes >= maxFrames || *total+int(size) > maxBytes {
			break
		}
		body := buf[i+hdr : i+hdr+int(size)]
		*nframes++
		*total += len(body)
		w.scratch = append(w.scratch, body...)
		w.offs = append(w.offs, len(w.scratch))
		i += hdr + len(body)
		end = flags&flagMore == 0
	}
	w.r.Discard(i)
	return end
}

// messageBuffered reports whether the next message lies whole in the read
// buffer, so that reading it cannot block.
func (w *wire) messageBuffered() bool {
	buf, _ := w.r.Peek(w.r.Buffered())
	for i := 0; ; {
		flags, hdr, size, ok := frameHeader(buf[i:])
		if !ok || size > uint64(len(buf)-i-hdr) {
			return false
		}
		i += hdr + int(size)
		if flags&flagMore == 0 {
			return true
		}
	}
}

// frameHeader parses the frame header that b starts with: the frame's
// flags, the header's length and the body's size; ok is false if b does
// not hold the whole header.
func frameHeader(b []byte) (flags byte, hdr int, size uint64, ok bool) {
	switch {
	case len(b) < 2:
		return 0, 0, 0, false
	case b[0]&flagLong == 0:
		return b[0], 2, uint64(b[1]), true
	case len(b) < 9:
		return 0, 0, 0, false
	}
	return b[0], 9, binary.BigEndian.Uint64(b[1:]), true
}

func (w *wire) readHeader() (flags byte, size uint64, err error) {
	h, err := w.r.Peek(2)
	if err != nil {
		return 0, 0, err
	}
	flags = h[0]
	if flags&flagLong == 0 {
		size = uint64(h[1])
		_, err = w.r.Discard(2)
		return flags, size, err
	}
	h, err = w.r.Peek(9)
	if err != nil {
		return 0, 0, err
	}
	size = binary.BigEndian.Uint64(h[1:])
	_, err = w.r.Discard(9)
	if size > 1<<62 {
		return 0, 0, fmt.Errorf("zmtp: frame of %d bytes", size)
	}
	return flags, size, err
}

// Writing. Messages are encoded into one buffer and written with one
// syscall when the buffer fills or flush is called; a frame body of
// vecMin bytes or more is not copied but written from where it is, with
// writev. The wire remembers where each message ends, so after a failed
// write the caller knows exactly which messages reached the kernel (sent)
// and which did not: a chunk that reached a peer is never handed to
// another reader, and one that did not is never lost.

// vecMin is the smallest frame body written from its own memory rather
// than copied: below it, a copy costs less than the kernel's work for one
// more piece of a writev.
const vecMin = 2 << 10

// pending is the number of bytes buffered for writing.
func (w *wire) pending() int { return w.vecBytes + len(w.out) - w.mark }

// writeMessage buffers one message.
func (w *wire) writeMessage(envelope bool, frames [][]byte) error {
	if envelope {
		w.appendFrame(flagMore, nil)
	}
	for i, f := range frames {
		var flags byte
		if i < len(frames)-1 {
			flags = flagMore
		}
		w.appendFrame(flags, f)
	}
	return w.endMessage()
}

// writeCommand buffers a ZMTP command such as PING or PONG.
func (w *wire) writeCommand(name string, body []byte) error {
	w.out = append(w.out, flagCommand, 0)
	h := len(w.out)
	w.out = append(w.out, byte(len(name)))
	w.out = append(w.out, name...)
	w.out = append(w.out, body...)
	if size := len(w.out) - h; size > 255 {
		return errors.New("zmtp: command too long")
	} else {
		w.out[h-1] = byte(size)
	}
	return w.endMessage()
}

// writeEncoded writes a message already encoded as frames. With nothing
// else buffered it goes to the socket as it is, without a copy.
func (w *wire) writeEncoded(msg []byte) error {
	if w.pending() > 0 {
		w.out = append(w.out, msg...)
		return w.endMessage()
	}
	n, err := w.dst.Write(msg)
	if n == len(msg) {
		w.sent++
	}
	return err
}

func (w *wire) appendFrame(flags byte, body []byte) {
	if len(body) < vecMin {
		w.out = appendFrame(w.out, flags, body)
		return
	}
	w.out = append(w.out, flags|flagLong)
	w.out = binary.BigEndian.AppendUint64(w.out, uint64(len(body)))
	w.vecs = append(w.vecs, w.out[w.mark:len(w.out):len(w.out)], body)
	w.vecBytes += len(w.out) - w.mark + len(body)
	w.mark = len(w.out)
}

// appendFrame appends one ZMTP frame, header and body, to buf.
func appendFrame(buf []byte, flags byte, body []byte) []byte {
	if len(body) > 255 {
		buf = append(buf, flags|flagLong)
		buf = binary.BigEndian.AppendUint64(buf, uint64(len(body)))
	} else {
		buf = append(buf, flags, byte(len(body)))
	}
	return append(buf, body...)
}

func (w *wire) endMessage() error {
	w.ends = append(w.ends, w.pending())
	if w.pending() >= bufferSize {
		return w.flush()
	}
	return nil
}

// flush writes what is buffered. Messages written whole are counted in
// sent; on an error the rest are dropped from the buffer, unsent.
func (w *wire) flush() error {
	if w.pending() == 0 {
		return nil
	}
	var (
		n   int
		err error
	)
	if len(w.vecs) == 0 {
		n, err = w.dst.Write(w.out)
	} else {
		w.vecs = append(w.vecs, w.out[w.mark:])
		v := w.vecs // WriteTo consumes its Buffers: keep ours for reuse
		var n64 int64
		n64, err = v.WriteTo(w.dst)
		n = int(n64)
	}
	w.countSent(n)
	w.reset()
	return err
}

// countSent adds to sent the messages that the first n bytes written
// completed, and returns how many.
func (w *wire) countSent(n int) int {
	k := 0
	for k < len(w.ends) && w.ends[k] <= n {
		k++
	}
	w.sent += k
	return k
}

// reset empties the buffers.
func (w *wire) reset() {
	w.out, w.ends = w.out[:0], w.ends[:0]
	clear(w.vecs[:cap(w.vecs)]) // keep no chunk alive
	w.vecs, w.vecBytes, w.mark = w.vecs[:0], 0, 0
	if cap(w.out) > 4<<20 {
		w.out = nil // do not keep one huge reply's buffer
	}
}

// flushNow writes what is buffered without waiting for room in the
// socket: what the kernel does not take now stays buffered, in order, for
// the next flush. It reports whether everything went. Messages written
// whole are counted in sent, as by flush.
func (w *wire) flushNow() (bool, error) {
	if len(w.vecs) > 0 {
		return false, nil // flush will write it
	}
	if w.raw == nil {
		sc, ok := w.dst.(syscall.Conn)
		if !ok {
			return false, nil
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false, err
		}
		w.raw = rc
	}
	var (
		n    int
		werr error
	)
	if err := w.raw.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), w.out)
		return true // once: never wait for room
	}); err != nil {
		return false, err
	}
	if werr == syscall.EAGAIN || werr == syscall.EINTR {
		werr = nil
	}
	n = max(n, 0)
	k := w.countSent(n)
	w.out = w.out[:copy(w.out, w.out[n:])]
	w.ends = w.ends[:copy(w.ends, w.ends[k:])]
	for i := range w.ends {
		w.ends[i] -= n
	}
	return len(w.out) == 0, werr
}

// takeSent returns how many messages were written whole since the last
// call.
func (w *wire) takeSent() int {
	n := w.sent
	w.sent = 0
	return n
}

func (w *wire) close() error { return w.nc.Close() }

// batchEncoder builds one request frame by frame, so that a Writer copies
// each chunk once, straight into the bytes that go to the socket. Every
// frame is written with MORE set; bytes clears it on the last one.
type batchEncoder struct {
	buf    []byte
	last   int // offset of the last frame's flags byte
	chunks int // chunk frames
	size   int // chunk bytes
}

// reset starts a new message of the command for the pipe.
func (e *batchEncoder) reset(cmd, pipe string) {
	e.buf, e.chunks, e.size = e.buf[:0], 0, 0
	e.frame([]byte(cmd))
	e.frame([]byte(pipe))
}

// add appends one chunk frame.
func (e *batchEncoder) add(chunk []byte) {
	e.frame(chunk)
	e.chunks++
	e.size += len(chunk)
}

func (e *batchEncoder) frame(body []byte) {
	e.last = len(e.buf)
	e.buf = appendFrame(e.buf, flagMore, body)
}

// bytes returns the message, ended at its last frame. It stays valid until
// the next reset.
func (e *batchEncoder) bytes() []byte {
	e.buf[e.last] &^= flagMore
	return e.buf
}
