package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/zpipes/zpipes/broker"
	"github.com/zpipes/zpipes/internal/natslocal"
)

// Two `zpipes serve --store nats://…` processes on one nats-server (run
// in-process, JetStream on a temporary directory) serve the same pipes: a
// chunk written through one is read through the other, and ls through
// either lists the pipe.
func TestServeNATSStoreSharesPipesBetweenBrokers(t *testing.T) {
	ns, err := natslocal.Run(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), SyncAlways: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { natslocal.Stop(ns) })
	eps := make([]string, 2)
	for i := range eps {
		b := make([]byte, 8)
		rand.Read(b)
		eps[i] = "ipc://@zpipes-test-" + hex.EncodeToString(b)
		startServe(t, eps[i], "--store", ns.ClientURL())
	}
	zp := func(ep string, args ...string) string {
		t.Helper()
		out, err := exec.Command(zpipesBin(t), append([]string{"-e", ep}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("zpipes %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	zp(eps[0], "open", "jobs")
	zp(eps[0], "write", "jobs", "one", "two")
	if out := zp(eps[1], "ls"); !strings.Contains(out, "jobs") {
		t.Fatalf("ls via the other broker:\n%s", out)
	}
	if out := zp(eps[1], "read", "-n", "2", "jobs"); out != "one\ntwo\n" {
		t.Fatalf("read via the other broker: %q", out)
	}
	zp(eps[1], "close", "jobs")
	c, err := broker.Dial(context.Background(), eps[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitList(t, c, "the pipe gone from both brokers", func(ps []broker.PipeInfo) bool { return len(ps) == 0 })
}
