package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
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

// listen binds the endpoint. A filesystem socket is created with mode 0600;
// a stale one left by a crashed broker is replaced, a live one is not.
func listen(endpoint string) (*net.UnixListener, error) {
	path, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		if err := removeStale(path); err != nil {
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
	if !abstract {
		if err := os.Chmod(path, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen %s: %w", endpoint, err)
		}
	}
	return ln, nil
}

// removeStale deletes a socket file nobody answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil // absent, or not a socket: let bind report it
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen ipc://%s: %w", path, ErrInUse)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return os.Remove(path)
	}
	return nil
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
