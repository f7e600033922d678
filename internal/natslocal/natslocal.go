// Package natslocal runs nats-servers with JetStream inside this process:
// one, or a cluster with routes on localhost. The JetStream tests and
// bench/natsd use it, so that neither needs a nats-server installed; the
// product itself only links the client.
package natslocal

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Run starts one server with opts (copied) and waits until it takes
// clients.
func Run(opts *server.Options) (*server.Server, error) {
	o := *opts
	s, err := server.NewServer(&o)
	if err != nil {
		return nil, err
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		Stop(s)
		return nil, errors.New("nats-server not ready within 10 s")
	}
	return s, nil
}

// Stop shuts a server down and waits until it has.
func Stop(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// Cluster starts n servers on localhost with JetStream, each from base
// with its own name and the store directory dir(i), in a cluster named
// name if n > 1. It returns once the cluster has a JetStream leader that
// knows every server as a peer (before that, an R3 stream finds "no
// suitable peers for placement"); on an error it stops what it started.
//
// The cluster's ports are picked free in advance, so another test's server
// may bind one first, and a server that cannot bind its cluster port never
// becomes ready: then the cluster starts again on other ports, up to three
// times.
func Cluster(n int, name string, base server.Options, dir func(i int) string) (srvs []*server.Server, err error) {
	for range 3 {
		if srvs, err = cluster(n, name, base, dir); err == nil {
			return srvs, nil
		}
	}
	return nil, err
}

func cluster(n int, name string, base server.Options, dir func(i int) string) ([]*server.Server, error) {
	ports := make([]int, n)
	var routes []string
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var srvs []*server.Server
	fail := func(err error) ([]*server.Server, error) {
		for _, s := range srvs {
			Stop(s)
		}
		return nil, err
	}
	for i := range n {
		o := base
		o.ServerName = fmt.Sprintf("n%d", i)
		o.Host, o.Port = "127.0.0.1", -1
		o.JetStream = true
		o.StoreDir = dir(i)
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: ports[i]}
			o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		s, err := Run(&o)
		if err != nil {
			return fail(err)
		}
		srvs = append(srvs, s)
	}
	for deadline := time.Now().Add(20 * time.Second); n > 1 && !hasLeader(srvs); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fail(errors.New("the cluster elected no JetStream leader with every peer within 20 s"))
		}
	}
	return srvs, nil
}

// URLs is the comma-separated list of the servers' client URLs that
// `zpipes serve --store nats://…` takes.
func URLs(srvs []*server.Server) string {
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.ClientURL())
	}
	return strings.Join(urls, ",")
}

func hasLeader(srvs []*server.Server) bool {
	for _, s := range srvs {
		if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == len(srvs) {
			return true
		}
	}
	return false
}

// FreePort is a TCP port on localhost that nothing listened on a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
