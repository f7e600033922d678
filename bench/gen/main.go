// Command gen writes a benchmark workload: LINES lines of exactly WIDTH
// payload bytes each, every line followed by '\n'.
//
// Usage:
//
//	gen LINES WIDTH FILE
//
// Each line starts with its zero-padded sequence number, so every line is
// distinct and a lost, duplicated or reordered line makes the output differ
// from the input. The rest is printable filler that shifts with the sequence
// number, so that a chunk boundary bug (bytes from one line appearing in
// another) is also caught by a plain byte comparison.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
)

// seqDigits is the width of the sequence number prefix; 12 digits cover any
// workload this harness could sensibly produce.
const seqDigits = 12

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("usage: gen LINES WIDTH FILE")
	}
	lines, err := strconv.Atoi(args[0])
	if err != nil || lines < 1 {
		return fmt.Errorf("bad LINES %q", args[0])
	}
	width, err := strconv.Atoi(args[1])
	if err != nil || width <= seqDigits+1 {
		return fmt.Errorf("bad WIDTH %q: need more than %d bytes", args[1], seqDigits+1)
	}

	f, err := os.Create(args[2])
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)

	// The filler is a window into a repeating run of the 94 visible ASCII
	// characters; sliding the window per line keeps generation cheap.
	const visible = '~' - '!' + 1
	fill := width - seqDigits - 1
	cycle := make([]byte, visible+fill)
	for i := range cycle {
		cycle[i] = byte('!' + i%visible)
	}

	line := make([]byte, width+1)
	line[seqDigits] = ' '
	line[width] = '\n'
	for seq := 0; seq < lines; seq++ {
		n := seq
		for i := seqDigits - 1; i >= 0; i-- {
			line[i] = byte('0' + n%10)
			n /= 10
		}
		off := (seq * 7) % visible
		copy(line[seqDigits+1:width], cycle[off:off+fill])
		if _, err := w.Write(line); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
