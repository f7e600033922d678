package main

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/alecthomas/kong"
)

// What zpipes adds to kong: exact string arguments, and help that gives
// every default.

// flagHelp is what --help and zpipes(1) say of a flag or argument: its help,
// then its default and its environment variable. Kong would leave the
// default out unless every help string spelled ${default}.
func flagHelp(v *kong.Value) string {
	help := v.Help
	if v.HasDefault && v.Default != "" && !v.IsBool() {
		help += " Default: " + v.Default + "."
	}
	if len(v.Tag.Envs) > 0 {
		help += " Environment: " + strings.Join(v.Tag.Envs, ", ") + "."
	}
	return help
}

// flagGroups titles the groups of flags that share an explanation, in
// --help and in zpipes(1).
var flagGroups = []kong.Group{
	{Key: "limits", Title: "Limits:", Description: sizeHelp},
	{Key: "nats", Title: "NATS JetStream (with --store nats://...):"},
}

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
