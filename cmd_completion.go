package main

import (
	"fmt"
)

// CompletionCmd prints a shell's completion script. The scripts only hook
// the shell up: the shell runs zpipes itself with $COMP_LINE set to the
// command line, and zpipes prints the words that may come next (see
// completeLine).
type CompletionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"Shell: bash, zsh or fish."`
}

var completionScripts = map[string]string{
	"bash": `# zpipes completion for bash. Load it with
#   source <(zpipes completion bash)
# in ~/.bashrc, or save it as ~/.local/share/bash-completion/completions/zpipes
complete -C zpipes zpipes
`,
	"zsh": `# zpipes completion for zsh. Load it with
#   source <(zpipes completion zsh)
# in ~/.zshrc, after compinit.
autoload -U +X bashcompinit && bashcompinit
complete -C zpipes zpipes
`,
	"fish": `# zpipes completion for fish. Load it with
#   zpipes completion fish | source
# or save it as ~/.config/fish/completions/zpipes.fish
function __zpipes_complete
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    command zpipes
end
complete -c zpipes -f -a '(__zpipes_complete)'
`,
}

// Help is the detail under the summary in --help and zpipes(1).
func (c *CompletionCmd) Help() string {
	return `Commands and flags complete, and so do PIPE arguments, from the pipes of the
broker the command line names (with -e, $ZPIPES_ENDPOINT or the default); with
no broker there, they complete to nothing. Load the script in the shell's
start-up file:

	source <(zpipes completion bash)    # ~/.bashrc
	source <(zpipes completion zsh)     # ~/.zshrc, after compinit
	zpipes completion fish | source     # ~/.config/fish/config.fish`
}

func (c *CompletionCmd) Run(a *app) error {
	script, ok := completionScripts[c.Shell]
	if !ok {
		return fmt.Errorf("completion: no script for %q", c.Shell) // kong's enum keeps this out
	}
	return writeAll(a.stdout, []byte(script))
}
