package broker

import (
	"bytes"
	"fmt"
	"strconv"
)

// Command names on the wire. They are case-sensitive, as in the original
// zpipes broker. The first four are the original protocol; the rest are
// zpipes extensions that plain libzmq clients can use as well.
const (
	CmdOpen   = "OPEN"   // OPEN pipe            -> OK
	CmdClose  = "CLOSE"  // CLOSE pipe           -> OK
	CmdWrite  = "WRITE"  // WRITE pipe chunk     -> OK
	CmdRead   = "READ"   // READ pipe            -> chunk
	CmdMWrite = "MWRITE" // MWRITE pipe chunk... -> OK (all chunks queued as one)
	CmdMRead  = "MREAD"  // MREAD pipe max       -> OK chunk... (1 to max chunks)
	CmdCancel = "CANCEL" // CANCEL pipe          -> OK (earlier reads answer "cancelled")
	CmdUnread = "UNREAD" // UNREAD pipe chunk... -> OK (chunks back at the head)
	CmdList   = "LIST"   // LIST [after]         -> OK json [next] (a page of pipes)
	CmdLimits = "LIMITS" // LIMITS               -> OK json (see Limits)
	CmdTake   = "TAKE"   // TAKE pipe max        -> OK chunk... (held until ACK)
	CmdAck    = "ACK"    // ACK pipe n           -> OK (the oldest n held are consumed)
	CmdNack   = "NACK"   // NACK pipe            -> OK (every chunk held goes back)
	CmdHold   = "HOLD"   // HOLD pipe            -> OK (an OPEN that ends with the connection)
)

// Reply status frames.
const (
	StatusOK    = "OK"
	StatusError = "ERROR"
)

// Limits bound what one request may carry. The zero value is not useful;
// DefaultLimits are what a broker uses unless told otherwise.
type Limits struct {
	MaxName  int // bytes in a pipe name
	MaxChunk int // bytes in one chunk
	MaxBatch int // chunks in one MWRITE, MREAD or UNREAD
}

// minBatchBytes is what one message may carry in chunks however small the
// chunk limit, so that a broker with small chunks still takes batches.
const minBatchBytes = 1 << 20

// BrokerLimits is the LIMITS reply: what a broker accepts, so that a client
// can size its batches to fit.
type BrokerLimits struct {
	MaxName       int `json:"max_name"`        // bytes in a pipe name
	MaxChunk      int `json:"max_chunk"`       // bytes in one chunk
	MaxBatch      int `json:"max_batch"`       // chunks in one MWRITE, MREAD or UNREAD
	MaxMessage    int `json:"max_message"`     // bytes in one message, all frames' bodies
	MaxPipeBytes  int `json:"max_pipe_bytes"`  // queued bytes per pipe, overhead included
	MaxTotalBytes int `json:"max_total_bytes"` // queued bytes in all pipes
	ChunkOverhead int `json:"chunk_overhead"`  // counted per queued chunk besides its bytes
}

// DefaultLimits are generous enough for any line-oriented use and small
// enough that one request cannot exhaust a laptop's memory.
var DefaultLimits = Limits{
	MaxName:  1024,
	MaxChunk: 16 << 20,
	MaxBatch: 65536,
}

// maxMessage is the most bytes one message may carry: a batch of chunks
// (the chunk limit, or minBatchBytes if that is more) plus the command and
// name. The limit on a message is not the limit on a chunk.
func (l Limits) maxMessage() int { return max(l.MaxChunk, minBatchBytes) + l.MaxName + 1024 }

// maxFrames is the most frames one message may have: envelope, command,
// pipe, a full batch.
func (l Limits) maxFrames() int { return l.MaxBatch + 3 }

// maxAck bounds the count of one ACK; what a connection may ACK is what
// it holds, which the core checks.
const maxAck = 1 << 30

// Request is one parsed client request.
type Request struct {
	Envelope bool     // sent REQ-style, with an empty first frame
	Cmd      string   // one of the Cmd constants
	Pipe     string   // pipe name (empty for LIST)
	Chunks   [][]byte // WRITE, MWRITE, UNREAD
	Max      int      // MREAD: most chunks to return; READ: 1
	After    string   // LIST: list the pipes named after this
	Size     int      // bytes in Chunks
}

// isRead reports whether the request takes chunks from a pipe.
func (r *Request) isRead() bool { return r.Cmd == CmdRead || r.Cmd == CmdMRead || r.Cmd == CmdTake }

// isWrite reports whether the request queues chunks in a pipe.
func (r *Request) isWrite() bool { return r.Cmd == CmdWrite || r.Cmd == CmdMWrite }

// ParseRequest checks a request's frames against the protocol and the limits.
// The returned error wraps one of the wire sentinels and says precisely what
// is wrong; a request with an envelope error still reports Envelope so the
// ERROR reply can be framed the way the client expects.
func ParseRequest(frames [][]byte, lim Limits) (Request, error) {
	var req Request
	if len(frames) > 0 && len(frames[0]) == 0 {
		req.Envelope = true
		frames = frames[1:]
	}
	if len(frames) == 0 {
		return req, fmt.Errorf("%w: empty message", ErrBadRequest)
	}
	cmd := frames[0]
	args := frames[1:]
	// req.Cmd is set from the constants, not string(cmd): no allocation.
	switch req.Cmd = knownCommand(cmd); req.Cmd {
	case CmdOpen, CmdClose, CmdRead, CmdCancel, CmdNack, CmdHold:
		if err := wantFrames(cmd, args, 1, 1); err != nil {
			return req, err
		}
		req.Max = 1
	case CmdWrite:
		if err := wantFrames(cmd, args, 2, 2); err != nil {
			return req, err
		}
	case CmdMWrite, CmdUnread:
		if err := wantFrames(cmd, args, 2, lim.MaxBatch+1); err != nil {
			return req, err
		}
	case CmdMRead, CmdTake, CmdAck:
		if err := wantFrames(cmd, args, 2, 2); err != nil {
			return req, err
		}
		most := lim.MaxBatch
		if req.Cmd == CmdAck {
			most = maxAck // whatever the connection holds, checked when run
		}
		n, err := strconv.Atoi(string(args[1]))
		if err != nil || n < 1 || n > most {
			return req, fmt.Errorf("%w: %s count %q is not a number from 1 to %d",
				ErrBadRequest, cmd, args[1], most)
		}
		req.Max = n
	case CmdList:
		if err := wantFrames(cmd, args, 0, 1); err != nil {
			return req, err
		}
		if len(args) == 1 {
			if len(args[0]) > lim.MaxName {
				return req, fmt.Errorf("%w: %d bytes, limit %d", ErrBadName, len(args[0]), lim.MaxName)
			}
			req.After = string(args[0])
		}
		return req, nil
	case CmdLimits:
		if err := wantFrames(cmd, args, 0, 0); err != nil {
			return req, err
		}
		return req, nil
	default:
		return req, fmt.Errorf("%w: %q", ErrUnknownCommand, abbrev(cmd))
	}
	name := args[0]
	if len(name) == 0 {
		return req, fmt.Errorf("%w: empty", ErrBadName)
	}
	if len(name) > lim.MaxName {
		return req, fmt.Errorf("%w: %d bytes, limit %d", ErrBadName, len(name), lim.MaxName)
	}
	req.Pipe = string(name)
	if req.Cmd == CmdWrite || req.Cmd == CmdMWrite || req.Cmd == CmdUnread {
		req.Chunks = args[1:]
		for _, c := range req.Chunks {
			if len(c) > lim.MaxChunk {
				return req, fmt.Errorf("%w: chunk of %d bytes, limit %d", ErrTooLarge, len(c), lim.MaxChunk)
			}
			req.Size += len(c)
		}
	}
	return req, nil
}

var commands = []string{CmdOpen, CmdClose, CmdWrite, CmdRead, CmdMWrite, CmdMRead, CmdCancel, CmdUnread, CmdList, CmdLimits, CmdTake, CmdAck, CmdNack, CmdHold}

// knownCommand returns the command constant equal to cmd, or "".
func knownCommand(cmd []byte) string {
	for _, c := range commands {
		if string(cmd) == c {
			return c
		}
	}
	return ""
}

func wantFrames(cmd []byte, args [][]byte, lo, hi int) error {
	if len(args) >= lo && len(args) <= hi {
		return nil
	}
	want := strconv.Itoa(lo)
	if hi > lo {
		want = fmt.Sprintf("%d to %d", lo, hi)
	}
	return fmt.Errorf("%w: %s takes %s argument frames, got %d", ErrBadRequest, cmd, want, len(args))
}

// abbrev keeps error messages readable when a client sends garbage.
func abbrev(b []byte) string {
	const max = 32
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// Reply framing. The envelope, if any, is prepended by the connection.

var (
	okFrame    = []byte(StatusOK)
	errorFrame = []byte(StatusError)
)

func replyOK() [][]byte { return [][]byte{okFrame} }

func replyError(err error) [][]byte { return [][]byte{errorFrame, []byte(err.Error())} }

// parseReply interprets a reply to a request of the given command. Replies
// to READ are a single chunk frame; every other success starts with "OK"; an
// error is always exactly ["ERROR", reason], which no success reply can be.
func parseReply(cmd string, frames [][]byte) ([][]byte, error) {
	if len(frames) == 2 && bytes.Equal(frames[0], errorFrame) {
		return nil, remoteError(frames[1])
	}
	if cmd == CmdRead {
		if len(frames) != 1 {
			return nil, fmt.Errorf("%w: READ reply has %d frames", ErrBadReply, len(frames))
		}
		return frames, nil
	}
	if len(frames) == 0 || !bytes.Equal(frames[0], okFrame) {
		return nil, fmt.Errorf("%w: %s reply does not start with OK", ErrBadReply, cmd)
	}
	return frames[1:], nil
}

// PipeInfo describes one pipe, as LIST reports it.
type PipeInfo struct {
	Name    string `json:"name"`
	Opens   int    `json:"opens"`
	Chunks  int    `json:"chunks"`
	Bytes   int    `json:"bytes"`
	Taken   int    `json:"taken"`   // chunks readers took (TAKE) and have not acknowledged
	Writers int    `json:"writers"` // writers with chunks queued
	Blocked int    `json:"blocked"` // writes waiting for room
	Reader  bool   `json:"reader"`  // a READ is waiting
}
