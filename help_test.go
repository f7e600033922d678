package main

import (
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// TestHelpShowsEveryDefault checks that each command's --help, and
// zpipes(1), give the default of every visible flag that has one.
func TestHelpShowsEveryDefault(t *testing.T) {
	parser, err := kong.New(&CLI{}, cliVars())
	if err != nil {
		t.Fatal(err)
	}
	page := oneLine(runCaptured(t, "man"))
	check := func(help string, where string, flags []*kong.Flag) {
		for _, f := range flags {
			if f.Hidden || !f.HasDefault || f.IsBool() {
				continue
			}
			want := "Default: " + f.Default + "."
			if !strings.Contains(help, want) {
				t.Errorf("%s --help: --%s does not say %q", where, f.Name, want)
			}
			if !strings.Contains(page, strings.ReplaceAll(want, "-", `\-`)) {
				t.Errorf("zpipes(1): --%s does not say %q", f.Name, want)
			}
		}
	}
	check(oneLine(runCaptured(t, "--help")), "zpipes", parser.Model.Flags)
	for _, cmd := range commands(parser.Model.Node) {
		check(oneLine(runCaptured(t, cmd.Name, "--help")), "zpipes "+cmd.Name, cmd.Flags)
	}
}

// oneLine is text with its line breaks and runs of blanks as single
// blanks, so that a check does not depend on where help wraps.
func oneLine(b []byte) string { return strings.Join(strings.Fields(string(b)), " ") }
