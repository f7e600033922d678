package wal

import (
	"testing"
	"time"
)

// BenchmarkAppendSync appends batches of 8192 records of 64 bytes and asks
// for a Sync after each, as the broker does for a busy pipe. One op is one
// batch. "fsync-wait" waits for each batch's Sync before the next (one
// writer, latency-bound); "fsync-pipelined" keeps appending while fsyncs run
// (many writers: group commit); "everysec" fsyncs once a second.
func BenchmarkAppendSync(b *testing.B) {
	const batch, size = 8192, 64
	for _, c := range []struct {
		name  string
		every time.Duration
		wait  bool
	}{
		{"fsync-wait", 0, true},
		{"fsync-pipelined", 0, false},
		{"everysec", time.Second, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			recs := make([][]byte, batch)
			for i := range recs {
				recs[i] = make([]byte, size)
				recs[i][0] = byte(i)
			}
			l, err := Open(b.TempDir(), Options{SyncEvery: c.every})
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1)
			var failed error // set by the syncer, read after Close
			b.SetBytes(batch * size)
			b.ResetTimer()
			for range b.N {
				if _, err := l.Append(recs...); err != nil {
					b.Fatal(err)
				}
				if c.wait {
					l.Sync(func(err error) { done <- err })
					if err := <-done; err != nil {
						b.Fatal(err)
					}
				} else {
					l.Sync(func(err error) {
						if err != nil {
							failed = err
						}
					})
				}
			}
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if failed != nil {
				b.Fatal(failed)
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(l.Size())/float64(b.N*batch*size), "disk-B/B")
		})
	}
}
