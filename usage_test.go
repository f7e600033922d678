package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageErrorsExit2 runs command lines that are wrong and checks they
// exit 2; a bad endpoint and rm-like commands say so on one line, without
// the usage, and the others print the usage after the error.
func TestUsageErrorsExit2(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		env     string // $ZPIPES_ENDPOINT, unset if ""
		stderr  string // its first line
		oneLine bool
	}{
		{[]string{"-e", "tcp://x", "ls"}, "", `zpipes: bad endpoint "tcp://x": only ipc:// endpoints are supported (use ipc://@NAME or ipc:///PATH)`, true},
		{[]string{"-e", "garbage", "ls"}, "", `zpipes: bad endpoint "garbage": only ipc:// endpoints are supported (use ipc://@NAME or ipc:///PATH)`, true},
		{[]string{"--endpoint=ipc://", "serve"}, "", `zpipes: bad endpoint "ipc://": empty socket name (use ipc://@NAME or ipc:///PATH)`, true},
		{[]string{"ls"}, "garbage", `zpipes: bad endpoint "garbage": only ipc:// endpoints are supported (use ipc://@NAME or ipc:///PATH)`, true},
		{[]string{"rm", "jobs"}, "", `zpipes: rm: not a zpipes command; a pipe goes away once it is closed and empty: use "zpipes close PIPE"`, true},
		{[]string{"delete", "jobs"}, "", `zpipes: delete: not a zpipes command; a pipe goes away once it is closed and empty: use "zpipes close PIPE"`, true},
		{[]string{"remove", "-f", "jobs"}, "", `zpipes: remove: not a zpipes command; a pipe goes away once it is closed and empty: use "zpipes close PIPE"`, true},
		{[]string{"rm"}, "", `zpipes: rm: not a zpipes command; a pipe goes away once it is closed and empty: use "zpipes close PIPE"`, true},
		{[]string{"serve", "--max-chunk", "64X"}, "", `zpipes: --max-chunk: "64X" is not a size: give bytes, or a number with K, M, G or T (64K, 16MiB)`, false},
		{[]string{"serve", "--max-pipe-bytes=0"}, "", `zpipes: --max-pipe-bytes: size "0" is out of range: give 1 byte to 1PiB`, false},
		{[]string{"serve", "--max-total-bytes", "2P"}, "", `zpipes: --max-total-bytes: size "2P" is out of range: give 1 byte to 1PiB`, false},
		{[]string{"ls", "--nope"}, "", `zpipes: unknown flag --nope`, false},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Setenv("ZPIPES_ENDPOINT", tc.env) // and restored after
			if tc.env == "" {
				os.Unsetenv("ZPIPES_ENDPOINT")
			}
			code, stdout, stderr := runStatus(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			first, rest, _ := strings.Cut(stderr, "\n")
			if first != tc.stderr {
				t.Errorf("stderr starts\n\t%s\nwant\n\t%s", first, tc.stderr)
			}
			if tc.oneLine && rest != "" {
				t.Errorf("stderr has more than one line:\n%s", stderr)
			}
			if !tc.oneLine && !strings.Contains(rest, "Usage: zpipes") {
				t.Errorf("stderr has no usage:\n%s", stderr)
			}
		})
	}
}

// runStatus runs zpipes in this process and returns its exit status, its
// standard output and its standard error.
func runStatus(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	code = run(args, os.Stdin, out, errf)
	o, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	e, err := os.ReadFile(errf.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, string(o), string(e)
}
