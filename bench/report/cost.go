package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Per-process cost of the zpipes transfers, from the -cost file bench/run.sh
// writes: one tab-separated row per process per transfer,
//
//	WORKLOAD  SYSTEM  PROCESS  LINES  BYTES  CPU_SECONDS  CONTEXT_SWITCHES
//
// printed as medians over the rounds: CPU seconds per million lines and
// context switches per MB moved, which travel between machines better than
// lines per second.
func printCost(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type key struct{ workload, system, process string }
	var keys []key
	cpu := map[key][]float64{}
	csw := map[key][]float64{}
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) != 7 {
			return fmt.Errorf("%s:%d: %d fields, want 7", path, ln, len(fs))
		}
		lines, err1 := strconv.ParseFloat(fs[3], 64)
		bytes, err2 := strconv.ParseFloat(fs[4], 64)
		secs, err3 := strconv.ParseFloat(fs[5], 64)
		switches, err4 := strconv.ParseFloat(fs[6], 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || lines <= 0 || bytes <= 0 {
			return fmt.Errorf("%s:%d: malformed row", path, ln)
		}
		k := key{fs[0], fs[1], fs[2]}
		if _, ok := cpu[k]; !ok {
			keys = append(keys, k)
		}
		cpu[k] = append(cpu[k], secs/(lines/1e6))
		csw[k] = append(csw[k], switches/(bytes/(1<<20)))
	}
	if err := sc.Err(); err != nil {
		return err
	}
	fmt.Fprintln(w, "per-process cost, medians over rounds (CPU = user + system)")
	fmt.Fprintf(w, "  %-4s %-9s %-7s %15s %16s\n", "wl", "system", "process", "CPU s/M lines", "ctx switches/MB")
	for _, k := range keys {
		c, s := slices.Clone(cpu[k]), slices.Clone(csw[k])
		slices.Sort(c)
		slices.Sort(s)
		fmt.Fprintf(w, "  %-4s %-9s %-7s %15.3f %16.1f\n", k.workload, k.system, k.process, median(c), median(s))
	}
	return nil
}
