package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/zpipes/zpipes/broker"
)

func TestLsQuotesNamesThatAreNotOnePlainWord(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"jobs", "jobs"},
		{"jöbs/ünï", "jöbs/ünï"},
		{"a:b@c", "a:b@c"},
		{"日本語", "日本語"},
		{"🚀", "🚀"},
		{"a b", `"a b"`},
		{"tab\there", `"tab\there"`},
		{"nul\x00", `"nul\x00"`},
		{"bad\xffutf8", `"bad\xffutf8"`},
		{"\u00a0nbsp", `"\u00a0nbsp"`},
		{`"quoted"`, `"\"quoted\""`},
		{`mid"quote`, `mid"quote`},
		{"", `""`},
	} {
		if got := displayName(tc.name); got != tc.want {
			t.Errorf("displayName(%q) = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestLsTableAlignsColumns(t *testing.T) {
	got := string(pipeTable([]broker.PipeInfo{
		{Name: "x", Opens: 1, Chunks: 1234567, Bytes: 9, Writers: 12, Blocked: 3, Reader: true},
		{Name: "a-long-name", Opens: 10},
	}))
	want := "" +
		"NAME         OPENS   CHUNKS  BYTES  TAKEN  WRITERS  BLOCKED  READER\n" +
		"x                1  1234567      9      0       12        3  yes\n" +
		"a-long-name     10        0      0      0        0        0  no\n"
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

// Names are padded to the columns a terminal shows them in: two for a CJK
// character or an emoji, none for a combining accent. (None of these is of
// ambiguous width, which would depend on the locale.)
func TestLsTableAlignsWideCharacters(t *testing.T) {
	got := string(pipeTable([]broker.PipeInfo{
		{Name: "cafe\u0301", Chunks: 1},
		{Name: "日本語", Chunks: 22},
		{Name: "🚀🚀", Chunks: 333},
		{Name: "bad\xff", Chunks: 4},
	}))
	want := "" +
		"NAME       OPENS  CHUNKS  BYTES  TAKEN  WRITERS  BLOCKED  READER\n" +
		"cafe\u0301           0       1      0      0        0        0  no\n" +
		"日本語         0      22      0      0        0        0  no\n" +
		"🚀🚀           0     333      0      0        0        0  no\n" +
		"\"bad\\xff\"      0       4      0      0        0        0  no\n"
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

// TestLsJSONKeepsNamesThatAreNotUTF8 lists, through the wire, a pipe whose
// name is not UTF-8, and decodes ls --json back to the exact name.
func TestLsJSONKeepsNamesThatAreNotUTF8(t *testing.T) {
	ep := testEndpoint()
	srv, err := broker.Listen(broker.Config{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := broker.Dial(t.Context(), ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const name = "bad\xffname"
	if err := c.Open(t.Context(), name); err != nil {
		t.Fatal(err)
	}

	out := runCaptured(t, "-e", ep, "ls", "--json")
	if !strings.Contains(string(out), `"name":"bad\ufffdname"`) || !strings.Contains(string(out), `"name_base64":"YmFk/25hbWU="`) {
		t.Errorf("ls --json wrote %s, want the name with U+FFFD and name_base64", out)
	}
	var pipes []broker.PipeInfo
	if err := json.Unmarshal(out, &pipes); err != nil {
		t.Fatalf("ls --json wrote %s: %v", out, err)
	}
	if len(pipes) != 1 || pipes[0].Name != name {
		t.Errorf("ls --json decodes to %+v, want one pipe named %q", pipes, name)
	}
	if table := string(runCaptured(t, "-e", ep, "ls")); !strings.Contains(table, "\n\"bad\\xffname\"  ") {
		t.Errorf("ls printed\n%s\nwant the name Go-quoted", table)
	}
}
