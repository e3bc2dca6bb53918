package chatauth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// The examples under examples/ are checked against the real function: the
// HMAC the Apps Script computes (its JavaScript ported literally, and run
// under node where node is installed) and the curl/openssl script verify
// against CreateSpace served by the Functions Framework.

const (
	appsScriptPath   = "examples/apps-script/Code.gs"
	appsManifestPath = "examples/apps-script/appsscript.json"
	curlExamplePath  = "examples/curl/create-space.sh"
	// appsScriptAudience stands for the "aud" of an Apps Script identity
	// token: the OAuth client ID of the script's Cloud project.
	appsScriptAudience = "1234567890-appsscriptclient0123456789abcdef.apps.googleusercontent.com"
)

func readExample(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustContain fails unless the example holds each line of JavaScript that
// a Go port below reproduces, so that the port and the script cannot drift
// apart unnoticed.
func mustContain(t *testing.T, path, text string, snippets ...string) {
	t.Helper()
	for _, s := range snippets {
		if !strings.Contains(text, s) {
			t.Errorf("%s no longer contains %q; update the Go port in examples_test.go with it", path, s)
		}
	}
}

// appsScriptToHex is Code.gs's toHex, ported literally: b is a signed byte
// as computeHmacSha256Signature returns it, (b & 0xff) is JavaScript's
// bitwise AND on its 32-bit two's complement, and ('0' + x).slice(-2)
// keeps the last two characters.
func appsScriptToHex(bytes []int8) string {
	parts := make([]string, len(bytes))
	for i, b := range bytes {
		s := "0" + strconv.FormatInt(int64(int32(b)&0xff), 16)
		parts[i] = s[len(s)-2:]
	}
	return strings.Join(parts, "")
}

// asSigned is what Apps Script hands the script: Java's signed bytes.
func asSigned(b []byte) []int8 {
	out := make([]int8, len(b))
	for i, x := range b {
		out[i] = int8(x)
	}
	return out
}

// jsStringify is JSON.stringify of a flat object of strings, keys in the
// order given: no HTML escaping, non-ASCII left as is.
func jsStringify(kv ...string) string {
	quote := func(s string) []byte {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(quote(kv[i]))
		buf.WriteByte(':')
		buf.Write(quote(kv[i+1]))
	}
	buf.WriteByte('}')
	return buf.String()
}

// appsScriptASCIIJSON is Code.gs's asciiJson after JSON.stringify, ported
// literally: every UTF-16 code unit from U+007F up (a surrogate pair is two
// units, so two escapes) becomes \u and four lowercase hex digits.
func appsScriptASCIIJSON(stringified string) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(stringified)) {
		if u >= 0x7f {
			s := "0000" + strconv.FormatInt(int64(u), 16)
			b.WriteString(`\u` + s[len(s)-4:])
		} else {
			b.WriteRune(rune(u))
		}
	}
	return b.String()
}

// appsScriptRequestID is Code.gs's requestIdFor, ported literally: the
// regular expression has no u flag, so it replaces each UTF-16 code unit
// outside the set (both halves of a surrogate pair), and slice counts
// code units too.
func appsScriptRequestID(responseID string) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(responseID)) {
		if u < 0x80 && (u >= 'A' && u <= 'Z' || u >= 'a' && u <= 'z' || u >= '0' && u <= '9' || strings.ContainsRune("._:~-", rune(u))) {
			b.WriteRune(rune(u))
		} else {
			b.WriteByte('-')
		}
	}
	s := b.String() // ASCII: one byte per code unit
	return s[:min(len(s), 128)]
}

// appsScriptSignature is Code.gs's signature, with the HMAC that
// Utilities.computeHmacSha256Signature computes over the UTF-8 bytes.
func appsScriptSignature(secret, t, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t + "." + body))
	return "t=" + t + ",v1=" + appsScriptToHex(asSigned(m.Sum(nil)))
}

func TestAppsScriptManifest(t *testing.T) {
	t.Parallel()
	var m struct {
		RuntimeVersion string   `json:"runtimeVersion"`
		OAuthScopes    []string `json:"oauthScopes"`
		TimeZone       string   `json:"timeZone"`
	}
	if err := json.Unmarshal([]byte(readExample(t, appsManifestPath)), &m); err != nil {
		t.Fatalf("%s: %v", appsManifestPath, err)
	}
	if m.RuntimeVersion != "V8" {
		t.Errorf("runtimeVersion: got %q, want V8", m.RuntimeVersion)
	}
	for scope, why := range map[string]string{
		"openid": "ScriptApp.getIdentityToken()",
		"https://www.googleapis.com/auth/userinfo.email":          "the email claim of the ID token, Session.getEffectiveUser().getEmail()",
		"https://www.googleapis.com/auth/script.external_request": "UrlFetchApp",
		"https://www.googleapis.com/auth/script.scriptapp":        "installing the trigger",
		"https://www.googleapis.com/auth/forms.currentonly":       "the form and its responses",
	} {
		if !slices.Contains(m.OAuthScopes, scope) {
			t.Errorf("oauthScopes lacks %s, needed for %s", scope, why)
		}
	}
}

// TestAppsScriptHex shows why toHex masks and pads, on every byte value.
func TestAppsScriptHex(t *testing.T) {
	t.Parallel()
	mustContain(t, appsScriptPath, readExample(t, appsScriptPath),
		`return bytes.map(function (b) { return ('0' + (b & 0xff).toString(16)).slice(-2); }).join('');`)
	for v := 0; v < 256; v++ {
		b := []byte{byte(v)}
		if got, want := appsScriptToHex(asSigned(b)), hex.EncodeToString(b); got != want {
			t.Errorf("byte %d: got %q, want %q", v, got, want)
		}
	}
	// The conversion people write first, b.toString(16), is wrong for
	// every byte above 127 and every one below 16.
	naive := strconv.FormatInt(int64(int8(-128)), 16)
	if naive != "-80" {
		t.Errorf("the naive conversion of 0x80: got %q", naive)
	}
}

// TestAppsScriptSignatureVerifies signs a request as Code.gs does (the
// JSON escaping, the requestId, the HMAC and its hex) and sends it to
// CreateSpace, which must accept it and create the space with the text as
// typed in the form.
func TestAppsScriptSignatureVerifies(t *testing.T) {
	t.Parallel()
	code := readExample(t, appsScriptPath)
	mustContain(t, appsScriptPath, code,
		`var mac = Utilities.computeHmacSha256Signature(t + '.' + body, secret, Utilities.Charset.UTF_8);`,
		`return 't=' + t + ',v1=' + toHex(mac);`,
		`return JSON.stringify(value).replace(/[\u007f-\uffff]/g, function (c) {`,
		`return '\\u' + ('0000' + c.charCodeAt(0).toString(16)).slice(-4);`,
		`return responseId.replace(/[^A-Za-z0-9._:~-]/g, '-').slice(0, 128);`,
		`requestId: requestIdFor(response.getId()),`,
		`var t = String(Math.floor(Date.now() / 1000));`,
		`props.getProperty('CHATAUTH_WEBHOOK_SECRET')`,
	)

	e := newTestEnv(t, storeLocal)
	e.connect()
	name := `Größe 🚀 "db-3" \ down, 5 €`
	requestID := appsScriptRequestID("2_ABaOnud/Response+Id=")
	if requestID != "2_ABaOnud-Response-Id-" {
		t.Fatalf("requestIdFor: got %q", requestID)
	}
	body := appsScriptASCIIJSON(jsStringify("user", aliceEmail, "displayName", name, "requestId", requestID))
	for i := 0; i < len(body); i++ {
		if body[i] >= 0x7f {
			t.Fatalf("asciiJson left a non-ASCII byte: %q", body)
		}
	}
	if !strings.Contains(body, `\ud83d\ude80`) {
		t.Errorf("the rocket is not a surrogate pair of escapes: %s", body)
	}
	sig := appsScriptSignature(testWebhookSecret, strconv.FormatInt(e.clock.Now().Unix(), 10), body)
	status, resp, _ := e.post("CreateSpace", body, map[string]string{"X-Signature": sig})
	if status != 200 {
		t.Fatalf("CreateSpace refused the Apps Script signature: %d %s", status, resp)
	}
	sp, ok := e.google.SpaceByName(decodeSpace(t, resp).Name)
	if !ok || sp.DisplayName != name || sp.RequestID != requestID {
		t.Errorf("space: got name %q requestId %q, want %q and %q", sp.DisplayName, sp.RequestID, name, requestID)
	}
}

// nodeHarness runs Code.gs in node with Apps Script's services stubbed:
// UrlFetchApp sends with curl and writes the payload as Latin-1, so any
// character beyond ASCII that asciiJson missed would break the signature;
// computeHmacSha256Signature returns signed bytes, as Apps Script does.
const nodeHarness = `
const fs = require('fs'), vm = require('vm'), crypto = require('crypto'), cp = require('child_process'), path = require('path');
const env = JSON.parse(process.env.HARNESS);
const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'gas-'));
const ctx = {
  console,
  PropertiesService: { getScriptProperties: () => ({ getProperty: (k) => (k in env.props ? env.props[k] : null) }) },
  Session: { getEffectiveUser: () => ({ getEmail: () => env.owner }) },
  ScriptApp: { getIdentityToken: () => env.idToken },
  Utilities: {
    Charset: { UTF_8: 'UTF-8' },
    computeHmacSha256Signature: (value, key, charset) => {
      if (charset !== 'UTF-8') throw new Error('charset ' + charset);
      return Array.from(new Int8Array(crypto.createHmac('sha256', Buffer.from(key, 'utf8')).update(Buffer.from(value, 'utf8')).digest()));
    },
    sleep: () => {},
  },
  UrlFetchApp: {
    fetch: (url, o) => {
      if (o.method !== 'post' || o.contentType !== 'application/json' || !o.muteHttpExceptions) throw new Error('unexpected fetch options');
      fs.writeFileSync(path.join(dir, 'body'), o.payload, 'latin1');
      const args = ['-sS', '-X', 'POST', '-o', path.join(dir, 'answer'), '-D', path.join(dir, 'headers'), '-w', '%{http_code}',
        '-H', 'Content-Type: ' + o.contentType, '--data-binary', '@' + path.join(dir, 'body')];
      for (const [k, v] of Object.entries(o.headers)) args.push('-H', k + ': ' + v);
      args.push(url);
      const code = Number(cp.execFileSync('curl', args).toString());
      const headers = {};
      for (const line of fs.readFileSync(path.join(dir, 'headers'), 'latin1').split('\r\n')) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i)] = line.slice(i + 1).trim();
      }
      const text = fs.readFileSync(path.join(dir, 'answer'), 'utf8');
      return { getResponseCode: () => code, getContentText: () => text, getHeaders: () => headers };
    },
  },
};
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(env.script, 'utf8'), ctx, { filename: 'Code.gs' });
const e = {
  source: { getTitle: () => 'Incident form' },
  response: {
    getId: () => env.responseId,
    getItemResponses: () => env.answers.map(([q, a]) => ({ getItem: () => ({ getTitle: () => q }), getResponse: () => a })),
  },
};
try {
  ctx.onFormSubmit(e);
} catch (err) {
  console.log('ERROR: ' + err.message);
  process.exitCode = 3;
}
`

// TestAppsScriptUnderNode runs the form trigger of Code.gs itself, both
// variants, against CreateSpace.
func TestAppsScriptUnderNode(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is not installed (Debian package nodejs; .ci/run installs it)")
		}
		t.Skip("node is not installed; the Go ports above still check the script's algorithm")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is not installed (Debian package curl; .ci/run installs it)")
		}
		t.Skip("curl is not installed")
	}
	e := newTestEnv(t, storeLocal, func(c *Config) { c.AllowedAudiences = []string{appsScriptAudience} })
	e.connect()
	script, _ := filepath.Abs(appsScriptPath)
	answer := "Größe 🚀 \"db-3\" down"
	run := func(t *testing.T, responseID, owner string, props map[string]string) (string, error) {
		t.Helper()
		idToken := e.google.MintIDToken(map[string]any{
			"iss": "https://accounts.google.com", "aud": appsScriptAudience, "sub": subOf(owner), "email": owner,
			"email_verified": true, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
		})
		props["CHATAUTH_URL"] = e.base + "/"
		h, _ := json.Marshal(map[string]any{
			"script": script, "props": props, "owner": owner, "idToken": idToken, "responseId": responseID,
			"answers": [][]string{{"What broke?", answer}, {"Where?", "eu-west"}},
		})
		cmd := exec.Command(node, "-e", nodeHarness)
		cmd.Env = append(os.Environ(), "HARNESS="+string(h))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct {
		variant string
		props   map[string]string
	}{
		{"idtoken", map[string]string{"CHATAUTH_AUTH": "idtoken"}},
		{"hmac", map[string]string{"CHATAUTH_AUTH": "hmac", "CHATAUTH_WEBHOOK_SECRET": " " + testWebhookSecret + "\n"}},
	} {
		t.Run(tc.variant, func(t *testing.T) {
			responseID := "2_ABaOnud_Resp-0123456789-" + tc.variant
			out, err := run(t, responseID, aliceEmail, tc.props)
			if err != nil {
				t.Fatalf("onFormSubmit failed: %v\n%s", err, out)
			}
			var sp fakegoogle.Space
			for _, s := range e.google.Spaces() {
				if s.RequestID == responseID {
					sp = s
				}
			}
			wantName := answer + " #" + responseID[len(responseID)-6:]
			if sp.DisplayName != wantName || sp.Creator != aliceSub || !strings.Contains(sp.Description, "What broke?: "+answer) {
				t.Errorf("space for response %s: got name %q creator %q description %q; want %q as alice", responseID, sp.DisplayName, sp.Creator, sp.Description, wantName)
			}
			if !strings.Contains(out, "Created spaces/") {
				t.Errorf("the trigger did not log the space: %s", out)
			}
			// The same response again (a retried trigger) is the same space.
			before := len(e.google.Spaces())
			if out, err := run(t, responseID, aliceEmail, tc.props); err != nil {
				t.Fatalf("second run: %v\n%s", err, out)
			}
			if after := len(e.google.Spaces()); after != before {
				t.Errorf("a second run for one response made %d more spaces", after-before)
			}
		})
	}
	t.Run("not consented", func(t *testing.T) {
		out, err := run(t, "2_NotConsented", "bob@example.com", map[string]string{"CHATAUTH_AUTH": "idtoken"})
		if err == nil || !strings.Contains(out, "bob@example.com must connect Google Chat first: open "+e.base+"/OAuthStart?login_hint=bob%40example.com") {
			t.Errorf("got %v: %s", err, out)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		out, err := run(t, "2_WrongSecret", aliceEmail, map[string]string{"CHATAUTH_AUTH": "hmac", "CHATAUTH_WEBHOOK_SECRET": "not-the-secret-0123456789"})
		if err == nil || !strings.Contains(out, "CreateSpace answered 401 UNAUTHENTICATED") {
			t.Errorf("got %v: %s", err, out)
		}
	})
}

// TestCurlExample runs examples/curl/create-space.sh against CreateSpace.
func TestCurlExample(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := tool + " is not installed; the curl example needs it"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	e := newTestEnv(t, storeLocal)
	e.connect()
	secretFile := filepath.Join(t.TempDir(), "webhook_secret")
	writeFile(t, secretFile, []byte("\n  "+testWebhookSecret+"  \nan-older-secret-still-active\n"))
	script, _ := filepath.Abs(curlExamplePath)
	run := func(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
		t.Helper()
		cmd := exec.Command("bash", append([]string{script}, args...)...)
		cmd.Env = append(os.Environ(), "CHATAUTH_URL="+e.base+"/", "CHATAUTH_SECRET_FILE="+secretFile)
		cmd.Stdin = strings.NewReader(stdin)
		var o, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &se
		err = cmd.Run()
		if strings.Contains(o.String()+se.String(), testWebhookSecret) {
			t.Error("the script printed the secret")
		}
		return o.String(), se.String(), err
	}

	t.Run("arguments", func(t *testing.T) {
		name := `Incident "4711" \ Größe 🚀`
		out, errOut, err := run(t, "", aliceEmail, name, "curl-4711")
		if err != nil {
			t.Fatalf("%v: %s %s", err, out, errOut)
		}
		sp, ok := e.google.SpaceByName(decodeSpace(t, out).Name)
		if !ok || sp.DisplayName != name || sp.RequestID != "curl-4711" || sp.Creator != aliceSub {
			t.Errorf("space: got %+v, want %q with requestId curl-4711 as alice", sp, name)
		}
	})
	t.Run("body on stdin", func(t *testing.T) {
		body := `{"user":"alice@example.com","displayName":"Launch","members":["bob@example.com"],"requestId":"curl-launch"}` + "\n"
		out, errOut, err := run(t, body, "-")
		if err != nil {
			t.Fatalf("%v: %s %s", err, out, errOut)
		}
		if sp, _ := e.google.SpaceByName(decodeSpace(t, out).Name); sp.Route != "spaces.setup" || len(sp.Members) != 1 {
			t.Errorf("space: got route %q members %q, want spaces.setup with bob", sp.Route, sp.Members)
		}
	})
	t.Run("not consented", func(t *testing.T) {
		out, errOut, err := run(t, "", "bob@example.com", "Nope")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("got %v, want exit status 1", err)
		}
		checkJSONBody(t, strings.TrimSpace(out), 403, statusAuthorizationRequired)
		if !strings.Contains(errOut, "must connect Google Chat first") {
			t.Errorf("stderr does not explain: %s", errOut)
		}
	})
	t.Run("control characters", func(t *testing.T) {
		_, errOut, err := run(t, "", aliceEmail, "a\tb")
		if err == nil || !strings.Contains(errOut, "control characters") {
			t.Errorf("got %v: %s", err, errOut)
		}
	})
}

// TestExamplesHoldNoSecrets scans every example for secret values.
func TestExamplesHoldNoSecrets(t *testing.T) {
	t.Parallel()
	err := filepath.WalkDir("examples", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, p := range secretProblems(path, string(b)) {
			t.Error(p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(curlExamplePath); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable", curlExamplePath)
	}
}
