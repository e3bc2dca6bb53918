// Command chatauth is the operator's client of a chatauth deployment, or
// of the local runner (README.md, "The chatauth CLI"):
//
//	chatauth -url URL -secret-file FILE users [-status needs_reauth] [-json]
//	chatauth -url URL -secret-file FILE create-space -user U -name N [...]
//	chatauth -url URL -id-token env:CHATAUTH_ID_TOKEN disconnect USER
//	chatauth -secret-file FILE sign < body.json
//	chatauth doctor
//
// Exit codes: 0 done; 1 the function answered an error (or doctor found
// one); 2 the command line is wrong; 3 no answer from the function, or one
// that is not chatauth's; 4 the user must consent (AUTHORIZATION_REQUIRED:
// the error names authorizeUrl).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/chatauth/chatauth"
)

// Exit codes, documented in the package comment and README.md.
const (
	exitOK       = 0
	exitRefused  = 1
	exitUsage    = 2
	exitNoAnswer = 3
	exitConsent  = 4
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// cli is one invocation: the global flags and where it writes.
type cli struct {
	url, secretFile, idToken string
	stdin                    io.Reader
	stdout, stderr           io.Writer
	getenv                   func(string) string
	http                     *http.Client
	now                      func() time.Time
}

const usage = `Usage: chatauth [-url URL] [-secret-file FILE | -id-token TOKEN] COMMAND [flags]

Commands:
  users         list the stored consents (a table; -json for one JSON object)
  create-space  create a Google Chat space as a user who consented
  disconnect    revoke a user's consent and delete it
  sign          print the X-Signature header value for a body read from stdin
  doctor        check a configuration (the function's environment variables)

Global flags:
  -url URL           the deployment's PUBLIC_URL, such as
                     https://REGION-PROJECT.cloudfunctions.net or http://localhost:8080
                     (default: $CHATAUTH_URL)
  -secret-file FILE  sign requests with the first secret of FILE, a file in
                     WEBHOOK_SECRETS' format (one secret per line)
                     (default: $CHATAUTH_SECRET_FILE)
  -id-token TOKEN    send a Google ID token instead; "env:NAME" reads it from the
                     environment variable NAME, for example
                       export CHATAUTH_ID_TOKEN=$(gcloud auth print-identity-token \
                         --impersonate-service-account=SA --audiences=URL --include-email)
                       chatauth -url URL -id-token env:CHATAUTH_ID_TOKEN users
                     (URL must be in ALLOWED_AUDIENCES; SA in TRUSTED_CALLERS to see everyone)

Run "chatauth COMMAND -h" for a command's flags.
Exit codes: 0 done; 1 the function answered an error, or doctor found one;
2 the command line is wrong; 3 no answer, or not chatauth's; 4 the user must
consent first (the error prints authorizeUrl).
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv,
		http: &http.Client{Timeout: 90 * time.Second}, now: time.Now}
	fs := flag.NewFlagSet("chatauth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	fs.StringVar(&c.url, "url", getenv("CHATAUTH_URL"), "")
	fs.StringVar(&c.secretFile, "secret-file", getenv("CHATAUTH_SECRET_FILE"), "")
	fs.StringVar(&c.idToken, "id-token", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "users":
		return c.users(rest)
	case "create-space":
		return c.createSpace(rest)
	case "disconnect":
		return c.disconnect(rest)
	case "sign":
		return c.sign(rest)
	case "doctor":
		return c.doctor(rest)
	case "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "chatauth: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// subcommand parses a command's flags; help is its -h text. It returns
// false with the exit code when the command should stop.
func (c *cli) subcommand(name, help string, args []string, setup func(*flag.FlagSet)) (*flag.FlagSet, int, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	setup(fs)
	fs.Usage = func() {
		fmt.Fprint(c.stderr, help)
		fmt.Fprintln(c.stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, exitOK, false
		}
		return nil, exitUsage, false
	}
	return fs, 0, true
}

func (c *cli) usageError(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "chatauth: "+format+"\n", args...)
	return exitUsage
}

// apiError is the function's JSON error envelope (README.md, "Errors").
type apiError struct {
	Error struct {
		Code         int    `json:"code"`
		Status       string `json:"status"`
		Message      string `json:"message"`
		AuthorizeURL string `json:"authorizeUrl"`
	} `json:"error"`
}

// call posts body to the function name, signed, and returns the answer's
// body when it is a success; otherwise it prints the problem and returns
// the exit code.
func (c *cli) call(name string, body any) ([]byte, int) {
	if c.url == "" {
		return nil, c.usageError("-url is required (the deployment's PUBLIC_URL, or http://localhost:8080 for the local runner)")
	}
	u, err := url.Parse(strings.TrimRight(c.url, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, c.usageError("-url must be an http(s) URL such as https://REGION-PROJECT.cloudfunctions.net")
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, c.usageError("encode the request: %v", err)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u.String()+"/"+name, bytes.NewReader(payload))
	if err != nil {
		return nil, c.usageError("%v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if code := c.authorize(req, payload); code != 0 {
		return nil, code
	}
	resp, err := c.http.Do(req)
	if err != nil {
		fmt.Fprintf(c.stderr, "chatauth: no answer from %s: %v\n", req.URL.Redacted(), errors.Unwrap(err))
		return nil, exitNoAnswer
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		fmt.Fprintf(c.stderr, "chatauth: reading the answer of %s: %v\n", req.URL.Redacted(), err)
		return nil, exitNoAnswer
	}
	if resp.StatusCode/100 == 2 {
		return answer, 0
	}
	var e apiError
	if json.Unmarshal(answer, &e) != nil || e.Error.Status == "" {
		fmt.Fprintf(c.stderr, "chatauth: %s answered HTTP %d, not a chatauth error; is -url the deployment's PUBLIC_URL?\n", req.URL.Redacted(), resp.StatusCode)
		return nil, exitNoAnswer
	}
	fmt.Fprintf(c.stderr, "chatauth: %s (%d): %s\n", e.Error.Status, e.Error.Code, e.Error.Message)
	if e.Error.AuthorizeURL != "" {
		fmt.Fprintf(c.stderr, "  The user can connect Google Chat at: %s\n", e.Error.AuthorizeURL)
	}
	if retry := resp.Header.Get("Retry-After"); retry != "" {
		fmt.Fprintf(c.stderr, "  Try again in %s seconds.\n", retry)
	}
	if e.Error.Status == "AUTHORIZATION_REQUIRED" {
		return nil, exitConsent
	}
	return nil, exitRefused
}

// authorize adds the caller's credential: an X-Signature from the secret
// file, or the ID token.
func (c *cli) authorize(req *http.Request, payload []byte) int {
	switch {
	case c.secretFile != "" && c.idToken != "":
		return c.usageError("give -secret-file or -id-token, not both")
	case c.secretFile != "":
		sig, code := c.signature(payload)
		if code != 0 {
			return code
		}
		req.Header.Set("X-Signature", sig)
	case c.idToken != "":
		tok := c.idToken
		if name, ok := strings.CutPrefix(tok, "env:"); ok {
			if tok = strings.TrimSpace(c.getenv(name)); tok == "" {
				return c.usageError("-id-token env:%s: the variable is empty or unset", name)
			}
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok))
	default:
		return c.usageError("give -secret-file FILE (HMAC) or -id-token TOKEN; see chatauth -h")
	}
	return 0
}

// signature signs payload with the secret file's first secret.
func (c *cli) signature(payload []byte) (string, int) {
	file, err := os.ReadFile(c.secretFile)
	if err != nil {
		return "", c.usageError("-secret-file: %v", err)
	}
	sig, err := chatauth.SignBody(file, payload, c.now())
	if err != nil {
		return "", c.usageError("-secret-file %s: %v", c.secretFile, err)
	}
	return sig, 0
}

// userRow is one entry of Users' answer.
type userRow struct {
	User        string   `json:"user"`
	Email       string   `json:"email"`
	Status      string   `json:"status"`
	Scopes      []string `json:"scopes"`
	ConnectedAt string   `json:"connectedAt"`
	RefreshedAt string   `json:"refreshedAt,omitempty"`
	LastUsedAt  string   `json:"lastUsedAt,omitempty"`
}

const usersHelp = `Usage: chatauth [global flags] users [-status connected|needs_reauth] [-user U] [-json]

Lists the stored consents, every page of them: who is connected, and whose
consent needs the user to connect again (needs_reauth). A caller with an
ID token that is not in TRUSTED_CALLERS sees only its own account.
`

func (c *cli) users(args []string) int {
	var status, user string
	var asJSON bool
	if _, code, ok := c.subcommand("users", usersHelp, args, func(fs *flag.FlagSet) {
		fs.StringVar(&status, "status", "", "only consents with this status: connected or needs_reauth")
		fs.StringVar(&user, "user", "", "only this user: users/{id} or an email address")
		fs.BoolVar(&asJSON, "json", false, `print one JSON object {"users":[…]} holding every page`)
	}); !ok {
		return code
	}
	all := []userRow{}
	token := ""
	for {
		req := map[string]any{"pageSize": 500}
		if status != "" {
			req["status"] = status
		}
		if user != "" {
			req["user"] = user
		}
		if token != "" {
			req["pageToken"] = token
		}
		body, code := c.call("Users", req)
		if code != 0 {
			return code
		}
		var page struct {
			Users         []userRow `json:"users"`
			NextPageToken string    `json:"nextPageToken"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			fmt.Fprintf(c.stderr, "chatauth: Users answered something that is not a listing: %v\n", err)
			return exitNoAnswer
		}
		all = append(all, page.Users...)
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if asJSON {
		return c.printJSON(map[string]any{"users": all})
	}
	if len(all) == 0 {
		fmt.Fprintln(c.stdout, "No consents stored.")
		return exitOK
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "USER\tEMAIL\tSTATUS\tCONNECTED\tREFRESHED")
	for _, u := range all {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", u.User, u.Email, u.Status, orDash(u.ConnectedAt), orDash(u.RefreshedAt))
	}
	w.Flush()
	return exitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) printJSON(v any) int {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(c.stderr, "chatauth: %v\n", err)
		return exitRefused
	}
	return exitOK
}

const createSpaceHelp = `Usage: chatauth [global flags] create-space -user U -name N [-type T] [-members a,b] [-description D] [-request-id R] [-json]

Creates a Google Chat space as U, a user who consented, and prints the
space's link (with -json, the whole Space). Members make it a
spaces.setup call; GROUP_CHAT and DIRECT_MESSAGE take no -name.
`

func (c *cli) createSpace(args []string) int {
	var user, name, typ, members, description, requestID string
	var asJSON bool
	fs, code, ok := c.subcommand("create-space", createSpaceHelp, args, func(fs *flag.FlagSet) {
		fs.StringVar(&user, "user", "", "whose consent to use: users/{id} or an email address (required)")
		fs.StringVar(&name, "name", "", "the space's display name (required for SPACE)")
		fs.StringVar(&typ, "type", "", "SPACE (default), GROUP_CHAT or DIRECT_MESSAGE")
		fs.StringVar(&members, "members", "", "comma-separated users/{id} or email addresses to add")
		fs.StringVar(&description, "description", "", "the space's description")
		fs.StringVar(&requestID, "request-id", "", "idempotency key: the same id creates the space once")
		fs.BoolVar(&asJSON, "json", false, "print the Space as JSON instead of its link")
	})
	if !ok {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError("create-space takes no arguments, only flags (got %q); see chatauth create-space -h", fs.Arg(0))
	}
	if user == "" {
		return c.usageError("create-space needs -user (users/{id} or an email address)")
	}
	req := map[string]any{"user": user}
	if name != "" {
		req["displayName"] = name
	}
	if typ != "" {
		req["spaceType"] = typ
	}
	if description != "" {
		req["description"] = description
	}
	if requestID != "" {
		req["requestId"] = requestID
	}
	if members != "" {
		var list []string
		for _, m := range strings.Split(members, ",") {
			if m = strings.TrimSpace(m); m != "" {
				list = append(list, m)
			}
		}
		req["members"] = list
	}
	body, code := c.call("CreateSpace", req)
	if code != 0 {
		return code
	}
	if asJSON {
		_, err := c.stdout.Write(append(bytes.TrimSpace(body), '\n'))
		if err != nil {
			return exitRefused
		}
		return exitOK
	}
	var space struct {
		Name     string `json:"name"`
		SpaceURI string `json:"spaceUri"`
	}
	if err := json.Unmarshal(body, &space); err != nil || space.Name == "" {
		fmt.Fprintln(c.stderr, "chatauth: CreateSpace answered something that is not a Space")
		return exitNoAnswer
	}
	if space.SpaceURI != "" {
		fmt.Fprintln(c.stdout, space.SpaceURI)
	} else {
		fmt.Fprintln(c.stdout, space.Name)
	}
	return exitOK
}

const disconnectHelp = `Usage: chatauth [global flags] disconnect USER

Revokes USER's consent at Google and deletes it. USER is users/{id} or an
email address; an email ends exactly the account it names now.
`

func (c *cli) disconnect(args []string) int {
	fs, code, ok := c.subcommand("disconnect", disconnectHelp, args, func(*flag.FlagSet) {})
	if !ok {
		return code
	}
	if fs.NArg() != 1 {
		return c.usageError("disconnect takes one USER (users/{id} or an email address); see chatauth disconnect -h")
	}
	body, code := c.call("Disconnect", map[string]string{"user": fs.Arg(0)})
	if code != 0 {
		return code
	}
	var d struct {
		User  string `json:"user"`
		Email string `json:"email"`
	}
	json.Unmarshal(body, &d)
	fmt.Fprintf(c.stdout, "Disconnected %s (%s).\n", d.User, d.Email)
	return exitOK
}

const signHelp = `Usage: chatauth -secret-file FILE sign < body.json

Prints the X-Signature header value for the body read from stdin, exactly
as read (mind the newline that echo adds; send the same bytes, for example
with curl --data-binary @body.json). The signature is valid for 300 seconds
either side of now.
`

func (c *cli) sign(args []string) int {
	fs, code, ok := c.subcommand("sign", signHelp, args, func(*flag.FlagSet) {})
	if !ok {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError("sign reads the body from stdin and takes no arguments")
	}
	if c.secretFile == "" {
		return c.usageError("sign needs -secret-file FILE (before the command)")
	}
	body, err := io.ReadAll(io.LimitReader(c.stdin, 1<<20))
	if err != nil {
		return c.usageError("read stdin: %v", err)
	}
	sig, code := c.signature(body)
	if code != 0 {
		return code
	}
	fmt.Fprintln(c.stdout, sig)
	return exitOK
}
