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
// kongplete completes commands, flags and enums from the kong model; an
// argument tagged predictor:"pipe" completes from the names the broker's
// LIST reports, and from nothing if no broker answers. kongplete counts only
// a command's own flags to find which argument is being typed, so a global
// flag with a value after the command (zpipes read -e EP <TAB>) hides PIPE;
// before the command (zpipes -e EP read <TAB>) it does not.
func completeLine(parser *kong.Kong, a *app) bool {
	if os.Getenv("COMP_LINE") == "" {
		return false
	}
	done := false
	kongplete.Complete(parser,
		kongplete.WithPredictor("pipe", complete.PredictFunc(func(complete.Args) []string {
			return pipeNames(a.ctx)
		})),
		kongplete.WithErrorHandler(func(err error) {
			panic(err) // a predictor tag names no predictor: a bug
		}),
		kongplete.WithExitFunc(func(int) { done = true }),
	)
	return done
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
// The command line is not parsed yet: completion runs before kong's parse,
// which would fail on the word being typed.
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
