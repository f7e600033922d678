package main

import (
	"fmt"

	"github.com/alecthomas/kong"
	"github.com/docker/go-units"
)

// byteSize is a flag's number of bytes, given plainly (1048576) or with a
// unit (1M, 1MiB, 1mb, 1.5G). The parsing is docker/go-units' RAMInBytes:
// K, M, G, T and P, with or without i and B, in any case, are all powers of
// 1024, as a memory limit is read (free(1), systemd's MemoryMax=). Other
// libraries read M as 10^6 (go-humanize) or refuse a bare M (alecthomas/units).
type byteSize int

// Sizes are limits: 0 would leave no room, and beyond maxSize the broker's
// sums of sizes could overflow.
const (
	minSize = 1
	maxSize = 1 << 50 // 1 PiB
)

// sizeHelp explains SIZE where flags take one (see the "limits" group).
const sizeHelp = "A SIZE is a number of bytes, or a number with a unit K, M, G or T: " +
	"all are powers of 1024, so 512M is 512 MiB. The unit may be followed by i and B, " +
	"in any case: 64K, 64KiB and 64kb are all 65536."

// Decode reads a size from the command line, or from a default tag.
func (s *byteSize) Decode(ctx *kong.DecodeContext) error {
	t, err := ctx.Scan.PopValue("size")
	if err != nil {
		return err
	}
	text := fmt.Sprint(t.Value)
	n, err := units.RAMInBytes(text)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a size: give bytes, or a number with K, M, G or T (64K, 16MiB)", text)
	case n < minSize || n > maxSize:
		// A float past int64 converts to a negative or saturated number: out
		// of range either way.
		return fmt.Errorf("size %q is out of range: give 1 byte to 1PiB", text)
	}
	*s = byteSize(n)
	return nil
}
