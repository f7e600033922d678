package main

import (
	"fmt"
	"reflect"

	"github.com/alecthomas/kong"
)

// What zpipes adds to kong: exact string arguments, and help that gives
// every default.

// exactString decodes a string argument byte for byte. Kong's own decoder
// goes through JSON, which turns bytes that are not UTF-8 into U+FFFD; a
// pipe name or a chunk is any bytes.
func exactString(ctx *kong.DecodeContext, target reflect.Value) error {
	t, err := ctx.Scan.PopValue("string")
	if err != nil {
		return err
	}
	target.SetString(fmt.Sprint(t.Value))
	return nil
}
