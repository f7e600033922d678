package main

import (
	_ "embed"
	"fmt"
	"strings"
	"text/template"

	"github.com/alecthomas/kong"
)

// manTemplate is zpipes(1): the prose (description, environment, examples,
// see also) as it is, and the rest drawn from the kong model and from
// exitStatuses through the functions in manFuncs.
//
//go:embed man/zpipes.1.tmpl
var manTemplate string

// manPage renders zpipes(1). The page carries no date or version, so the
// same CLI always gives the same bytes and a test can check that
// man/zpipes.1 is current.
func manPage(app *kong.Application) []byte {
	t := template.Must(template.New("zpipes.1").Funcs(manFuncs).Parse(manTemplate))
	var envs []manEnv
	for _, group := range app.AllFlags(true) {
		for _, f := range group {
			for _, env := range f.Envs {
				envs = append(envs, manEnv{env, f})
			}
		}
	}
	var b strings.Builder
	err := t.Execute(&b, struct {
		*kong.Application
		Commands     []*kong.Node
		Envs         []manEnv
		ExitStatuses []exitStatus
	}{app, commands(app.Node), envs, exitStatuses})
	if err != nil {
		panic(err) // the template does not fit the model: a bug
	}
	return []byte(b.String())
}

// manEnv is an environment variable that sets a flag.
type manEnv struct {
	Name string
	Flag *kong.Flag
}

var manFuncs = template.FuncMap{
	"upper":    strings.ToUpper,
	"escape":   escape,
	"text":     text,
	"doc":      doc,
	"synopsis": synopsis,
	"flags":    flags,
	"argName":  argName,
	"flagHelp": flagHelp,
}

// commands lists the visible commands, in the order the CLI declares them.
// zpipes has no nested commands.
func commands(node *kong.Node) []*kong.Node {
	var out []*kong.Node
	for _, c := range node.Children {
		if !c.Hidden {
			out = append(out, c)
		}
	}
	return out
}

// synopsis is a command's usage line: its name, [flags] if it has visible
// ones, then its arguments. No flag is required (TestManPageHasNoRequiredFlags):
// commands that need one of several say so in their Validate.
func synopsis(cmd *kong.Node) string {
	words := []string{`\fB` + escape(cmd.Path()) + `\fR`}
	for _, f := range cmd.Flags {
		if !f.Hidden {
			words = append(words, `[\fIflags\fR]`)
			break
		}
	}
	for _, arg := range cmd.Positional {
		w := `\fI` + escape(argName(arg)) + `\fR`
		if !arg.Required {
			w = "[" + w + "]"
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}

func argName(arg *kong.Positional) string {
	name := strings.ToUpper(arg.Name)
	if arg.IsCumulative() {
		name += "..."
	}
	return name
}

// flags documents each visible flag as a tagged paragraph: its spellings,
// then flagHelp, as --help shows it. Grouped flags come after the others,
// under their group's title and description, as in --help.
func flags(list []*kong.Flag) string {
	var b strings.Builder
	var groups []*kong.Group
	grouped := map[string][]*kong.Flag{}
	for _, f := range list {
		switch {
		case f.Hidden:
		case f.Group == nil:
			b.WriteString(flagEntry(f))
		default:
			if grouped[f.Group.Key] == nil {
				groups = append(groups, f.Group)
			}
			grouped[f.Group.Key] = append(grouped[f.Group.Key], f)
		}
	}
	for _, g := range groups {
		fmt.Fprintf(&b, ".PP\n\\fB%s\\fR\n%s\n", escape(g.Title), text(g.Description))
		for _, f := range grouped[g.Key] {
			b.WriteString(flagEntry(f))
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func flagEntry(f *kong.Flag) string {
	term := `\fB\-\-` + escape(f.Name) + `\fR`
	if !f.IsBool() && !f.IsCounter() {
		term += `=\fI` + escape(f.FormatPlaceHolder()) + `\fR`
	}
	if f.Short != 0 {
		term = `\fB\-` + escape(string(f.Short)) + `\fR, ` + term
	}
	return ".TP\n" + term + "\n" + text(flagHelp(f.Value)) + "\n"
}

// text is prose as one filled paragraph, escaped.
func text(s string) string { return escape(strings.Join(strings.Fields(s), " ")) }

// doc formats text as go/doc formats a doc comment, which is what kong's
// HelpProvider promises: paragraphs split by blank lines, and indented
// paragraphs kept as they are.
func doc(s string) string {
	var paras []string
	for _, para := range strings.Split(strings.TrimSpace(s), "\n\n") {
		lines := strings.Split(para, "\n")
		indented := true
		for _, l := range lines {
			indented = indented && (strings.HasPrefix(l, "\t") || strings.HasPrefix(l, " "))
		}
		if !indented {
			paras = append(paras, text(para))
			continue
		}
		for i, l := range lines {
			lines[i] = escape(strings.TrimPrefix(strings.TrimPrefix(l, "\t"), "    "))
		}
		paras = append(paras, ".RS 4\n.nf\n"+strings.Join(lines, "\n")+"\n.fi\n.RE")
	}
	return strings.Join(paras, "\n.PP\n")
}

// escape makes s safe as roff text: backslashes are printed, "-" is the
// ASCII hyphen-minus that options need (plain "-" may render as a hyphen),
// and a line cannot start a request.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}
