// Command killat runs a command with its stdout going to a file and sends it
// SIGKILL as soon as the file holds at least -min-bytes bytes (or the command
// exits, or -timeout passes). It prints one line: why it killed, the file's
// size it saw then and after the command died, and whether SIGKILL ended it.
//
//	killat -out FILE -min-bytes N [-timeout D] -- CMD ARGS...
//
// Used by kill9-loss.sh, where polling from bash would be too coarse.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	out := flag.String("out", "", "file for the command's stdout (truncated)")
	minBytes := flag.Int64("min-bytes", 1, "kill once the file holds this many bytes")
	timeout := flag.Duration("timeout", 60*time.Second, "kill anyway after this long")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: killat -out FILE -min-bytes N [-timeout D] -- CMD ARGS...")
		os.Exit(2)
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "killat:", err)
		os.Exit(1)
	}
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdout, cmd.Stderr = f, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "killat:", err)
		os.Exit(1)
	}
	f.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	deadline := time.Now().Add(*timeout)
	reason := "size"
	var size int64
poll:
	for {
		if fi, err := os.Stat(*out); err == nil && fi.Size() >= *minBytes {
			size = fi.Size()
			break
		}
		select {
		case <-exited:
			reason = "exited"
			break poll
		default:
		}
		if time.Now().After(deadline) {
			reason = "timeout"
			break
		}
		time.Sleep(20 * time.Microsecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	final := size
	if fi, err := os.Stat(*out); err == nil {
		final = fi.Size()
	}
	status := cmd.ProcessState.Sys().(syscall.WaitStatus)
	fmt.Printf("reason=%s size_seen=%d size_final=%d killed=%t\n", reason, size, final,
		status.Signaled() && status.Signal() == syscall.SIGKILL)
}
