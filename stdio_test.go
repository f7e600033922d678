package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// splitAll runs splitLines over in, read through wrap, and returns every
// record it emitted (copied, since they are valid only during the call) and
// how many emit calls there were.
func splitAll(t *testing.T, in string, sep byte, wrap func(io.Reader) io.Reader) (records []string, calls int) {
	t.Helper()
	emit := func(lines [][]byte) error {
		calls++
		for _, l := range lines {
			records = append(records, string(l))
		}
		return nil
	}
	if err := splitLines(wrap(strings.NewReader(in)), sep, emit, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	return records, calls
}

func TestSplitLinesGivesEveryRecordInOrderHoweverTheInputArrives(t *testing.T) {
	long := strings.Repeat("x", 600<<10) // over the 256 KiB buffer
	inputs := map[string]string{
		"empty":            "",
		"one":              "a\n",
		"no final newline": "a\nb\nlast",
		"empty records":    "\n\na\n\n",
		"long line":        "a\n" + long + "\nb\n",
		"long last line":   "a\n" + long,
		"many short":       strings.Repeat("line\n", 100_000),
		"long then short":  long + "\n" + strings.Repeat("s\n", 1000) + long,
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":       func(r io.Reader) io.Reader { return r },
		"byte a time": iotest.OneByteReader,
		"half":        iotest.HalfReader,
	}
	for name, in := range inputs {
		want := strings.Split(in, "\n")
		if strings.HasSuffix(in, "\n") || in == "" {
			want = want[:len(want)-1]
		}
		for rname, wrap := range readers {
			got, _ := splitAll(t, in, '\n', wrap)
			if len(got) != len(want) {
				t.Errorf("%s, %s: %d records, want %d", name, rname, len(got), len(want))
				continue
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("%s, %s: record %d is %d bytes, want %d", name, rname, i, len(got[i]), len(want[i]))
					break
				}
			}
		}
	}
}

func TestSplitLinesHandsOverABuffersLinesInOneCall(t *testing.T) {
	in := strings.Repeat("0123456789\n", 10_000) // 110 KB: fits the buffer
	got, calls := splitAll(t, in, '\n', func(r io.Reader) io.Reader { return r })
	if len(got) != 10_000 {
		t.Fatalf("%d records, want 10000", len(got))
	}
	if calls > 2 {
		t.Errorf("%d emit calls for one buffer's worth of lines; want them together", calls)
	}
}

func TestSplitLinesSplitsOnNUL(t *testing.T) {
	got, _ := splitAll(t, "a b\x00c\nd\x00", 0, func(r io.Reader) io.Reader { return r })
	if want := []string{"a b", "c\nd"}; !bytes.Equal([]byte(strings.Join(got, "|")), []byte(strings.Join(want, "|"))) {
		t.Errorf("records %q, want %q", got, want)
	}
}
