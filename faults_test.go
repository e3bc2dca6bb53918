package chatauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/option"

	"github.com/chatauth/chatauth/internal/fakegoogle"
	"github.com/chatauth/chatauth/internal/fakesecretmanager"
)

// This file injects the faults of a bad day: each test names the
// expected answer and checks that nothing was lost. TESTING.md lists them.

// firestoreOf returns the Firestore store under the server's wrappers.
func firestoreOf(t *testing.T, s tokenStore) *firestoreStore {
	t.Helper()
	f, ok := innerStore(s).(*firestoreStore)
	if !ok {
		t.Fatalf("no Firestore store under %T", s)
	}
	return f
}

// spaceRequest is a CreateSpace body with a requestId.
// firestoreLink is the network between an instance and the shared
// Firestore emulator, which a test can cut and restore: the instance's
// connections drop and new ones are refused, as when Firestore is
// unreachable, while the tests running beside it keep their emulator.
// The emulator keeps its data across a cut, as Firestore does across an
// outage.
type firestoreLink struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

// newFirestoreLink starts a link to the shared emulator; it closes when
// the test ends.
func newFirestoreLink(t *testing.T) *firestoreLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &firestoreLink{ln: ln, target: os.Getenv("FIRESTORE_EMULATOR_HOST"), conns: map[net.Conn]bool{}}
	go l.serve()
	t.Cleanup(func() {
		ln.Close()
		l.Cut()
	})
	return l
}

// options are the client options of an instance behind the link.
func (l *firestoreLink) options(t *testing.T) []option.ClientOption {
	return dialEmulator(t, l.ln.Addr().String())
}

func (l *firestoreLink) serve() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.pipe(in)
	}
}

// pipe carries one connection to the emulator, unless the link is down.
func (l *firestoreLink) pipe(in net.Conn) {
	out, err := net.Dial("tcp", l.target)
	if err != nil {
		in.Close()
		return
	}
	l.mu.Lock()
	if l.down {
		l.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	l.conns[in], l.conns[out] = true, true
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(out, in); done <- struct{}{} }()
	go func() { io.Copy(in, out); done <- struct{}{} }()
	<-done
	in.Close()
	out.Close()
	l.mu.Lock()
	delete(l.conns, in)
	delete(l.conns, out)
	l.mu.Unlock()
}

// Cut drops every connection through the link and refuses new ones.
func (l *firestoreLink) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for c := range l.conns {
		c.Close()
	}
}

// Restore lets connections through again.
func (l *firestoreLink) Restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = false
}

func spaceRequest(name, requestID string) string {
	return fmt.Sprintf(`{"user":"alice@example.com","displayName":%q,"requestId":%q}`, name, requestID)
}

// spacesWithRequestID returns the spaces fake Chat holds for requestID.
func spacesWithRequestID(g *fakegoogle.Server, requestID string) []fakegoogle.Space {
	var out []fakegoogle.Space
	for _, sp := range g.Spaces() {
		if sp.RequestID == requestID {
			out = append(out, sp)
		}
	}
	return out
}

// failureCauses returns the error of each "request failed" line that
// function logged, in order.
func failureCauses(logs, function string) []string {
	var out []string
	for _, l := range logEntries(logs) {
		if l.Message == "request failed" && l.Function == function {
			out = append(out, l.Error)
		}
	}
	return out
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// TestFaultFirestoreOutage cuts the instance off from Firestore in the
// middle of a run and restores the link. While it is away a user in the instance's token
// cache is still served, until the cache's bound; after that every
// function that needs the store answers 503 with Retry-After within the
// store's bound, and spends nothing upstream: no space is created, no code
// is redeemed, nothing is revoked. OAuthStart needs no store and still
// starts consents. Once it is
// back the same server instance — no restart of the function — serves
// again: the consent that was under way completes, and the refused
// request, retried with its requestId, creates the space once.
func TestFaultFirestoreOutage(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeFirestore)
	link := newFirestoreLink(t)
	// A cache bound of a minute, so that the cached create below cannot
	// outlive it on a slow machine.
	e.restart(func(o *serverOptions) { o.tokenCacheTTL = time.Minute; o.firestore = link.options(t) })
	e.connect()
	if code, body := e.signed("CreateSpace", spaceRequest("Before the outage", "outage-0")); code != 200 {
		t.Fatalf("before the outage: got %d: %s", code, body)
	}
	pending := newBrowser(t)
	callback := e.startConsent(pending, aliceEmail) // a consent under way when Firestore goes
	// The store's bound is shortened only now, between requests: before
	// the outage the test's patient bound keeps a busy emulator from
	// failing what is not under test.
	const bound = 2 * time.Second
	firestoreOf(t, e.srv.store).timeout = bound

	link.Cut()

	// A user this instance served within the token cache's bound is
	// served again without the store.
	if code, body := e.signed("CreateSpace", spaceRequest("Cached during the outage", "outage-cached")); code != 200 {
		t.Errorf("CreateSpace for a cached user during the outage: got %d, want 200: %s", code, body)
	}
	e.clock.Advance(time.Minute) // past the cache's bound: the store is needed again

	before := readCounters(e.google)
	outage := []struct {
		name string
		send func() (*http.Response, string)
	}{
		{"CreateSpace", func() (*http.Response, string) {
			return doRequest(t, signedRequest(e, "CreateSpace", spaceRequest("During the outage", "outage-1")))
		}},
		{"Disconnect", func() (*http.Response, string) {
			return doRequest(t, signedRequest(e, "Disconnect", `{"user":"alice@example.com"}`))
		}},
		{"OAuthCallback", func() (*http.Response, string) {
			req, _ := http.NewRequest(http.MethodGet, callback.String(), nil)
			name := flowCookieName(callback.Query().Get("state"))
			req.AddCookie(&http.Cookie{Name: name, Value: pending.cookies[name]})
			req.Header.Set("Accept", "application/json")
			return doRequest(t, req)
		}},
	}
	for _, tc := range outage {
		var (
			resp *http.Response
			body string
		)
		took := timed(func() { resp, body = tc.send() })
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s during the outage: got %d, want 503: %s", tc.name, resp.StatusCode, body)
			continue
		}
		checkJSONBody(t, body, 503, statusUnavailable)
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", tc.name)
		}
		// The store's own bound answered, not the request's deadline or
		// the client's patience: the log says so, whatever the time.
		if causes := failureCauses(e.logs.String(), tc.name); len(causes) != 1 || !strings.Contains(causes[0], errStoreTimeout.Error()) {
			t.Errorf("%s: logged failures %q, want one, ended by the store's bound (%q)", tc.name, causes, errStoreTimeout)
		}
		if len(resp.Cookies()) > 0 {
			t.Errorf("%s set or cleared a cookie while it could not reach the store", tc.name)
		}
		t.Logf("%s during the outage: 503 after %v", tc.name, took.Round(time.Millisecond))
	}
	// OAuthStart needs no store: a consent starts during the outage.
	startReq, _ := http.NewRequest(http.MethodGet, e.base+"/OAuthStart?login_hint=alice%40example.com", nil)
	if resp, body := doRequest(t, startReq); resp.StatusCode != http.StatusFound || len(resp.Cookies()) != 1 {
		t.Errorf("OAuthStart during the outage: got %d with %d cookies, want 302 with its flow cookie: %s", resp.StatusCode, len(resp.Cookies()), body)
	}
	// Nothing was spent upstream: no space made that nobody hears of, no
	// code redeemed that could then not be stored, nothing revoked.
	checkUpstream(t, before, readCounters(e.google), 0)
	if got := spacesWithRequestID(e.google, "outage-1"); len(got) != 0 {
		t.Errorf("a space was created during the outage: %+v", got)
	}

	link.Restore()

	// The same instance recovers: poll a store read (CreateSpace for a
	// user nobody connected, which touches nothing else) until Firestore
	// answers.
	back := time.Now()
	deadline := back.Add(60 * time.Second)
	for {
		resp, body := doRequest(t, signedRequest(e, "CreateSpace", `{"user":"nobody@example.com","displayName":"Poll"}`))
		if resp.StatusCode == http.StatusForbidden {
			break
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("CreateSpace after the outage: got %d, want 403 (nobody connected) or 503 while reconnecting: %s", resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service did not recover within 60 s of Firestore's return")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the service recovered %v after Firestore's return, with no restart", time.Since(back).Round(time.Millisecond))

	// The consent under way when Firestore went still completes: the
	// refused callback marked nothing (a marker would refuse it now) and
	// kept its cookie, and its code was not spent. Then the refused
	// request is retried with its requestId.
	b := newBrowser(t)
	b.cookies = pending.cookies
	if resp, body := b.get(callback.String()); resp.StatusCode != http.StatusOK {
		t.Fatalf("the pending consent's callback after the outage: got %d, want 200: %s", resp.StatusCode, body)
	}
	rec := e.storedToken(aliceSub)
	if rec == nil || rec.RefreshToken == "" || rec.Status != tokenActive {
		t.Fatalf("after the outage: stored record %+v", rec)
	}
	code, body := e.signed("CreateSpace", spaceRequest("During the outage", "outage-1"))
	if code != 200 {
		t.Fatalf("retry after the outage: got %d: %s", code, body)
	}
	if got := spacesWithRequestID(e.google, "outage-1"); len(got) != 1 {
		t.Errorf("spaces for the retried request: got %d, want 1", len(got))
	}
}

// TestFaultFirestoreLostMidCallback cuts Firestore off while a callback waits
// for Google's token endpoint: the state is consumed, the code redeemed,
// and the store write fails. The answer is 503 with Retry-After, and no
// record — partial or whole — exists for the user afterwards.
func TestFaultFirestoreLostMidCallback(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeFirestore)
	link := newFirestoreLink(t)
	e.restart(func(o *serverOptions) { o.firestore = link.options(t) })
	// The bound covers the state's marker, before the cut, as well as the
	// write after it; 5 s keeps a busy emulator from failing the first.
	firestoreOf(t, e.srv.store).timeout = 5 * time.Second
	b := newBrowser(t)
	callback := e.startConsent(b, aliceEmail)
	e.google.SetTokenLatency(time.Second)

	done := make(chan struct{})
	var (
		resp *http.Response
		rerr error
	)
	go func() {
		defer close(done)
		req, _ := http.NewRequest(http.MethodGet, callback.String(), nil)
		name := flowCookieName(callback.Query().Get("state"))
		req.AddCookie(&http.Cookie{Name: name, Value: b.cookies[name]})
		req.Header.Set("Accept", "application/json")
		resp, rerr = noRedirects.Do(req)
	}()
	// Wait until the exchange is under way, then pull Firestore away.
	for e.google.ExchangeCalls() == 0 {
		select {
		case <-done:
			if rerr != nil {
				t.Fatalf("callback: %v", rerr)
			}
			out, _ := io.ReadAll(resp.Body)
			t.Fatalf("the callback answered %d before it reached the token endpoint: %s", resp.StatusCode, out)
		case <-time.After(10 * time.Millisecond):
		}
	}
	link.Cut()
	<-done
	if rerr != nil {
		t.Fatalf("callback: %v", rerr)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(out)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("callback with Firestore gone mid-way: got %d (Retry-After %q), want 503 with Retry-After: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	link.Restore()
	e.google.SetTokenLatency(0)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := e.srv.store.getToken(context.Background(), aliceSub)
		if errors.Is(err, errNotFound) {
			break
		}
		if err == nil {
			t.Fatal("a record exists for the user whose callback failed")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not come back: %v", err)
		}
	}
}

// TestFaultSecretManagerColdStart: Secret Manager is unavailable when an
// instance starts. The first request is 503 with Retry-After, within the
// secret read's bound, and calls nothing upstream; the instance keeps no
// failure, so once Secret Manager answers the same request (same
// requestId) succeeds, creating the space once, with the consent stored
// before the cold start.
func TestFaultSecretManagerColdStart(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.connect()
	stored := rawTokens(t, e.srv.store)
	e.srv.close() // the embedded store admits one process: the new instance opens it

	sm, err := fakesecretmanager.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sm.Close)
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg := e.cfg
	cfg.ClientSecrets = sm.Put("projects/p/secrets/oauth-client", read(e.cfg.ClientSecrets))
	cfg.WebhookSecrets = sm.Put("projects/p/secrets/webhook", read(e.cfg.WebhookSecrets))
	cfg.TokenKeyset = sm.Put("projects/p/secrets/keyset", read(e.cfg.TokenKeyset))

	e.inst.srv.Store(nil)
	e.inst.build = func(ctx context.Context) (*server, error) {
		s, err := newServer(ctx, cfg, serverOptions{secretManager: sm.ClientOptions(), secretWait: time.Second,
			now: e.clock.Now, logger: newLogger(e.logs), certsClient: e.google.HTTPClient()})
		if err == nil {
			setStore(s, spyStore{s.store})
		}
		return s, err
	}
	t.Cleanup(func() {
		if s := e.inst.srv.Swap(nil); s != nil {
			s.close()
		}
	})

	sm.SetUnavailable(true)
	body := spaceRequest("Cold start", "cold-start-1")
	before := readCounters(e.google)
	var (
		resp *http.Response
		out  string
	)
	took := timed(func() { resp, out = doRequest(t, signedRequest(e, "CreateSpace", body)) })
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("cold start with Secret Manager down: got %d (Retry-After %q), want 503 with Retry-After: %s", resp.StatusCode, resp.Header.Get("Retry-After"), out)
	}
	checkJSONBody(t, out, 503, statusUnavailable)
	if causes := failureCauses(e.logs.String(), "CreateSpace"); len(causes) != 1 || !strings.Contains(causes[0], errSecretTimeout.Error()) {
		t.Errorf("logged failures %q, want one, ended by the secret read's bound (%q)", causes, errSecretTimeout)
	}
	checkUpstream(t, before, readCounters(e.google), 0)
	t.Logf("cold start with Secret Manager down: 503 after %v", took.Round(time.Millisecond))

	sm.SetUnavailable(false)
	resp, out = doRequest(t, signedRequest(e, "CreateSpace", body))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after Secret Manager recovered: got %d, want 200 (the instance kept its failure): %s", resp.StatusCode, out)
	}
	if got := spacesWithRequestID(e.google, "cold-start-1"); len(got) != 1 {
		t.Errorf("spaces for the request: got %d, want 1", len(got))
	}
	s := e.inst.srv.Load()
	if diff := cmp.Diff(stored, rawTokens(t, s.store)); diff != "" {
		t.Errorf("the stored consent changed (-before +after):\n%s", diff)
	}
}

// TestFaultTokenEndpoint: Google's token endpoint fails, then hangs, while
// an expired access token is refreshed. A failure is 502 and keeps the
// record as it was (still active, the refresh token kept, the refresh
// lease released; the tokens are sealed afresh by the lease's writes, so
// the record is compared opened); a hang is 504
// at the request's deadline, and the refresh, which outlives the request,
// still lands, so the next request needs no refresh of its own.
func TestFaultTokenEndpoint(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeFirestore)
	e.connect()
	e.clock.Advance(2 * time.Hour) // the stored access token is now expired
	stored := e.storedToken(aliceSub)

	t.Run("failing", func(t *testing.T) {
		e.google.FailTokenEndpoint(503, "backend_error", 1)
		before := readCounters(e.google)
		code, body := e.signed("CreateSpace", spaceRequest("Token endpoint down", "token-1"))
		if code != 502 {
			t.Fatalf("got %d, want 502: %s", code, body)
		}
		checkJSONBody(t, body, 502, statusUpstreamError)
		checkUpstream(t, before, readCounters(e.google), mayRefresh)
		if diff := cmp.Diff(stored, e.storedToken(aliceSub), timeEqual); diff != "" {
			t.Errorf("a failed refresh changed the record (-before +after):\n%s", diff)
		}
	})

	t.Run("hanging", func(t *testing.T) {
		e.srv.chatDeadline = time.Second
		defer func() { e.srv.chatDeadline = 30 * time.Second }()
		// The token endpoint holds the refresh until the answer is in,
		// so the answer can only come from the request's deadline.
		hold := e.google.HoldRefreshes(1)
		defer hold.Release()
		refreshes := e.google.RefreshCalls(aliceSub)
		code, body := e.signed("CreateSpace", spaceRequest("Token endpoint slow", "token-2"))
		if code != 504 {
			t.Fatalf("got %d, want 504: %s", code, body)
		}
		checkJSONBody(t, body, 504, statusDeadlineExceeded)
		// The refresh goes on without the request and saves its token.
		hold.Release()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if rec := e.storedToken(aliceSub); rec.Expiry.After(e.clock.Now()) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the refresh begun by the abandoned request was never saved")
			}
		}
		e.google.SetTokenLatency(0)
		if code, body := e.signed("CreateSpace", spaceRequest("Token endpoint slow", "token-2")); code != 200 {
			t.Fatalf("retry: got %d: %s", code, body)
		}
		if got := e.google.RefreshCalls(aliceSub) - refreshes; got != 1 {
			t.Errorf("refreshes: got %d, want 1 (the retry reuses the saved token)", got)
		}
		if got := spacesWithRequestID(e.google, "token-2"); len(got) != 1 {
			t.Errorf("spaces for the request: got %d, want 1", len(got))
		}
	})

	t.Run("hanging at the code exchange", func(t *testing.T) {
		// The exchange is bounded by the HTTP client's timeout (30 s
		// deployed); the test shortens it.
		e.restart(func(o *serverOptions) {
			o.httpClient = newHTTPClient()
			o.httpClient.Timeout = time.Second
		})
		// An hour: only the client's timeout can end the exchange.
		e.google.SetTokenLatency(time.Hour)
		defer e.google.SetTokenLatency(0)
		stored := rawTokens(t, e.srv.store)
		b := newBrowser(t)
		cb := e.startConsent(b, aliceEmail)
		b.header.Set("Accept", "application/json")
		resp, body := b.get(cb.String())
		if resp.StatusCode != 504 {
			t.Fatalf("got %d, want 504: %s", resp.StatusCode, body)
		}
		checkJSONBody(t, body, 504, statusDeadlineExceeded)
		if diff := cmp.Diff(stored, rawTokens(t, e.srv.store)); diff != "" {
			t.Errorf("a failed exchange changed the stored tokens (-before +after):\n%s", diff)
		}
	})
}

// TestFaultChatHang: the Chat API hangs. The answer is 504 at the
// request's deadline; the fake abandons the call with the client, so no
// space exists, and a retry with the same requestId creates it once.
func TestFaultChatHang(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeFirestore)
	rec := e.connect()
	e.srv.chatDeadline = time.Second
	// An hour: only the request's deadline can end the call.
	e.google.SetChatLatency(time.Hour)
	code, body := e.signed("CreateSpace", spaceRequest("Chat hangs", "hang-1"))
	if code != 504 {
		t.Fatalf("got %d, want 504: %s", code, body)
	}
	checkJSONBody(t, body, 504, statusDeadlineExceeded)
	e.google.SetChatLatency(0)
	e.srv.chatDeadline = 30 * time.Second
	if code, body := e.signed("CreateSpace", spaceRequest("Chat hangs", "hang-1")); code != 200 {
		t.Fatalf("retry: got %d: %s", code, body)
	}
	if got := spacesWithRequestID(e.google, "hang-1"); len(got) != 1 {
		t.Errorf("spaces for the request: got %d, want 1", len(got))
	}
	if after := e.storedToken(aliceSub); after.AccessToken != rec.AccessToken || after.RefreshToken != rec.RefreshToken {
		t.Error("the stored tokens changed")
	}
}

// chatProxy sits between chatauth and fake Chat. Once the fake has
// answered (the space exists), it can drop the answer — the connection is
// cut, as when an instance dies — or hold it back past the caller's
// patience.
type chatProxy struct {
	*httptest.Server
	target atomic.Pointer[url.URL]
	drop   atomic.Int32 // answers to cut
	hold   atomic.Int64 // nanoseconds to hold each answer
}

func newChatProxy(t *testing.T) *chatProxy {
	p := &chatProxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(p.target.Load()) },
		ModifyResponse: func(resp *http.Response) error {
			if p.drop.Add(-1) >= 0 {
				return errDropAnswer
			}
			if d := time.Duration(p.hold.Load()); d > 0 {
				select {
				case <-time.After(d):
				case <-resp.Request.Context().Done():
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if conn, _, herr := http.NewResponseController(w).Hijack(); herr == nil {
				conn.Close()
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

var errDropAnswer = errors.New("answer dropped")

// TestFaultKilledAfterCreate: Chat creates the space, and its answer never
// reaches the caller — the connection to Chat is cut, or the caller gives
// up (the instance is killed) before chatauth answers. A retry with the
// same requestId returns the same space, and only one exists.
func TestFaultKilledAfterCreate(t *testing.T) {
	t.Parallel()
	proxy := newChatProxy(t)
	e := newTestEnv(t, storeFirestore, func(c *Config) { c.ChatEndpoint = proxy.URL + "/" })
	target, _ := url.Parse(e.google.URL())
	proxy.target.Store(target)
	e.connect()

	t.Run("answer lost on the way from Chat", func(t *testing.T) {
		proxy.drop.Store(1)
		code, body := e.signed("CreateSpace", spaceRequest("Lost answer", "killed-1"))
		if code != 502 {
			t.Fatalf("got %d, want 502: %s", code, body)
		}
		checkJSONBody(t, body, 502, statusUpstreamError)
		if !strings.Contains(body, "same requestId") {
			t.Errorf("the answer does not say to retry with the same requestId: %s", body)
		}
		created := spacesWithRequestID(e.google, "killed-1")
		if len(created) != 1 {
			t.Fatalf("Chat holds %d spaces for the request, want 1 (created, answer lost)", len(created))
		}
		code, body = e.signed("CreateSpace", spaceRequest("Lost answer", "killed-1"))
		if code != 200 {
			t.Fatalf("retry: got %d: %s", code, body)
		}
		if got := decodeSpace(t, body).Name; got != created[0].Name {
			t.Errorf("retry answered %s, want the space already created, %s", got, created[0].Name)
		}
		if got := spacesWithRequestID(e.google, "killed-1"); len(got) != 1 {
			t.Errorf("spaces after the retry: got %d, want 1", len(got))
		}
	})

	t.Run("caller gives up before chatauth answers", func(t *testing.T) {
		proxy.hold.Store(int64(2 * time.Second))
		req := signedRequest(e, "CreateSpace", spaceRequest("Killed instance", "killed-2"))
		impatient := &http.Client{Timeout: 500 * time.Millisecond}
		if resp, err := impatient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("got an answer (%d), want the caller to give up first", resp.StatusCode)
		}
		proxy.hold.Store(0)
		for deadline := time.Now().Add(time.Minute); len(spacesWithRequestID(e.google, "killed-2")) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("Chat never created the space")
			}
		}
		created := spacesWithRequestID(e.google, "killed-2")
		code, body := e.signed("CreateSpace", spaceRequest("Killed instance", "killed-2"))
		if code != 200 {
			t.Fatalf("retry: got %d: %s", code, body)
		}
		if got := decodeSpace(t, body).Name; got != created[0].Name {
			t.Errorf("retry answered %s, want the space already created, %s", got, created[0].Name)
		}
		if got := spacesWithRequestID(e.google, "killed-2"); len(got) != 1 {
			t.Errorf("spaces after the retry: got %d, want 1", len(got))
		}
	})
}

// signedRequest is a correctly signed POST of body to function.
func signedRequest(e *testEnv, function, body string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, e.base+"/"+function, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	sig := signBody(testWebhookSecret, e.clock.Now(), []byte(body))
	sensitive.add(sig)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Signature", sig)
	return req
}

// doRequest sends req and returns the response with its body read.
func doRequest(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	return resp, string(b)
}
