package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
)

// The self-tests of zpipes v0.1, ported. Each client of the original opened
// its pipe, did one thing with it and closed it again (pipe_new, pipe_write
// or pipe_read, pipe_destroy); withPipe does the same.

// withPipe runs f between an OPEN and a CLOSE of pipe.
func withPipe(ctx context.Context, c *Client, pipe string, f func() error) error {
	if err := c.Open(ctx, pipe); err != nil {
		return err
	}
	if err := f(); err != nil {
		return err
	}
	return c.ClosePipe(ctx, pipe)
}

// readWant reads one chunk and checks it is want.
func readWant(ctx context.Context, c *Client, pipe, want string) error {
	got, err := c.Read(ctx, pipe)
	if err != nil {
		return err
	}
	if string(got) != want {
		return fmt.Errorf("read %q: got %q, want %q", pipe, got, want)
	}
	return nil
}

// The three clients of the original test form a chain: A writes CHUNK1 to
// pipe B; B reads it, then writes CHUNK2 to pipe C; C reads that.

func selfTestClientA(ctx context.Context, c *Client) error {
	return withPipe(ctx, c, "B", func() error { return c.Write(ctx, "B", []byte("CHUNK1")) })
}

func selfTestClientB(ctx context.Context, c *Client) error {
	if err := withPipe(ctx, c, "B", func() error { return readWant(ctx, c, "B", "CHUNK1") }); err != nil {
		return err
	}
	return withPipe(ctx, c, "C", func() error { return c.Write(ctx, "C", []byte("CHUNK2")) })
}

func selfTestClientC(ctx context.Context, c *Client) error {
	return withPipe(ctx, c, "C", func() error { return readWant(ctx, c, "C", "CHUNK2") })
}

// async runs f in a goroutine; the channel gets its result.
func async(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

// await waits for an async result within the test's deadline.
func await(t *testing.T, ctx context.Context, who string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("client %s: %v", who, err)
		}
	case <-ctx.Done():
		t.Fatalf("client %s: %v", who, ctx.Err())
	}
}

// TestSelfTestThreeClients passes a chunk from A to B to C over two pipes.
// Each reader may come before its writer (its READ waits) or after (the
// chunk outlives the writer's CLOSE); both orders must deliver.
func TestSelfTestThreeClients(t *testing.T) {
	t.Run("readers first", func(t *testing.T) {
		s := startServer(t)
		a, b, c := dialT(t, s), dialT(t, s), dialT(t, s)
		ctx := testCtx(t)
		// As in the original, B and C are started before A.
		doneB := async(func() error { return selfTestClientB(ctx, b) })
		doneC := async(func() error { return selfTestClientC(ctx, c) })
		waitFor(t, a, func(ps []PipeInfo) bool {
			return len(ps) == 2 && ps[0].Name == "B" && ps[0].Reader && ps[1].Name == "C" && ps[1].Reader
		})
		mustOK(t, selfTestClientA(ctx, a))
		// B before C: if B fails, C would wait for CHUNK2 until the deadline.
		await(t, ctx, "B", doneB)
		await(t, ctx, "C", doneC)
		assertNoPipes(t, a)
	})
	t.Run("writers first", func(t *testing.T) {
		s := startServer(t)
		a, b, c := dialT(t, s), dialT(t, s), dialT(t, s)
		ctx := testCtx(t)
		mustOK(t, selfTestClientA(ctx, a))
		ps, err := b.List(ctx)
		mustOK(t, err)
		if len(ps) != 1 || ps[0] != (PipeInfo{Name: "B", Chunks: 1, Bytes: len("CHUNK1"), Writers: 1}) {
			t.Fatalf("after A: LIST = %+v, want B closed and holding CHUNK1", ps)
		}
		mustOK(t, selfTestClientB(ctx, b))
		mustOK(t, selfTestClientC(ctx, c))
		assertNoPipes(t, a)
	})
}

// TestSelfTestPitcherCatcher has a pitcher write numbered chunks into one
// pipe while a catcher reads them: every chunk arrives exactly once, in
// order, whether the catcher takes one chunk per READ or batches with MREAD.
func TestSelfTestPitcherCatcher(t *testing.T) {
	const (
		pipe = "shared pipe"
		n    = 10000
	)
	chunk := func(i int) []byte { return fmt.Appendf(nil, "chunk %05d", i) }
	for _, tc := range []struct {
		name  string
		batch int // chunks per request; 1 is READ, more is MREAD
	}{
		{"READ", 1},
		{"MREAD", 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t)
			pitcher, catcher := dialT(t, s), dialT(t, s)
			// A failing pitcher cancels ctx, so the catcher stops waiting
			// for chunks that will never come and the real error is told.
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			mustOK(t, catcher.Open(ctx, pipe))
			pitched := async(func() error {
				err := withPipe(ctx, pitcher, pipe, func() error {
					for i := range n {
						if err := pitcher.Write(ctx, pipe, chunk(i)); err != nil {
							return fmt.Errorf("chunk %d: %w", i, err)
						}
					}
					return nil
				})
				if err != nil {
					cancel()
				}
				return err
			})
			next := 0
			for next < n {
				var got [][]byte
				var err error
				if tc.batch == 1 {
					var c []byte
					c, err = catcher.Read(ctx, pipe)
					got = [][]byte{c}
				} else {
					got, err = readBatch(ctx, catcher, pipe, tc.batch)
				}
				if err != nil {
					cancel()
					t.Fatalf("catcher, after %d chunks: %v (pitcher: %v)", next, err, <-pitched)
				}
				if len(got) < 1 || len(got) > tc.batch {
					t.Fatalf("catcher asked for up to %d chunks, got %d", tc.batch, len(got))
				}
				for _, c := range got {
					if want := chunk(next); !bytes.Equal(c, want) {
						t.Fatalf("catcher: got %q, want %q", c, want)
					}
					next++
				}
			}
			if err := <-pitched; err != nil {
				t.Fatalf("pitcher: %v", err)
			}
			mustOK(t, catcher.ClosePipe(ctx, pipe))
			// Nothing beyond the n chunks: the drained, closed pipe is gone.
			if _, err := catcher.Read(ctx, pipe); !errors.Is(err, ErrNoPipe) {
				t.Fatalf("READ after the last chunk: %v, want ErrNoPipe", err)
			}
		})
	}
}
