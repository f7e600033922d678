package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/zpipes/zpipes/broker"
)

// TestManPageCurrent regenerates zpipes(1) with the hidden "man" command,
// as go generate does, and compares it with the committed page.
func TestManPageCurrent(t *testing.T) {
	want, err := os.ReadFile("man/zpipes.1")
	if err != nil {
		t.Fatal(err)
	}
	got := runCaptured(t, "man")
	if !bytes.Equal(got, want) {
		t.Fatalf("man/zpipes.1 does not match the CLI definition: run `go generate` and commit the result\n%s",
			firstDiff(string(want), string(got)))
	}
}

// TestManPageDocumentsEverything checks that zpipes(1) has a section for
// every visible command and an entry for every visible flag and argument,
// and says nothing of the hidden ones.
func TestManPageDocumentsEverything(t *testing.T) {
	page := string(runCaptured(t, "man"))
	parser, err := kong.New(&CLI{}, cliVars())
	if err != nil {
		t.Fatal(err)
	}
	flagEntry := func(f *kong.Flag) string { return `\fB\-\-` + escape(f.Name) + `\fR` }
	for _, f := range parser.Model.Flags {
		if !strings.Contains(page, flagEntry(f)) {
			t.Errorf("global flag --%s is not documented", f.Name)
		}
	}
	for _, cmd := range parser.Model.Children {
		if cmd.Hidden {
			if strings.Contains(page, `.SS "`+cmd.Name+`"`) {
				t.Errorf("hidden command %s is documented", cmd.Name)
			}
			continue
		}
		i := strings.Index(page, `.SS "`+cmd.Name+`"`)
		if i < 0 {
			t.Errorf("command %s has no section", cmd.Name)
			continue
		}
		section := page[i:]
		if j := strings.Index(section[1:], "\n.S"); j >= 0 {
			section = section[:j+1]
		}
		for _, f := range cmd.Flags {
			if documented := strings.Contains(section, flagEntry(f)); documented == f.Hidden {
				t.Errorf("%s: flag --%s hidden=%v, documented=%v", cmd.Name, f.Name, f.Hidden, documented)
			}
		}
		for _, arg := range cmd.Positional {
			if !strings.Contains(section, ".TP\n\\fI"+escape(argName(arg))+`\fR`) {
				t.Errorf("%s: argument %s is not documented", cmd.Name, arg.Name)
			}
		}
	}
	for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS",
		"EXIT STATUS", "ENVIRONMENT", "EXAMPLES", "SEE ALSO"} {
		if !strings.Contains(page, "\n.SH "+section+"\n") {
			t.Errorf("no %s section", section)
		}
	}
	for _, status := range []int{exitOK, exitError, exitUsage, exitNoBroker, exitBrokenOut, 130, 143} {
		if !strings.Contains(page, "\n.B "+strconv.Itoa(status)+"\n") {
			t.Errorf("exit status %d is not documented", status)
		}
	}
}

// TestManPageHasNoRequiredFlags keeps the generator simple: it has no
// synopsis or wording for required flags or groups of flags that exclude
// each other, which zpipes does not use (cat checks -r and -w in Validate).
// A flag that needs them fails here, so the generator gets them.
func TestManPageHasNoRequiredFlags(t *testing.T) {
	parser, err := kong.New(&CLI{}, cliVars())
	if err != nil {
		t.Fatal(err)
	}
	for _, group := range parser.Model.AllFlags(true) {
		for _, f := range group {
			if f.Required || len(f.Xor) > 0 || len(f.And) > 0 {
				t.Errorf("--%s is required or in a group; manpage.go has no words for that", f.Name)
			}
		}
	}
	for _, cmd := range parser.Model.Children {
		if len(cmd.Children) > 0 {
			t.Errorf("command %s has subcommands; manpage.go lists only top-level commands", cmd.Name)
		}
	}
}

// TestExitStatusesInOrder checks the table behind EXIT STATUS: each status
// once, in increasing order.
func TestExitStatusesInOrder(t *testing.T) {
	for i := 1; i < len(exitStatuses); i++ {
		if exitStatuses[i-1].Code >= exitStatuses[i].Code {
			t.Errorf("exit status %d comes after %d", exitStatuses[i].Code, exitStatuses[i-1].Code)
		}
	}
}

// TestManPagesRender formats both pages with groff, warnings on, and fails
// on any warning. Without groff the test is skipped, except in CI, whose
// .ci/run installs it.
func TestManPagesRender(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		msg := "rendering man pages needs groff (apt-get install groff-base)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for _, page := range []string{"man/zpipes.1", "man/zpipes.7"} {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", page)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("groff %s: %v\n%s", page, err, stderr.String())
		}
	}
}

// TestManExamples runs the pyzmq examples of zpipes(7) against a broker,
// so the page cannot drift from what the broker does. Without Debian's
// python3-zmq the test is skipped, except in CI, whose .ci/run installs it.
func TestManExamples(t *testing.T) {
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import zmq").CombinedOutput(); err != nil {
		msg := "the zpipes(7) examples need " + python + " with zmq (apt-get install python3-zmq): " +
			strings.TrimSpace(err.Error()+" "+string(out))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	page, err := os.ReadFile("man/zpipes.7")
	if err != nil {
		t.Fatal(err)
	}
	examples := regexp.MustCompile(`(?s)\n\.\\" example: (\w+)\n\.nf\n(.*?)\n\.fi\n`).FindAllStringSubmatch(string(page), -1)
	if len(examples) < 2 {
		t.Fatalf("found %d examples in zpipes(7), want the DEALER and REQ ones", len(examples))
	}
	ep := testEndpoint()
	srv, err := broker.Listen(broker.Config{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	unroff := strings.NewReplacer(`\e`, `\`, `\-`, `-`, `\(dq`, `"`, `\&`, "")
	for _, ex := range examples {
		t.Run(ex[1], func(t *testing.T) {
			code := strings.ReplaceAll(unroff.Replace(ex[2]), broker.DefaultEndpoint, ep)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, python, "-c", code).CombinedOutput()
			if err != nil {
				t.Fatalf("example %s: %v\n%s\n--- code ---\n%s", ex[1], err, out, code)
			}
		})
	}
}

// runCaptured runs zpipes in this process and returns its standard output,
// failing the test unless it exits 0.
func runCaptured(t *testing.T, args ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	if code := run(args, os.Stdin, stdout, stderr); code != exitOK {
		msg, _ := os.ReadFile(stderr.Name())
		t.Fatalf("zpipes %s: exit %d\n%s", strings.Join(args, " "), code, msg)
	}
	out, err := os.ReadFile(stdout.Name())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// firstDiff shows where two texts first differ, a few lines either side.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		if i < len(w) && i < len(g) && w[i] == g[i] {
			continue
		}
		line := func(l []string) string {
			if i < len(l) {
				return l[i]
			}
			return "(end of page)"
		}
		return "first difference at line " + strconv.Itoa(i+1) + ":\n  committed: " + line(w) + "\n  generated: " + line(g)
	}
	return ""
}
