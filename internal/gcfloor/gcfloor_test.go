package gcfloor

import "testing"

func TestPercentKeepsTheFloorForSmallHeapsAndGOGCForLargeOnes(t *testing.T) {
	const floor = 32 << 20
	for _, tc := range []struct {
		live int64
		want int
	}{
		{0, 800},        // nothing measured yet: as if 4 MiB were live
		{1 << 20, 800},  // less than 4 MiB: the same
		{8 << 20, 400},  // 8 MiB may grow by 32 MiB
		{32 << 20, 100}, // the floor and GOGC=100 agree
		{1 << 30, 100},  // a deep queue: plain GOGC
	} {
		if got := percent(tc.live, floor); got != tc.want {
			t.Errorf("percent(live %d) = %d, want %d", tc.live, got, tc.want)
		}
	}
}

func TestSetLeavesAUsersGOGCAlone(t *testing.T) {
	t.Setenv("GOGC", "50")
	Set(32 << 20) // must not install a tuner: the environment's 50 stands
	if tuned.Load() {
		t.Fatal("Set tuned the collector although GOGC was set")
	}
}
