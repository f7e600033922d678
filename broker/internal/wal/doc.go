// Package wal is the broker's durable store underneath `zpipes serve
// --store DIR`: an append-only log of checksummed records in segment files,
// with group commit and recovery of a torn tail.
//
// The broker's core goroutine is the log's only writer. It Appends records
// (they are copied into a buffer, no system call) and asks for a Sync; the
// log's own goroutine, the syncer, writes the buffer in large chunks,
// fdatasyncs, and then calls the Sync callbacks in the order they were
// requested. The broker replies to a client only from such a callback, so
// nothing is acknowledged before it is on disk. Every Sync requested while
// an fsync runs is covered by the one after it (group commit): the number
// of fsyncs follows the disk's speed, not the number of writers. With
// Options.SyncEvery the syncer fsyncs at most that often instead, trading a
// bounded window of loss for fewer flushes. A failed write or fsync fails
// the log for good, since nothing then says which buffered bytes are stored.
//
// The log does not know which records are live. At start the broker
// Replays every record to rebuild its state; from time to time it Rolls to
// a new segment, writes its whole live state there as a checkpoint, and once
// that is durable calls DropBefore to delete every older segment file, as
// Redis rewrites its AOF. Space is reclaimed only by deleting whole files.
//
// Records can also be read back while the log is written (ReadRange, by
// the positions Append returned), checksums checked: the broker keeps a
// long queue in the log only and reads it back as its reader reaches it. A
// record still in the appender's buffer is written out first. Segments
// after the one a checkpoint starts in can be kept by dropping less
// (DropBefore takes any durable position), so a checkpoint may refer to
// records in them instead of copying them.
//
// A directory holds LOCK (an flock, so one process at a time uses it;
// released by the kernel however the holder dies), VERSION, and segments
// named %016x.wal. Open checks every record's checksum; at the first torn
// or corrupt one it keeps what comes before, cuts the rest and says what it
// dropped (Recovered). The format is described in segment.go.
//
// # Why not an embedded database
//
// pebble, bbolt and badger all resolve here, and each would cost more than
// these few hundred lines for what a queue does. A queue's data is appended
// and deleted soon after, in the same order. This log writes each byte once,
// reads it back from the page cache at start, and frees space by deleting
// whole files. An LSM tree (pebble, badger) writes each byte to its WAL and
// again on every flush and compaction, and frees space only when a
// compaction reaches the tombstones; bbolt's file never shrinks and every
// commit rewrites B-tree pages. Group commit and torn-tail recovery, which
// the engines would give, are the small part of this package.
//
// Measured on the 2-core development machine (ext4 on a virtual disk whose
// speed varies from run to run; go test -bench AppendSync -count 3, batches
// of 8192 records of 64 bytes, a Sync per batch): 4.9–5.6 million records/s
// (310–356 MB/s of payload) waiting for each fsync before the next batch,
// 5.2–10.4 million pipelined, 4.6–6.1 million with SyncEvery=1s; 1.125
// bytes on disk per payload byte (an 8-byte header per record). With
// batches of 16 records and a Sync each, group commit holds 7.3–7.8 million
// records/s pipelined, where waiting for each fsync gives 50,000–150,000.
//
// Against pebble v1.1.5 with default options, in the same run on the same
// disk (a throwaway program, not kept: 512 batches of 8192 random 64-byte
// records, one synced commit per batch; as a queue, a reader consuming the
// oldest batch — for pebble read and deleted with one range tombstone, its
// cheapest delete — and this log checkpointed and dropped whenever it grew
// past twice the live bytes plus 64 MiB, the broker's store's policy;
// bytes written from /proc/self/io, two rounds):
//
//	                        records/s           written/payload  on disk at end
//	append only    wal      5.0–5.4 million     1.13             302 MB
//	               pebble   0.45–0.65 million   2.41             327 MB
//	4 MiB queued   wal      3.7–5.5 million     1.20             19 MB
//	               pebble   0.23–0.42 million   4.56–4.88        10 MB
//	64 MiB queued  wal      2.7–4.7 million     1.41             176 MB
//	               pebble   0.38–0.56 million   3.84–3.96        262–280 MB
//
// pebble keeps less on disk when little is queued (it compacts tombstones
// away, where that policy lets this log grow to 64 MiB past twice the live
// bytes), but it writes each byte 2.4–4.9 times and, round by round,
// takes 7–24 times longer per record, on a machine where the broker must
// append ~10^6 records/s.
package wal
