package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultEndpoint is where the broker listens unless told otherwise: a Linux
// abstract socket, so there is no file to clean up after a crash.
const DefaultEndpoint = "ipc://@/zpipes/local"

// CheckEndpoint reports whether endpoint is one zpipes can listen on and
// connect to; the error wraps ErrEndpoint and says what is wrong.
func CheckEndpoint(endpoint string) error {
	_, err := socketPath(endpoint)
	return err
}

// socketPath maps a ZeroMQ ipc endpoint to a Unix socket address:
// "ipc://@name" is the abstract socket "@name" and "ipc:///path" (or any other
// "ipc://path") a filesystem socket.
func socketPath(endpoint string) (string, error) {
	path, ok := strings.CutPrefix(endpoint, "ipc://")
	if !ok {
		return "", fmt.Errorf("%w %q: only ipc:// endpoints are supported", ErrEndpoint, endpoint)
	}
	if path == "" || path == "@" {
		return "", fmt.Errorf("%w %q: empty socket name", ErrEndpoint, endpoint)
	}
	// sun_path holds 108 bytes, including the terminating NUL of a path.
	if len(path) > 107 {
		return "", fmt.Errorf("%w %q: socket name longer than 107 bytes", ErrEndpoint, endpoint)
	}
	return path, nil
}

// listener is a bound endpoint. A filesystem socket is removed at Close
// only if it is still the one this listener created: if somebody removed
// it and another broker has since bound the same path, that broker's
// socket stays.
type listener struct {
	*net.UnixListener
	path     string // the socket file; "" for an abstract socket
	dev, ino uint64 // of the socket file, as bound
	unlink   bool
}

// listen binds the endpoint. A filesystem socket is created with mode 0600;
// a stale one left by a crashed broker is replaced, a live one is not, and
// any other kind of file is left alone and refused.
func listen(endpoint string) (*listener, error) {
	path, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		if err := removeStale(endpoint, path); err != nil {
			return nil, err
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen %s: %w", endpoint, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", endpoint, err)
	}
	l := &listener{UnixListener: ln}
	if abstract {
		return l, nil
	}
	// net would unlink the path at Close whatever is there by then.
	ln.SetUnlinkOnClose(false)
	var st unix.Stat_t
	err = os.Chmod(path, 0o600)
	if err == nil {
		err = unix.Lstat(path, &st)
	}
	if err != nil {
		ln.Close() // a socket file left behind is stale: the next listen replaces it
		return nil, fmt.Errorf("listen %s: %w", endpoint, err)
	}
	l.path, l.dev, l.ino, l.unlink = path, st.Dev, st.Ino, true
	return l, nil
}

// SetUnlinkOnClose sets whether Close removes the socket file (if it is
// still this listener's), as net.UnixListener's method of that name does.
func (l *listener) SetUnlinkOnClose(unlink bool) { l.unlink = unlink }

// Close removes the socket file if it is still the one bound, then closes
// the listener.
func (l *listener) Close() error {
	if l.unlink && l.path != "" {
		l.unlink = false
		var st unix.Stat_t
		// Between this check and the unlink another broker could replace
		// the file; that needs a removal and a bind within microseconds.
		if unix.Lstat(l.path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
			os.Remove(l.path)
		}
	}
	return l.UnixListener.Close()
}

// removeStale deletes a socket file nobody answers on. Anything else at the
// path is refused: it is somebody's file, not a broker's socket.
func removeStale(endpoint, path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil // absent (or unreadable: let bind report it)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("listen %s: %s is %s, not a socket (remove it, or choose another endpoint)",
			endpoint, path, describeFile(fi.Mode()))
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen %s: %w", endpoint, ErrInUse)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return os.Remove(path)
	}
	return nil
}

// describeFile names a kind of file for an error message.
func describeFile(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "a file"
}

// dial connects to the endpoint's socket.
func dial(ctx context.Context, endpoint string) (*net.UnixConn, error) {
	path, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("%w at %s (start one with: zpipes serve -e %s)", ErrNoBroker, endpoint, endpoint)
		}
		return nil, fmt.Errorf("connect %s: %w", endpoint, err)
	}
	return c.(*net.UnixConn), nil
}

// peerCred is the process at the other end of a Unix socket, as the kernel
// saw it connect (SO_PEERCRED): the broker checks its clients' uid with it,
// and a client learns whose broker refused it.
func peerCred(nc *net.UnixConn) (*unix.Ucred, error) {
	raw, err := nc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
