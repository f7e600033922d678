// Command report turns the raw samples written by bench/run.sh into the
// per-workload tables and the zpipes/baseline ratios.
//
// Usage:
//
//	report [-tsv] RAWFILE
//	report -cost COSTFILE [-syscalls SYSCALLSFILE]   (see cost.go)
//
// RAWFILE holds one tab-separated row per timed transfer:
//
//	run  WORKLOAD  SYSTEM  ROUND  LINES  WIDTH  MICROSECONDS  RSS_KB|-  ok|fail
//
// Without -tsv it prints aligned tables for people; with -tsv it prints
// "summary" and "ratio" rows for scripts. Ratios use medians from the same
// file, i.e. from one invocation on one machine state: comparing numbers
// across runs on a noisy machine says little.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// sample is one timed transfer.
type sample struct {
	workload, system string
	lines, width     int
	usec             int64
	rssKB            int64 // broker VmHWM; -1 when the system has no broker
	ok               bool
}

// stats summarises the successful samples of one system on one workload.
type stats struct {
	system        string
	n, failed     int
	med, min, max float64 // lines per second
	medMBps       float64
	maxRSSKB      int64
	lines, width  int
}

func main() {
	tsv := flag.Bool("tsv", false, "print machine-readable summary and ratio rows")
	cost := flag.String("cost", "", "print the per-process cost table from this file instead")
	syscalls := flag.String("syscalls", "", "with -cost: add syscalls per MB from this file")
	flag.Parse()
	if *cost != "" {
		if err := printCost(os.Stdout, *cost, *syscalls); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		return
	}
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: report [-tsv] RAWFILE")
		os.Exit(2)
	}
	samples, err := load(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	workloads, table := summarise(samples)
	if *tsv {
		printTSV(os.Stdout, workloads, table)
	} else {
		printTables(os.Stdout, workloads, table)
	}
}

func load(path string) ([]sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []sample
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) == 0 || fs[0] != "run" {
			continue // other record kinds may share the file
		}
		if len(fs) != 9 {
			return nil, fmt.Errorf("%s:%d: %d fields, want 9", path, ln, len(fs))
		}
		s := sample{workload: fs[1], system: fs[2], rssKB: -1, ok: fs[8] == "ok"}
		var errs [4]error
		s.lines, errs[0] = strconv.Atoi(fs[4])
		s.width, errs[1] = strconv.Atoi(fs[5])
		s.usec, errs[2] = strconv.ParseInt(fs[6], 10, 64)
		if fs[7] != "-" {
			s.rssKB, errs[3] = strconv.ParseInt(fs[7], 10, 64)
		}
		for _, e := range errs {
			if e != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, ln, e)
			}
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// summarise groups samples by workload and system, keeping the order in
// which they first appear (the order run.sh measured them in).
func summarise(samples []sample) ([]string, map[string][]*stats) {
	var workloads []string
	table := map[string][]*stats{}
	rates := map[*stats][]float64{}
	for _, s := range samples {
		if _, seen := table[s.workload]; !seen {
			workloads = append(workloads, s.workload)
		}
		var st *stats
		for _, c := range table[s.workload] {
			if c.system == s.system {
				st = c
			}
		}
		if st == nil {
			st = &stats{system: s.system, lines: s.lines, width: s.width, maxRSSKB: -1}
			table[s.workload] = append(table[s.workload], st)
		}
		if !s.ok || s.usec <= 0 {
			st.failed++
			continue
		}
		rates[st] = append(rates[st], float64(s.lines)/(float64(s.usec)/1e6))
		st.maxRSSKB = max(st.maxRSSKB, s.rssKB)
	}
	for st, r := range rates {
		slices.Sort(r)
		st.n = len(r)
		st.min, st.max = r[0], r[len(r)-1]
		st.med = median(r)
		st.medMBps = st.med * float64(st.width+1) / 1e6
	}
	return workloads, table
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func find(sts []*stats, system string) *stats {
	for _, st := range sts {
		if st.system == system && st.n > 0 {
			return st
		}
	}
	return nil
}

// ratios compares zpipes with each baseline that has data, zpipes on a
// store with zpipes in memory, and the one- and two-hop references with the
// FIFO: those two are the ceilings of a broker-less stream and of any
// broker on this machine, against which zpipes/fifo reads.
func ratios(sts []*stats) (names []string, values []float64) {
	if f := find(sts, "fifo"); f != nil {
		for _, ref := range []string{"unixsock", "relay"} {
			if r := find(sts, ref); r != nil {
				names = append(names, ref+"/fifo")
				values = append(values, r.med/f.med)
			}
		}
	}
	z := find(sts, "zpipes")
	if z == nil {
		return names, values
	}
	for _, base := range []string{"fifo", "unixsock", "relay", "pushpull"} {
		if b := find(sts, base); b != nil {
			names = append(names, "zpipes/"+base)
			values = append(values, z.med/b.med)
		}
	}
	for _, stored := range []string{"store", "store-1s", "js1", "js3"} {
		if s := find(sts, stored); s != nil {
			names = append(names, stored+"/zpipes")
			values = append(values, s.med/z.med)
		}
	}
	return names, values
}

func printTables(w io.Writer, workloads []string, table map[string][]*stats) {
	for i, wl := range workloads {
		sts := table[wl]
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s: %s lines x %d B payload (+newline)\n", wl, group(float64(sts[0].lines)), sts[0].width)
		fmt.Fprintf(w, "  %-10s %14s %14s %14s %10s %6s %14s\n",
			"system", "median line/s", "min line/s", "max line/s", "med MB/s", "runs", "broker peakRSS")
		for _, st := range sts {
			rss := "-"
			if st.maxRSSKB >= 0 {
				rss = fmt.Sprintf("%.1f MiB", float64(st.maxRSSKB)/1024)
			}
			runs := strconv.Itoa(st.n)
			if st.failed > 0 {
				runs += fmt.Sprintf("+%dF", st.failed)
			}
			if st.n == 0 {
				fmt.Fprintf(w, "  %-10s %14s %14s %14s %10s %6s %14s\n", st.system, "FAILED", "-", "-", "-", runs, rss)
				continue
			}
			fmt.Fprintf(w, "  %-10s %14s %14s %14s %10.1f %6s %14s\n",
				st.system, group(st.med), group(st.min), group(st.max), st.medMBps, runs, rss)
		}
		names, values := ratios(sts)
		if find(sts, "zpipes") == nil {
			fmt.Fprintln(w, "  zpipes ratios: n/a (no successful zpipes run)")
		}
		for j, n := range names {
			fmt.Fprintf(w, "  %-16s %8.3f  (of medians)\n", n, values[j])
		}
	}
}

func printTSV(w io.Writer, workloads []string, table map[string][]*stats) {
	fmt.Fprintln(w, "# summary\tworkload\tsystem\tlines\twidth\tmedian_lps\tmin_lps\tmax_lps\tbroker_peak_rss_kb\tfailed_runs")
	fmt.Fprintln(w, "# ratio\tworkload\tname\tmedian_over_median")
	for _, wl := range workloads {
		for _, st := range table[wl] {
			fmt.Fprintf(w, "summary\t%s\t%s\t%d\t%d\t%.0f\t%.0f\t%.0f\t%d\t%d\n",
				wl, st.system, st.lines, st.width, st.med, st.min, st.max, st.maxRSSKB, st.failed)
		}
		names, values := ratios(table[wl])
		for j, n := range names {
			fmt.Fprintf(w, "ratio\t%s\t%s\t%.4f\n", wl, n, values[j])
		}
	}
}

// group formats a rate as an integer with thousands separators, because
// rates here span 10^4 to 10^8 and are read side by side.
func group(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
