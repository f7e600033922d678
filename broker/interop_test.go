package broker

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// python is the interpreter whose zmq module (Debian's python3-zmq) the
// interop test uses: the system one, not whatever a virtualenv puts first.
const python = "/usr/bin/python3"

// TestInteropLibzmq runs testdata/interop.py, which speaks to the broker
// through libzmq DEALER and REQ sockets, as clients written in C or Python
// would: the broker must be a ROUTER to them in every respect they can see.
func TestInteropLibzmq(t *testing.T) {
	if out, err := exec.Command(python, "-c", "import zmq").CombinedOutput(); err != nil {
		msg := "libzmq interop needs " + python + " with zmq (apt-get install python3-zmq): " +
			strings.TrimSpace(err.Error()+" "+string(out))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := startServer(t)
	cmd := exec.CommandContext(testCtx(t), python, "testdata/interop.py", s.Endpoint())
	cmd.WaitDelay = time.Second // the script's own timeouts should end it first
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log("interop.py: " + line)
	}
	if err != nil {
		t.Fatalf("interop.py: %v", err)
	}
}
