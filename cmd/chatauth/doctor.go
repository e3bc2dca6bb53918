package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/chatauth/chatauth"
)

const doctorHelp = `Usage: chatauth doctor

Checks the chatauth configuration in this shell's environment (the same
variables the functions read: CLIENT_SECRETS, REDIRECT_URL, PUBLIC_URL,
WEBHOOK_SECRETS, TOKEN_KEYSET, STORE, ...; README.md, "Configuration") and
prints each problem with its fix: the client JSON's type and redirect_uris,
the URLs, every secret reference, the token keyset (unwrapped by Cloud KMS
when TOKEN_KEYSET_KMS_KEY is set), the store, the Chat app's audience and
the delegation settings. It reads secrets with this shell's credentials
(gcloud auth application-default login) and never prints one.
Exit code 0 when nothing is wrong (warnings allowed), 1 when something is.
`

func (c *cli) doctor(args []string) int {
	fs, code, ok := c.subcommand("doctor", doctorHelp, args, func(*flag.FlagSet) {})
	if !ok {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError("doctor takes no arguments; it reads the environment")
	}
	findings := chatauth.Doctor(context.Background(), c.getenv)
	for _, f := range findings {
		fmt.Fprintln(c.stdout, f)
	}
	if chatauth.HasErrors(findings) {
		fmt.Fprintf(c.stdout, "%d problem(s) found.\n", len(findings))
		return exitRefused
	}
	if len(findings) == 0 {
		fmt.Fprintln(c.stdout, "No problems found.")
	}
	return exitOK
}
