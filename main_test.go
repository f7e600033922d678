package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/zpipes/zpipes/broker"
	"go.uber.org/goleak"
)

// TestMain runs the tests, or zpipes itself when a script execs it (see
// testscript.Main), and then checks that the tests leaked no goroutine.
func TestMain(m *testing.M) {
	testscript.Main(leakCheck{m}, map[string]func(){
		"zpipes": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// leakCheck is goleak.VerifyTestMain for testscript.Main, which calls
// os.Exit itself: once the tests pass, any goroutine left running fails
// them.
type leakCheck struct{ m *testing.M }

func (l leakCheck) Run() int {
	code := l.m.Run()
	if code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
		return 1
	}
	return 0
}

// TestCLI runs the end-to-end scripts in testdata/*.txtar. Each script gets
// its own broker endpoint in $ZPIPES_ENDPOINT (also as $EP).
func TestCLI(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			b := make([]byte, 8)
			rand.Read(b)
			ep := "ipc://@zpipes-test-" + hex.EncodeToString(b)
			env.Setenv("ZPIPES_ENDPOINT", ep)
			env.Setenv("EP", ep)
			// A race-enabled zpipes otherwise sleeps a second at exit.
			env.Setenv("GORACE", "atexit_sleep_ms=0")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitbroker": cmdWaitBroker,
			"genlines":   cmdGenLines,
			"waitpipe":   cmdWaitPipe,
		},
	})
}

// waitbroker waits until a broker answers on $ZPIPES_ENDPOINT.
func cmdWaitBroker(ts *testscript.TestScript, neg bool, args []string) {
	ep := ts.Getenv("ZPIPES_ENDPOINT")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := broker.Dial(context.Background(), ep)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("no broker at %s: %v", ep, err)
		}
		time.Sleep(5 * time.Millisecond) // polling an event, bounded above
	}
}

// waitpipe PIPE FIELD VALUE waits until LIST shows the pipe's field (reader,
// chunks, opens) at the value.
func cmdWaitPipe(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: waitpipe PIPE FIELD VALUE")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := broker.Dial(ctx, ts.Getenv("ZPIPES_ENDPOINT"))
	ts.Check(err)
	defer c.Close()
	var last string
	for ctx.Err() == nil {
		ps, err := c.List(ctx)
		ts.Check(err)
		last = "no such pipe"
		for _, p := range ps {
			if p.Name != args[0] {
				continue
			}
			v := map[string]string{
				"reader": strconv.FormatBool(p.Reader),
				"chunks": strconv.Itoa(p.Chunks),
				"opens":  strconv.Itoa(p.Opens),
			}[args[1]]
			if v == args[2] {
				return
			}
			last = fmt.Sprintf("%s=%s", args[1], v)
		}
		time.Sleep(2 * time.Millisecond)
	}
	ts.Fatalf("pipe %s never had %s=%s (last: %s)", args[0], args[1], args[2], last)
}

// genlines N FILE writes N distinct lines of varied length, among them
// some longer than any default line buffer.
func cmdGenLines(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: genlines N FILE")
	}
	n, err := strconv.Atoi(args[0])
	ts.Check(err)
	f, err := os.Create(ts.MkAbs(args[1]))
	ts.Check(err)
	w := bufio.NewWriter(f)
	for i := range n {
		pad := i % 97
		if i%25000 == 7 {
			pad = 200_000 // a line no 64 KiB scanner would take
		}
		fmt.Fprintf(w, "line %d %s\n", i, strings.Repeat("x", pad))
	}
	ts.Check(w.Flush())
	ts.Check(f.Close())
}
