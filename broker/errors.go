package broker

import (
	"errors"
	"strings"
)

// Every error the package defines, in one place. The first group travels on
// the wire; the rest are local to a client or a server.

// Errors a broker sends back. On the wire an error is the two frames
// ["ERROR", reason], where reason is the error's text, optionally followed by
// ": " and a detail. A client maps the reason back to the sentinel, so callers
// compare with errors.Is.
var (
	ErrUnknownCommand = errors.New("unknown command")
	ErrBadRequest     = errors.New("bad request")
	ErrBadName        = errors.New("bad pipe name")
	ErrTooLarge       = errors.New("too large")
	ErrNoPipe         = errors.New("no such pipe")
	ErrNotOpen        = errors.New("pipe is not open")
	ErrReaderBusy     = errors.New("another reader is waiting")
	ErrCancelled      = errors.New("cancelled")
	ErrShutdown       = errors.New("broker shutting down")
	ErrStore          = errors.New("store failed")
	ErrTooManyPipes   = errors.New("too many pipes")
)

var wireErrors = []error{
	ErrUnknownCommand, ErrBadRequest, ErrBadName, ErrTooLarge, ErrNoPipe,
	ErrNotOpen, ErrReaderBusy, ErrCancelled, ErrShutdown, ErrStore, ErrTooManyPipes,
}

// RemoteError is an ERROR reply received from a broker.
type RemoteError struct {
	Reason string // the reason frame, as sent
	kind   error  // the matching sentinel, or nil
}

func (e *RemoteError) Error() string { return e.Reason }

// Unwrap returns the sentinel the reason names, so errors.Is works.
func (e *RemoteError) Unwrap() error { return e.kind }

// remoteError turns a reason frame into an error.
func remoteError(reason []byte) error {
	r := string(reason)
	for _, s := range wireErrors {
		t := s.Error()
		if r == t || strings.HasPrefix(r, t+": ") {
			return &RemoteError{Reason: r, kind: s}
		}
	}
	return &RemoteError{Reason: r}
}

// Errors of the client side and of endpoints, never sent on the wire.
var (
	// ErrConnLost means the connection to the broker failed or the broker
	// stopped answering; requests in flight fail with it.
	ErrConnLost = errors.New("connection to broker lost")

	// ErrBadReply means the broker answered something this client cannot
	// parse.
	ErrBadReply = errors.New("malformed reply from broker")

	// ErrEndpoint means an endpoint string is not one zpipes can use.
	ErrEndpoint = errors.New("bad endpoint")

	// ErrInUse means another broker already serves the endpoint.
	ErrInUse = errors.New("endpoint already in use")

	// ErrNoBroker means nothing listens on the endpoint.
	ErrNoBroker = errors.New("no broker")

	// ErrNoAnswer means something listens on the endpoint but did not
	// complete the handshake in time: a stopped broker, or not a broker.
	ErrNoAnswer = errors.New("broker not answering")

	// ErrRefused means the broker closed the connection during the
	// handshake: another user's broker, or one at its connection limit.
	ErrRefused = errors.New("refused by broker")
)
