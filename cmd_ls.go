package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mattn/go-runewidth"
	"github.com/zpipes/zpipes/broker"
)

// LsCmd lists the broker's pipes, as a table for people or JSON for scripts.
type LsCmd struct {
	JSON bool `name:"json" help:"Print a JSON array, one object per pipe, with the fields of LIST in zpipes(7): name (and name_base64, below), opens, chunks, bytes, taken, writers, blocked, reader."`
}

// Help is the detail under the summary in --help and zpipes(1).
func (l *LsCmd) Help() string {
	return `Columns: NAME; OPENS, the open count; CHUNKS and BYTES queued; TAKEN, the
chunks readers (cat -r, read, each) took and have not yet acknowledged; WRITERS, the
writers (connections, open or gone) whose chunks are queued; BLOCKED, the writes waiting for room;
READER, whether a READ is waiting. Pipes are listed by name; names with blanks
or unprintable bytes, or that start with a double quote, are shown Go-quoted.
Wide characters (CJK, emoji) take two columns, and the table stays aligned.
An empty broker prints the header only (with --json, []).

JSON strings hold only UTF-8, so for a name that is not valid UTF-8 --json
writes "name" with each invalid byte replaced by U+FFFD, and adds
"name_base64", the standard base64 of the name's exact bytes.`
}

func (l *LsCmd) Run(a *app) error {
	c, err := a.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	pipes, err := c.List(a.ctx)
	if err != nil {
		return err
	}
	if l.JSON {
		if pipes == nil {
			pipes = []broker.PipeInfo{} // "[]", not "null"
		}
		b, err := json.Marshal(pipes)
		if err != nil {
			return fmt.Errorf("ls: %w", err)
		}
		return writeAll(a.stdout, append(b, '\n'))
	}
	return writeAll(a.stdout, pipeTable(pipes))
}

// pipeTable lays pipes out in aligned columns under a header: names on the
// left, counts on the right. Widths are what a terminal shows, not runes or
// bytes: a CJK character or an emoji takes two columns, a combining accent
// none.
func pipeTable(pipes []broker.PipeInfo) []byte {
	rows := [][]string{{"NAME", "OPENS", "CHUNKS", "BYTES", "TAKEN", "WRITERS", "BLOCKED", "READER"}}
	for _, p := range pipes {
		reader := "no"
		if p.Reader {
			reader = "yes"
		}
		rows = append(rows, []string{displayName(p.Name),
			strconv.Itoa(p.Opens), strconv.Itoa(p.Chunks), strconv.Itoa(p.Bytes),
			strconv.Itoa(p.Taken), strconv.Itoa(p.Writers), strconv.Itoa(p.Blocked), reader})
	}
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], runewidth.StringWidth(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-runewidth.StringWidth(cell))
			switch {
			case i == 0:
				b.WriteString(cell)
				if len(row) > 1 {
					b.WriteString(pad)
				}
			case i == len(row)-1: // READER: left-aligned, no trailing blanks
				b.WriteString("  ")
				b.WriteString(cell)
			default:
				b.WriteString("  ")
				b.WriteString(pad)
				b.WriteString(cell)
			}
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// displayName shows a pipe name as it is when that is unambiguous in a
// column, and Go-quoted otherwise: when it has bytes that are not printable
// UTF-8, blanks, or a leading quote that would look like quoting.
func displayName(name string) string {
	if name == "" || strings.HasPrefix(name, `"`) || !utf8.ValidString(name) {
		return strconv.Quote(name)
	}
	for _, r := range name {
		if r == ' ' || !strconv.IsPrint(r) {
			return strconv.Quote(name)
		}
	}
	return name
}
