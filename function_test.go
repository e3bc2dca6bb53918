package chatauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/chatauth/chatauth/internal/fakegoogle"
	"github.com/chatauth/chatauth/internal/fsemulator"
)

// testProject is the project of tests that use no Firestore, and the
// prefix of the emulator projects needFirestore hands out.
const testProject = "chatauth-test"

var (
	emulatorOnce sync.Once
	emulator     *fsemulator.Emulator
	emulatorErr  error
	projectSeq   atomic.Int64 // numbers the emulator projects

	frameworkOnce sync.Once
	frameworkURL  string
)

// testParallel is how many tests run at once unless -test.parallel says
// otherwise. Most of this package's time is spent waiting on loopback
// servers, the emulator and the browser, not on the CPU, so the default
// of one test per core leaves a two-core machine idle; TESTING.md has the
// measurements behind the number.
const testParallel = 4

func TestMain(m *testing.M) {
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", fmt.Sprint(testParallel))
	}
	code := m.Run()
	stopChromium()
	stopGcloudCLI()
	if emulator != nil {
		emulator.Stop()
	}
	os.Exit(code)
}

// needFirestore makes the Firestore emulator available, starting it once
// per test binary unless FIRESTORE_EMULATOR_HOST names one, and returns a
// project no other test uses: an empty database of the test's own, so
// tests on the emulator can run in parallel. Where it cannot start, the
// test fails under CI=true (CI must prove the Firestore path) and is
// skipped elsewhere, with the reason.
func needFirestore(t testing.TB) string {
	t.Helper()
	emulatorOnce.Do(func() {
		if os.Getenv("FIRESTORE_EMULATOR_HOST") != "" {
			return
		}
		if emulatorErr = fsemulator.Available(); emulatorErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		emulator, emulatorErr = fsemulator.Start(ctx)
		if emulatorErr == nil {
			os.Setenv("FIRESTORE_EMULATOR_HOST", emulator.Host())
		}
	})
	if emulatorErr != nil {
		msg := fmt.Sprintf("the Firestore emulator is needed and could not start: %v", emulatorErr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return fmt.Sprintf("%s-%d", testProject, projectSeq.Add(1))
}

// dialEmulator returns client options that reach the Firestore emulator
// at host, a connection of their own each time (a Firestore client closes
// the connection it is given), for a test that needs an emulator other
// than the one FIRESTORE_EMULATOR_HOST names.
func dialEmulator(t testing.TB, host string) []option.ClientOption {
	t.Helper()
	conn, err := grpc.NewClient(host, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(emulatorOwner{}))
	if err != nil {
		t.Fatalf("dial the emulator: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return []option.ClientOption{option.WithGRPCConn(conn)}
}

// emulatorOwner authenticates to the emulator as its owner, as the
// Firestore client does when FIRESTORE_EMULATOR_HOST is set.
type emulatorOwner struct{}

func (emulatorOwner) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}

func (emulatorOwner) RequireTransportSecurity() bool { return false }

// startFramework serves the registered functions through the Functions
// Framework itself, once per test binary, on a free loopback port. The
// handlers use defaultInstance: the few tests that go through the
// framework (testEnv.framework) point it at their server, and so never
// run in parallel.
func startFramework(t testing.TB) string {
	t.Helper()
	frameworkOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a port: %v", err)
		}
		port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		os.Unsetenv("FUNCTION_TARGET")
		go funcframework.StartHostPort("127.0.0.1", port)
		frameworkURL = "http://127.0.0.1:" + port
		for i := 0; i < 200; i++ {
			if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
				c.Close()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("the Functions Framework did not start on %s", frameworkURL)
	})
	return frameworkURL
}

// testClock is a clock tests can move forward, or stop for a while.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
	frozen time.Time // when not zero, Now returns it
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.frozen.IsZero() {
		return c.frozen
	}
	return time.Now().Add(c.offset)
}

// Freeze stops the clock at its current time until t ends, for a test
// that must not see a second go by between two readings (a signature's
// whole-second timestamp against the window it is checked in).
func (c *testClock) Freeze(t testing.TB) {
	c.mu.Lock()
	c.frozen = time.Now().Add(c.offset)
	c.mu.Unlock()
	t.Cleanup(func() {
		c.mu.Lock()
		c.frozen = time.Time{}
		c.mu.Unlock()
	})
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// syncBuffer collects log output from concurrent handlers.
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

// testEnv is one chatauth server, wired to a fake Google and a store, and
// served on a loopback port of its own by an instance of its own, with
// every registered function at /<Name> as the Functions Framework serves
// them locally. Nothing in it is shared with another test, so tests that
// use one can run in parallel.
type testEnv struct {
	t      *testing.T
	google *fakegoogle.Server
	srv    *server
	inst   *instance // serves the handlers; use points it at a server
	cfg    Config
	clock  *testClock
	logs   *syncBuffer
	base   string // the env's URL
}

// storeKinds are the stores every end-to-end test runs against.
var storeKinds = []string{storeFirestore, storeLocal}

// newTestEnv builds a server on the given store. edit may change the
// configuration before the server is built.
func newTestEnv(t *testing.T, storeKind string, edit ...func(*Config)) *testEnv {
	t.Helper()
	project := testProject
	if storeKind == storeFirestore {
		project = needFirestore(t)
	}
	logs := &syncBuffer{}
	inst := &instance{log: newLogger(logs), build: func(context.Context) (*server, error) {
		return nil, errors.New("the test has not given its instance a server")
	}}
	base := serveInstance(t, inst)
	clock := &testClock{}
	// The fake Google shares the server's clock, so tokens it issues expire
	// when the server thinks they do.
	g, err := fakegoogle.New(fakegoogle.Options{AutoConsent: true, RedirectURIs: []string{base + "/OAuthCallback"}, Now: clock.Now})
	if err != nil {
		t.Fatalf("start fake Google: %v", err)
	}
	t.Cleanup(g.Close)
	dir := t.TempDir()
	clientFile := filepath.Join(dir, "client_secrets.json")
	writeFile(t, clientFile, g.ClientJSON("web"))
	webhookFile := filepath.Join(dir, "webhook_secrets")
	writeFile(t, webhookFile, []byte(testWebhookSecret+"\n"))
	keysetFile := filepath.Join(dir, "token_keyset.json")
	writeFile(t, keysetFile, testKeyset(t))

	cfg := Config{
		Project:           project,
		ClientSecrets:     clientFile,
		WebhookSecrets:    webhookFile,
		TokenKeyset:       keysetFile,
		RedirectURL:       base + "/OAuthCallback",
		PublicURL:         base,
		Store:             storeKind,
		DataDir:           filepath.Join(dir, "data"),
		FirestoreDatabase: "(default)",
		ChatEndpoint:      g.ChatEndpoint(),
		RevokeURL:         g.RevokeURL(),
	}
	for _, f := range edit {
		f(&cfg)
	}
	e := &testEnv{t: t, google: g, inst: inst, cfg: cfg, clock: clock, logs: logs, base: base}
	sensitive.add(testWebhookSecret, g.ClientSecret())
	sensitive.addKeyset(t, keysetFile)
	// Every flow a test drives is checked for secrets in the logs once the
	// test is over: codes, tokens, states, cookies, verifiers, signatures
	// and the configured secrets.
	t.Cleanup(func() { e.checkLogs(g.IssuedSecrets()) })
	e.srv = e.newServer()
	e.use(e.srv)
	return e
}

// logEntry is what the log-reading tests look at in one JSON log line.
type logEntry struct{ Message, Function, Reason, Error string }

// logEntries parses the JSON lines of logs, skipping any that are not.
func logEntries(logs string) []logEntry {
	var out []logEntry
	for _, line := range strings.Split(logs, "\n") {
		var l logEntry
		if json.Unmarshal([]byte(line), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// checkLogs fails the test if any secret value appears in its logs.
func (e *testEnv) checkLogs(issued []string) {
	e.t.Helper()
	sensitive.add(issued...)
	logs := e.logs.String()
	for _, v := range sensitive.list() {
		if strings.Contains(logs, v) {
			e.t.Errorf("a secret value (%d characters, starting %q) appears in the logs", len(v), v[:4])
		}
	}
}

// sensitive collects, across the whole test binary, every secret value a
// test handled; the leak check looks for each in the logs.
var sensitive = &sensitiveSet{vals: map[string]bool{}}

type sensitiveSet struct {
	mu   sync.Mutex
	vals map[string]bool
}

// add records values long enough to be unmistakable.
func (s *sensitiveSet) add(vals ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vals {
		if len(v) >= 12 {
			s.vals[v] = true
		}
	}
}

func (s *sensitiveSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.vals))
	for v := range s.vals {
		out = append(out, v)
	}
	return out
}

// addKeyset records the key material of a Tink JSON keyset.
func (s *sensitiveSet) addKeyset(t testing.TB, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ks struct {
		Key []struct {
			KeyData struct {
				Value string `json:"value"`
			} `json:"keyData"`
		} `json:"key"`
	}
	if err := json.Unmarshal(b, &ks); err != nil || len(ks.Key) == 0 {
		t.Fatalf("keyset %s: %v", path, err)
	}
	for _, k := range ks.Key {
		s.add(k.KeyData.Value)
	}
}

// recordURL records the code and state a URL carries.
func (s *sensitiveSet) recordURL(u string) {
	if p, err := url.Parse(u); err == nil {
		q := p.Query()
		s.add(q["code"]...)
		s.add(q["state"]...)
		s.add(q["code_challenge"]...)
	}
}

// spyStore records the tokens the server stores.
type spyStore struct{ tokenStore }

// setStore makes st the store of s and of its consents, as newServer
// shares one.
func setStore(s *server, st tokenStore) {
	s.store = st
	s.consents.store = st
}

// spyAEAD records what the server seals into flow cookies: the PKCE
// verifier (the record's first field) and the sealed value.
type spyAEAD struct{ tink.AEAD }

func (a spyAEAD) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	ct, err := a.AEAD.Encrypt(plaintext, associatedData)
	if bytes.HasPrefix(associatedData, []byte(flowAAD+"\x00")) {
		if n, k := binary.Uvarint(plaintext); k > 0 && n <= uint64(len(plaintext)-k) {
			sensitive.add(string(plaintext[k : k+int(n)]))
		}
		sensitive.add(base64.RawURLEncoding.EncodeToString(ct))
	}
	return ct, err
}

func (s spyStore) updateToken(ctx context.Context, sub string, fn func(*tokenRecord) (*tokenRecord, error)) error {
	return s.tokenStore.updateToken(ctx, sub, spyTokens(fn))
}

func (s spyStore) putConsent(ctx context.Context, sub string, fn func(*tokenRecord) (*tokenRecord, error)) error {
	return s.tokenStore.putConsent(ctx, sub, spyTokens(fn))
}

// spyTokens records the tokens of the records fn writes.
func spyTokens(fn func(*tokenRecord) (*tokenRecord, error)) func(*tokenRecord) (*tokenRecord, error) {
	return func(cur *tokenRecord) (*tokenRecord, error) {
		next, err := fn(cur)
		if next != nil {
			sensitive.add(next.AccessToken, next.RefreshToken)
		}
		return next, err
	}
}

// testKeyset returns a new Tink keyset for a test.
func testKeyset(t testing.TB) []byte {
	t.Helper()
	ks, err := generateKeyset()
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

const testWebhookSecret = "whsec-test-0123456789abcdef0123456789abcdef"

// newServer builds a server on the env's configuration and store. edit
// may set further options.
func (e *testEnv) newServer(edit ...func(*serverOptions)) *server {
	e.t.Helper()
	// The Firestore bound is patientTimeout, as newTestStore's: the
	// emulator makes contending writes wait and retry, and on a loaded
	// machine they can outlast the 10 s bound; faults_test.go sets the
	// bounds it is about.
	o := serverOptions{now: e.clock.Now, logger: newLogger(e.logs), certsClient: e.google.HTTPClient(), storeTimeout: patientTimeout}
	for _, f := range edit {
		f(&o)
	}
	s, err := newServer(context.Background(), e.cfg, o)
	if err != nil {
		e.t.Fatalf("newServer: %v", err)
	}
	setStore(s, spyStore{s.store})
	s.tickets = spyAEAD{s.tickets}
	e.t.Cleanup(func() { s.close() })
	return s
}

// restart replaces the server with a new one, as a restarted instance: the
// old one is closed first (the embedded store admits one process).
func (e *testEnv) restart(edit ...func(*serverOptions)) {
	e.t.Helper()
	e.srv.close()
	e.srv = e.newServer(edit...)
	e.use(e.srv)
}

// serveInstance serves every registered function at /<Name> through inst,
// on a loopback port of the test's own, until the test ends, and returns
// the URL.
func serveInstance(t testing.TB, inst *instance) string {
	mux := http.NewServeMux()
	for _, f := range registered {
		mux.Handle("/"+f.name, inst.handler(f))
	}
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs.URL
}

// use makes the env's handlers serve with s.
func (e *testEnv) use(s *server) {
	e.inst.srv.Store(s)
}

// framework points the Functions Framework's own handlers (one set per
// test binary, on defaultInstance) at the env's server until the test
// ends, and returns their URL, for the tests that check what the
// framework adds. A test that calls it must not run in parallel.
func (e *testEnv) framework() string {
	e.t.Helper()
	base := startFramework(e.t)
	defaultInstance.srv.Store(e.srv)
	e.t.Cleanup(func() { defaultInstance.srv.Store(nil) })
	return base
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// browser is a minimal browser: it follows no redirects and keeps the
// cookies chatauth sets. (net/http/cookiejar withholds Secure cookies from
// http://127.0.0.1, which real browsers send to loopback.)
type browser struct {
	t       *testing.T
	cookies map[string]string
	header  http.Header // extra request headers
}

func newBrowser(t *testing.T) *browser {
	return &browser{t: t, cookies: map[string]string{}, header: http.Header{}}
}

var noRedirects = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

// get fetches u and returns the response with its body read.
func (b *browser) get(u string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatalf("request %s: %v", u, err)
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	for name, value := range b.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		b.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sensitive.recordURL(u)
	sensitive.recordURL(resp.Header.Get("Location"))
	for _, c := range resp.Cookies() {
		sensitive.add(c.Value)
	}
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c.Value
		}
	}
	return resp, string(body)
}

// location returns the Location header of a redirect, failing otherwise.
func location(t *testing.T, resp *http.Response) *url.URL {
	t.Helper()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("got status %d, want 302", resp.StatusCode)
	}
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("Location: %v", err)
	}
	return u
}

// startConsent opens OAuthStart and lets the fake Google consent, and
// returns the callback URL Google sends the browser back to, not yet
// opened.
func (e *testEnv) startConsent(b *browser, loginHint string) *url.URL {
	e.t.Helper()
	start := e.base + "/OAuthStart"
	if loginHint != "" {
		start += "?login_hint=" + url.QueryEscape(loginHint)
	}
	resp, _ := b.get(start)
	toGoogle := location(e.t, resp)
	resp, body := b.get(toGoogle.String())
	if resp.StatusCode != http.StatusFound {
		e.t.Fatalf("fake Google answered %d: %s", resp.StatusCode, body)
	}
	return location(e.t, resp)
}

// consent runs the whole flow and returns the callback's answer.
func (e *testEnv) consent(b *browser, loginHint string) (*http.Response, string) {
	e.t.Helper()
	return b.get(e.startConsent(b, loginHint).String())
}

// storedToken returns the user's record, or nil when there is none.
func (e *testEnv) storedToken(sub string) *tokenRecord {
	e.t.Helper()
	rec, err := e.srv.store.getToken(context.Background(), sub)
	if err != nil {
		if errors.Is(err, errNotFound) {
			return nil
		}
		e.t.Fatalf("getToken(%s): %v", sub, err)
	}
	return rec
}
