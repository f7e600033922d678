package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zpipes/zpipes/broker"
)

// TestCompletionInShells loads each shell's script into the shell itself
// and completes command lines the way the shell does when TAB is pressed:
// fish through its own `complete -C`; zsh through bashcompinit's
// _bash_complete, with compadd standing in for the line editor; bash by
// running what `complete -p` registered, with the variables bash sets.
// zpipes is the test binary, on $PATH thanks to testscript.Main. Missing
// zsh or fish skip their case, except in CI, whose .ci/run installs them.
func TestCompletionInShells(t *testing.T) {
	if _, err := exec.LookPath("zpipes"); err != nil {
		t.Fatalf("zpipes is not on $PATH (testscript.Main puts it there): %v", err)
	}
	ep := testEndpoint()
	srv, err := broker.Listen(broker.Config{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := broker.Dial(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range []string{"jobs", "jokes", "mail"} {
		if err := c.Open(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	// Each shell's program prints the completions of the line in $LINE,
	// whose last word is $WORD, one a line.
	shells := []struct {
		name string
		args []string
		prog string
	}{
		{"bash", []string{"--norc", "--noprofile", "-c"}, `
source <(zpipes completion bash) || exit 1
spec=$(complete -p zpipes) || exit 1
[[ $spec == "complete -C zpipes zpipes" || $spec == "complete -C 'zpipes' zpipes" ]] || { echo "registered: $spec" >&2; exit 1; }
words=($LINE)
prev=${words[-1]}
[[ -n $WORD ]] && prev=${words[-2]}
COMP_LINE=$LINE COMP_POINT=${#LINE} COMP_TYPE=9 COMP_KEY=9 zpipes zpipes "$WORD" "$prev"
`},
		{"zsh", []string{"-f", "-c"}, `
autoload -U compinit && compinit -u -d "$HOME/zcompdump" || exit 1
source <(zpipes completion zsh) || exit 1
[[ -n $_comps[zpipes] ]] || { echo "zpipes not registered" >&2; exit 1; }
compadd() {
	local a seen=0
	for a in "$@"; do
		if (( seen )); then print -r -- $a; elif [[ $a == - ]]; then seen=1; fi
	done
}
words=(${=LINE})
[[ -z $WORD ]] && words+=("")
CURRENT=$#words
PREFIX=$WORD
${=_comps[zpipes]}
`},
		{"fish", []string{"--no-config", "-c"}, `
zpipes completion fish | source; or exit 1
complete -C"$LINE"
`},
	}
	cases := []struct {
		line string
		want []string
	}{
		{"zpipes c", []string{"cat", "close", "completion"}},
		{"zpipes read jo", []string{"jobs", "jokes"}},
		{"zpipes cat -r ", []string{"jobs", "jokes", "mail"}},
		{"zpipes completion z", []string{"zsh"}},
	}
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			path, err := exec.LookPath(sh.name)
			if err != nil {
				msg := sh.name + " is not installed (apt-get install " + sh.name + ")"
				if os.Getenv("CI") != "" {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
			home := t.TempDir() // zsh's compinit is quicker the second time
			for _, tc := range cases {
				fields := strings.Fields(tc.line)
				word := ""
				if !strings.HasSuffix(tc.line, " ") {
					word = fields[len(fields)-1]
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				cmd := exec.CommandContext(ctx, path, append(sh.args, sh.prog)...)
				cmd.Env = append(os.Environ(), "HOME="+home, "LINE="+tc.line, "WORD="+word,
					"ZPIPES_ENDPOINT="+ep, "COMP_LINE=", "COMP_POINT=",
					// A -race zpipes would otherwise linger a second at exit.
					"GORACE=atexit_sleep_ms=0")
				out, err := cmd.Output()
				cancel()
				if err != nil {
					t.Errorf("%s: completing %q: %v\n%s", sh.name, tc.line, err, stderrOf(err))
					continue
				}
				// fish prints "word<TAB>description"; there are no descriptions.
				var got []string
				for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					if l = strings.TrimSpace(l); l != "" {
						got = append(got, l)
					}
				}
				slices.Sort(got)
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s: completing %q gave %q, want %q", sh.name, tc.line, got, tc.want)
				}
			}
		})
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// testEndpoint is a fresh abstract endpoint for one test's broker.
func testEndpoint() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "ipc://@zpipes-test-" + hex.EncodeToString(b)
}
