package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/posener/complete"
	"github.com/willabides/kongplete"
	"github.com/zpipes/zpipes/broker"
)

// completionTimeout bounds the broker lookup behind a completion: a shell
// waiting on a TAB must not hang on a stuck broker.
const completionTimeout = time.Second

// completeLine answers a shell's request for completions. The scripts of
// `zpipes completion` make the shell run zpipes with $COMP_LINE (and
// $COMP_POINT) set to the command line being edited; zpipes then prints the
// words that may come next, one a line, and does nothing else. It reports
// whether it did so.
//
// Commands and flags come from the kong model (through kongplete); an
// argument named "pipe" completes from the names the broker's LIST reports,
// and from nothing if no broker answers.
func completeLine(parser *kong.Kong, a *app) bool {
	if os.Getenv("COMP_LINE") == "" {
		return false
	}
	cmd, err := kongplete.Command(parser)
	if err != nil {
		panic(err) // a predictor tag names no predictor: a bug
	}
	completePipes(&cmd, parser.Model.Node, func() []string { return pipeNames(a.ctx) })
	c := complete.New(parser.Model.Name, cmd)
	c.Out = a.stdout
	return c.Complete()
}

// completePipes makes every command's "pipe" argument complete with names.
func completePipes(cmd *complete.Command, node *kong.Node, names func() []string) {
	for _, child := range node.Children {
		sub, ok := cmd.Sub[child.Name]
		if !ok {
			continue // hidden
		}
		completePipes(&sub, child, names)
		for i, arg := range child.Positional {
			if arg.Name == "pipe" {
				sub.Args = pipeArg{index: i, others: sub.Args, valueFlags: valueFlags(child), names: names}
				break
			}
		}
		cmd.Sub[child.Name] = sub
	}
}

// pipeArg predicts the index-th positional argument of a command from the
// broker's pipe names, and leaves the other arguments to kongplete.
type pipeArg struct {
	index      int
	others     complete.Predictor
	valueFlags map[string]bool // flags whose value may be the next word
	names      func() []string
}

func (p pipeArg) Predict(a complete.Args) []string {
	if p.position(a) == p.index {
		return p.names()
	}
	if p.others == nil {
		return nil
	}
	return p.others.Predict(a)
}

// position is the index among the command's positional arguments of the
// word being completed: the completed words after the command, less flags
// and the flags' values.
func (p pipeArg) position(a complete.Args) int {
	n := 0
	flags := true
	for i := 0; i < len(a.Completed); i++ {
		w := a.Completed[i]
		switch {
		case !flags || w == "-" || !strings.HasPrefix(w, "-"):
			n++
		case w == "--":
			flags = false
		case p.valueFlags[w]:
			i++ // its value
		}
	}
	return n
}

// valueFlags lists the spellings of the flags a command accepts, its own
// and its ancestors', that take their value from the next word.
func valueFlags(node *kong.Node) map[string]bool {
	m := make(map[string]bool)
	for _, group := range node.AllFlags(false) {
		for _, f := range group {
			if f.IsBool() || f.IsCounter() {
				continue
			}
			m["--"+f.Name] = true
			for _, alias := range f.Aliases {
				m["--"+alias] = true
			}
			if f.Short != 0 {
				m["-"+string(f.Short)] = true
			}
		}
	}
	return m
}

// pipeNames lists the pipes of the broker the command line being completed
// would use, leaving out names the shell cannot take as one word.
func pipeNames(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	c, err := broker.Dial(ctx, completionEndpoint(), broker.WithTimeout(completionTimeout))
	if err != nil {
		return nil
	}
	defer c.Close()
	pipes, err := c.List(ctx)
	if err != nil {
		return nil
	}
	var names []string
	for _, p := range pipes {
		if displayName(p.Name) == p.Name {
			names = append(names, p.Name)
		}
	}
	return names
}

// completionEndpoint finds the endpoint in the command line being completed
// (-e EP, -eEP, --endpoint EP, --endpoint=EP), then in $ZPIPES_ENDPOINT.
func completionEndpoint() string {
	line := os.Getenv("COMP_LINE")
	if p, err := strconv.Atoi(os.Getenv("COMP_POINT")); err == nil && p >= 0 && p < len(line) {
		line = line[:p]
	}
	words := strings.Fields(line)
	ep := ""
	for i, w := range words {
		if w == "--" {
			break
		}
		next := ""
		if i+1 < len(words) {
			next = words[i+1]
		}
		switch {
		case w == "-e" || w == "--endpoint":
			ep = next
		case strings.HasPrefix(w, "--endpoint="):
			ep = strings.TrimPrefix(w, "--endpoint=")
		case strings.HasPrefix(w, "-e") && !strings.HasPrefix(w, "--"):
			ep = strings.TrimPrefix(w, "-e")
		}
	}
	if ep != "" {
		return ep
	}
	if ep := os.Getenv("ZPIPES_ENDPOINT"); ep != "" {
		return ep
	}
	return broker.DefaultEndpoint
}
