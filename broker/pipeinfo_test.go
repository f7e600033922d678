package broker

import (
	"encoding/json"
	"testing"
)

func TestPipeInfoJSONKeepsNamesExactly(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
	}{
		{"jobs", `{"name":"jobs","opens":1,"chunks":2,"bytes":3,"taken":0,"writers":1,"blocked":0,"reader":true}`},
		{"日本語 🚀", `{"name":"日本語 🚀","opens":1,"chunks":2,"bytes":3,"taken":0,"writers":1,"blocked":0,"reader":true}`},
		{"", `{"name":"","opens":1,"chunks":2,"bytes":3,"taken":0,"writers":1,"blocked":0,"reader":true}`},
		{"bad\xffname", `{"name":"bad\ufffdname","opens":1,"chunks":2,"bytes":3,"taken":0,"writers":1,"blocked":0,"reader":true,"name_base64":"YmFk/25hbWU="}`},
		{"\xc3", `{"name":"\ufffd","opens":1,"chunks":2,"bytes":3,"taken":0,"writers":1,"blocked":0,"reader":true,"name_base64":"ww=="}`},
	} {
		in := PipeInfo{Name: tc.name, Opens: 1, Chunks: 2, Bytes: 3, Writers: 1, Reader: true}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("%q: %v", tc.name, err)
		}
		if string(b) != tc.json {
			t.Errorf("%q: marshalled to\n%s\nwant\n%s", tc.name, b, tc.json)
		}
		var out PipeInfo
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%q: unmarshal %s: %v", tc.name, b, err)
		}
		if out != in {
			t.Errorf("%q: round trip gave %+v, want %+v", tc.name, out, in)
		}
	}
}

func TestPipeInfoJSONRejectsBadBase64(t *testing.T) {
	var p PipeInfo
	err := json.Unmarshal([]byte(`{"name":"x","name_base64":"not base64!"}`), &p)
	if err == nil {
		t.Fatalf("unmarshalled to %+v, want an error", p)
	}
}

func TestListReportsNamesThatAreNotUTF8Exactly(t *testing.T) {
	s := startServer(t)
	c := dialT(t, s)
	ctx := testCtx(t)
	const name = "bad\xff\xfename"
	if err := c.Open(ctx, name); err != nil {
		t.Fatal(err)
	}
	pipes, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pipes) != 1 || pipes[0].Name != name {
		t.Fatalf("LIST gave %+v, want one pipe named %q", pipes, name)
	}
}
