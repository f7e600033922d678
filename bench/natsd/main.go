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
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	ports := make([]int, *n)
	var routes []string
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	var srvs []*server.Server
	var urls []string
	for i := range *n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   filepath.Join(*dir, fmt.Sprint(i)),
			SyncAlways: *sync,
			NoSigs:     true,
			NoLog:      true,
			MaxPayload: int32(*payload),
		}
		if *n > 1 {
			opts.Cluster = server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: ports[i]}
			opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		s, err := server.NewServer(opts)
		if err != nil {
			log.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			log.Fatal("natsd: a server did not start")
		}
		srvs = append(srvs, s)
		urls = append(urls, s.ClientURL())
	}
	for deadline := time.Now().Add(20 * time.Second); *n > 1; time.Sleep(10 * time.Millisecond) {
		leader := false
		for _, s := range srvs {
			leader = leader || (s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == *n)
		}
		if leader {
			break
		}
		if time.Now().After(deadline) {
			log.Fatal("natsd: the cluster elected no JetStream leader")
		}
	}
	fmt.Println(strings.Join(urls, ","))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, s := range srvs {
		s.Shutdown()
		s.WaitForShutdown()
	}
}
