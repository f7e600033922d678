package main

import (
	"testing"

	"github.com/zpipes/zpipes/broker"
)

func TestLsQuotesNamesThatAreNotOnePlainWord(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"jobs", "jobs"},
		{"jöbs/ünï", "jöbs/ünï"},
		{"a:b@c", "a:b@c"},
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
		{Name: "ä", Opens: 1, Chunks: 1234567, Bytes: 9, Writers: 12, Blocked: 3, Reader: true},
		{Name: "a-long-name", Opens: 10},
	}))
	want := "" +
		"NAME         OPENS   CHUNKS  BYTES  WRITERS  BLOCKED  READER\n" +
		"ä                1  1234567      9       12        3  yes\n" +
		"a-long-name     10        0      0        0        0  no\n"
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}
