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
// writes: one tab-separated row per process per timed transfer,
//
//	WORKLOAD  SYSTEM  PROCESS  LINES  BYTES  CPU_SECONDS  CONTEXT_SWITCHES
//
// and, optionally, the -syscalls file: one row per process of a separate,
// untimed transfer run under a syscall counter (counting slows a process
// down, so it never shares a run with the clock),
//
//	WORKLOAD  SYSTEM  PROCESS  LINES  BYTES  SYSCALLS
//
// where a line "# counted by: HOW" says how they were counted. Printed as
// medians over the rows of each process: CPU seconds per million lines,
// context switches per MB moved and syscalls per MB moved, which travel
// between machines better than lines per second.
func printCost(w io.Writer, costPath, syscallsPath string) error {
	t := costTable{cpu: map[costKey][]float64{}, csw: map[costKey][]float64{}, sys: map[costKey][]float64{}}
	err := t.load(costPath, 7, func(k costKey, lines, mb float64, fs []float64) {
		t.cpu[k] = append(t.cpu[k], fs[0]/(lines/1e6))
		t.csw[k] = append(t.csw[k], fs[1]/mb)
	})
	if err != nil {
		return err
	}
	if syscallsPath != "" {
		err := t.load(syscallsPath, 6, func(k costKey, _, mb float64, fs []float64) {
			t.sys[k] = append(t.sys[k], fs[0]/mb)
		})
		if err != nil {
			return err
		}
	}

	fmt.Fprintln(w, "per-process cost (CPU = user + system; ctx = voluntary + involuntary)")
	fmt.Fprintf(w, "  %-4s %-9s %-7s %15s %16s %12s\n", "wl", "system", "process", "CPU s/M lines", "ctx switches/MB", "syscalls/MB")
	for _, k := range t.keys {
		fmt.Fprintf(w, "  %-4s %-9s %-7s %15s %16s %12s\n", k.workload, k.system, k.process,
			medianOf(t.cpu[k], "%.3f"), medianOf(t.csw[k], "%.1f"), medianOf(t.sys[k], "%.0f"))
	}
	fmt.Fprintln(w, "  CPU and ctx: medians over the timed rounds (getrusage via /usr/bin/time; the broker's from /proc)")
	switch {
	case syscallsPath == "":
	case t.countedBy == "":
		fmt.Fprintln(w, "  syscalls: one separate untimed transfer per workload and system")
	default:
		fmt.Fprintf(w, "  syscalls: one separate untimed transfer per workload and system, counted by %s\n", t.countedBy)
	}
	if syscallsPath != "" {
		fmt.Fprintln(w, "  syscalls: whole process lives, start-up included (a few hundred: they dominate only tiny runs)")
	}
	return nil
}

type costKey struct{ workload, system, process string }

// costTable gathers per-process figures from both files, keeping processes
// in the order they first appear.
type costTable struct {
	keys          []costKey
	cpu, csw, sys map[costKey][]float64
	countedBy     string
}

// load reads a file of rows with nfields fields, the last nfields-5 of them
// numbers handed to add with the row's lines and megabytes.
func (t *costTable) load(path string, nfields int, add func(k costKey, lines, mb float64, fs []float64)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		if how, ok := strings.CutPrefix(sc.Text(), "# counted by: "); ok {
			t.countedBy = how
			continue
		}
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) != nfields {
			return fmt.Errorf("%s:%d: %d fields, want %d", path, ln, len(fs), nfields)
		}
		nums := make([]float64, nfields-3)
		for i := range nums {
			nums[i], err = strconv.ParseFloat(fs[3+i], 64)
			if err != nil {
				return fmt.Errorf("%s:%d: %w", path, ln, err)
			}
		}
		if nums[0] <= 0 || nums[1] <= 0 {
			return fmt.Errorf("%s:%d: no lines or no bytes", path, ln)
		}
		k := costKey{fs[0], fs[1], fs[2]}
		if !slices.Contains(t.keys, k) {
			t.keys = append(t.keys, k)
		}
		add(k, nums[0], nums[1]/(1<<20), nums[2:])
	}
	return sc.Err()
}

// medianOf formats the median of vs, or "-" when there are none.
func medianOf(vs []float64, format string) string {
	if len(vs) == 0 {
		return "-"
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return fmt.Sprintf(format, median(s))
}
