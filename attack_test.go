package chatauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/oauth2"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// This file attacks the whole service over HTTP, through the handlers the
// Functions Framework registers, the way an adversary would: every row
// sends one hostile request and checks the exact status and JSON error,
// that no token was stored or changed, that no upstream call was made that
// should not have been, that no secret came back and that nothing
// redirected off the configured hosts.
// TESTING.md lists what is attacked and why.

const (
	attackAudience = "https://chatauth.example/CreateSpace"
	attackTrusted  = "scheduler@p.iam.gserviceaccount.com"
	malloryEmail   = "mallory@example.com"
)

// upstream names the fake Google's counters an attack may move. Every
// counter not named must stay where it was.
type upstream uint8

const (
	mayExchange upstream = 1 << iota // authorization_code requests
	mayRefresh                       // refresh_token requests
	mayChat                          // Chat API calls
	mayRevoke                        // revocation requests
)

// counters are the fake Google's traffic counters.
type counters struct{ exchange, refresh, chat, revoke int }

func readCounters(g *fakegoogle.Server) counters {
	return counters{g.ExchangeCalls(), g.TotalRefreshCalls(), g.TotalChatCalls(), g.RevokeCalls()}
}

// checkUpstream fails unless only the counters in may moved.
func checkUpstream(t *testing.T, before, after counters, may upstream) {
	t.Helper()
	for _, c := range []struct {
		name          string
		flag          upstream
		before, after int
	}{
		{"token endpoint (code exchange)", mayExchange, before.exchange, after.exchange},
		{"token endpoint (refresh)", mayRefresh, before.refresh, after.refresh},
		{"Chat API", mayChat, before.chat, after.chat},
		{"revocation endpoint", mayRevoke, before.revoke, after.revoke},
	} {
		if may&c.flag == 0 && c.after != c.before {
			t.Errorf("the %s was called %d times, want 0", c.name, c.after-c.before)
		}
	}
}

// rawTokens returns every token record the backing storage holds, as
// stored (ciphertexts included), by document id. Any write changes the
// text, since every encryption draws a new nonce.
func rawTokens(t *testing.T, s tokenStore) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch s := innerStore(s).(type) {
	case *firestoreStore:
		docs, err := s.client.Collection(tokensCollection).Documents(context.Background()).GetAll()
		if err != nil {
			t.Fatalf("list token documents: %v", err)
		}
		for _, d := range docs {
			out[d.Ref.ID] = fmt.Sprintf("%v", d.Data())
		}
	case *localStore:
		err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(tokensCollection)).ForEach(func(k, v []byte) error {
				out[string(k)] = string(v)
				return nil
			})
		})
		if err != nil {
			t.Fatalf("list token records: %v", err)
		}
	default:
		t.Fatalf("no raw reader for %T", s)
	}
	return out
}

// attackEnv is a test environment with the ID-token callers configured,
// and the browsers of a victim (alice) and an attacker (mallory).
type attackEnv struct {
	*testEnv
	t        *testing.T
	victim   *browser
	attacker *browser
}

func newAttackEnv(t *testing.T) *attackEnv {
	e := newTestEnv(t, storeFirestore, func(c *Config) {
		c.AllowedAudiences = []string{attackAudience}
		c.TrustedCallers = []string{attackTrusted}
		c.ChatAudienceType, c.ChatAudience, c.ChatProjectNumber = chatAudienceEndpoint, chatEndpointURL, addOnProject
	})
	e.google.AddUser(fakegoogle.User{Email: malloryEmail, EmailVerified: true})
	return &attackEnv{testEnv: e, t: t, victim: newBrowser(t), attacker: newBrowser(t)}
}

// as returns a copy of a whose helpers report to t, for subtests that
// share one environment.
func (a *attackEnv) as(t *testing.T) *attackEnv {
	c := *a
	c.t = t
	return &c
}

// browserGet is a GET of u by b, carrying b's cookies and asking for the
// JSON error envelope. The real codes and states in u were recorded for
// the log check when the consent started; what an attack makes of them is
// not secret, and recording it would flag other tests' logs.
func (a *attackEnv) browserGet(b *browser, u string) *http.Request {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		a.t.Fatalf("request %s: %v", u, err)
	}
	for name, value := range b.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	req.Header.Set("Accept", "application/json")
	return req
}

// webhook is a POST of body to function with the given headers; a header
// of value "" is sent empty.
func (a *attackEnv) webhook(function, body string, header ...string) *http.Request {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.base+"/"+function, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
		sensitive.add(header[i+1], strings.TrimPrefix(header[i+1], "Bearer "))
	}
	return req
}

// sig is a valid X-Signature for body, timestamped dt from now.
func (a *attackEnv) sig(body string, dt time.Duration) string {
	return signBody(testWebhookSecret, a.clock.Now().Add(dt), []byte(body))
}

// signedReq is a correctly signed webhook request.
func (a *attackEnv) signedReq(function, body string) *http.Request {
	return a.webhook(function, body, "X-Signature", a.sig(body, 0))
}

// idToken mints a Google ID token for a webhook caller with edit applied
// (a nil value deletes a claim).
func (a *attackEnv) idToken(email string, edit map[string]any) string {
	now := time.Now()
	c := map[string]any{
		"iss": fakegoogle.GoogleIssuer, "aud": attackAudience, "sub": "998877665544332211000", "email": email,
		"email_verified": true, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	for k, v := range edit {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return a.google.MintIDToken(c)
}

// bearer is a webhook request with an ID token.
func (a *attackEnv) bearer(function, body, token string) *http.Request {
	return a.webhook(function, body, "Authorization", "Bearer "+token)
}

// consentCallback is the callback URL of a consent b started, for the account
// hint (mallory's browser signs in as mallory).
func (a *attackEnv) consentCallback(b *browser, hint string) *url.URL {
	a.t.Helper()
	e := *a.testEnv
	e.t = a.t
	return e.startConsent(b, hint)
}

// connectVictim stores alice's consent through the real flow.
func (a *attackEnv) connectVictim() {
	a.t.Helper()
	resp, body := a.victim.get(a.consentCallback(a.victim, aliceEmail).String())
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("victim's consent: %d %s", resp.StatusCode, body)
	}
}

// flowCookieOf is the name of a started consent's flow cookie and the
// value b holds under it.
func flowCookieOf(b *browser, cb *url.URL) (name, value string) {
	name = flowCookieName(cb.Query().Get("state"))
	return name, b.cookies[name]
}

// resealFlow replaces the victim's flow cookie of a started consent with
// one sealed after edit, as only a holder of the token keyset (or an
// instance with a skewed clock) could make it, to see that the callback
// checks what it opens.
func (a *attackEnv) resealFlow(cb *url.URL, edit func(*stateRecord)) {
	a.t.Helper()
	state := cb.Query().Get("state")
	name, value := flowCookieOf(a.victim, cb)
	rec, err := a.srv.openFlow(state, value)
	if err != nil {
		a.t.Fatalf("open the victim's flow cookie: %v", err)
	}
	edit(rec)
	if a.victim.cookies[name], err = a.srv.sealFlow(state, rec); err != nil {
		a.t.Fatalf("seal the flow cookie: %v", err)
	}
}

// cookieHeader is a Cookie header of name=value pairs, in order.
func cookieHeader(pairs ...string) string {
	var parts []string
	for i := 0; i+1 < len(pairs); i += 2 {
		parts = append(parts, pairs[i]+"="+pairs[i+1])
	}
	return strings.Join(parts, "; ")
}

// victimCompletes checks that the victim's own callback still succeeds
// after an attack: the attack did not burn the victim's state.
func victimCompletes(cb *url.URL) func(a *attackEnv) {
	return func(a *attackEnv) {
		a.t.Helper()
		resp, body := a.victim.get(cb.String())
		if resp.StatusCode != http.StatusOK {
			a.t.Errorf("the victim's own callback after the attack: got %d, want 200: %s", resp.StatusCode, body)
		}
	}
}

// attackCase is one row of the table.
type attackCase struct {
	name string
	// prepare sets the scene and returns the hostile request; it may
	// return a check to run after the attack's own checks.
	prepare func(a *attackEnv) (*http.Request, func(a *attackEnv))
	code    int
	status  string   // the JSON error's status; "" for a 2xx
	may     upstream // upstream calls the attack may cause
}

// just is a prepare without an after-check.
func just(f func(a *attackEnv) *http.Request) func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
	return func(a *attackEnv) (*http.Request, func(a *attackEnv)) { return f(a), nil }
}

// runAttack sends one attack and makes every check of the table.
func runAttack(t *testing.T, a *attackEnv, tc attackCase) {
	t.Helper()
	req, after := tc.prepare(a)
	records := rawTokens(t, a.srv.store)
	before := readCounters(a.google)

	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)

	if resp.StatusCode != tc.code {
		t.Errorf("got status %d, want %d; body: %.400s", resp.StatusCode, tc.code, body)
	} else if tc.status != "" {
		checkJSONBody(t, body, tc.code, tc.status)
	}
	if tc.code == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	checkUpstream(t, before, readCounters(a.google), tc.may)
	if tc.code >= 300 {
		if diff := cmp.Diff(records, rawTokens(t, a.srv.store)); diff != "" {
			t.Errorf("a refused attack changed the stored tokens (-before +after):\n%s", diff)
		}
	}
	checkNoOffHostRedirect(t, a, resp, body)
	checkNoSecrets(t, a, resp, body)
	if after != nil {
		after(a)
	}
}

// checkNoSecrets fails if any code or token the fake issued, or a
// configured secret, is in the answer.
func checkNoSecrets(t *testing.T, a *attackEnv, resp *http.Response, body string) {
	t.Helper()
	var head strings.Builder
	resp.Header.Write(&head)
	for _, s := range append(a.google.IssuedSecrets(), testWebhookSecret) {
		if len(s) >= 8 && (strings.Contains(body, s) || strings.Contains(head.String(), s)) {
			t.Errorf("the answer carries a secret (%d characters, starting %.4q)", len(s), s)
		}
	}
}

// hrefPattern finds the links of an HTML page.
var hrefPattern = regexp.MustCompile(`(?i)(?:href|src|action)\s*=\s*"([^"]*)"`)

// checkNoOffHostRedirect fails if the answer sends the browser anywhere
// but chatauth itself (PUBLIC_URL), Google's consent screen (the fake's
// auth_uri) or Google Chat: by Location, Refresh, an authorizeUrl or a
// link on an HTML page.
func checkNoOffHostRedirect(t *testing.T, a *attackEnv, resp *http.Response, body string) {
	t.Helper()
	public, _ := url.Parse(a.cfg.PublicURL)
	auth, _ := url.Parse(a.srv.client.AuthURI)
	allowed := func(raw, where string) {
		t.Helper()
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			t.Errorf("%s %q does not parse: %v", where, raw, err)
		case u.Scheme == public.Scheme && u.Host == public.Host && u.User == nil:
		case u.Scheme == auth.Scheme && u.Host == auth.Host && u.User == nil && strings.HasPrefix(raw, a.srv.client.AuthURI+"?"):
		case raw == "https://chat.google.com" || strings.HasPrefix(raw, chatRedirectPrefix) && u.Host == "chat.google.com" && u.User == nil:
		default:
			t.Errorf("%s %q leads off the configured hosts", where, raw)
		}
	}
	if l := resp.Header.Get("Location"); l != "" {
		allowed(l, "Location")
	}
	if r := resp.Header.Get("Refresh"); r != "" {
		t.Errorf("Refresh header %q", r)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var env struct {
			Error struct {
				AuthorizeURL string `json:"authorizeUrl"`
			} `json:"error"`
		}
		if json.Unmarshal([]byte(body), &env) == nil && env.Error.AuthorizeURL != "" {
			if !strings.HasPrefix(env.Error.AuthorizeURL, a.cfg.PublicURL+"/OAuthStart") {
				t.Errorf("authorizeUrl %q is not chatauth's OAuthStart", env.Error.AuthorizeURL)
			}
			allowed(env.Error.AuthorizeURL, "authorizeUrl")
		}
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		for _, m := range hrefPattern.FindAllStringSubmatch(body, -1) {
			allowed(strings.ReplaceAll(m[1], "&amp;", "&"), "link")
		}
		if strings.Contains(strings.ToLower(body), "http-equiv") {
			t.Error("the page carries an http-equiv meta tag")
		}
	}
}

// TestAttacks runs the adversarial table. The OAuth rows each get a fresh
// environment (they shape fake Google's answers); the webhook rows share
// one, with alice connected, and every row compares the stored tokens and
// the upstream counters before and after.
func TestAttacks(t *testing.T) {
	t.Parallel()
	t.Run("OAuth", func(t *testing.T) {
		for _, tc := range oauthAttacks() {
			t.Run(tc.name, func(t *testing.T) {
				runAttack(t, newAttackEnv(t), tc)
			})
		}
	})
	t.Run("identity and replay", func(t *testing.T) {
		for _, tc := range identityAttacks() {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				a := newAttackEnv(t)
				a.connectVictim()
				runAttack(t, a, tc)
			})
		}
	})
	a := newAttackEnv(t)
	a.connectVictim()
	for _, group := range []struct {
		name  string
		cases []attackCase
	}{
		{"caller", callerAttacks()},
		{"input", inputAttacks()},
		{"ChatEvents", chatAttacks()},
	} {
		t.Run(group.name, func(t *testing.T) {
			for _, tc := range group.cases {
				t.Run(tc.name, func(t *testing.T) { runAttack(t, a.as(t), tc) })
			}
		})
	}
	total := len(oauthAttacks()) + len(callerAttacks()) + len(inputAttacks()) + len(chatAttacks()) + len(identityAttacks())
	if total < 60 {
		t.Errorf("the table has %d rows, want at least 60", total)
	}
}

// oauthAttacks attack OAuthStart and OAuthCallback. Unless a row says
// otherwise, alice has started a consent in her browser and Google has
// sent her back; the row tampers with that answer.
func oauthAttacks() []attackCase {
	// started is a prepare that lets the victim start a consent and hands
	// the callback URL to f.
	started := func(f func(a *attackEnv, cb *url.URL) *http.Request) func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
		return func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			return f(a, a.consentCallback(a.victim, aliceEmail)), nil
		}
	}
	// startedThenCompletes is started, after which the victim's own
	// callback must still succeed.
	startedThenCompletes := func(f func(a *attackEnv, cb *url.URL) *http.Request) func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
		return func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			cb := a.consentCallback(a.victim, aliceEmail)
			return f(a, cb), victimCompletes(cb)
		}
	}
	withState := func(state string) func(a *attackEnv, cb *url.URL) *http.Request {
		return func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "state", state))
		}
	}
	tamperState := func(f func(string) string) func(a *attackEnv, cb *url.URL) *http.Request {
		return func(a *attackEnv, cb *url.URL) *http.Request {
			return withState(f(cb.Query().Get("state")))(a, cb)
		}
	}
	rawQuery := func(cb *url.URL, extra string) string { return cb.String() + extra }
	const pd, ia, ar = statusPermissionDenied, statusInvalidArgument, statusAuthorizationRequired

	return []attackCase{
		// Forged and mangled states never reach the token endpoint, and
		// do not burn the victim's state either.
		{"forged state", startedThenCompletes(withState(randomToken())), 403, pd, 0},
		{"truncated state", startedThenCompletes(tamperState(func(s string) string { return s[:len(s)-1] })), 403, pd, 0},
		{"state cut in half", startedThenCompletes(tamperState(func(s string) string { return s[:len(s)/2] })), 403, pd, 0},
		{"bit-flipped state", startedThenCompletes(tamperState(func(s string) string {
			b := []byte(s)
			b[len(b)/2] ^= 0x01
			return string(b)
		})), 403, pd, 0},
		{"state with a character appended", startedThenCompletes(tamperState(func(s string) string { return s + "A" })), 403, pd, 0},
		{"state in upper case", startedThenCompletes(tamperState(strings.ToUpper)), 403, pd, 0},
		{"state with a NUL", startedThenCompletes(tamperState(func(s string) string { return s + "\x00" })), 403, pd, 0},
		{"empty state", startedThenCompletes(withState("")), 400, ia, 0},
		{"no state", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			c := *cb
			q := c.Query()
			q.Del("state")
			c.RawQuery = q.Encode()
			return a.browserGet(a.victim, c.String())
		}), 400, ia, 0},
		{"state of 513 bytes", startedThenCompletes(withState(strings.Repeat("s", 513))), 400, ia, 0},
		{"state repeated", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, rawQuery(cb, "&state="+url.QueryEscape(cb.Query().Get("state"))))
		}), 400, ia, 0},
		{"another state repeated after the victim's", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, rawQuery(cb, "&state="+randomToken()))
		}), 400, ia, 0},
		{"replayed callback", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			cb := a.consentCallback(a.victim, aliceEmail)
			name, cookie := flowCookieOf(a.victim, cb)
			if resp, body := a.victim.get(cb.String()); resp.StatusCode != 200 {
				a.t.Fatalf("first callback: %d %s", resp.StatusCode, body)
			}
			// The replay comes with the cookie the first callback cleared,
			// as an attacker who copied both would send it.
			a.attacker.cookies[name] = cookie
			return a.browserGet(a.attacker, cb.String()), nil
		}, 403, pd, 0},
		{"replayed callback in the same browser, cookie kept", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			cb := a.consentCallback(a.victim, aliceEmail)
			name, cookie := flowCookieOf(a.victim, cb)
			if resp, body := a.victim.get(cb.String()); resp.StatusCode != 200 {
				a.t.Fatalf("first callback: %d %s", resp.StatusCode, body)
			}
			a.victim.cookies[name] = cookie
			return a.browserGet(a.victim, cb.String()), nil
		}, 403, pd, 0},
		{"expired flow", started(func(a *attackEnv, cb *url.URL) *http.Request {
			a.clock.Advance(stateTTL + time.Second)
			return a.browserGet(a.victim, cb.String())
		}), 403, pd, 0},
		{"flow sealed an hour ahead", started(func(a *attackEnv, cb *url.URL) *http.Request {
			// A cookie dated an hour ahead (by an instance whose clock is
			// wrong) would otherwise stay usable for 70 minutes.
			a.resealFlow(cb, func(r *stateRecord) { r.CreatedAt = r.CreatedAt.Add(time.Hour) })
			return a.browserGet(a.victim, cb.String())
		}), 403, pd, 0},
		{"flow cookie's clear creation time moved forward", started(func(a *attackEnv, cb *url.URL) *http.Request {
			// The creation time is readable in the value, and bound to
			// the ciphertext: moving it to stretch the flow's life breaks
			// the seal.
			name, value := flowCookieOf(a.victim, cb)
			created, _, _ := splitFlowValue(value)
			later := strconv.FormatInt(created+int64(stateTTL/time.Second), 10)
			a.victim.cookies[name] = strings.Replace(value, strconv.FormatInt(created, 10), later, 1)
			a.clock.Advance(stateTTL + time.Second)
			return a.browserGet(a.victim, cb.String())
		}), 403, pd, 0},

		// The state is bound to the browser that started the consent, by
		// a cookie of the flow's own that only the server can seal.
		{"state bound to another browser's cookie", started(func(a *attackEnv, cb *url.URL) *http.Request {
			a.consentCallback(a.attacker, malloryEmail)
			return a.browserGet(a.attacker, cb.String())
		}), 403, pd, 0},
		{"attacker's callback opened in the victim's browser (login CSRF)", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			a.consentCallback(a.victim, aliceEmail)
			return a.browserGet(a.victim, a.consentCallback(a.attacker, malloryEmail).String()), nil
		}, 403, pd, 0},
		{"no cookie", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(newBrowser(a.t), cb.String())
		}), 403, pd, 0},
		{"empty cookie", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			req := a.browserGet(newBrowser(a.t), cb.String())
			name, _ := flowCookieOf(a.victim, cb)
			req.Header.Set("Cookie", name+"=")
			return req
		}), 403, pd, 0},
		{"cookie without the __Host- prefix", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			req := a.browserGet(newBrowser(a.t), cb.String())
			name, value := flowCookieOf(a.victim, cb)
			req.Header.Set("Cookie", strings.TrimPrefix(name, "__Host-")+"="+value)
			return req
		}), 403, pd, 0},
		{"cookie name in upper case", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			req := a.browserGet(newBrowser(a.t), cb.String())
			name, value := flowCookieOf(a.victim, cb)
			req.Header.Set("Cookie", strings.ToUpper(name)+"="+value)
			return req
		}), 403, pd, 0},
		{"cookie of another flow of the same browser", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			other := a.consentCallback(a.victim, aliceEmail)
			name, _ := flowCookieOf(a.victim, cb)
			_, otherValue := flowCookieOf(a.victim, other)
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, otherValue))
			return req
		}), 403, pd, 0},
		{"two flows' cookie names swapped", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			other := a.consentCallback(a.victim, aliceEmail)
			name, value := flowCookieOf(a.victim, cb)
			otherName, otherValue := flowCookieOf(a.victim, other)
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, otherValue, otherName, value))
			return req
		}), 403, pd, 0},
		{"attacker's own flow cookie under the victim's name", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			_, attackerValue := flowCookieOf(a.attacker, a.consentCallback(a.attacker, malloryEmail))
			name, _ := flowCookieOf(a.victim, cb)
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, attackerValue))
			return req
		}), 403, pd, 0},
		{"forged flow cookie", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			name, value := flowCookieOf(a.victim, cb)
			created, _, _ := splitFlowValue(value)
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, flowValuePrefix+strconv.FormatInt(created, 10)+"."+randomToken()+randomToken()))
			return req
		}), 403, pd, 0},
		{"flow cookie bit-flipped", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			name, value := flowCookieOf(a.victim, cb)
			b := []byte(value)
			b[len(b)-10] ^= 0x01
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, string(b)))
			return req
		}), 403, pd, 0},
		{"flow cookie truncated", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			name, value := flowCookieOf(a.victim, cb)
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, value[:len(value)-4]))
			return req
		}), 403, pd, 0},
		{"flow cookie of an older format", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			name, value := flowCookieOf(a.victim, cb)
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, "f0."+strings.TrimPrefix(value, flowValuePrefix)))
			return req
		}), 403, pd, 0},
		{"cookie value is the state itself", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			name, _ := flowCookieOf(a.victim, cb)
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, cb.Query().Get("state")))
			return req
		}), 403, pd, 0},
		{"the victim's cookie behind 20 forged ones of its name", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			name, value := flowCookieOf(a.victim, cb)
			var pairs []string
			for range 20 {
				pairs = append(pairs, name, flowValuePrefix+"1."+randomToken())
			}
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(append(pairs, name, value)...))
			return req
		}), 403, pd, 0},
		{"a planted cookie of the victim's name does not block the victim", started(func(a *attackEnv, cb *url.URL) *http.Request {
			// Only a genuine cookie opens, so a planted one before it (a
			// browser refuses to take a __Host- cookie from anywhere but
			// chatauth's host) changes nothing.
			_, attackerValue := flowCookieOf(a.attacker, a.consentCallback(a.attacker, malloryEmail))
			name, value := flowCookieOf(a.victim, cb)
			req := a.browserGet(newBrowser(a.t), cb.String())
			req.Header.Set("Cookie", cookieHeader(name, attackerValue, name, value))
			return req
		}), 200, "", mayExchange},

		// Codes: injected, stolen, replayed, or redeemed with the wrong
		// PKCE verifier. Google refuses each; nothing is stored.
		{"code injection: attacker's code with the victim's state", started(func(a *attackEnv, cb *url.URL) *http.Request {
			attacker := a.consentCallback(a.attacker, malloryEmail)
			return a.browserGet(a.victim, withParam(cb, "code", attacker.Query().Get("code")))
		}), 403, ar, mayExchange},
		{"stolen code redeemed in the attacker's own flow", started(func(a *attackEnv, cb *url.URL) *http.Request {
			attacker := a.consentCallback(a.attacker, malloryEmail)
			return a.browserGet(a.attacker, withParam(attacker, "code", cb.Query().Get("code")))
		}), 403, ar, mayExchange},
		{"PKCE verifier mismatch", started(func(a *attackEnv, cb *url.URL) *http.Request {
			a.resealFlow(cb, func(r *stateRecord) { r.Verifier = oauth2.GenerateVerifier() })
			return a.browserGet(a.victim, cb.String())
		}), 403, ar, mayExchange},
		{"used code replayed in a new flow", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			cb := a.consentCallback(a.victim, aliceEmail)
			if resp, body := a.victim.get(cb.String()); resp.StatusCode != 200 {
				a.t.Fatalf("first callback: %d %s", resp.StatusCode, body)
			}
			again := a.consentCallback(a.attacker, malloryEmail)
			return a.browserGet(a.attacker, withParam(again, "code", cb.Query().Get("code"))), nil
		}, 403, ar, mayExchange},
		{"code repeated", started(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, rawQuery(cb, "&code=4%2F0attacker"))
		}), 400, ia, 0},
		{"code of 4097 bytes", started(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "code", strings.Repeat("c", 4097)))
		}), 400, ia, 0},
		{"error and code together", started(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, rawQuery(cb, "&error=access_denied"))
		}), 403, ar, 0},

		// RFC 9207 issuer identification: a mix-up never sends the code.
		{"iss mix-up", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "iss", "https://evil.example"))
		}), 403, pd, 0},
		{"iss with a trailing slash", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "iss", googleIssuer+"/"))
		}), 403, pd, 0},
		{"iss on another scheme", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "iss", "http://accounts.google.com"))
		}), 403, pd, 0},
		{"iss present but empty", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "iss", ""))
		}), 403, pd, 0},
		{"iss as the id_token's bare issuer", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "iss", "accounts.google.com"))
		}), 403, pd, 0},
		{"iss in another case", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "iss", "https://Accounts.Google.com"))
		}), 403, pd, 0},
		{"iss with a space after it", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, withParam(cb, "iss", googleIssuer+" "))
		}), 403, pd, 0},
		{"iss empty, then Google's", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, rawQuery(cb, "&iss=&iss="+url.QueryEscape(googleIssuer)))
		}), 400, ia, 0},
		{"iss repeated", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, rawQuery(cb, "&iss="+url.QueryEscape(googleIssuer)))
		}), 400, ia, 0},
		{"iss repeated with an attacker's issuer", startedThenCompletes(func(a *attackEnv, cb *url.URL) *http.Request {
			return a.browserGet(a.victim, rawQuery(cb, "&iss=https%3A%2F%2Fevil.example"))
		}), 400, ia, 0},

		// Scopes and the id_token come from Google's token response, not
		// from anything the browser carries.
		{"scope downgrade at consent", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			a.google.SetGrantedScopes("openid", "email")
			return a.browserGet(a.victim, a.consentCallback(a.victim, aliceEmail).String()), nil
		}, 403, ar, mayExchange},
		{"scope forged in the redirect", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			a.google.SetGrantedScopes("openid", "email")
			cb := a.consentCallback(a.victim, aliceEmail)
			return a.browserGet(a.victim, withParam(cb, "scope", "openid email "+scopeChatCreate)), nil
		}, 403, ar, mayExchange},
		{"id_token expired", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			a.google.SetIDTokenClaims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
			return a.browserGet(a.victim, a.consentCallback(a.victim, aliceEmail).String()), nil
		}, 502, statusUpstreamError, mayExchange},
		{"id_token without a subject", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			a.google.SetIDTokenClaims(func(c map[string]any) { delete(c, "sub") })
			return a.browserGet(a.victim, a.consentCallback(a.victim, aliceEmail).String()), nil
		}, 502, statusUpstreamError, mayExchange},

		// OAuthStart's own input.
		{"login_hint with CRLF", just(func(a *attackEnv) *http.Request {
			return a.browserGet(a.victim, a.base+"/OAuthStart?login_hint="+url.QueryEscape("alice@example.com\r\nSet-Cookie: x=y"))
		}), 400, ia, 0},
		{"login_hint longer than an address can be", just(func(a *attackEnv) *http.Request {
			return a.browserGet(a.victim, a.base+"/OAuthStart?login_hint="+strings.Repeat("a", 250)+"%40example.com")
		}), 400, ia, 0},
		{"OAuthStart sent 2,000 flow cookies", just(func(a *attackEnv) *http.Request {
			// Answered as any start, with a bounded number of cookies
			// cleared (TestStartClearsFlowCookies counts them).
			var pairs []string
			for i := range 2000 {
				pairs = append(pairs, fmt.Sprintf("%s%016x", flowCookiePrefix, i), flowValuePrefix+"1."+randomToken())
			}
			req := a.browserGet(a.victim, a.base+"/OAuthStart?login_hint=alice%40example.com")
			req.Header.Set("Cookie", cookieHeader(pairs...))
			return req
		}), 302, "", 0},
		{"callback by POST", started(func(a *attackEnv, cb *url.URL) *http.Request {
			req := a.browserGet(a.victim, cb.String())
			req.Method = http.MethodPost
			return req
		}), 405, statusMethodNotAllowed, 0},
	}
}

// callerAttacks attack the webhook functions' caller authentication. Each
// body is valid, so only the credential decides.
func callerAttacks() []attackCase {
	body := `{"user":"alice@example.com","displayName":"Attack"}`
	xsig := func(header ...string) func(a *attackEnv) *http.Request {
		return func(a *attackEnv) *http.Request {
			return a.webhook("CreateSpace", body, header...)
		}
	}
	// withSig builds the X-Signature from a valid one for body.
	withSig := func(f func(ts, v1 string) string) func(a *attackEnv) *http.Request {
		return func(a *attackEnv) *http.Request {
			ts, v1, _ := strings.Cut(strings.TrimPrefix(a.sig(body, 0), "t="), ",v1=")
			return a.webhook("CreateSpace", body, "X-Signature", f(ts, v1))
		}
	}
	atOffset := func(name string, dt time.Duration, code int, status string, may upstream) attackCase {
		b := strings.Replace(body, "Attack", name, 1)
		return attackCase{name, just(func(a *attackEnv) *http.Request {
			// The timestamp is whole seconds: a second going by between
			// signing and checking would move the row across the window's
			// edge, so the server's clock stands still for the row.
			a.clock.Freeze(a.t)
			return a.webhook("CreateSpace", b, "X-Signature", a.sig(b, dt))
		}), code, status, may}
	}
	bearer := func(email string, edit map[string]any) func(a *attackEnv) *http.Request {
		return func(a *attackEnv) *http.Request {
			return a.bearer("CreateSpace", body, a.idToken(email, edit))
		}
	}
	crafted := func(header map[string]any, sign func(a *attackEnv, input string) []byte) func(a *attackEnv) *http.Request {
		return func(a *attackEnv) *http.Request {
			if _, ok := header["kid"]; ok {
				header["kid"] = a.google.KeyID()
			}
			claims := map[string]any{
				"iss": fakegoogle.GoogleIssuer, "aud": attackAudience, "sub": "1", "email": aliceEmail,
				"email_verified": true, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
			}
			return a.bearer("CreateSpace", body, craftJWT(a.t, header, claims, func(in string) []byte { return sign(a, in) }))
		}
	}
	publicKeyPEM := func(a *attackEnv) []byte {
		der, err := x509.MarshalPKIXPublicKey(a.google.PublicKey())
		if err != nil {
			a.t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	const un, pd = statusUnauthenticated, statusPermissionDenied

	return []attackCase{
		// Malformed X-Signature headers.
		{"X-Signature empty", just(xsig("X-Signature", "")), 401, un, 0},
		{"X-Signature without v1", just(withSig(func(ts, v1 string) string { return "t=" + ts })), 401, un, 0},
		{"X-Signature without t", just(withSig(func(ts, v1 string) string { return "v1=" + v1 })), 401, un, 0},
		{"X-Signature with empty values", just(xsig("X-Signature", "t=,v1=")), 401, un, 0},
		{"X-Signature with non-hex v1", just(withSig(func(ts, v1 string) string { return "t=" + ts + ",v1=" + strings.Repeat("z", 64) })), 401, un, 0},
		{"X-Signature v1 one digit short", just(withSig(func(ts, v1 string) string { return "t=" + ts + ",v1=" + v1[:63] })), 401, un, 0},
		{"X-Signature v1 one digit flipped", just(withSig(func(ts, v1 string) string {
			last := "0"
			if v1[63] == '0' {
				last = "1"
			}
			return "t=" + ts + ",v1=" + v1[:63] + last
		})), 401, un, 0},
		{"X-Signature t repeated", just(withSig(func(ts, v1 string) string { return "t=" + ts + ",t=" + ts + ",v1=" + v1 })), 401, un, 0},
		{"X-Signature v1 repeated", just(withSig(func(ts, v1 string) string { return "t=" + ts + ",v1=" + v1 + ",v1=" + strings.Repeat("0", 64) })), 401, un, 0},
		{"X-Signature unknown key repeated", just(withSig(func(ts, v1 string) string { return "t=" + ts + ",v1=" + v1 + ",x=1,x=1" })), 401, un, 0},
		{"X-Signature in another scheme", just(withSig(func(ts, v1 string) string { return "sha256=" + v1 })), 401, un, 0},
		{"X-Signature as v0 only", just(withSig(func(ts, v1 string) string { return "t=" + ts + ",v0=" + v1 })), 401, un, 0},
		{"X-Signature with a semicolon", just(withSig(func(ts, v1 string) string { return "t=" + ts + ";v1=" + v1 })), 401, un, 0},
		{"X-Signature with spaces", just(withSig(func(ts, v1 string) string { return "t=" + ts + ", v1=" + v1 })), 401, un, 0},
		{"X-Signature of 16 KiB", just(withSig(func(ts, v1 string) string { return "t=" + ts + ",v1=" + v1 + ",x=" + strings.Repeat("a", 16<<10) })), 401, un, 0},
		{"X-Signature t negative", just(withSig(func(ts, v1 string) string { return "t=-" + ts + ",v1=" + v1 })), 401, un, 0},
		{"X-Signature t in milliseconds", just(withSig(func(ts, v1 string) string { return "t=" + ts + "000,v1=" + v1 })), 401, un, 0},
		{"X-Signature t overflowing int64", just(withSig(func(ts, v1 string) string { return "t=99999999999999999999,v1=" + v1 })), 401, un, 0},
		{"X-Signature non-ASCII", just(withSig(func(ts, v1 string) string { return "t=" + ts + ",v1=" + v1 + ",x=é" })), 401, un, 0},
		{"two X-Signature headers", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			s := a.sig(body, 0)
			return a.webhook("CreateSpace", body, "X-Signature", s, "X-Signature", s), nil
		}, 401, un, 0},
		{"X-Signature and an ID token both", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			return a.webhook("CreateSpace", body, "X-Signature", a.sig(body, 0), "Authorization", "Bearer "+a.idToken(aliceEmail, nil)), nil
		}, 401, un, 0},

		// The window and the body.
		atOffset("301 s old", -301*time.Second, 401, un, 0),
		atOffset("301 s ahead", 301*time.Second, 401, un, 0),
		atOffset("299 s old", -299*time.Second, 200, "", mayChat),
		atOffset("299 s ahead", 299*time.Second, 200, "", mayChat),
		{"body changed by one byte", just(func(a *attackEnv) *http.Request {
			return a.webhook("CreateSpace", strings.Replace(body, "Attack", "Attacl", 1), "X-Signature", a.sig(body, 0))
		}), 401, un, 0},
		{"body re-serialized", just(func(a *attackEnv) *http.Request {
			var v map[string]any
			json.Unmarshal([]byte(body), &v)
			again, _ := json.MarshalIndent(v, "", " ")
			return a.webhook("CreateSpace", string(again), "X-Signature", a.sig(body, 0))
		}), 401, un, 0},
		{"signed with another secret", just(func(a *attackEnv) *http.Request {
			return a.webhook("CreateSpace", body, "X-Signature", signBody("whsec-attacker-0123456789abcdef", a.clock.Now(), []byte(body)))
		}), 401, un, 0},
		{"signature over the body without t", just(func(a *attackEnv) *http.Request {
			m := hmac.New(sha256.New, []byte(testWebhookSecret))
			m.Write([]byte(body))
			return a.webhook("CreateSpace", body, "X-Signature", fmt.Sprintf("t=%d,v1=%x", a.clock.Now().Unix(), m.Sum(nil)))
		}), 401, un, 0},

		// Google ID tokens.
		{"ID token for another audience", just(bearer(aliceEmail, map[string]any{"aud": "https://evil.example/CreateSpace"})), 401, un, 0},
		{"ID token expired", just(bearer(aliceEmail, map[string]any{"iat": time.Now().Add(-2 * time.Hour).Unix(), "exp": time.Now().Add(-time.Hour).Unix()})), 401, un, 0},
		{"ID token from another issuer", just(bearer(aliceEmail, map[string]any{"iss": "https://evil.example"})), 401, un, 0},
		{"ID token with an unverified email", just(bearer(aliceEmail, map[string]any{"email_verified": false})), 401, un, 0},
		{"ID token alg none", just(crafted(map[string]any{"alg": "none", "typ": "JWT"}, func(*attackEnv, string) []byte { return nil })), 401, un, 0},
		{"ID token HS256 keyed with the public key", just(crafted(map[string]any{"alg": "HS256", "kid": "", "typ": "JWT"}, func(a *attackEnv, in string) []byte {
			m := hmac.New(sha256.New, publicKeyPEM(a))
			m.Write([]byte(in))
			return m.Sum(nil)
		})), 401, un, 0},
		{"ID token with an unknown kid", just(func(a *attackEnv) *http.Request {
			return a.bearer("CreateSpace", body, withHeader(a.t, a.idToken(aliceEmail, nil), map[string]any{"alg": "RS256", "kid": strings.Repeat("0", 40), "typ": "JWT"}))
		}), 401, un, 0},
		{"ID token with altered claims", just(func(a *attackEnv) *http.Request {
			tok := a.idToken(malloryEmail, nil)
			now := time.Now()
			return a.bearer("CreateSpace", body, withPayload(a.t, tok, map[string]any{
				"iss": fakegoogle.GoogleIssuer, "aud": attackAudience, "sub": "1", "email": attackTrusted,
				"email_verified": true, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			}))
		}), 401, un, 0},
		{"caller acting for another user", just(bearer(malloryEmail, nil)), 403, pd, 0},
		{"trusted-looking caller on a longer domain", just(bearer(attackTrusted+".evil.example", nil)), 403, pd, 0},
		{"trusted-looking caller with a plus tag", just(bearer(strings.Replace(attackTrusted, "@", "+x@", 1), nil)), 403, pd, 0},
		{"caller naming the user by id", just(func(a *attackEnv) *http.Request {
			return a.bearer("CreateSpace", `{"user":"users/`+aliceSub+`","displayName":"By id"}`, a.idToken(aliceEmail, nil))
		}), 403, pd, 0},

		// Disconnect revokes nothing for a caller that may not act.
		{"Disconnect unsigned", just(func(a *attackEnv) *http.Request {
			return a.webhook("Disconnect", `{"user":"alice@example.com"}`)
		}), 401, un, 0},
		{"Disconnect with a body changed by one byte", just(func(a *attackEnv) *http.Request {
			return a.webhook("Disconnect", `{"user":"alice@example.con"}`, "X-Signature", a.sig(`{"user":"alice@example.com"}`, 0))
		}), 401, un, 0},
		{"Disconnect by a caller acting for another user", just(func(a *attackEnv) *http.Request {
			return a.bearer("Disconnect", `{"user":"alice@example.com"}`, a.idToken(malloryEmail, nil))
		}), 403, pd, 0},
	}
}

// inputAttacks send hostile bodies, correctly signed (except where the
// size check comes first), so that the decoder and validator decide.
func inputAttacks() []attackCase {
	signed := func(body string) func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
		return just(func(a *attackEnv) *http.Request { return a.signedReq("CreateSpace", body) })
	}
	field := func(kv string) func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
		return signed(`{"user":"alice@example.com","displayName":"Input",` + kv + `}`)
	}
	// members lists n distinct users, or n times the same (shorter) one.
	members := func(n int, distinct bool) string {
		m := make([]string, n)
		for i := range m {
			m[i] = `"users/1"`
			if distinct {
				m[i] = fmt.Sprintf(`"users/%d"`, i+1)
			}
		}
		return `[` + strings.Join(m, ",") + `]`
	}
	const ia = statusInvalidArgument

	return []attackCase{
		{"body over 64 KiB", signed(`{"user":"alice@example.com","displayName":"` + strings.Repeat("x", 70<<10) + `"}`), 413, statusPayloadTooLarge, 0},
		{"body over 64 KiB without Content-Length", just(func(a *attackEnv) *http.Request {
			body := `{"user":"alice@example.com","displayName":"` + strings.Repeat("x", 70<<10) + `"}`
			req := a.signedReq("CreateSpace", body)
			req.Body = io.NopCloser(io.MultiReader(strings.NewReader(body))) // hides the length: chunked
			req.ContentLength = -1
			return req
		}), 413, statusPayloadTooLarge, 0},
		{"10,000 members", signed(`{"user":"alice@example.com","displayName":"Many","members":` + members(10000, true) + `}`), 413, statusPayloadTooLarge, 0},
		{"6,000 members within the size bound", signed(`{"user":"alice@example.com","displayName":"Many","members":` + members(6000, false) + `}`), 400, ia, 0},
		{"deeply nested arrays", signed(`{"user":` + strings.Repeat("[", 30000) + strings.Repeat("]", 30000) + `}`), 400, ia, 0},
		{"deeply nested objects", signed(strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10000)), 400, ia, 0},
		{"invalid UTF-8 in a value", signed("{\"user\":\"alice@example.com\",\"displayName\":\"a\xc3\x28\"}"), 400, ia, 0},
		{"overlong UTF-8 encoding of '/'", signed("{\"user\":\"alice@example.com\",\"displayName\":\"\xc0\xaf\"}"), 400, ia, 0},
		{"invalid UTF-8 in a key", signed("{\"user\":\"alice@example.com\",\"display\xffName\":\"x\"}"), 400, ia, 0},
		{"byte order mark", signed("\xef\xbb\xbf{\"user\":\"alice@example.com\",\"displayName\":\"BOM\"}"), 400, ia, 0},
		{"NUL in displayName", signed(`{"user":"alice@example.com","displayName":"a\u0000b"}`), 400, ia, 0},
		{"DEL in displayName", signed("{\"user\":\"alice@example.com\",\"displayName\":\"a\x7fb\"}"), 400, ia, 0},
		{"C1 control in displayName", signed(`{"user":"alice@example.com","displayName":"a\u0085b"}`), 400, ia, 0},
		{"terminal escape in description", field(`"description":"\u001b[2J\u001b[31mowned"`), 400, ia, 0},
		// Names that hide something: direction changes, invisible
		// characters, separators; each refused before Chat is called.
		{"left-to-right mark in displayName", signed(`{"user":"alice@example.com","displayName":"admin\u200e"}`), 400, ia, 0},
		{"right-to-left mark in displayName", signed(`{"user":"alice@example.com","displayName":"\u200fIncident"}`), 400, ia, 0},
		{"Arabic letter mark in displayName", signed(`{"user":"alice@example.com","displayName":"a\u061cb"}`), 400, ia, 0},
		{"right-to-left override in displayName", signed(`{"user":"alice@example.com","displayName":"invoice\u202egpj.exe"}`), 400, ia, 0},
		{"first-strong isolate in displayName", signed(`{"user":"alice@example.com","displayName":"a\u2068b\u2069"}`), 400, ia, 0},
		{"zero-width space in displayName", signed(`{"user":"alice@example.com","displayName":"ad\u200bmin"}`), 400, ia, 0},
		{"zero-width joiner between letters", signed(`{"user":"alice@example.com","displayName":"ad\u200dmin"}`), 400, ia, 0},
		{"word joiner in displayName", signed(`{"user":"alice@example.com","displayName":"ad\u2060min"}`), 400, ia, 0},
		{"zero-width no-break space inside displayName", signed(`{"user":"alice@example.com","displayName":"ad\ufeffmin"}`), 400, ia, 0},
		{"Hangul filler as displayName", signed(`{"user":"alice@example.com","displayName":"\u3164"}`), 400, ia, 0},
		{"tag characters smuggled in displayName", signed(`{"user":"alice@example.com","displayName":"Launch\udb40\udc69\udb40\udc67\udb40\udc6e"}`), 400, ia, 0},
		{"variation selectors smuggled in displayName", signed(`{"user":"alice@example.com","displayName":"Launch \ufe00\ufe01\ufe02"}`), 400, ia, 0},
		{"line separator in displayName", signed(`{"user":"alice@example.com","displayName":"a\u2028b"}`), 400, ia, 0},
		{"line separator in description", field(`"description":"first\u2028second"`), 400, ia, 0},
		{"paragraph separator in description", field(`"description":"first\u2029second"`), 400, ia, 0},
		{"right-to-left override in description", field(`"description":"see \u202etxt.exe"`), 400, ia, 0},
		{"soft hyphen in description", field(`"description":"pass\u00adword"`), 400, ia, 0},
		// Chat's own rules, said before any round trip.
		{"GROUP_CHAT with a displayName", signed(`{"user":"alice@example.com","spaceType":"GROUP_CHAT","displayName":"Team","members":["users/1","users/2"]}`), 400, ia, 0},
		{"DIRECT_MESSAGE with a displayName", signed(`{"user":"alice@example.com","spaceType":"DIRECT_MESSAGE","displayName":"Bob","members":["users/1"]}`), 400, ia, 0},
		{"NUL in description", field(`"description":"a\u0000b"`), 400, ia, 0},
		{"newline in user", signed(`{"user":"alice@example.com\n","displayName":"x"}`), 400, ia, 0},
		{"CRLF in requestId", field(`"requestId":"abc\r\nX-Injected: 1"`), 400, ia, 0},
		{"tab in a member", field(`"members":["users/1\t"]`), 400, ia, 0},
		{"duplicate displayName", signed(`{"user":"alice@example.com","displayName":"a","displayName":"b"}`), 400, ia, 0},
		{"duplicate user in another case", signed(`{"user":"alice@example.com","User":"bob@example.com","displayName":"x"}`), 400, ia, 0},
		{"key in another case", signed(`{"USER":"alice@example.com","displayName":"x"}`), 400, ia, 0},
		{"duplicate key by escape", signed(`{"user":"alice@example.com","us\u0065r":"bob@example.com","displayName":"x"}`), 400, ia, 0},
		{"user as a number", signed(`{"user":112233445566778899000,"displayName":"x"}`), 400, ia, 0},
		{"user as an object", signed(`{"user":{"email":"alice@example.com"},"displayName":"x"}`), 400, ia, 0},
		{"members as a string", field(`"members":"users/1"`), 400, ia, 0},
		{"members of numbers", field(`"members":[1,2]`), 400, ia, 0},
		{"requestId as a boolean", field(`"requestId":true`), 400, ia, 0},
		{"body is an array", signed(`[{"user":"alice@example.com","displayName":"x"}]`), 400, ia, 0},
		{"body is null", signed(`null`), 400, ia, 0},
		{"body is empty", signed(``), 400, ia, 0},
		{"requestId of 129 characters", field(`"requestId":"` + strings.Repeat("r", 129) + `"`), 400, ia, 0},
		{"requestId of 60,000 characters", field(`"requestId":"` + strings.Repeat("r", 60000) + `"`), 400, ia, 0},
		{"requestId with a slash", field(`"requestId":"../../spaces/AAAA"`), 400, ia, 0},
		{"member as a path", field(`"members":["users/1/../../admin"]`), 400, ia, 0},
		{"Content-Type text/plain", just(func(a *attackEnv) *http.Request {
			req := a.signedReq("CreateSpace", `{"user":"alice@example.com","displayName":"x"}`)
			req.Header.Set("Content-Type", "text/plain")
			return req
		}), 415, statusUnsupportedMediaType, 0},
		{"no Content-Type", just(func(a *attackEnv) *http.Request {
			req := a.signedReq("CreateSpace", `{"user":"alice@example.com","displayName":"x"}`)
			req.Header.Del("Content-Type")
			return req
		}), 415, statusUnsupportedMediaType, 0},
		{"PUT", just(func(a *attackEnv) *http.Request {
			req := a.signedReq("CreateSpace", `{"user":"alice@example.com","displayName":"x"}`)
			req.Method = http.MethodPut
			return req
		}), 405, statusMethodNotAllowed, 0},
	}
}

// chatAttacks send ChatEvents requests that do not come from Google Chat.
// Only Chat's own token, or this project's add-on service agent's, for
// this endpoint, lets an event act for the user it names; anything else
// is refused before the body is read. A body in the other signer's format,
// or in neither, is refused too.
func chatAttacks() []attackCase {
	body := chatMsg{text: "/createspace Not from Chat", slash: createCommandID}.json()
	// chatToken is Chat's bearer token for the endpoint, with edit applied.
	chatToken := func(edit func(map[string]any)) func(a *attackEnv) *http.Request {
		return func(a *attackEnv) *http.Request {
			app, err := fakegoogle.NewChatApp(a.google)
			if err != nil {
				a.t.Fatal(err)
			}
			return a.webhook("ChatEvents", body, "Authorization", "Bearer "+app.EndpointToken(chatEndpointURL, edit))
		}
	}
	// addOnEvent is the same command as a Workspace add-on event.
	ab, err := fakegoogle.AddOnEvent([]byte(body), "")
	if err != nil {
		panic(err)
	}
	addOnEvent := string(ab)
	// addOnToken sends ev with the add-on service agent's token for the
	// endpoint, with edit applied.
	addOnToken := func(ev string, edit func(map[string]any)) func(a *attackEnv) *http.Request {
		return func(a *attackEnv) *http.Request {
			app, err := fakegoogle.NewChatApp(a.google)
			if err != nil {
				a.t.Fatal(err)
			}
			return a.webhook("ChatEvents", ev, "Authorization", "Bearer "+app.AddOnToken(chatEndpointURL, addOnProject, edit))
		}
	}
	const un = statusUnauthenticated
	return []attackCase{
		{"unsigned event", just(func(a *attackEnv) *http.Request { return a.webhook("ChatEvents", body) }), 401, un, 0},
		{"event with a webhook signature", just(func(a *attackEnv) *http.Request {
			return a.webhook("ChatEvents", body, "X-Signature", a.sig(body, 0))
		}), 401, un, 0},
		{"event with a caller's ID token", just(func(a *attackEnv) *http.Request {
			return a.bearer("ChatEvents", body, a.idToken(attackTrusted, map[string]any{"aud": chatEndpointURL}))
		}), 401, un, 0},
		{"Google ID token of another service account", just(chatToken(func(c map[string]any) { c["email"] = "robot@p.iam.gserviceaccount.com" })), 401, un, 0},
		{"Chat's token for another endpoint", just(chatToken(func(c map[string]any) { c["aud"] = "https://evil.example/ChatEvents" })), 401, un, 0},
		{"Chat's token expired", just(chatToken(func(c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		})), 401, un, 0},
		{"Chat's email unverified", just(chatToken(func(c map[string]any) { c["email_verified"] = false })), 401, un, 0},
		{"event token alg none", just(func(a *attackEnv) *http.Request {
			tok := craftJWT(a.t, map[string]any{"alg": "none"}, map[string]any{
				"iss": fakegoogle.GoogleIssuer, "aud": chatEndpointURL, "email": fakegoogle.ChatServiceAccount, "email_verified": true,
				"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}, func(string) []byte { return nil })
			return a.webhook("ChatEvents", body, "Authorization", "Bearer "+tok)
		}), 401, un, 0},
		{"event by GET", just(func(a *attackEnv) *http.Request {
			req := chatToken(nil)(a)
			req.Method = http.MethodGet
			return req
		}), 405, statusMethodNotAllowed, 0},
		{"add-on event signed by another project's add-on agent", just(addOnToken(addOnEvent, func(c map[string]any) { c["email"] = fakegoogle.AddOnServiceAgent("111111111111") })), 401, un, 0},
		{"add-on event signed by a lookalike of the add-on agent", just(addOnToken(addOnEvent, func(c map[string]any) { c["email"] = addOnAgent(addOnProject) + ".evil.example" })), 401, un, 0},
		{"add-on agent's token for another endpoint", just(addOnToken(addOnEvent, func(c map[string]any) { c["aud"] = "https://evil.example/ChatEvents" })), 401, un, 0},
		{"add-on agent's token, email unverified", just(addOnToken(addOnEvent, func(c map[string]any) { c["email_verified"] = false })), 401, un, 0},
		{"classic event under the add-on agent's token", just(addOnToken(body, nil)), 401, un, 0},
		{"add-on event under Chat's own token", just(func(a *attackEnv) *http.Request {
			req := chatToken(nil)(a)
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(addOnEvent)), int64(len(addOnEvent))
			return req
		}), 401, un, 0},
		{"unsigned add-on event carrying the victim's OAuth token", just(func(a *attackEnv) *http.Request {
			access, _ := a.google.IssueTokens(aliceSub, scopeChatCreate)
			sensitive.add(access)
			ev := strings.Replace(addOnEvent, `"systemIdToken":""`, `"systemIdToken":"","userOAuthToken":"`+access+`"`, 1)
			return a.webhook("ChatEvents", ev)
		}), 401, un, 0},
		{"add-on event from another host app", just(addOnToken(strings.Replace(addOnEvent, `"hostApp":"CHAT"`, `"hostApp":"DRIVE"`, 1), nil)), 400, statusInvalidArgument, 0},
		{"add-on event without a payload", just(addOnToken(`{"commonEventObject":{"hostApp":"CHAT"},"chat":{"user":{"name":"users/`+aliceSub+`","type":"HUMAN"}}}`, nil)), 400, statusInvalidArgument, 0},
		{"event in neither format", just(addOnToken(`{"message":{"text":"create space X"}}`, nil)), 400, statusInvalidArgument, 0},
		{"event over 64 KiB", just(func(a *attackEnv) *http.Request {
			req := chatToken(nil)(a)
			big := chatMsg{text: "/createspace " + strings.Repeat("x", 70<<10), slash: createCommandID}.json()
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(big)), int64(len(big))
			return req
		}), 413, statusPayloadTooLarge, 0},
	}
}

// openRedirects are strings that try to move a redirect off its host, in
// the families oauth2-proxy's redirect validator tests reject
// (pkg/app/redirect/validator_test.go and testdata/openredirects.txt):
// protocol-relative and backslash forms, whitespace and control
// characters between the slashes, percent-encoded hosts, user-info and
// fragment confusion, numeric and IPv6 hosts, javascript: and data: URLs.
// The list is written for this test, not copied.
var openRedirects = []string{
	"//evil.example",
	"///evil.example",
	"////evil.example/",
	"/\\evil.example",
	"\\\\evil.example",
	"/\\/evil.example/",
	"/ /evil.example",
	"/\t/evil.example",
	"/\v/evil.example",
	"/\n/evil.example",
	"/\r/evil.example",
	"/\t\t\\\t/evil.example",
	"/./\\evil.example",
	"/./../../\\evil.example",
	"/%09/evil.example",
	"/%2f%2fevil.example",
	"/%5cevil.example",
	"//%2fevil.example",
	"https://evil.example",
	"http://evil.example/%2e%2e",
	"https:evil.example",
	"https:/\\evil.example",
	"/https://evil.example",
	"//https://evil.example//",
	"http://chatauth.example@evil.example/",
	"http://chatauth.example:80@evil.example/",
	"http://chatauth.example%40evil.example/",
	"http://evil.example#@chatauth.example/",
	"http://evil.example?@chatauth.example/",
	"http://evil.example\\@chatauth.example/",
	"http://chatauth.example.evil.example/",
	"http://evil%2eexample/",
	"http://evil%E3%80%82example",
	"//evil%00.example",
	"http://3627734734",
	"http://0xd8.0x3a.0xd6.0xce",
	"http://0330.072.0326.0316",
	"http://[::ffff:216.58.214.206]",
	"http:[::216.58.214.206]",
	"javascript:alert(1)",
	"JaVaScRiPt:alert(1)",
	"java\tscript:alert(1)",
	"%19javascript:alert(1)",
	"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
	"@evil.example",
	"evil.example/redirect",
	"<>//evil.example",
	"alice@evil.example/@example.com",
	"alice@example.com@evil.example",
	"https://chat.google.com.evil.example/",
	"https://chat.google.com@evil.example/",
	"https://evil.example/https://chat.google.com/",
}

// TestOpenRedirects throws every open-redirect string at every place
// chatauth takes text that could end up in a URL: OAuthStart's login_hint,
// OAuthCallback's state and error, CreateSpace's user (which becomes the
// authorizeUrl's login_hint), and ChatEvents' configCompleteRedirectUrl.
// None may send the browser off the configured hosts, as JSON or as a page.
func TestOpenRedirects(t *testing.T) {
	t.Parallel()
	a := newAttackEnv(t)
	started := a.consentCallback(a.victim, aliceEmail)
	for i, p := range openRedirects {
		for _, place := range []struct {
			name string
			req  func(a *attackEnv) *http.Request
		}{
			{"login_hint", func(a *attackEnv) *http.Request {
				return a.browserGet(a.victim, a.base+"/OAuthStart?login_hint="+url.QueryEscape(p))
			}},
			{"state", func(a *attackEnv) *http.Request {
				return a.browserGet(a.victim, withParam(started, "state", p))
			}},
			{"state of an access_denied", func(a *attackEnv) *http.Request {
				return a.browserGet(a.victim, a.base+"/OAuthCallback?"+url.Values{"error": {"access_denied"}, "state": {p}}.Encode())
			}},
			{"error", func(a *attackEnv) *http.Request {
				return a.browserGet(a.victim, a.base+"/OAuthCallback?"+url.Values{"error": {p}, "state": {randomToken()}}.Encode())
			}},
			{"CreateSpace user", func(a *attackEnv) *http.Request {
				b, _ := json.Marshal(map[string]string{"user": p, "displayName": "Redirect"})
				return a.signedReq("CreateSpace", string(b))
			}},
		} {
			t.Run(fmt.Sprintf("%02d/%s", i, place.name), func(t *testing.T) {
				a := a.as(t)
				for _, accept := range []string{"application/json", "text/html"} {
					req := place.req(a)
					req.Header.Set("Accept", accept)
					before := readCounters(a.google)
					resp, err := noRedirects.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode < 400 {
						t.Errorf("%q as %s (Accept %s): got %d, want a refusal", p, place.name, accept, resp.StatusCode)
					}
					checkNoOffHostRedirect(t, a, resp, string(b))
					checkUpstream(t, before, readCounters(a.google), 0)
				}
			})
		}
	}
	t.Run("configCompleteRedirectUrl", func(t *testing.T) { testChatRedirects(t, a) })
}

// testChatRedirects sends a consent started from Google Chat through to
// its end for every open-redirect string as the event's
// configCompleteRedirectUrl: the callback may only redirect to
// chat.google.com, and otherwise shows the success page.
func testChatRedirects(t *testing.T, a *attackEnv) {
	payloads := append(slices.Clone(openRedirects),
		"https://chat.google.com\\@evil.example/",
		"https://chat.google.com/\\\\evil.example",
		"https://chat.google.com:443@evil.example/",
		"https://chat.google.com/%2f%2fevil.example",
		"https://chat.google.com/ /evil.example",
		"https://chat.google.com/\t/evil.example",
	)
	for i, p := range payloads {
		t.Run(fmt.Sprintf("%02d", i), func(t *testing.T) {
			a := a.as(t)
			ticket, err := a.srv.sealTicket(chatTicket{User: "users/" + aliceSub, Email: aliceEmail, Redirect: p, Exp: a.clock.Now().Add(ticketTTL).Unix()})
			if err != nil {
				t.Fatal(err)
			}
			sensitive.add(ticket)
			b := newBrowser(t)
			resp, _ := b.get(a.base + "/OAuthStart?ticket=" + url.QueryEscape(ticket))
			toGoogle := location(t, resp)
			resp, body := b.get(toGoogle.String())
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("fake Google answered %d: %s", resp.StatusCode, body)
			}
			cb := location(t, resp)
			req := a.browserGet(b, cb.String())
			req.Header.Set("Accept", "text/html")
			resp, err = noRedirects.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusFound {
				t.Fatalf("callback: got %d: %s", resp.StatusCode, out)
			}
			checkNoOffHostRedirect(t, a, resp, string(out))
			if l := resp.Header.Get("Location"); l != "" && !chatRedirectAllowed(l) {
				t.Errorf("redirected to %q", l)
			}
		})
	}
}

// identityAttacks attack identity and replay (README.md, "Identity" and
// "Replays"). Each row gets a fresh environment with alice connected, and
// sets its own scene: an address moved between accounts, a captured
// request replayed after a new consent.
func identityAttacks() []attackCase {
	const newAccount = "104857600000000000099"
	// token is an ID token for sub with alice's address, issued at iat.
	token := func(a *attackEnv, sub string, iat time.Time) string {
		return a.idToken(aliceEmail, map[string]any{"sub": sub, "iat": iat.Unix(), "exp": iat.Add(time.Hour).Unix()})
	}
	// reconsent lets alice connect again two seconds on, so a request
	// captured before is still inside its window but signed before the
	// consent.
	reconsent := func(a *attackEnv) {
		a.t.Helper()
		a.clock.Advance(2 * time.Second)
		a.connectVictim()
	}
	// moveAddress gives alice's address to another account, which
	// consents with it.
	moveAddress := func(a *attackEnv) {
		a.t.Helper()
		a.google.AddUser(fakegoogle.User{Sub: aliceSub, Email: "alice.old@example.com", EmailVerified: true})
		a.google.AddUser(fakegoogle.User{Sub: newAccount, Email: aliceEmail, EmailVerified: true})
		b := newBrowser(a.t)
		if resp, body := b.get(a.consentCallback(b, aliceEmail).String()); resp.StatusCode != http.StatusOK {
			a.t.Fatalf("the new account's consent: %d %s", resp.StatusCode, body)
		}
	}
	// send sends req once, as its signer did, before the replay.
	send := func(a *attackEnv, req *http.Request, want int) {
		a.t.Helper()
		again := req.Clone(req.Context())
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		again.Body = io.NopCloser(strings.NewReader(string(body)))
		resp, err := noRedirects.Do(again)
		if err != nil {
			a.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			a.t.Fatalf("the signer's own send: %d, want %d", resp.StatusCode, want)
		}
	}
	// spacesOf counts the fake Chat API's spaces of a type.
	spacesOf := func(a *attackEnv, spaceType string) int {
		n := 0
		for _, sp := range a.google.Spaces() {
			if sp.SpaceType == spaceType {
				n++
			}
		}
		return n
	}
	// replayed sends a signed CreateSpace once, then hands its replay to
	// the runner, which must leave one space of its type.
	replayed := func(body string, edit func(sig string) string) func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
		return func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			var probe createSpaceRequest
			json.Unmarshal([]byte(body), &probe)
			if probe.SpaceType == "" {
				probe.SpaceType = spaceTypeSpace
			}
			before := spacesOf(a, probe.SpaceType)
			sig := a.sig(body, 0)
			send(a, a.webhook("CreateSpace", body, "X-Signature", sig), http.StatusOK)
			if edit != nil {
				sig = edit(sig)
			}
			return a.webhook("CreateSpace", body, "X-Signature", sig), func(a *attackEnv) {
				if got := spacesOf(a, probe.SpaceType) - before; got != 1 {
					a.t.Errorf("the signed request and its replay made %d %s spaces, want 1", got, probe.SpaceType)
				}
			}
		}
	}
	upperMAC := func(sig string) string {
		i := strings.Index(sig, "v1=") + 3
		return sig[:i] + strings.ToUpper(sig[i:])
	}
	const groupChat = `{"user":"alice@example.com","spaceType":"GROUP_CHAT","members":["users/2002","users/3003"]}`
	disconnectAlice := `{"user":"alice@example.com"}`
	created := func(want string) func(a *attackEnv) {
		return func(a *attackEnv) {
			a.t.Helper()
			spaces := a.google.Spaces()
			if len(spaces) == 0 || spaces[len(spaces)-1].Creator != want {
				a.t.Errorf("the last space was not created by %s", want)
			}
		}
	}
	return []attackCase{
		{"replayed Disconnect after a new consent", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			req := a.signedReq("Disconnect", disconnectAlice)
			reconsent(a)
			return req, nil
		}, 409, statusAlreadyExists, 0},
		{"replayed Disconnect by id after a new consent", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			req := a.signedReq("Disconnect", `{"user":"users/`+aliceSub+`"}`)
			reconsent(a)
			return req, nil
		}, 409, statusAlreadyExists, 0},
		{"replayed Disconnect, ID token from before a new consent", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			req := a.bearer("Disconnect", disconnectAlice, token(a, aliceSub, a.clock.Now()))
			reconsent(a)
			return req, nil
		}, 409, statusAlreadyExists, 0},
		{"replayed Disconnect after it was done and alice reconnected", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			req := a.signedReq("Disconnect", disconnectAlice)
			send(a, req, http.StatusOK)
			reconsent(a)
			return req, nil
		}, 409, statusAlreadyExists, 0},
		{"replayed Disconnect after it was done", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			req := a.signedReq("Disconnect", disconnectAlice)
			send(a, req, http.StatusOK)
			return req, nil
		}, 404, statusNotFound, 0},
		{"ID token of another account with alice's address", just(func(a *attackEnv) *http.Request {
			return a.bearer("CreateSpace", `{"user":"alice@example.com","displayName":"Impostor"}`, token(a, newAccount, time.Now()))
		}), 403, statusAuthorizationRequired, 0},
		{"ID token of another account with alice's address, as alice's id", just(func(a *attackEnv) *http.Request {
			return a.bearer("CreateSpace", `{"user":"users/`+aliceSub+`","displayName":"Impostor"}`, token(a, newAccount, time.Now()))
		}), 403, statusPermissionDenied, 0},
		{"ID token of another account with alice's address disconnects", just(func(a *attackEnv) *http.Request {
			return a.bearer("Disconnect", disconnectAlice, token(a, newAccount, time.Now()))
		}), 404, statusNotFound, 0},
		{"ID token without an account id", just(func(a *attackEnv) *http.Request {
			return a.bearer("CreateSpace", `{"user":"alice@example.com","displayName":"No sub"}`, a.idToken(aliceEmail, map[string]any{"sub": nil}))
		}), 401, statusUnauthenticated, 0},
		{"ID token issued ten minutes ahead", just(func(a *attackEnv) *http.Request {
			return a.bearer("Disconnect", disconnectAlice, token(a, aliceSub, time.Now().Add(10*time.Minute)))
		}), 401, statusUnauthenticated, 0},
		{"address moved, then the older record refreshed", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			moveAddress(a)
			a.google.ExpireAccessTokens(aliceSub)
			a.clock.Advance(2 * time.Hour)
			send(a, a.signedReq("CreateSpace", `{"user":"users/`+aliceSub+`","displayName":"Older account"}`), http.StatusOK)
			return a.signedReq("CreateSpace", `{"user":"alice@example.com","displayName":"Who am I"}`), created(newAccount)
		}, 200, "", mayChat | mayRefresh},
		{"address moved, then the newer account disconnected", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			moveAddress(a)
			send(a, a.signedReq("Disconnect", disconnectAlice), http.StatusOK)
			return a.signedReq("CreateSpace", `{"user":"alice@example.com","displayName":"Nobody"}`), nil
		}, 403, statusAuthorizationRequired, 0},
		{"address moved, Disconnect by address spares the older account", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			moveAddress(a)
			return a.signedReq("Disconnect", disconnectAlice), func(a *attackEnv) {
				if a.storedToken(aliceSub) == nil || a.storedToken(newAccount) != nil {
					a.t.Error("Disconnect by address did not end exactly the account it names")
				}
			}
		}, 200, "", mayRevoke},
		{"CreateSpace signed before the address moved, replayed after", func(a *attackEnv) (*http.Request, func(a *attackEnv)) {
			req := a.signedReq("CreateSpace", `{"user":"alice@example.com","displayName":"Meant for alice"}`)
			a.clock.Advance(2 * time.Second)
			moveAddress(a)
			return req, nil
		}, 409, statusAlreadyExists, 0},
		{"replayed GROUP_CHAT without requestId", replayed(groupChat, nil), 200, "", mayChat},
		{"replayed GROUP_CHAT, the MAC in capitals", replayed(groupChat, upperMAC), 200, "", mayChat},
		{"replayed GROUP_CHAT, an unknown field added to X-Signature", replayed(groupChat, func(sig string) string { return sig + ",v9=00" }), 200, "", mayChat},
		{"replayed DIRECT_MESSAGE without requestId", replayed(`{"user":"alice@example.com","spaceType":"DIRECT_MESSAGE","members":["users/3003"]}`, nil), 200, "", mayChat},
		{"replayed SPACE without requestId", replayed(`{"user":"alice@example.com","displayName":"Replayed space"}`, nil), 200, "", mayChat},
	}
}
