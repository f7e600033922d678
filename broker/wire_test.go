package broker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"golang.org/x/sys/unix"
)

// ZMTP framing and the handshake (wire.go). The helpers here encode frames,
// messages, commands and greetings by hand, for tests that must send what
// a correct peer never would.

// zframe encodes one ZMTP frame, short or long as the size needs (or long
// anyway, which ZMTP allows).
func zframe(flags byte, body []byte, long bool) []byte {
	if len(body) > 255 || long {
		b := []byte{flags | flagLong, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint64(b[1:], uint64(len(body)))
		return append(b, body...)
	}
	return append([]byte{flags, byte(len(body))}, body...)
}

// zmessage encodes a message of data frames.
func zmessage(frames ...string) []byte {
	var b []byte
	for i, f := range frames {
		var flags byte
		if i < len(frames)-1 {
			flags = flagMore
		}
		b = append(b, zframe(flags, []byte(f), false)...)
	}
	return b
}

// zcommand encodes a ZMTP command frame.
func zcommand(name string, body []byte) []byte {
	return zframe(flagCommand, append(append([]byte{byte(len(name))}, name...), body...), false)
}

// bytesWire is a wire reading from a byte slice, as after a handshake.
func bytesWire(data []byte) *wire {
	return &wire{r: bufio.NewReaderSize(bytes.NewReader(data), bufferSize)}
}

// Regression: a ZMTP command frame whose name is empty was returned as a
// data message (readMessage tells commands by a non-empty name), so its
// body became a one-frame request that skipped the message limits. The
// broker must not execute it: such a frame is malformed and should end the
// connection, like other malformed commands.
func TestCommandWithoutNameIsNotARequest(t *testing.T) {
	w := bytesWire(append(zcommand("", []byte(CmdList)), zmessage(CmdOpen, "p")...))
	msg, err := w.readMessage(1<<20, 16)
	if err == nil && msg.command == "" {
		t.Errorf("command frame without a name read as message %q", msg.frames)
	}

	s := startServer(t)
	p := dialRaw(t, s, zmq4.Dealer)
	p.w.appendFrame(flagCommand, append([]byte{0}, CmdList...))
	p.send(CmdOpen, "p")
	p.w.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if msg, err := p.w.readMessage(1<<20, 16); err == nil && len(msg.frames) > 0 && string(msg.frames[0]) == StatusOK && len(msg.frames) == 2 {
		t.Fatalf("the broker answered a nameless command as LIST: %q", msg.frames)
	}
}

// The frame reader allocates a frame's body when it reads its header, for
// the size the header claims, before a byte of it arrives: each connection
// can make the broker hold a whole message's worth (maxMessage, 16 MiB by
// default) for the cost of a 9-byte header. Reading the body as it comes,
// growing the buffer with the bytes actually received, bounds that by what
// peers really send.
func TestClaimedFrameSizeIsNotAllocatedUpFront(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = Limits{MaxName: 64, MaxChunk: 4 << 20, MaxBatch: 16}
		c.Logger = quietLogger(t)
	})
	const conns = 16
	before := heapInuse()
	for range conns {
		p := dialRaw(t, s, zmq4.Dealer)
		p.w.appendFrame(flagMore, []byte(CmdWrite))
		p.w.appendFrame(flagMore, []byte("p"))
		// A frame header claiming 4 MiB, and a few bytes of it.
		p.w.out = append(p.w.out, flagLong)
		p.w.out = binary.BigEndian.AppendUint64(p.w.out, 4<<20)
		p.w.out = append(p.w.out, "only this"...)
		mustOK(t, p.w.flush())
	}
	// Nothing tells when the broker has read the headers: watch the heap
	// for a while.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if h := heapInuse(); h > before+8<<20 {
			t.Fatalf("heap grew %d MiB for %d connections that each sent a 4 MiB frame header and 9 bytes", (h-before)>>20, conns)
		}
		time.Sleep(50 * time.Millisecond) // sampling, not synchronising
	}
}

// zmtpGreeting is a ZMTP 3.0 greeting offering the NULL mechanism.
func zmtpGreeting() []byte {
	g := make([]byte, greetingSize)
	g[0], g[9], g[10], g[11] = 0xff, 0x7f, 3, 0
	copy(g[12:], "NULL")
	return g
}

// zmtpReady is a READY command announcing a socket type.
func zmtpReady(typ string) []byte {
	body := append([]byte{11}, "Socket-Type"...)
	body = binary.BigEndian.AppendUint32(body, uint32(len(typ)))
	return zcommand("READY", append(body, typ...))
}

// socketPair is a connected pair of Unix stream sockets.
func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// handshakePanic is a panic in the handshake, turned into an error.
type handshakePanic struct{ v any }

func (p *handshakePanic) Error() string { return fmt.Sprintf("handshake panicked: %v", p.v) }

// recoverHandshake runs handshake, turning a panic into a *handshakePanic,
// so a test reports it instead of dying with every other test.
func recoverHandshake(nc net.Conn, typ zmq4.SocketType, server bool, deadline time.Time) (w *wire, err error) {
	defer func() {
		if v := recover(); v != nil {
			w, err = nil, &handshakePanic{v}
		}
	}()
	return handshake(nc, typ, nil, server, deadline)
}

// Regression: zmq4 panics on a peer whose READY names no socket type, or
// one it does not know ("unknown socket-type"). The broker recovers (the
// connection is lost, the broker logs an error), but Dial does not: a
// broker, or anything else listening on the endpoint, that answers such a
// READY crashes the client process. handshake should check the peer's
// Socket-Type itself, or recover, and fail with an error.
//
// A check in front of zmq4 must see the socket type exactly as zmq4 will:
// zmq4 title-cases property names (cases.Title, NoLower) and keeps the last
// value of a name, so "SoCket-TYpe" is no socket type to it, while
// "socket-type" and "ſocket-type" (long s) are "Socket-Type" and override
// one given before. Recovering from a panic in handshake, besides the
// check, would make it safe whatever zmq4 does.
func TestHandshakeWithUnknownSocketTypeFails(t *testing.T) {
	type prop struct{ name, value string }
	for _, props := range [][]prop{
		nil,
		{{"Socket-Type", "FOO"}},
		{{"SoCket-TYpe", "DEALER"}},
		{{"SOCKET-TYPE", "DEALER"}},
		{{"Identity", "x"}},
		{{"Socket-Type", "DEALER"}, {"socket-type", "FOO"}},
		{{"Socket-Type", "DEALER"}, {"socket-type", ""}},
		{{"Socket-Type", "DEALER"}, {"ſocket-type", "FOO"}},
	} {
		t.Run(fmt.Sprint(props), func(t *testing.T) {
			var body []byte
			for _, p := range props {
				body = append(append(body, byte(len(p.name))), p.name...)
				body = binary.BigEndian.AppendUint32(body, uint32(len(p.value)))
				body = append(body, p.value...)
			}
			ready := zcommand("READY", body)
			for _, server := range []bool{true, false} {
				local, peer := socketPair(t)
				go func() {
					peer.Write(append(zmtpGreeting(), ready...))
					peer.CloseWrite()
				}()
				_, err := recoverHandshake(local, zmq4.Dealer, server, time.Now().Add(5*time.Second))
				local.Close()
				peer.Close()
				var pe *handshakePanic
				if errors.As(err, &pe) || err == nil {
					t.Errorf("server %v: handshake with READY %v: %v, want an error", server, props, err)
				}
			}
		})
	}
	// The broker survives it either way and keeps serving.
	s := startServer(t)
	for _, typ := range []string{"FOO", ""} {
		nc, err := dialUnix(s.Endpoint())
		mustOK(t, err)
		defer nc.Close()
		ready := zmtpReady(typ)
		if typ == "" {
			ready = zcommand("READY", append([]byte{11}, "SOCKET-TYPE\x00\x00\x00\x06DEALER"...))
		}
		nc.Write(append(zmtpGreeting(), ready...))
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, nc) // until the broker closes it
	}
	c := dialT(t, s)
	mustOK(t, c.Open(testCtx(t), "p"))
}

// shortWriter takes at most limit bytes in all, then fails.
type shortWriter struct {
	bytes.Buffer
	limit int
}

func (s *shortWriter) Write(p []byte) (int, error) {
	n := min(len(p), s.limit-s.Len())
	s.Buffer.Write(p[:n])
	if n < len(p) {
		return n, errors.New("short write")
	}
	return n, nil
}

// Frame bodies of vecMin bytes or more are written from their own memory,
// between the encoded bytes around them: the stream is the same as if all
// were copied, and after a short write, sent counts the messages that went
// whole, whichever pieces they were written from.
func TestLargeFramesAreWrittenInPlaceAndCountedLikeTheRest(t *testing.T) {
	big := func(c byte) string { return string(bytes.Repeat([]byte{c}, vecMin+5)) }
	msgs := [][]string{
		{"OK", "a", big('b'), "c"},
		{"OK"},
		{big('d')},
		{"OK", big('e'), big('f')},
		{"tail"},
	}
	var want []byte
	for _, m := range msgs {
		want = append(want, zmessage(m...)...)
	}
	write := func(dst io.Writer) (*wire, error) {
		w := &wire{dst: dst}
		for _, m := range msgs {
			frames := make([][]byte, len(m))
			for i, f := range m {
				frames[i] = []byte(f)
			}
			if err := w.writeMessage(false, frames); err != nil {
				return w, err
			}
		}
		return w, w.flush()
	}
	var all bytes.Buffer
	if _, err := write(&all); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all.Bytes(), want) {
		t.Fatalf("wrote %d bytes, not the %d of the messages framed", all.Len(), len(want))
	}
	r := bytesWire(all.Bytes())
	for i, m := range msgs {
		got, err := r.readMessage(1<<20, 100)
		if err != nil || len(got.frames) != len(m) {
			t.Fatalf("message %d: %d frames, %v", i, len(got.frames), err)
		}
		for j, f := range m {
			if string(got.frames[j]) != f {
				t.Fatalf("message %d frame %d differs", i, j)
			}
		}
	}
	// Cut anywhere: the messages that went whole are those that end by
	// the cut.
	for _, cut := range []int{0, 5, len(zmessage(msgs[0]...)) - 1, len(zmessage(msgs[0]...)), len(want) - 3} {
		w, err := write(&shortWriter{limit: cut})
		if err == nil {
			t.Fatalf("cut at %d: no error", cut)
		}
		whole, end := 0, 0
		for _, m := range msgs {
			if end += len(zmessage(m...)); end <= cut {
				whole++
			}
		}
		if got := w.takeSent(); got != whole {
			t.Fatalf("cut at %d: %d messages counted sent, want %d", cut, got, whole)
		}
		if w.pending() != 0 || len(w.vecs) != 0 {
			t.Fatalf("cut at %d: %d bytes still buffered after the failure", cut, w.pending())
		}
	}
}

// messageBuffered says a message is whole only once its last byte is in
// the buffer, whatever its frames' sizes and header forms.
func TestMessageBufferedOnlyWhenWhole(t *testing.T) {
	msgs := map[string][]byte{
		"one frame":   zmessage("OK"),
		"empty frame": zmessage(""),
		"frames":      zmessage("OK", "a", "", strings.Repeat("b", 300)),
		"long header": append(zframe(flagMore, []byte("OK"), true), zframe(0, []byte("c"), true)...),
		"command":     zcommand("PING", []byte{0, 1}),
	}
	for name, msg := range msgs {
		for n := 0; n <= len(msg); n++ {
			data := msg[:n]
			if n == len(msg) {
				data = append(msg[:n:n], zmessage("next")...) // another message behind it
			}
			w := bytesWire(data)
			w.r.Peek(len(data))
			if got, want := w.messageBuffered(), n == len(msg); got != want {
				t.Errorf("%s, %d of %d bytes buffered: messageBuffered() = %v", name, n, len(msg), got)
			}
		}
	}
}
