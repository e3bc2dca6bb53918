package chatauth

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// These tests hold the refresh lease (lease.go) to its promise: several
// instances over one database make one token call for an expired user; a
// holder that dies lets the lease lapse and another instance serves; what
// the holder learns (invalid_grant, a failing token endpoint) reaches the
// requests that waited for it; and a refresh never overwrites a consent
// given while it was under way. Each runs on both stores. The fake's token
// endpoint holds refreshes until the test releases them, so the order of
// events is the test's, not the scheduler's; the lease lapses on the
// test's clock.

// testLease is quick to re-read and lapses only when a test moves the
// clock by a minute.
var testLease = leaseTiming{length: time.Minute, firstWait: time.Millisecond, maxWait: 10 * time.Millisecond}

// node is one instance of a scaled-out deployment: a server with its own
// token cache and refresh group, its CreateSpace handler as the Functions
// Framework calls it, and a count of the reads that found the lease held.
type node struct {
	e      *testEnv
	srv    *server
	create http.HandlerFunc
	watch  *leaseWatch
	sent   atomic.Int64 // CreateSpace requests sent to this node
}

// leaseWatch counts the record reads that find another refresh's claim,
// and the claims its server makes.
type leaseWatch struct {
	tokenStore
	now          func() time.Time
	seen, claims atomic.Int64
}

func (w *leaseWatch) getToken(ctx context.Context, sub string) (*tokenRecord, error) {
	rec, err := w.tokenStore.getToken(ctx, sub)
	if err == nil && leaseHeld(rec, w.now()) {
		w.seen.Add(1)
	}
	return rec, err
}

func (w *leaseWatch) updateToken(ctx context.Context, sub string, fn func(*tokenRecord) (*tokenRecord, error)) error {
	claimed := false // by fn's last run, the one written
	err := w.tokenStore.updateToken(ctx, sub, func(cur *tokenRecord) (*tokenRecord, error) {
		next, err := fn(cur)
		claimed = next != nil && next.RefreshLease != "" && (cur == nil || cur.RefreshLease != next.RefreshLease)
		return next, err
	})
	if err == nil && claimed {
		w.claims.Add(1)
	}
	return err
}

func (w *leaseWatch) unwrap() tokenStore { return w.tokenStore }

// shareStore points s, a server built on a store of its own, at base
// instead, and closes its own.
func shareStore(t testing.TB, s *server, base tokenStore) {
	t.Helper()
	var enc *encryptedStore
	for st := s.store; enc == nil; {
		w, ok := st.(storeWrapper)
		if !ok {
			t.Fatalf("no encrypted store under %T", s.store)
		}
		enc, _ = w.(*encryptedStore)
		st = w.unwrap()
	}
	enc.inner.close()
	enc.inner = base
}

// nodes replaces the env's server with n instances over its one store,
// with lease timing l. The first is the env's server, which the Functions
// Framework serves (the consent flow runs there). On Firestore each
// instance has its own client; the embedded store admits one opener, so
// the others are given the first one's database, as if it were shared.
func (e *testEnv) nodes(n int, l leaseTiming) []*node {
	e.t.Helper()
	opts := func(o *serverOptions) { o.lease = l }
	e.restart(opts)
	srvs := []*server{e.srv}
	for range n - 1 {
		if e.cfg.Store != storeLocal {
			srvs = append(srvs, e.newServer(opts))
			continue
		}
		cfg := e.cfg
		e.cfg.DataDir = filepath.Join(e.t.TempDir(), "unused")
		s := e.newServer(opts)
		e.cfg = cfg
		shareStore(e.t, s, innerStore(e.srv.store))
		srvs = append(srvs, s)
	}
	var out []*node
	for _, s := range srvs {
		w := &leaseWatch{tokenStore: s.store, now: e.clock.Now}
		setStore(s, w)
		out = append(out, &node{e: e, srv: s, create: handlerFor(e.t, s, "CreateSpace"), watch: w})
	}
	return out
}

// createSpace sends one signed CreateSpace for alice to the node.
func (nd *node) createSpace(name string) (int, string) {
	nd.sent.Add(1)
	body := []byte(fmt.Sprintf(`{"user":"alice@example.com","displayName":%q}`, name))
	sig := signBody(testWebhookSecret, nd.e.clock.Now(), body)
	sensitive.add(sig)
	req := httptest.NewRequest(http.MethodPost, "/CreateSpace", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Signature", sig)
	w := httptest.NewRecorder()
	nd.create(w, req)
	return w.Code, w.Body.String()
}

// waiting reports whether the node's refresh is waiting for another's:
// it has read the record with the lease held more often than its requests'
// lookups can have (one read each at most).
func (nd *node) waiting() bool { return nd.watch.seen.Load() > nd.sent.Load() }

// answer is one CreateSpace's status and body.
type answer struct {
	code int
	body string
}

// inFlight is a set of CreateSpace requests under way.
type inFlight struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers map[string]answer // by display name
}

func (f *inFlight) send(nd *node, name string) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		code, body := nd.createSpace(name)
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.answers == nil {
			f.answers = map[string]answer{}
		}
		f.answers[name] = answer{code, body}
	}()
}

// wait returns every answer once all requests are answered.
func (f *inFlight) wait() map[string]answer {
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.answers
}

// eventually waits until cond holds, failing the test if it has not after
// a minute: a bound so that a broken build stops by itself, not a timing
// assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s", what)
		}
	}
}

// arrived waits for a held refresh to reach the token endpoint.
func arrived(t *testing.T, h *fakegoogle.Hold) {
	t.Helper()
	select {
	case <-h.Arrived():
	case <-time.After(time.Minute):
		t.Fatal("no refresh reached the token endpoint")
	}
}

// expiredAlice connects alice, builds n instances and lets her access token
// expire; the hold keeps the next refresh at the token endpoint.
func expiredAlice(t *testing.T, kind string, n int) (*testEnv, []*node, *fakegoogle.Hold) {
	e := newTestEnv(t, kind)
	nodes := e.nodes(n, testLease)
	e.connect()
	e.clock.Advance(2 * time.Hour)
	h := e.google.HoldRefreshes(1)
	t.Cleanup(h.Release)
	return e, nodes, h
}

// checkNoLease fails if the stored record still carries a claim.
func checkNoLease(t *testing.T, rec *tokenRecord) {
	t.Helper()
	if rec.RefreshLease != "" || !rec.RefreshLeaseUntil.IsZero() {
		t.Errorf("the record keeps a lease (until %v) after the refresh ended", rec.RefreshLeaseUntil)
	}
}

// TestLeaseOneRefreshAcrossInstances: three instances, eight concurrent
// requests each and one more that holds the refresh, for a user whose
// access token expired: one token call, every request served with the
// token it saved, and no lease left behind.
func TestLeaseOneRefreshAcrossInstances(t *testing.T) {
	t.Parallel()
	const perNode = 8
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e, nodes, hold := expiredAlice(t, kind, 3)
			var f inFlight
			f.send(nodes[0], "Holder")
			arrived(t, hold)
			if rec := e.storedToken(aliceSub); rec.RefreshLease == "" || !rec.RefreshLeaseUntil.After(e.clock.Now()) {
				t.Fatalf("the refresh under way holds no lease: %q until %v", rec.RefreshLease, rec.RefreshLeaseUntil)
			}
			for i := range perNode {
				for n, nd := range nodes {
					f.send(nd, fmt.Sprintf("Node %d request %d", n, i))
				}
			}
			eventually(t, "the other instances wait for the lease", func() bool { return nodes[1].waiting() && nodes[2].waiting() })
			hold.Release()
			answers := f.wait()
			for name, a := range answers {
				if a.code != http.StatusOK {
					t.Errorf("%s: got %d, want 200: %s", name, a.code, a.body)
				}
			}
			if got := e.google.RefreshCalls(aliceSub); got != 1 {
				t.Errorf("token calls: got %d, want exactly 1 across 3 instances", got)
			}
			rec := e.storedToken(aliceSub)
			checkNoLease(t, rec)
			if !rec.Expiry.After(e.clock.Now()) || rec.LastRefreshAt.IsZero() {
				t.Errorf("the refreshed token was not saved: expiry %v, refreshed at %v", rec.Expiry, rec.LastRefreshAt)
			}
			spaces := e.google.Spaces()
			if len(spaces) != 1+3*perNode {
				t.Fatalf("spaces: got %d, want %d", len(spaces), 1+3*perNode)
			}
			for _, sp := range spaces {
				if sp.AccessToken != rec.AccessToken {
					t.Errorf("space %q was created with another token than the one saved", sp.DisplayName)
				}
			}
		})
	}
}

// TestLeaseHolderDies: the instance holding the refresh never finishes
// (its token call does not return, as if it had crashed). The others wait
// while its lease lasts; once it lapses one takes over and serves the
// user. When the dead holder's call finally returns, its save does not
// replace the token saved meanwhile.
func TestLeaseHolderDies(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e, nodes, hold := expiredAlice(t, kind, 3)
			var dead inFlight
			dead.send(nodes[0], "Dead holder")
			arrived(t, hold)
			var f inFlight
			f.send(nodes[1], "Waiter")
			eventually(t, "the second instance waits for the lease", nodes[1].waiting)
			if got := e.google.RefreshCalls(aliceSub); got != 1 {
				t.Fatalf("token calls while the lease holds: got %d, want 1", got)
			}
			e.clock.Advance(testLease.length) // the lease lapses
			a := f.wait()["Waiter"]
			if a.code != http.StatusOK {
				t.Fatalf("the waiter after the lease lapsed: got %d, want 200: %s", a.code, a.body)
			}
			if got := e.google.RefreshCalls(aliceSub); got != 2 {
				t.Errorf("token calls: got %d, want 2 (the dead holder's and the takeover's)", got)
			}
			saved := e.storedToken(aliceSub)
			checkNoLease(t, saved)
			if code, body := nodes[2].createSpace("Third instance"); code != http.StatusOK {
				t.Errorf("third instance: got %d: %s", code, body)
			}
			if got := e.google.RefreshCalls(aliceSub); got != 2 {
				t.Errorf("the third instance refreshed again (token calls %d, want 2)", got)
			}
			// The dead holder comes back: its token is good, but the saved
			// one stays.
			hold.Release()
			dead.wait()
			if diff := cmp.Diff(saved, e.storedToken(aliceSub), timeEqual); diff != "" {
				t.Errorf("the late holder replaced the saved token (-saved +after):\n%s", diff)
			}
		})
	}
}

// TestLeaseInvalidGrantReachesWaiters: the holder's refresh answers
// invalid_grant (the user revoked access meanwhile). The record is marked
// needs_reauth, and every request — the holder's and those that waited on
// other instances — answers AUTHORIZATION_REQUIRED with the link to
// consent again, after one token call.
func TestLeaseInvalidGrantReachesWaiters(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e, nodes, hold := expiredAlice(t, kind, 3)
			var f inFlight
			f.send(nodes[0], "Holder")
			arrived(t, hold)
			e.google.RevokeUser(aliceSub)
			for i := range 4 {
				f.send(nodes[1], fmt.Sprintf("Waiter 1.%d", i))
				f.send(nodes[2], fmt.Sprintf("Waiter 2.%d", i))
			}
			eventually(t, "the other instances wait for the lease", func() bool { return nodes[1].waiting() && nodes[2].waiting() })
			hold.Release()
			wantURL := e.base + "/OAuthStart?login_hint=alice%40example.com"
			for name, a := range f.wait() {
				checkJSONBody(t, a.body, 403, statusAuthorizationRequired)
				var env struct {
					Error struct{ AuthorizeURL string } `json:"error"`
				}
				json.Unmarshal([]byte(a.body), &env)
				if a.code != http.StatusForbidden || env.Error.AuthorizeURL != wantURL {
					t.Errorf("%s: got %d with authorizeUrl %q, want 403 with %s", name, a.code, env.Error.AuthorizeURL, wantURL)
				}
			}
			if got := e.google.RefreshCalls(aliceSub); got != 1 {
				t.Errorf("token calls: got %d, want 1", got)
			}
			if got := e.google.TotalChatCalls(); got != 0 {
				t.Errorf("Chat calls: got %d, want none", got)
			}
			rec := e.storedToken(aliceSub)
			checkNoLease(t, rec)
			if rec.Status != tokenNeedsReauth {
				t.Errorf("record status %q, want %s", rec.Status, tokenNeedsReauth)
			}
		})
	}
}

// TestLeaseTokenEndpointFails: the holder's token call fails (Google
// answers 503). The lease is released and the record is otherwise as it
// was; the requests that waited answer 502 as the holder's does, without
// calling Google themselves; the next request refreshes afresh.
func TestLeaseTokenEndpointFails(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e, nodes, hold := expiredAlice(t, kind, 3)
			before := e.storedToken(aliceSub)
			e.google.FailTokenEndpoint(http.StatusServiceUnavailable, "backend_error", 1)
			var f inFlight
			f.send(nodes[0], "Holder")
			arrived(t, hold)
			f.send(nodes[1], "Waiter 1")
			f.send(nodes[2], "Waiter 2")
			eventually(t, "the other instances wait for the lease", func() bool { return nodes[1].waiting() && nodes[2].waiting() })
			hold.Release()
			for name, a := range f.wait() {
				checkJSONBody(t, a.body, 502, statusUpstreamError)
				if a.code != http.StatusBadGateway {
					t.Errorf("%s: got %d, want 502: %s", name, a.code, a.body)
				}
			}
			if got := e.google.RefreshCalls(aliceSub); got != 1 {
				t.Errorf("token calls: got %d, want 1", got)
			}
			if diff := cmp.Diff(before, e.storedToken(aliceSub), timeEqual); diff != "" {
				t.Errorf("a failed refresh changed the record (-before +after):\n%s", diff)
			}
			if code, body := nodes[1].createSpace("After the failure"); code != http.StatusOK {
				t.Errorf("the next request: got %d, want 200: %s", code, body)
			}
			if got := e.google.RefreshCalls(aliceSub); got != 2 {
				t.Errorf("token calls after the next request: got %d, want 2", got)
			}
		})
	}
}

// TestRefreshKeepsNewerConsent: a refresh that began before a re-consent
// never overwrites it — not its tokens, scopes, status or dates — whether
// the refresh then succeeds, the re-consent kept the stored refresh token
// (Google sent none), or the refresh meets invalid_grant because the old
// grant was revoked; and an instance waiting on that refresh's lease is
// served with the re-consent's token.
func TestRefreshKeepsNewerConsent(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			for _, tc := range []struct {
				name                string
				keepRefresh, revoke bool
			}{
				{"refresh succeeds", false, false},
				{"refresh token kept by the re-consent", true, false},
				{"old grant revoked", false, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					e, nodes, hold := expiredAlice(t, kind, 2)
					old := e.storedToken(aliceSub)
					var f inFlight
					f.send(nodes[0], "Began before the re-consent")
					arrived(t, hold)
					f.send(nodes[1], "Waiter")
					eventually(t, "the second instance waits for the lease", nodes[1].waiting)
					// The user consents again meanwhile, granting one more scope.
					e.google.SetGrantedScopes("openid", fakegoogle.ScopeEmail, scopeChatCreate, "https://www.googleapis.com/auth/chat.spaces")
					e.google.SetOmitRefreshToken(tc.keepRefresh)
					renewed := e.connect()
					if (renewed.RefreshToken == old.RefreshToken) != tc.keepRefresh || len(renewed.Scopes) == len(old.Scopes) {
						t.Fatalf("the re-consent is not the one wanted: %d scopes, new refresh token %v", len(renewed.Scopes), renewed.RefreshToken != old.RefreshToken)
					}
					if tc.revoke {
						resp, err := http.PostForm(e.google.RevokeURL(), url.Values{"token": {old.RefreshToken}})
						if err != nil {
							t.Fatalf("revoke the old grant: %v", err)
						}
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							t.Fatalf("revoke the old grant: %s", resp.Status)
						}
					}
					hold.Release()
					answers := f.wait()
					if a := answers["Waiter"]; a.code != http.StatusOK {
						t.Errorf("the waiting instance: got %d, want 200: %s", a.code, a.body)
					}
					want := http.StatusOK
					if tc.revoke {
						want = http.StatusForbidden
					}
					if a := answers["Began before the re-consent"]; a.code != want {
						t.Errorf("the refreshing request: got %d, want %d: %s", a.code, want, a.body)
					}
					if diff := cmp.Diff(renewed, e.storedToken(aliceSub), timeEqual); diff != "" {
						t.Errorf("the refresh changed the newer consent (-re-consent +after):\n%s", diff)
					}
					if got := e.google.RefreshCalls(aliceSub); got != 1 {
						t.Errorf("token calls: got %d, want 1", got)
					}
					for _, sp := range e.google.Spaces() {
						if sp.DisplayName == "Waiter" && sp.AccessToken != renewed.AccessToken {
							t.Error("the waiting instance did not use the re-consent's token")
						}
					}
				})
			}
		})
	}
}

// TestLeaseDoesNotBlockDisconnect: Disconnect goes through while a refresh
// holds the lease; the instance waiting on that lease answers
// AUTHORIZATION_REQUIRED once the record is gone, without the holder
// finishing, and the refresh, when it returns, does not bring the record
// back.
func TestLeaseDoesNotBlockDisconnect(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e, nodes, hold := expiredAlice(t, kind, 2)
			var holder, waiter inFlight
			holder.send(nodes[0], "Holder")
			arrived(t, hold)
			waiter.send(nodes[1], "Waiter")
			eventually(t, "the second instance waits for the lease", nodes[1].waiting)
			if code, body := e.signed("Disconnect", `{"user":"alice@example.com"}`); code != http.StatusOK {
				t.Fatalf("Disconnect while the lease is held: got %d: %s", code, body)
			}
			a := waiter.wait()["Waiter"]
			checkJSONBody(t, a.body, 403, statusAuthorizationRequired)
			if a.code != http.StatusForbidden {
				t.Errorf("the waiter: got %d, want 403: %s", a.code, a.body)
			}
			hold.Release()
			a = holder.wait()["Holder"]
			checkJSONBody(t, a.body, 403, statusAuthorizationRequired)
			if a.code != http.StatusForbidden {
				t.Errorf("the holder: got %d, want 403: %s", a.code, a.body)
			}
			if rec := e.storedToken(aliceSub); rec != nil {
				t.Errorf("the refresh brought the disconnected record back: status %q", rec.Status)
			}
		})
	}
}

// BenchmarkLeaseWait measures what a request that waits for another
// instance's refresh pays against the one that refreshed: each iteration
// expires the user's access token and sends one CreateSpace to each of
// three instances over one store — the second and third while the first
// one's token call is under way, or with -leasetogether all three at once —
// with the default lease timing and the token endpoint answering after
// -leaselatency (Google's typical refresh). The request whose instance
// claimed the lease refreshed; the others waited. BENCHMARKS.md records
// the figures.
func BenchmarkLeaseWait(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(kind, func(b *testing.B) {
			const instances = 3
			e := newPerfEnv(b, kind, func(o *serverOptions) { o.logger = newLogger(io.Discard) })
			e.google.SetTokenLatency(*leaseLatency)
			sub, _ := e.seed(b, 1, e.clock.Now().Add(-time.Minute))
			srvs := []*server{e.srv}
			for range instances - 1 {
				cfg := e.cfg
				cfg.DataDir = filepath.Join(b.TempDir(), "unused")
				s, err := newServer(context.Background(), cfg, serverOptions{now: e.clock.Now, logger: newLogger(io.Discard)})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.close() })
				if kind == storeLocal {
					shareStore(b, s, innerStore(e.srv.store))
				}
				srvs = append(srvs, s)
			}
			var (
				handlers []http.HandlerFunc
				watches  []*leaseWatch
			)
			for _, s := range srvs {
				w := &leaseWatch{tokenStore: s.store, now: e.clock.Now}
				setStore(s, w)
				watches = append(watches, w)
				handlers = append(handlers, handlerFor(b, s, "CreateSpace"))
			}
			var refreshed, waited []time.Duration
			b.ResetTimer()
			for i := range b.N {
				e.clock.Advance(2 * time.Hour)
				claims := make([]int64, instances)
				for n := range instances {
					claims[n] = watches[n].claims.Load()
				}
				took := make([]time.Duration, instances)
				var wg sync.WaitGroup
				send := func(n int) {
					wg.Add(1)
					go func() {
						defer wg.Done()
						body := []byte(fmt.Sprintf(`{"user":"users/%s","displayName":"Lease %d.%d"}`, sub, i, n))
						req := httptest.NewRequest(http.MethodPost, "/CreateSpace", bytes.NewReader(body))
						req.Header.Set("Content-Type", "application/json")
						req.Header.Set("X-Signature", signBody(testWebhookSecret, e.clock.Now(), body))
						w := httptest.NewRecorder()
						start := time.Now()
						handlers[n](w, req)
						took[n] = time.Since(start)
						if w.Code != http.StatusOK {
							b.Errorf("instance %d: got %d: %s", n, w.Code, w.Body)
						}
					}()
				}
				if *leaseTogether {
					for n := range instances {
						send(n)
					}
				} else {
					// The others' requests arrive while the first one's
					// token call is under way.
					h := e.google.HoldRefreshes(1)
					send(0)
					<-h.Arrived()
					for n := 1; n < instances; n++ {
						send(n)
					}
					h.Release()
				}
				wg.Wait()
				for n := range instances {
					if watches[n].claims.Load() > claims[n] {
						refreshed = append(refreshed, took[n])
					} else {
						waited = append(waited, took[n])
					}
				}
			}
			b.StopTimer()
			if got, want := e.google.RefreshCalls(sub), b.N; got != want {
				b.Errorf("token calls: got %d, want %d (one per expiry)", got, want)
			}
			for _, m := range []struct {
				name string
				d    []time.Duration
			}{{"refreshed", refreshed}, {"waited", waited}} {
				if len(m.d) == 0 {
					continue
				}
				slices.Sort(m.d)
				b.ReportMetric(float64(len(m.d)), m.name+"-n")
				b.ReportMetric(ms(m.d[len(m.d)/2]), m.name+"-p50-ms")
				b.ReportMetric(ms(m.d[min(len(m.d)-1, len(m.d)*99/100)]), m.name+"-p99-ms")
			}
		})
	}
}

var (
	leaseLatency  = flag.Duration("leaselatency", 100*time.Millisecond, "BenchmarkLeaseWait: how long the fake token endpoint takes to answer a refresh")
	leaseTogether = flag.Bool("leasetogether", false, "BenchmarkLeaseWait: send the three requests at once, instead of the others while the first one's token call is under way")
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestLeaseClockSkew: an instance whose clock runs a lease's length ahead
// sees a live claim as lapsed and refreshes a second time — what skew may
// cost — but the consent stays whole: the first holder's later save is
// refused, and the record is the second refresh's, with no lease left.
func TestLeaseClockSkew(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e, nodes, hold := expiredAlice(t, kind, 2)
			ahead := func() time.Time { return e.clock.Now().Add(testLease.length) }
			nodes[1].srv.now, nodes[1].srv.consents.now = ahead, ahead
			var holder inFlight
			holder.send(nodes[0], "Holder")
			arrived(t, hold)
			if code, body := nodes[1].createSpace("Ahead"); code != http.StatusOK {
				t.Fatalf("the instance ahead: got %d: %s", code, body)
			}
			if got := e.google.RefreshCalls(aliceSub); got != 2 {
				t.Errorf("token calls: got %d, want 2 (the instance ahead took the lease over)", got)
			}
			saved := e.storedToken(aliceSub)
			checkNoLease(t, saved)
			hold.Release()
			if a := holder.wait()["Holder"]; a.code != http.StatusOK {
				t.Errorf("the first holder: got %d: %s", a.code, a.body)
			}
			if diff := cmp.Diff(saved, e.storedToken(aliceSub), timeEqual); diff != "" {
				t.Errorf("the first holder's save replaced the newer one (-saved +after):\n%s", diff)
			}
		})
	}
}
