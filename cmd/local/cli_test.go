//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatauth/chatauth"
)

// buildCLI builds cmd/chatauth.
func buildCLI(t *testing.T) string {
	t.Helper()
	return build(t, "../chatauth", "", "chatauth")
}

// startDemo runs the runner with -demo and returns its base URL, its data
// directory and its stdout.
func startDemo(t *testing.T, bin string, env ...string) (base, dataDir string, stdout *syncBuffer) {
	t.Helper()
	port := freePort(t)
	dataDir = t.TempDir()
	cmd, stdout, stderr := command(bin, "-demo")
	cmd.Dir = t.TempDir()
	cmd.Env = childEnv(append([]string{"PORT=" + port, "DATA_DIR=" + dataDir}, env...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s -demo: %v", bin, err)
	}
	exited, exitErr := waitInBackground(cmd)
	t.Cleanup(func() {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Errorf("kill the process group: %v", err)
		}
		<-exited
		if t.Failed() {
			t.Logf("runner stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
	})
	waitListening(t, "127.0.0.1:"+port, exited, exitErr, stderr)
	return "http://localhost:" + port, dataDir, stdout
}

// demoConsent goes through the demo's consent flow as a browser would,
// for the fake Google's default user.
func demoConsent(t *testing.T, base string) {
	t.Helper()
	c := &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
	resp, body := do(t, c, http.MethodGet, base+"/OAuthStart", nil, nil)
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if strings.HasPrefix(ck.Name, flowCookiePrefix) {
			cookie = ck
		}
	}
	consentURL, err := resp.Location()
	if resp.StatusCode != http.StatusFound || cookie == nil || err != nil {
		t.Fatalf("OAuthStart: got %d (cookie %v, %v): %s", resp.StatusCode, cookie != nil, err, body)
	}
	_, body = do(t, c, http.MethodGet, consentURL.String(), nil, nil)
	action, form := consentForm(t, consentURL, body, "allow")
	resp, _ = do(t, c, http.MethodPost, action.String(), form, nil)
	callback, err := resp.Location()
	if err != nil {
		t.Fatalf("Allow's Location: %v", err)
	}
	resp, body = do(t, c, http.MethodGet, callback.String(), nil, cookie)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("OAuthCallback: got %d: %s", resp.StatusCode, body)
	}
}

// cliRun runs the CLI with args and stdin, and returns its exit code,
// stdout and stderr.
func cliRun(t *testing.T, bin, stdin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = childEnv(env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	code := 0
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("run chatauth %q: %v", args, err)
	}
	return code, stdout.String(), stderr.String()
}

// TestCLI drives the chatauth CLI end to end against the local runner's
// demo: users, create-space, sign, an ID token, disconnect, the exit codes
// and the help texts.
func TestCLI(t *testing.T) {
	t.Parallel()
	runner, cli := buildLocal(t, ""), buildCLI(t)
	base, dataDir, out := startDemo(t, runner)
	demoConsent(t, base)
	secretFile := filepath.Join(dataDir, "webhook_secret")
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	hmac := []string{"-url", base, "-secret-file", secretFile}
	run := func(want int, args ...string) (string, string) {
		t.Helper()
		code, stdout, stderr := cliRun(t, cli, "", nil, args...)
		if code != want {
			t.Errorf("chatauth %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, want, stdout, stderr)
		}
		if s := strings.TrimSpace(string(secret)); strings.Contains(stdout+stderr, s) {
			t.Errorf("chatauth %q printed the webhook secret", args)
		}
		return stdout, stderr
	}

	stdout, _ := run(0, append(hmac, "users")...)
	if !regexp.MustCompile(`^USER +EMAIL +STATUS +CONNECTED +REFRESHED\nusers/\d+ +alice@example\.com +connected +20\d\d-\S+ +-\n$`).MatchString(stdout) {
		t.Errorf("users: got\n%s\nwant a table with alice connected", stdout)
	}
	stdout, _ = run(0, append(hmac, "users", "-json")...)
	var listing struct {
		Users []struct{ User, Email, Status string } `json:"users"`
	}
	if err := json.Unmarshal([]byte(stdout), &listing); err != nil || len(listing.Users) != 1 || listing.Users[0].Email != "alice@example.com" {
		t.Errorf("users -json: got %v %s, want one object listing alice", err, stdout)
	}
	if stdout, _ = run(0, append(hmac, "users", "-status", "needs_reauth")...); !strings.Contains(stdout, "No consents") {
		t.Errorf("users -status needs_reauth: got %q, want no consents", stdout)
	}
	run(1, append(hmac, "users", "-status", "active")...)

	stdout, _ = run(0, append(hmac, "create-space", "-user", "alice@example.com", "-name", "From the CLI", "-description", "made by chatauth create-space")...)
	if !strings.HasPrefix(stdout, "http") || strings.Count(stdout, "\n") != 1 {
		t.Errorf("create-space: got %q, want the space's link", stdout)
	}
	stdout, _ = run(0, append(hmac, "create-space", "-user", "alice@example.com", "-name", "As JSON", "-members", "users/123, bob@example.com", "-request-id", "cli-1", "-json")...)
	var space struct{ Name, DisplayName, SpaceURI string }
	if err := json.Unmarshal([]byte(stdout), &space); err != nil || space.DisplayName != "As JSON" || space.Name == "" {
		t.Errorf("create-space -json: got %v %s, want the Space", err, stdout)
	}
	_, stderr := run(4, append(hmac, "create-space", "-user", "bob@example.com", "-name", "Not yet")...)
	if !strings.Contains(stderr, "AUTHORIZATION_REQUIRED") || !strings.Contains(stderr, base+"/OAuthStart?login_hint=bob%40example.com") {
		t.Errorf("create-space for a user without consent: stderr %q; want the status and the authorizeUrl", stderr)
	}
	if _, stderr = run(1, append(hmac, "create-space", "-user", "alice@example.com", "-type", "GROUP_CHAT", "-name", "X")...); !strings.Contains(stderr, "INVALID_ARGUMENT (400)") {
		t.Errorf("create-space GROUP_CHAT with a name: stderr %q, want the product's 400", stderr)
	}

	// sign: the printed value is accepted for the same bytes.
	body := `{"status":"connected"}`
	code, sig, stderr := cliRun(t, cli, body, nil, "-secret-file", secretFile, "sign")
	if code != 0 || !regexp.MustCompile(`^t=\d+,v1=[0-9a-f]{64}\n$`).MatchString(sig) {
		t.Fatalf("sign: exit %d, %q %q", code, sig, stderr)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/Users", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Signature", strings.TrimSpace(sig))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("Users with sign's signature: %v %v, want 200", err, resp)
	}

	// An ID token of the demo's trusted caller, read from the environment.
	m := regexp.MustCompile(`fake Google serves on (http://\S+) `).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("the demo does not name its fake Google:\n%s", out)
	}
	tokReq := fmt.Sprintf(`{"audience":%q,"includeEmail":true}`, base)
	resp, err := http.Post(m[1]+"/v1/projects/-/serviceAccounts/"+demoCaller+":generateIdToken", "application/json", strings.NewReader(tokReq))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if json.Unmarshal(b, &tok) != nil || tok.Token == "" {
		t.Fatalf("generateIdToken: %s", b)
	}
	code, stdout, stderr = cliRun(t, cli, "", []string{"MY_TOKEN=" + tok.Token}, "-url", base, "-id-token", "env:MY_TOKEN", "users")
	if code != 0 || !strings.Contains(stdout, "alice@example.com") || strings.Contains(stdout+stderr, tok.Token) {
		t.Errorf("users with an ID token: exit %d\n%s%s", code, stdout, stderr)
	}
	run(2, "-url", base, "-id-token", "env:UNSET_TOKEN", "users")
	_, stderr = run(1, "-url", base, "-id-token", "not-a-token", "users")
	if !strings.Contains(stderr, "UNAUTHENTICATED") {
		t.Errorf("a bad ID token: stderr %q", stderr)
	}

	if stdout, _ = run(0, append(hmac, "disconnect", "alice@example.com")...); !strings.Contains(stdout, "Disconnected users/") {
		t.Errorf("disconnect: got %q", stdout)
	}
	if _, stderr = run(1, append(hmac, "disconnect", "alice@example.com")...); !strings.Contains(stderr, "NOT_FOUND") {
		t.Errorf("disconnect again: stderr %q, want NOT_FOUND", stderr)
	}
	if stdout, _ = run(0, append(hmac, "users")...); !strings.Contains(stdout, "No consents") {
		t.Errorf("users after disconnect: got %q", stdout)
	}

	// Usage, help and unreachable deployments.
	for _, args := range [][]string{
		{"users"},                    // no -url
		append(hmac, "frobnicate"),   // unknown command
		append(hmac, "create-space"), // no -user
		append(hmac, "disconnect"),   // no USER
		{"-url", base, "users"},      // no credential
		{"-url", "ftp://x", "-secret-file", secretFile, "users"},
		{"-url", base, "-secret-file", filepath.Join(dataDir, "missing"), "users"},
		{"-url", base, "-secret-file", secretFile, "-id-token", "x", "users"},
		{"sign"},
	} {
		run(2, args...)
	}
	for _, sub := range []string{"users", "create-space", "disconnect", "sign", "doctor"} {
		code, _, stderr := cliRun(t, cli, "", nil, sub, "-h")
		if code != 0 || !strings.Contains(stderr, "Usage: chatauth") || !strings.Contains(stderr, sub) {
			t.Errorf("%s -h: exit %d, %q; want its help", sub, code, stderr)
		}
	}
	run(3, "-url", "http://127.0.0.1:"+freePort(t), "-secret-file", secretFile, "users")
	if _, stderr = run(3, "-url", base+"/nothing-here", "-secret-file", secretFile, "users"); !strings.Contains(stderr, "not a chatauth error") {
		t.Errorf("a URL that is not chatauth's: stderr %q", stderr)
	}
}

// badClientJSON is a web client whose only redirect URI is not the
// runner's OAuthCallback.
const badClientJSON = `{"web":{"client_id":"id.apps.googleusercontent.com","client_secret":"GOCSPX-doctor-0123456789abcdef","auth_uri":"https://accounts.google.com/o/oauth2/auth","token_uri":"https://oauth2.googleapis.com/token","redirect_uris":["https://elsewhere.example/OAuthCallback"]}}`

// TestRunnerRefusesBadConfig: the runner runs doctor's checks before it
// serves; a redirect_uri_mismatch in waiting stops it, with the fix, and
// it never says it is serving nor binds the port.
func TestRunnerRefusesBadConfig(t *testing.T) {
	t.Parallel()
	bin := buildLocal(t, "")
	dir := t.TempDir()
	client := filepath.Join(dir, "client.json")
	if err := os.WriteFile(client, []byte(badClientJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd, stdout, stderr := command(bin)
	cmd.Dir = dir
	cmd.Env = childEnv("PORT="+port, "DATA_DIR="+filepath.Join(dir, "data"), "CLIENT_SECRETS="+client)
	var exit *exec.ExitError
	if err := runToExit(t, cmd, stdout, stderr); !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("got exit %v, want a non-zero exit status; stderr:\n%s", err, stderr)
	}
	msg := stderr.String()
	if !strings.Contains(msg, "redirect_uri_mismatch") || !strings.Contains(msg, "fix: add it to the OAuth client's Authorized redirect URIs") {
		t.Errorf("stderr:\n%s\nwant the finding and its fix", msg)
	}
	if strings.Contains(msg, "GOCSPX-doctor") || strings.Contains(stdout.String(), "GOCSPX-doctor") {
		t.Error("the runner printed the client secret")
	}
	if strings.Contains(stdout.String(), "is serving on") {
		t.Errorf("the runner said it is serving:\n%s", stdout)
	}
}

// TestCLIDoctor: chatauth doctor reads the environment, prints each
// finding with its fix and exits 1 on an error, 0 without.
func TestCLIDoctor(t *testing.T) {
	t.Parallel()
	cli := buildCLI(t)
	dir := t.TempDir()
	client := filepath.Join(dir, "client.json")
	if err := os.WriteFile(client, []byte(badClientJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	keyset := filepath.Join(dir, "keyset.json")
	webhook := filepath.Join(dir, "webhook")
	os.WriteFile(webhook, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	ks, err := chatauth.GenerateKeyset()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(keyset, ks, 0o600)
	env := []string{"CLIENT_SECRETS=" + client, "WEBHOOK_SECRETS=" + webhook, "TOKEN_KEYSET=" + keyset, "STORE=local",
		"DATA_DIR=" + filepath.Join(dir, "data"), "PUBLIC_URL=https://elsewhere.example", "REDIRECT_URL=https://elsewhere.example/OAuthCallback"}
	code, stdout, stderr := cliRun(t, cli, "", env, "doctor")
	if code != 0 || !strings.Contains(stdout, "No problems found.") {
		t.Errorf("doctor on a good configuration: exit %d\n%s%s", code, stdout, stderr)
	}
	env = append(env, "PUBLIC_URL=https://other.example", "REDIRECT_URL=https://other.example/OAuthCallback")
	code, stdout, stderr = cliRun(t, cli, "", env, "doctor")
	if code != 1 || !strings.Contains(stdout, "ERROR: REDIRECT_URL:") || !strings.Contains(stdout, "redirect_uri_mismatch") || !strings.Contains(stdout, "  fix: ") {
		t.Errorf("doctor on a mismatched redirect: exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, "GOCSPX-doctor") || strings.Contains(stdout+stderr, "0123456789abcdef0123") {
		t.Error("doctor printed a secret")
	}
}
