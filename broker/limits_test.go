package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestFullPipeDelaysWriteOnlyForThatPipe(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = Limits{MaxName: 64, MaxChunk: 100, MaxBatch: 16}
		c.MaxPipeBytes = 4 * (100 + chunkOverhead)
		c.MaxTotalBytes = 1 << 20
	})
	ctx := testCtx(t)
	w, other, r := dialT(t, s), dialT(t, s), dialT(t, s)
	mustOK(t, r.Open(ctx, "p"))
	chunk := bytes.Repeat([]byte("x"), 100)
	for range 4 {
		mustOK(t, w.Write(ctx, "p", chunk))
	}
	late := w.async(CmdWrite, []byte("p"), []byte("fifth"))
	waitFor(t, r, func(ps []PipeInfo) bool { return len(ps) == 1 && ps[0].Blocked == 1 })
	// Other pipes and other clients go on.
	mustOK(t, other.Open(ctx, "q"))
	mustOK(t, other.Write(ctx, "q", []byte("free")))
	select {
	case <-late.done:
		t.Fatalf("WRITE to a full pipe answered: %v", late.err)
	default:
	}
	// One READ makes room; the WRITE is acknowledged and queued last.
	_, err := r.Read(ctx, "p")
	mustOK(t, err)
	<-late.done
	mustOK(t, late.err)
	for i := range 4 {
		got, err := r.Read(ctx, "p")
		mustOK(t, err)
		if want := map[bool]string{true: "fifth", false: string(chunk)}[i == 3]; string(got) != want {
			t.Fatalf("READ %d: %.10q, want %.10q", i, got, want)
		}
	}
}

func TestTotalLimitBlocksWritesAcrossPipes(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits = Limits{MaxName: 64, MaxChunk: 100, MaxBatch: 16}
		c.MaxPipeBytes = 4 * (100 + chunkOverhead)
		c.MaxTotalBytes = 6 * (100 + chunkOverhead)
	})
	ctx := testCtx(t)
	w, r := dialT(t, s), dialT(t, s)
	chunk := bytes.Repeat([]byte("x"), 100)
	mustOK(t, w.Open(ctx, "a"))
	mustOK(t, w.Open(ctx, "b"))
	mustOK(t, w.Write(ctx, "a", chunk, chunk, chunk, chunk))
	mustOK(t, w.Write(ctx, "b", chunk, chunk))
	late := w.async(CmdWrite, []byte("b"), chunk) // b has room; the total has not
	waitFor(t, r, func(ps []PipeInfo) bool { return len(ps) == 2 && ps[1].Blocked == 1 })
	// Reading from a makes room in the total: b's WRITE goes through.
	_, err := r.Read(ctx, "a")
	mustOK(t, err)
	<-late.done
	mustOK(t, late.err)
}

func TestOversizedChunkIsAnError(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits = Limits{MaxName: 64, MaxChunk: 100, MaxBatch: 16} })
	c := dialT(t, s)
	ctx := testCtx(t)
	mustOK(t, c.Open(ctx, "p"))
	if err := c.Write(ctx, "p", make([]byte, 101)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("101-byte chunk: %v, want ErrTooLarge", err)
	}
	mustOK(t, c.Write(ctx, "p", make([]byte, 100)))
}

// A client run as another user is refused unless that user is allowed.
func TestOtherUsersAreRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("running a client as another user needs root (CI runs as root)")
	}
	// The test binary must be executable by the other user.
	dir, err := os.MkdirTemp("", "zpipes-uid-")
	mustOK(t, err)
	defer os.RemoveAll(dir)
	mustOK(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "broker.test")
	copyFile(t, os.Args[0], bin)
	const nobody = 65534
	run := func(ep string) (int, string) {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "ZPIPES_TEST_DIAL="+ep)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		mustOK(t, err)
		return 0, string(out)
	}
	s := startServer(t)
	// The refused client learns whose broker it is and what to do.
	if code, out := run(s.Endpoint()); code != 5 || !strings.Contains(out, fmt.Sprintf("belongs to uid %d", os.Getuid())) || !strings.Contains(out, "ZPIPES_ENDPOINT") {
		t.Fatalf("client as uid %d: exit %d (%s), want refused", nobody, code, out)
	}
	allowed := startServer(t, func(c *Config) { c.AllowUIDs = []int{nobody} })
	if code, out := run(allowed.Endpoint()); code != 0 {
		t.Fatalf("allowed uid %d: exit %d (%s)", nobody, code, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	mustOK(t, err)
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	mustOK(t, err)
	_, err = io.Copy(dst, src)
	mustOK(t, err)
	mustOK(t, dst.Close())
}
