//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// flowCookiePrefix begins the name of the cookie OAuthStart sets for each
// consent flow (README, "How it works").
const flowCookiePrefix = "__Host-chatauth_flow_"

// configVars are the variables chatauth and this runner read. The programs
// under test get none of them from the test's environment, so that they run
// on their defaults as `go run ./cmd/local -demo` does on a fresh machine.
var configVars = []string{
	"GOOGLE_CLOUD_PROJECT", "CLIENT_SECRETS", "WEBHOOK_SECRETS", "REDIRECT_URL", "PUBLIC_URL",
	"ALLOWED_AUDIENCES", "TRUSTED_CALLERS", "STORE", "DATA_DIR", "FIRESTORE_DATABASE",
	"FIRESTORE_EMULATOR_HOST", "CHAT_API_ENDPOINT", "OAUTH_REVOKE_URL", "PORT",
	"FUNCTION_TARGET", "K_SERVICE", "TOKEN_KEYSET", "TOKEN_KEYSET_KMS_KEY", "DELEGATION_KEY",
	"GOOGLE_CERTS_URL", "CHAT_CERTS_URL", "CHAT_AUDIENCE_TYPE", "CHAT_AUDIENCE", "CHAT_PROJECT_NUMBER",
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// goTool is the go command on PATH, the one that runs these tests.
func goTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed on PATH to build ./cmd/local: %v", err)
	}
	return p
}

// buildLocal builds this command, as `go run -tags TAGS ./cmd/local`
// does; tags may be empty.
func buildLocal(t *testing.T, tags string) string {
	t.Helper()
	return build(t, ".", tags, "chatauth-local")
}

// builds holds the binaries this test binary has built, by package and
// tags: each is built once, by the first test that needs it, and shared
// by the tests that run it (each in a process and data directory of its
// own).
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*builtBinary
}

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// build returns the binary of the package at pkg built with tags, named
// name, building it on first use.
func build(t *testing.T, pkg, tags, name string) string {
	t.Helper()
	key := pkg + " " + tags
	builds.mu.Lock()
	if builds.bins == nil {
		builds.bins = map[string]*builtBinary{}
	}
	b := builds.bins[key]
	if b == nil {
		b = &builtBinary{path: filepath.Join(builds.dir, fmt.Sprint(len(builds.bins)), name)}
		builds.bins[key] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := os.MkdirAll(filepath.Dir(b.path), 0o755); err != nil {
			b.err = err
			return
		}
		// go run keeps the executable it builds in the build cache, where
		// go build would link it again on every run of the tests; -exec cp
		// copies it out instead of running it.
		out, err := exec.CommandContext(ctx, goTool(t), "run", "-exec", "cp", "-tags", tags, pkg, b.path).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go run -exec cp -tags %q %s: %v\n%s", tags, pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatauth-local-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builds.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// childEnv is the test's environment without chatauth's variables, plus
// extra.
func childEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(configVars, name)
	})
	return append(env, extra...)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// command prepares bin in its own process group, so the whole group can be
// killed, and collects its output.
func command(bin string, args ...string) (cmd *exec.Cmd, stdout, stderr *syncBuffer) {
	cmd = exec.Command(bin, args...)
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, stdout, stderr
}

// TestDemo runs the README's first command, `go run ./cmd/local -demo`, and
// goes through the consent flow over HTTP as a browser would: OAuthStart,
// the fake Google's consent page, Allow, and back to OAuthCallback.
func TestDemo(t *testing.T) {
	t.Parallel()
	testDemo(t, "")
}

// TestDemoLocalOnly: the demo works as well built with -tags localonly,
// without Google's gRPC clients.
func TestDemoLocalOnly(t *testing.T) {
	t.Parallel()
	testDemo(t, "localonly")
}

func testDemo(t *testing.T, tags string) {
	bin := buildLocal(t, tags)
	port := freePort(t)
	dataDir := t.TempDir()
	cmd, stdout, stderr := command(bin, "-demo")
	cmd.Dir = t.TempDir()
	cmd.Env = childEnv("PORT="+port, "DATA_DIR="+dataDir)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s -demo: %v", bin, err)
	}
	exited, exitErr := waitInBackground(cmd)
	t.Cleanup(func() {
		// The negative pid is the process group Setpgid made.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Errorf("kill the process group: %v", err)
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Error("the demo did not exit after SIGKILL")
		}
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
	})

	base := "http://localhost:" + port
	waitListening(t, "127.0.0.1:"+port, exited, exitErr, stderr)
	// The banner is printed before the port opens; the copy from the pipe
	// may still be on its way.
	waitFor(t, func() bool { return strings.Contains(stdout.String(), base+"/OAuthStart") },
		"the demo to print %s/OAuthStart", base)

	c := &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}

	// OAuthStart: a redirect to the fake Google, and the state cookie. It is
	// kept by hand: net/http/cookiejar withholds Secure cookies from
	// http:// URLs, which browsers send to localhost.
	resp, body := do(t, c, http.MethodGet, base+"/OAuthStart", nil, nil)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("OAuthStart: got %d, want 302; body: %s", resp.StatusCode, body)
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if strings.HasPrefix(ck.Name, flowCookiePrefix) {
			cookie = ck
		}
	}
	if cookie == nil || cookie.Value == "" {
		t.Fatalf("OAuthStart set no %s… cookie", flowCookiePrefix)
	}
	consentURL, err := resp.Location()
	if err != nil {
		t.Fatalf("OAuthStart's Location: %v", err)
	}

	// The fake Google's consent page, submitted as the Allow button would.
	resp, body = do(t, c, http.MethodGet, consentURL.String(), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("consent page %s: got %d, want 200; body: %s", consentURL, resp.StatusCode, body)
	}
	action, form := consentForm(t, consentURL, body, "allow")
	resp, body = do(t, c, http.MethodPost, action.String(), form, nil)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("Allow: got %d, want 302; body: %s", resp.StatusCode, body)
	}
	callback, err := resp.Location()
	if err != nil {
		t.Fatalf("Allow's Location: %v", err)
	}
	if !strings.HasPrefix(callback.String(), base+"/OAuthCallback?") {
		t.Fatalf("the fake Google sent the browser to %s, want %s/OAuthCallback", callback, base)
	}

	resp, body = do(t, c, http.MethodGet, callback.String(), nil, cookie)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Google Chat is connected") {
		t.Fatalf("OAuthCallback: got %d, want 200 with \"Google Chat is connected\"; body: %s", resp.StatusCode, body)
	}

	secretFile := filepath.Join(dataDir, "webhook_secret")
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatalf("the demo wrote no webhook secret: %v", err)
	}
	out := stdout.String()
	if !strings.Contains(out, secretFile) {
		t.Errorf("stdout does not name the webhook secret's file %s:\n%s", secretFile, out)
	}
	s := strings.TrimSpace(string(secret))
	if s == "" {
		t.Fatalf("the webhook secret file %s is empty", secretFile)
	}
	if strings.Contains(out, s) || strings.Contains(stderr.String(), s) {
		t.Error("the demo printed the webhook secret itself")
	}

	// Steps 5 and 6 of the printout, run as printed: a CreateSpace with an
	// ID token the fake Google signed, verified against the keys at
	// GOOGLE_CERTS_URL; and a Chat message with Google Chat's ID token,
	// verified against the same keys, which creates a space as the user.
	got := runPrinted(t, out, 5)
	if !strings.Contains(got, `"spaceUri"`) || !strings.Contains(got, `"Hello from an ID token"`) {
		t.Errorf("step 5 as printed: got %s; want the created Space", got)
	}
	got = runPrinted(t, out, 6)
	if !strings.Contains(got, "Created the space") || !strings.Contains(got, "Hello from Chat") {
		t.Errorf("step 6 as printed: got %s; want Chat's reply that the space was created", got)
	}
	// Step 7: the same, in the Workspace add-on format, signed by the
	// add-on's service agent, answered in the add-on envelope.
	got = runPrinted(t, out, 7)
	if !strings.Contains(got, `"createMessageAction"`) || !strings.Contains(got, "Created the space") || !strings.Contains(got, "Hello from an add-on") {
		t.Errorf("step 7 as printed: got %s; want the add-on's createMessageAction saying the space was created", got)
	}
	if strings.Contains(out, "eyJ") || strings.Contains(stderr.String(), "eyJ") {
		t.Error("the demo printed a token")
	}

	// Step 4 of the printout, run as printed: it creates a space as the
	// user who just connected.
	if _, err := exec.LookPath("openssl"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("openssl is not installed; step 4 is not run")
	}
	got = runPrinted(t, out, 4)
	if !strings.Contains(got, `"spaceUri"`) || !strings.Contains(got, `"Hello from chatauth"`) {
		t.Errorf("step 4 as printed: got %s; want the created Space", got)
	}
}

// runPrinted runs the commands of step n of the runner's printout with
// bash, exactly as printed (the lines indented by 7 spaces), and returns
// what they wrote.
func runPrinted(t *testing.T, out string, n int) string {
	t.Helper()
	_, step, ok := strings.Cut(out, fmt.Sprintf("\n  %d. ", n))
	if !ok {
		t.Fatalf("the printout has no step %d:\n%s", n, out)
	}
	var script []string
	for _, line := range strings.Split(step, "\n")[1:] {
		if !strings.HasPrefix(line, "     ") {
			break // a blank line or the next step
		}
		if strings.HasPrefix(line, "       ") {
			script = append(script, strings.TrimSpace(line))
		}
	}
	if len(script) == 0 {
		t.Fatalf("step %d prints no command:\n%s", n, out)
	}
	got, err := exec.Command("bash", "-c", strings.Join(script, "\n")).CombinedOutput()
	if err != nil {
		t.Errorf("step %d as printed: %v\n%s", n, err, got)
	}
	return string(got)
}

// runToExit starts cmd, a runner that should stop by itself, and returns
// how it exited; a runner still serving after 30 s is killed and fails the
// test.
func runToExit(t *testing.T, cmd *exec.Cmd, stdout, stderr fmt.Stringer) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	exited, exitErr := waitInBackground(cmd)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		t.Fatalf("the runner kept running; stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	return exitErr()
}

// TestNoClientSecrets: without -demo and without client_secrets.json the
// runner stops at once, and says how to try it offline.
func TestNoClientSecrets(t *testing.T) {
	t.Parallel()
	bin := buildLocal(t, "")
	cmd, stdout, stderr := command(bin)
	cmd.Dir = t.TempDir() // no client_secrets.json here
	cmd.Env = childEnv("PORT="+freePort(t), "DATA_DIR="+t.TempDir())
	err := runToExit(t, cmd, stdout, stderr)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("got exit %v, want a non-zero exit status; stderr:\n%s", err, stderr)
	}
	if msg := stderr.String(); !strings.Contains(msg, "client_secrets.json") || !strings.Contains(msg, "-demo") {
		t.Errorf("the message does not name client_secrets.json and -demo:\n%s", msg)
	}
}

// TestLocalOnlyRefuses: the runner built with -tags nodemo,localonly, as
// cmd/coldstart measures it, stops before serving when asked for what
// needs a Google client it leaves out, and says which build to use.
func TestLocalOnlyRefuses(t *testing.T) {
	t.Parallel()
	bin := buildLocal(t, "nodemo,localonly")
	const fix = "build it without -tags localonly"
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"firestore", []string{"STORE=firestore", "GOOGLE_CLOUD_PROJECT=p"},
			"STORE=firestore needs the full build: this binary was built with -tags localonly, which leaves out the Firestore client; " + fix + ", or set STORE=local"},
		{"secret manager", []string{"CLIENT_SECRETS=projects/p/secrets/client/versions/1"},
			"CLIENT_SECRETS: the Secret Manager reference projects/p/secrets/client/versions/1 needs the full build: this binary was built with -tags localonly, which leaves out the Secret Manager client; " + fix},
		{"kms", []string{"TOKEN_KEYSET_KMS_KEY=gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k"},
			"TOKEN_KEYSET_KMS_KEY needs the full build: this binary was built with -tags localonly, which leaves out the Cloud KMS client; " + fix},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, stdout, stderr := command(bin)
			cmd.Dir = t.TempDir()
			cmd.Env = childEnv(append([]string{"PORT=" + freePort(t), "DATA_DIR=" + t.TempDir()}, tc.env...)...)
			var exit *exec.ExitError
			if err := runToExit(t, cmd, stdout, stderr); !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("got exit %v, want a non-zero exit status; stderr:\n%s", err, stderr)
			}
			if msg := stderr.String(); !strings.Contains(msg, tc.want) {
				t.Errorf("stderr:\n%s\nwant it to say:\n%s", msg, tc.want)
			}
			if out := stdout.String(); strings.Contains(out, "is serving on") {
				t.Errorf("the runner started serving:\n%s", out)
			}
		})
	}
}

// TestLocalOnlyLinks: built with -tags localonly the runner links none of
// the clients that only the Firestore setup needs, whose package
// initialisation a cold start would pay. The full build must link them,
// or the check would check nothing.
func TestLocalOnlyLinks(t *testing.T) {
	t.Parallel()
	left := []string{
		"cloud.google.com/go/firestore",
		"cloud.google.com/go/secretmanager",
		"cloud.google.com/go/kms",
		"github.com/tink-crypto/tink-go-gcpkms",
	}
	deps := func(tags string) []string {
		out, err := exec.CommandContext(t.Context(), goTool(t), "list", "-deps", "-tags", tags, ".").Output()
		if err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				t.Fatalf("go list -deps -tags %q: %v\n%s", tags, err, exit.Stderr)
			}
			t.Fatalf("go list -deps -tags %q: %v", tags, err)
		}
		return strings.Fields(string(out))
	}
	// linked returns the packages of deps that are root or under it.
	linked := func(deps []string, root string) []string {
		var out []string
		for _, p := range deps {
			if p == root || strings.HasPrefix(p, root+"/") {
				out = append(out, p)
			}
		}
		return out
	}
	for _, tags := range []string{"localonly", "nodemo,localonly"} {
		d := deps(tags)
		for _, root := range left {
			if got := linked(d, root); len(got) > 0 {
				t.Errorf("go list -deps -tags %s ./cmd/local: links %s", tags, strings.Join(got, ", "))
			}
		}
	}
	full := deps("nodemo")
	for _, root := range left {
		if len(linked(full, root)) == 0 {
			t.Errorf("go list -deps -tags nodemo ./cmd/local: does not link %s; is the name right?", root)
		}
	}
}

// waitInBackground waits for cmd in a goroutine. exited is closed when
// cmd has exited; exitErr then returns what cmd.Wait returned.
func waitInBackground(cmd *exec.Cmd) (exited <-chan struct{}, exitErr func() error) {
	done := make(chan struct{})
	var err error
	go func() {
		err = cmd.Wait()
		close(done)
	}()
	return done, func() error { <-done; return err }
}

// waitListening waits, at most 30 s, until addr accepts connections, and
// fails early if the program exits.
func waitListening(t *testing.T, addr string, exited <-chan struct{}, exitErr func() error, stderr *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("the demo exited before listening: %v\n%s", exitErr(), stderr)
		default:
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the demo did not listen on %s within 30 s", addr)
}

// waitFor polls cond for at most 30 s: a bound for a failure to show, not
// a speed a loaded machine must keep.
func waitFor(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for "+format, args...)
}

// do sends one request, a form when form is not nil, with cookie when not
// nil, and returns the response with its body read.
func do(t *testing.T, c *http.Client, method, u string, form url.Values, cookie *http.Cookie) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return resp, string(b)
}

// consentForm reads the consent page's form as a browser submits it when
// the button with id buttonID is pressed: hidden inputs, ticked
// checkboxes, the selected option of each select, and the button's own
// name and value. It returns the form's action, resolved against page.
func consentForm(t *testing.T, page *url.URL, body, buttonID string) (*url.URL, url.Values) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse the consent page: %v", err)
	}
	var formNode *html.Node
	for n := range doc.Descendants() {
		if n.Type == html.ElementNode && n.Data == "form" {
			formNode = n
			break
		}
	}
	if formNode == nil {
		t.Fatalf("the consent page has no form:\n%s", body)
	}
	if m := attr(formNode, "method"); !strings.EqualFold(m, "post") {
		t.Fatalf("the consent form's method is %q, want post", m)
	}
	action, err := page.Parse(attr(formNode, "action"))
	if err != nil {
		t.Fatalf("the consent form's action: %v", err)
	}

	form := url.Values{}
	pressed := false
	for n := range formNode.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		name := attr(n, "name")
		switch n.Data {
		case "input":
			switch attr(n, "type") {
			case "hidden":
				form.Add(name, attr(n, "value"))
			case "checkbox":
				if hasAttr(n, "checked") {
					form.Add(name, attr(n, "value"))
				}
			}
		case "select":
			var first, selected *html.Node
			for o := range n.Descendants() {
				if o.Type == html.ElementNode && o.Data == "option" {
					if first == nil {
						first = o
					}
					if selected == nil && hasAttr(o, "selected") {
						selected = o
					}
				}
			}
			if selected == nil {
				selected = first
			}
			if selected != nil {
				form.Add(name, attr(selected, "value"))
			}
		case "button":
			if attr(n, "id") == buttonID {
				form.Add(name, attr(n, "value"))
				pressed = true
			}
		}
	}
	if !pressed {
		t.Fatalf("the consent page has no button #%s:\n%s", buttonID, body)
	}
	return action, form
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasAttr(n *html.Node, key string) bool {
	return slices.ContainsFunc(n.Attr, func(a html.Attribute) bool { return a.Key == key })
}

// TestPastedSecretsNotEchoed: a secret pasted into a variable that holds a
// reference to it stops the runner before it serves, with a message
// naming the variable, and the runner prints the value nowhere — not in
// its error, not in its hints (the step-4 command reads a file by path) —
// also when the secret looks like a file name.
func TestPastedSecretsNotEchoed(t *testing.T) {
	t.Parallel()
	bin := buildLocal(t, "nodemo")
	const hexSecret = "9c3f1e0b7a6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b3a2918070f1e2d3c"
	clientJSON := `{"web":{"client_id":"x.apps.googleusercontent.com","client_secret":"GOCSPX-pasted-client-secret-4711","auth_uri":"https://accounts.google.com/o/oauth2/auth","token_uri":"https://oauth2.googleapis.com/token"}}`
	dir := t.TempDir()
	clientFile := filepath.Join(dir, "client_secrets.json")
	if err := os.WriteFile(clientFile, []byte(clientJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, variable, value, secret, want string
	}{
		{"client JSON", "CLIENT_SECRETS", clientJSON, "GOCSPX-pasted-client-secret-4711", "CLIENT_SECRETS: holds JSON"},
		{"client JSON in a file's place, looks like a path", "CLIENT_SECRETS", "GOCSPX-pasted-client-secret-4711", "GOCSPX-pasted-client-secret-4711", "CLIENT_SECRETS: no file at the path it holds"},
		{"two webhook secrets", "WEBHOOK_SECRETS", hexSecret + "\n" + hexSecret[:40], hexSecret, "WEBHOOK_SECRETS: holds several lines"},
		{"a webhook secret, looks like a file name", "WEBHOOK_SECRETS", hexSecret, hexSecret, "WEBHOOK_SECRETS: no file at the path it holds"},
		{"a keyset", "TOKEN_KEYSET", `{"primaryKeyId":1,"key":[{"keyData":{"value":"GiBpastedkeymaterial0123456789abcdef"}}]}`, "GiBpastedkeymaterial0123456789abcdef", "TOKEN_KEYSET: holds JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, stdout, stderr := command(bin)
			cmd.Dir = t.TempDir()
			env := []string{"PORT=" + freePort(t), "DATA_DIR=" + t.TempDir(), tc.variable + "=" + tc.value}
			if tc.variable != "CLIENT_SECRETS" {
				env = append(env, "CLIENT_SECRETS="+clientFile)
			}
			cmd.Env = childEnv(env...)
			var exit *exec.ExitError
			if err := runToExit(t, cmd, stdout, stderr); !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("got exit %v, want a non-zero exit status; stderr:\n%s", err, stderr)
			}
			if msg := stderr.String(); !strings.Contains(msg, tc.want) {
				t.Errorf("stderr:\n%s\nwant it to say %q", msg, tc.want)
			}
			for name, out := range map[string]string{"stdout": stdout.String(), "stderr": stderr.String()} {
				if strings.Contains(out, tc.secret) {
					t.Errorf("%s quotes the pasted secret:\n%s", name, out)
				}
			}
			if strings.Contains(stdout.String(), "is serving on") {
				t.Errorf("the runner started serving:\n%s", stdout)
			}
		})
	}
}

// TestSlowClientsDisconnected: the runner's server drops a client that
// stalls in its header, one that stalls in its body, and an idle
// keep-alive connection, with small injected bounds; a prompt request on
// the same server is answered. Nothing here measures time: each stalled
// connection must end (EOF or reset) before the test's own generous
// deadline, which only guards against hanging.
func TestSlowClientsDisconnected(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	srv := newHTTPServer(h, timeouts{readHeader: 200 * time.Millisecond, read: 400 * time.Millisecond, write: time.Second, idle: 200 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	// closedByServer waits until the server ends conn: a read that
	// returns EOF or an error other than the test's own deadline.
	closedByServer := func(t *testing.T, conn net.Conn) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 4096)
		for {
			_, err := conn.Read(buf)
			if err == nil {
				continue // an answer (e.g. 408) before the close
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the server kept the stalled connection open")
			}
			return
		}
	}
	dial := func(t *testing.T) net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	t.Run("partial header", func(t *testing.T) {
		conn := dial(t)
		io.WriteString(conn, "GET /OAuthStart HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
		closedByServer(t, conn)
	})
	t.Run("partial body", func(t *testing.T) {
		conn := dial(t)
		io.WriteString(conn, "POST /CreateSpace HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"user\":")
		closedByServer(t, conn)
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		conn := dial(t)
		io.WriteString(conn, "GET /OAuthStart HTTP/1.1\r\nHost: localhost\r\n\r\n")
		closedByServer(t, conn)
	})
	t.Run("prompt request answered", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/OAuthStart")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Errorf("got %d %q, want 200 ok", resp.StatusCode, b)
		}
	})
}

// TestServeTimeouts: the runner's bounds are all set, and leave room for
// the slowest legitimate answers: a CreateSpace that uses its whole 30 s
// Chat deadline and an OAuthCallback whose token exchange takes its 30 s.
func TestServeTimeouts(t *testing.T) {
	t.Parallel()
	const slowest = 30 * time.Second
	srv := newHTTPServer(http.NotFoundHandler(), serveTimeouts)
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
	if srv.WriteTimeout <= slowest {
		t.Errorf("WriteTimeout %v would cut an answer that takes the %v a CreateSpace or an OAuthCallback may take", srv.WriteTimeout, slowest)
	}
	if srv.ReadHeaderTimeout > srv.ReadTimeout {
		t.Errorf("ReadHeaderTimeout %v is longer than ReadTimeout %v", srv.ReadHeaderTimeout, srv.ReadTimeout)
	}
}
