package main

import (
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/zpipes/zpipes/broker"
)

// parseSize decodes text as a --size flag, as kong does.
func parseSize(t *testing.T, text string) (byteSize, error) {
	t.Helper()
	var cli struct {
		Size byteSize
	}
	parser, err := kong.New(&cli, kong.Exit(func(int) { t.Fatal("kong exited") }))
	if err != nil {
		t.Fatal(err)
	}
	_, err = parser.Parse([]string{"--size=" + text})
	return cli.Size, err
}

func TestSizeUnitsArePowersOf1024(t *testing.T) {
	for _, tc := range []struct {
		text string
		want byteSize
	}{
		{"1", 1},
		{"65536", 65536},
		{"64K", 64 << 10},
		{"64k", 64 << 10},
		{"64KB", 64 << 10},
		{"64kb", 64 << 10},
		{"64KiB", 64 << 10},
		{"64kib", 64 << 10},
		{"512M", 512 << 20},
		{"512MB", 512 << 20},
		{"1MiB", 1 << 20},
		{"1mib", 1 << 20},
		{"16MiB", 16 << 20},
		{"2G", 2 << 30},
		{"2GiB", 2 << 30},
		{"1T", 1 << 40},
		{"1TB", 1 << 40},
		{"1.5K", 1536},
		{"100B", 100},
		{"1P", 1 << 50},
	} {
		got, err := parseSize(t, tc.text)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %d, %v; want %d", tc.text, got, err, tc.want)
		}
	}
}

func TestSizeRejectsWhatIsNotASize(t *testing.T) {
	for _, tc := range []struct{ text, err string }{
		{"", "is not a size"},
		{"M", "is not a size"},
		{"64X", `"64X" is not a size`},
		{"64KX", "is not a size"},
		{"64MiBs", "is not a size"},
		{"64 M B", "is not a size"},
		{"-1", "is not a size"},
		{"-1K", "is not a size"},
		{"0", "out of range"},
		{"0K", "out of range"},
		{"0.1", "out of range"},
		{"2P", "out of range"},
		{"9999999T", "out of range"},
		{"99999999999999999999999999T", "out of range"},
		{"1e400", "is not a size"},
	} {
		got, err := parseSize(t, tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: got %d, %v; want an error with %q", tc.text, got, err, tc.err)
		}
	}
}

// The serve limits default to the broker's, and --help and zpipes(1) show
// them in units.
func TestServeDefaultsAreTheBrokers(t *testing.T) {
	var cli CLI
	parser, err := kong.New(&cli, cliVars())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse([]string{"serve"}); err != nil {
		t.Fatal(err)
	}
	s := cli.Serve
	if int(s.MaxChunk) != broker.DefaultLimits.MaxChunk || s.MaxPipeBytes != broker.DefaultMaxPipeBytes ||
		s.MaxTotalBytes != broker.DefaultMaxTotalBytes || s.MaxPipes != broker.DefaultMaxPipes {
		t.Errorf("serve defaults: chunk %d, pipe %d, total %d, pipes %d; want the broker's", s.MaxChunk, s.MaxPipeBytes, s.MaxTotalBytes, s.MaxPipes)
	}
	help := oneLine(runCaptured(t, "serve", "--help"))
	page := oneLine(runCaptured(t, "man"))
	for _, want := range []string{"Default: 16MiB.", "Default: 256MiB.", "Default: 512MiB.", "512M is 512 MiB"} {
		if !strings.Contains(help, want) {
			t.Errorf("serve --help does not say %q:\n%s", want, help)
		}
		if !strings.Contains(page, want) {
			t.Errorf("zpipes(1) does not say %q", want)
		}
	}
}
