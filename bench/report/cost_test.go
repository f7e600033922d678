package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// rowFor returns the table row of one workload, system and process.
func rowFor(t *testing.T, table, wl, system, process string) []string {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		fs := strings.Fields(line)
		if len(fs) == 6 && fs[0] == wl && fs[1] == system && fs[2] == process {
			return fs[3:]
		}
	}
	t.Fatalf("no row for %s %s %s in:\n%s", wl, system, process, table)
	return nil
}

func TestCostTableTakesMediansPerMillionLinesAndPerMB(t *testing.T) {
	mb := 1 << 20
	cost := writeFile(t, "cost.tsv", strings.Join([]string{
		// 2M lines, 4 MiB: CPU 1, 3, 2 s -> 0.5, 1.5, 1.0 s/M (median 1.0);
		// 40, 80, 120 switches -> 10, 20, 30 per MB (median 20).
		"W1\tzpipes\tbroker\t2000000\t4194304\t1\t40",
		"W1\tzpipes\tbroker\t2000000\t4194304\t3\t120",
		"W1\tzpipes\tbroker\t2000000\t4194304\t2\t80",
		"W1\tzpipes\twriter\t2000000\t4194304\t0.2\t4",
	}, "\n")+"\n")
	syscalls := writeFile(t, "syscalls.tsv", strings.Join([]string{
		"# counted by: perf stat -e raw_syscalls:sys_enter",
		"W1\tzpipes\tbroker\t2000000\t" + strconv.Itoa(2*mb) + "\t1000",
		"W1\tzpipes\treader\t2000000\t" + strconv.Itoa(2*mb) + "\t300",
	}, "\n")+"\n")

	var out strings.Builder
	if err := printCost(&out, cost, syscalls); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	if got, want := rowFor(t, table, "W1", "zpipes", "broker"), []string{"1.000", "20.0", "500"}; !slices.Equal(got, want) {
		t.Errorf("broker row %q, want %q", got, want)
	}
	if got, want := rowFor(t, table, "W1", "zpipes", "writer"), []string{"0.100", "1.0", "-"}; !slices.Equal(got, want) {
		t.Errorf("writer row (no syscall count) %q, want %q", got, want)
	}
	if got, want := rowFor(t, table, "W1", "zpipes", "reader"), []string{"-", "-", "150"}; !slices.Equal(got, want) {
		t.Errorf("reader row (syscalls only) %q, want %q", got, want)
	}
	if !strings.Contains(table, "counted by perf stat -e raw_syscalls:sys_enter") {
		t.Errorf("table does not say how syscalls were counted:\n%s", table)
	}
}

func TestCostTableRejectsAMalformedRow(t *testing.T) {
	cost := writeFile(t, "cost.tsv", "W1\tzpipes\tbroker\t2000000\t4194304\tlots\t40\n")
	var out strings.Builder
	err := printCost(&out, cost, "")
	if err == nil || !strings.Contains(err.Error(), "cost.tsv:1") {
		t.Fatalf("printCost = %v, want an error naming cost.tsv:1", err)
	}
}
