package chatauth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// These tests hold the round-trip budget (README.md, "Performance") as
// counts, never as times: a warm CreateSpace makes one Chat call, no token
// call and at most one store read; an expired token is refreshed once per user however many
// requests want it at once. The timings are in BENCHMARKS.md.

// countingStore counts the store operations that read: getToken,
// tokenByEmail and the transactional read of updateToken.
type countingStore struct {
	tokenStore
	reads, updates atomic.Int64
}

func (c *countingStore) unwrap() tokenStore { return c.tokenStore }

func (c *countingStore) getToken(ctx context.Context, sub string) (*tokenRecord, error) {
	c.reads.Add(1)
	return c.tokenStore.getToken(ctx, sub)
}

func (c *countingStore) tokenByEmail(ctx context.Context, email string) (*tokenRecord, error) {
	c.reads.Add(1)
	return c.tokenStore.tokenByEmail(ctx, email)
}

func (c *countingStore) updateToken(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	c.reads.Add(1)
	c.updates.Add(1)
	return c.tokenStore.updateToken(ctx, sub, fn)
}

func (c *countingStore) putConsent(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	c.reads.Add(1)
	c.updates.Add(1)
	return c.tokenStore.putConsent(ctx, sub, fn)
}

// perfEnv is a server on one store with a fake Google, its store wrapped
// in a countingStore, and the CreateSpace handler as the Functions
// Framework would call it.
type perfEnv struct {
	cfg    Config
	srv    *server
	google *fakegoogle.Server
	store  *countingStore
	clock  *testClock
	create http.HandlerFunc
}

func newPerfEnv(t testing.TB, kind string, edit ...func(*serverOptions)) *perfEnv {
	t.Helper()
	project := testProject
	if kind == storeFirestore {
		project = needFirestore(t)
	}
	clock := &testClock{}
	g, err := fakegoogle.New(fakegoogle.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "client.json"), g.ClientJSON("web"))
	writeFile(t, filepath.Join(dir, "webhook"), []byte(testWebhookSecret))
	writeFile(t, filepath.Join(dir, "keyset.json"), testKeyset(t))
	cfg := Config{
		Project:           project,
		ClientSecrets:     filepath.Join(dir, "client.json"),
		WebhookSecrets:    filepath.Join(dir, "webhook"),
		TokenKeyset:       filepath.Join(dir, "keyset.json"),
		RedirectURL:       "http://localhost/OAuthCallback",
		PublicURL:         "http://localhost",
		Store:             kind,
		DataDir:           filepath.Join(dir, "data"),
		FirestoreDatabase: "(default)",
		ChatEndpoint:      g.ChatEndpoint(),
		RevokeURL:         g.RevokeURL(),
	}
	o := serverOptions{now: clock.Now, logger: newLogger(io.Discard)}
	for _, f := range edit {
		f(&o)
	}
	s, err := newServer(context.Background(), cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	cs := &countingStore{tokenStore: s.store}
	setStore(s, cs)
	inst := &instance{log: s.log}
	inst.srv.Store(s)
	e := &perfEnv{cfg: cfg, srv: s, google: g, store: cs, clock: clock}
	for _, f := range registered {
		if f.name == "CreateSpace" {
			e.create = inst.handler(f)
		}
	}
	return e
}

// seed stores a consent for user n, with an access token that expires at
// expiry by the server's clock.
func (e *perfEnv) seed(t testing.TB, n int, expiry time.Time) (sub, email string) {
	t.Helper()
	sub, email = fmt.Sprintf("9%020d", n), fmt.Sprintf("perf%d@example.com", n)
	access, refresh := e.google.IssueTokens(sub, scopeChatCreate)
	now := e.clock.Now()
	rec := &tokenRecord{Sub: sub, Email: email, AccessToken: access, RefreshToken: refresh, Expiry: expiry,
		Scopes: []string{scopeChatCreate}, Status: tokenActive, CreatedAt: now, UpdatedAt: now, ConsentedAt: now.Add(-time.Hour)}
	err := e.srv.store.putConsent(context.Background(), sub, func(*tokenRecord) (*tokenRecord, error) { return rec, nil })
	if err != nil {
		t.Fatal(err)
	}
	return sub, email
}

// post sends one signed CreateSpace and returns the status and body.
func (e *perfEnv) post(user, displayName string) (int, string) {
	body := []byte(`{"user":"` + user + `","displayName":"` + displayName + `"}`)
	req := httptest.NewRequest(http.MethodPost, "/CreateSpace", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Signature", signBody(testWebhookSecret, e.clock.Now(), body))
	w := httptest.NewRecorder()
	e.create(w, req)
	return w.Code, w.Body.String()
}

// TestWarmCreateSpaceRoundTrips: a warm CreateSpace for a user whose
// access token is valid makes exactly one Chat call, no token-endpoint
// call and no store write, and at most one store read: one when the
// instance's token cache does not have the user (the first create, or
// once the cache's bound has passed), none while it does — whether the
// user is named by id or by email, on both stores.
func TestWarmCreateSpaceRoundTrips(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			// A bound of ten minutes, so that a slow machine cannot turn
			// a cached create into a read; the default bound is
			// TestTokenCacheOtherInstance's.
			e := newPerfEnv(t, kind, func(o *serverOptions) { o.tokenCacheTTL = 10 * time.Minute })
			sub, email := e.seed(t, 1, e.clock.Now().Add(3*time.Hour))
			for _, user := range []string{"users/" + sub, email} {
				// The first create reads; the next ones use the cache until
				// its bound passes (the token itself is still good).
				steps := []struct {
					advance   time.Duration
					wantReads int64
				}{{0, 1}, {0, 0}, {0, 0}, {0, 0}, {10 * time.Minute, 1}, {0, 0}}
				for i, st := range steps {
					e.clock.Advance(st.advance)
					chat0, token0 := e.google.TotalChatCalls(), e.google.TokenCalls()
					reads0, updates0 := e.store.reads.Load(), e.store.updates.Load()
					if code, body := e.post(user, fmt.Sprintf("Warm %s %d", user, i)); code != http.StatusOK {
						t.Fatalf("%s: got %d: %s", user, code, body)
					}
					if got := e.google.TotalChatCalls() - chat0; got != 1 {
						t.Errorf("%s #%d: Chat calls: got %d, want 1", user, i, got)
					}
					if got := e.google.TokenCalls() - token0; got != 0 {
						t.Errorf("%s #%d: token calls: got %d, want 0", user, i, got)
					}
					if got := e.store.reads.Load() - reads0; got != st.wantReads {
						t.Errorf("%s #%d: store reads: got %d, want %d", user, i, got, st.wantReads)
					}
					if got := e.store.updates.Load() - updates0; got != 0 {
						t.Errorf("%s #%d: store updates: got %d, want 0", user, i, got)
					}
				}
			}
		})
	}
}

// TestRefreshOncePerExpiredUser: 32 concurrent CreateSpace calls for each
// of several users whose access tokens have expired make exactly one
// refresh per user, and every call succeeds.
func TestRefreshOncePerExpiredUser(t *testing.T) {
	t.Parallel()
	const users, perUser = 3, 32
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newPerfEnv(t, kind)
			var subs []string
			for n := range users {
				sub, _ := e.seed(t, n+1, e.clock.Now().Add(-time.Minute))
				subs = append(subs, sub)
			}
			// A slow token endpoint keeps each refresh in flight while
			// the other calls for its user arrive.
			e.google.SetTokenLatency(50 * time.Millisecond)
			var wg sync.WaitGroup
			codes := make([]int, users*perUser)
			start := make(chan struct{})
			for i := range codes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					codes[i], _ = e.post("users/"+subs[i%users], fmt.Sprintf("Expired %d", i))
				}()
			}
			close(start)
			wg.Wait()
			for i, c := range codes {
				if c != http.StatusOK {
					t.Errorf("call %d: got %d, want 200", i, c)
				}
			}
			for _, sub := range subs {
				if got := e.google.RefreshCalls(sub); got != 1 {
					t.Errorf("refreshes of %s: got %d, want exactly 1", sub, got)
				}
			}
			if got := e.google.TotalChatCalls(); got != users*perUser {
				t.Errorf("Chat calls: got %d, want %d", got, users*perUser)
			}
		})
	}
}

// TestRequestIDBound: requestId is 1 to 128 characters of its alphabet;
// the length is checked outside the regular expression (see
// requestIDPattern).
func TestRequestIDBound(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{strings.Repeat("a", 128), true},
		{"form-response.8f2c:1~x_y", true},
		{strings.Repeat("a", 129), false},
		{"a b", false},
		{"é", false},
	} {
		q := &createSpaceRequest{User: "users/1", DisplayName: "x", RequestID: tc.id}
		if err := q.validate(); (err == nil) != tc.ok {
			t.Errorf("requestId of %d bytes %.10q: got error %v, want ok=%v", len(tc.id), tc.id, err, tc.ok)
		}
	}
}

// TestOAuthErrorCodeBound: an error code from Google's redirect is shown
// only when it is 1 to 64 characters of [a-z_].
func TestOAuthErrorCodeBound(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ code, want string }{
		{"invalid_request", "(invalid_request)"},
		{strings.Repeat("a", 64), "(" + strings.Repeat("a", 64) + ")"},
		{strings.Repeat("a", 65), "(unknown)"},
		{"Invalid", "(unknown)"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/OAuthCallback", nil)
		err := (&server{}).callbackRefused(httptest.NewRecorder(), r, url.Values{"error": {tc.code}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error=%.10q… (%d bytes): got %v, want a message with %s", tc.code, len(tc.code), err, tc.want)
		}
	}
}

// TestHandlerLogsWithoutServer: the request logger that names the function
// is there for a failed build and for a panic, though it is made only
// when needed.
func TestHandlerLogsWithoutServer(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	failing := &instance{log: newLogger(&logs), build: func(context.Context) (*server, error) {
		return nil, fmt.Errorf("no secrets: %w", errSecretsUnavailable)
	}}
	w := httptest.NewRecorder()
	failing.handler(function{name: "CreateSpace", handle: (*server).handleCreateSpace})(w, httptest.NewRequest(http.MethodPost, "/CreateSpace", nil))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(logs.String(), `"function":"CreateSpace"`) {
		t.Errorf("failed build: got %d, logs %s; want 503 and a line naming the function", w.Code, logs.String())
	}

	e := newPerfEnv(t, storeLocal)
	logs = syncBuffer{}
	e.srv.log = newLogger(&logs)
	inst := &instance{log: newLogger(io.Discard)}
	inst.srv.Store(e.srv)
	w = httptest.NewRecorder()
	inst.handler(function{name: "Boom", handle: func(*server, http.ResponseWriter, *http.Request) error { panic("boom") }})(w, httptest.NewRequest(http.MethodPost, "/Boom", nil))
	if w.Code != http.StatusInternalServerError || !strings.Contains(logs.String(), "panic while serving request") || !strings.Contains(logs.String(), `"function":"Boom"`) {
		t.Errorf("panic: got %d, logs %s; want 500 and a panic line naming the function", w.Code, logs.String())
	}
}

// TestExecutionIDLabel: through the Functions Framework, a request's log
// lines carry its execution id as Cloud Logging's label, an object.
func TestExecutionIDLabel(t *testing.T) {
	e := newTestEnv(t, storeLocal)
	e.connect()
	e.base = e.framework()
	if code, body := e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"Labelled"}`); code != http.StatusOK {
		t.Fatalf("got %d: %s", code, body)
	}
	if !strings.Contains(e.logs.String(), `"logging.googleapis.com/labels":{"execution_id":"`) {
		t.Errorf("no execution_id label in the logs:\n%s", e.logs.String())
	}
}
