// Command natsd runs N embedded nats-servers with JetStream (a cluster with
// routes on localhost if N > 1) for bench/run.sh, so that the benchmark
// needs no nats-server installed. It prints the client URLs, comma
// separated, on one line once JetStream is ready, and runs until SIGTERM.
//
//	natsd -n 3 -dir /tmp/js
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/zpipes/zpipes/internal/natslocal"
)

func main() {
	n := flag.Int("n", 1, "servers")
	dir := flag.String("dir", "", "directory for the servers' JetStream stores (required)")
	sync := flag.Bool("sync", true, "fsync every write (jetstream sync_interval: always)")
	payload := flag.Int("max-payload", 8<<20, "max_payload, as the README's setup has it")
	flag.Parse()
	if *dir == "" {
		log.Fatal("natsd: -dir is required")
	}
	srvs, err := natslocal.Cluster(*n, "bench", server.Options{SyncAlways: *sync, NoSigs: true, NoLog: true, MaxPayload: int32(*payload)},
		func(i int) string { return filepath.Join(*dir, fmt.Sprint(i)) })
	if err != nil {
		log.Fatal("natsd: ", err)
	}
	fmt.Println(natslocal.URLs(srvs))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, s := range srvs {
		natslocal.Stop(s)
	}
}
