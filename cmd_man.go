package main

import (
	"fmt"
	"os"

	"github.com/alecthomas/kong"
)

//go:generate go run . man -o man/zpipes.1

// ManCmd prints zpipes(1), generated from the CLI definition. It is hidden:
// go generate writes the page to man/, and TestManPageCurrent fails when
// the committed page no longer matches the CLI.
type ManCmd struct {
	Output string `short:"o" placeholder:"FILE" help:"Write the page to FILE instead of standard output."`
}

func (m *ManCmd) Run(a *app, kctx *kong.Context) error {
	page := manPage(kctx.Model)
	if m.Output == "" {
		return writeAll(a.stdout, page)
	}
	if err := os.WriteFile(m.Output, page, 0o644); err != nil {
		return fmt.Errorf("man: %w", err)
	}
	return nil
}
