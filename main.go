// Command zpipes is a reliable named-pipes broker and its client: pipes that
// outlive the processes using them. See zpipes(1) and zpipes(7).
package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"time"

	"github.com/alecthomas/kong"
	"github.com/docker/go-units"
	"github.com/zpipes/zpipes/broker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// CLI is the command line: global flags, then one subcommand.
type CLI struct {
	Endpoint string           `short:"e" env:"ZPIPES_ENDPOINT" default:"${endpoint}" placeholder:"EP" help:"Broker endpoint: ipc://@NAME (abstract socket) or ipc:///PATH."`
	Timeout  time.Duration    `default:"${timeout}" help:"Give up on a broker that stays silent this long while a request is outstanding."`
	Version  kong.VersionFlag `help:"Print the version and exit."`

	Serve ServeCmd `cmd:"" help:"Run the broker in the foreground."`
	Open  OpenCmd  `cmd:"" help:"Open a pipe, creating it if needed (like mkfifo)."`
	Close CloseCmd `cmd:"" help:"Close a pipe; it goes away once it is closed and empty (like rm)."`
	Write WriteCmd `cmd:"" help:"Write each argument as one chunk."`
	Read  ReadCmd  `cmd:"" help:"Read chunks and print each on its own line."`
	Cat   CatCmd   `cmd:"" help:"Stream stdin lines into a pipe (-w), or a pipe's chunks to stdout (-r)."`
	Each  EachCmd  `cmd:"" help:"Run a command for each chunk; a chunk is acknowledged only when its command succeeds."`

	Ls         LsCmd         `cmd:"" help:"List the broker's pipes."`
	Completion CompletionCmd `cmd:"" help:"Print a shell completion script."`
	Man        ManCmd        `cmd:"" hidden:"" help:"Print the zpipes(1) man page (see go generate)."`

	// What users of rm(1) try: they are sent to close.
	Rm     RmCmd `cmd:"" hidden:"" passthrough:""`
	Delete RmCmd `cmd:"" hidden:"" passthrough:""`
	Remove RmCmd `cmd:"" hidden:"" passthrough:""`
}

// Validate refuses an endpoint zpipes cannot use, from -e or
// $ZPIPES_ENDPOINT, before any command runs.
func (c *CLI) Validate() error {
	if err := broker.CheckEndpoint(c.Endpoint); err != nil {
		return lineError{fmt.Errorf("%w (use ipc://@NAME or ipc:///PATH)", err)}
	}
	return nil
}

// Help is shown under the command list by zpipes --help.
func (CLI) Help() string {
	return `Examples:
  zpipes serve &                        # the broker
  producer | zpipes cat -w jobs         # each stdin line becomes a chunk
  zpipes cat -r jobs | consumer         # each chunk is printed as a line
  zpipes open jobs; zpipes write jobs a b; zpipes read -n 2 jobs; zpipes close jobs`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run parses args and runs the command, returning the exit status.
func run(args []string, stdin *os.File, stdout, stderr *os.File) int {
	var cli CLI
	a := newApp(stdin, stdout, stderr)
	defer a.stop()
	parser, err := kong.New(&cli,
		kong.Name("zpipes"),
		kong.Description("Reliable named pipes: chunks queued in a broker outlive the processes that write and read them."),
		kong.Writers(stdout, stderr),
		cliVars(),
		kong.Exit(a.exitEarly),
		kong.KindMapper(reflect.String, kong.MapperFunc(exactString)),
		kong.ValueFormatter(flagHelp),
		kong.ExplicitGroups(flagGroups),
		kong.Bind(a),
	)
	if err != nil {
		panic(err) // the CLI struct itself is wrong: a bug
	}
	if completeLine(parser, a) {
		return exitOK // the shell asked for completions ($COMP_LINE)
	}
	kctx, err := parser.Parse(args)
	if a.exited {
		return a.code // --help or --version
	}
	if line := (lineError{}); errors.As(err, &line) {
		fmt.Fprintf(stderr, "zpipes: %v\n", err)
		return exitUsage
	}
	if err != nil {
		return a.usage(parser, err)
	}
	a.endpoint, a.timeout = cli.Endpoint, cli.Timeout
	defer profile()()
	return a.exit(kctx.Run())
}

// cliVars are the values the CLI's tags refer to: the broker's defaults,
// defined once, in package broker.
func cliVars() kong.Vars {
	return kong.Vars{
		"endpoint":        broker.DefaultEndpoint,
		"version":         "zpipes " + version,
		"max_chunk":       units.BytesSize(float64(broker.DefaultLimits.MaxChunk)),
		"max_pipe_bytes":  units.BytesSize(broker.DefaultMaxPipeBytes),
		"max_total_bytes": units.BytesSize(broker.DefaultMaxTotalBytes),
		"max_pipes":       strconv.Itoa(broker.DefaultMaxPipes),
		"timeout":         broker.DefaultTimeout.String(),
	}
}
