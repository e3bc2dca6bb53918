package chatauth

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

const (
	aliceSub   = fakegoogle.DefaultUserSub
	aliceEmail = fakegoogle.DefaultUserEmail
)

// TestConsentFlow drives OAuthStart → fake Google → OAuthCallback through
// the Functions Framework and checks what was stored, on every store.
func TestConsentFlow(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			b := newBrowser(t)
			resp, body := e.consent(b, aliceEmail)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("callback: got status %d, want 200; body: %s", resp.StatusCode, body)
			}
			if !strings.Contains(body, "Google Chat is connected") || !strings.Contains(body, aliceEmail) {
				t.Errorf("success page does not name the account: %s", body)
			}
			for h, want := range map[string]string{
				"Cache-Control":           "no-store",
				"Referrer-Policy":         "no-referrer",
				"X-Content-Type-Options":  "nosniff",
				"X-Frame-Options":         "DENY",
				"Content-Security-Policy": "default-src 'none'",
			} {
				if got := resp.Header.Get(h); !strings.Contains(got, want) {
					t.Errorf("header %s: got %q, want it to contain %q", h, got, want)
				}
			}
			for name := range b.cookies {
				if strings.HasPrefix(name, flowCookiePrefix) {
					t.Errorf("the flow cookie %s was not cleared after the callback", name)
				}
			}
			rec := e.storedToken(aliceSub)
			if rec == nil {
				t.Fatal("no token stored after consent")
			}
			if rec.Email != aliceEmail || rec.Status != tokenActive || rec.RefreshToken == "" || rec.AccessToken == "" {
				t.Errorf("stored record: got email %q status %q refresh set %v access set %v; want %q active with both tokens",
					rec.Email, rec.Status, rec.RefreshToken != "", rec.AccessToken != "", aliceEmail)
			}
			if !slices.Contains(rec.Scopes, scopeChatCreate) {
				t.Errorf("stored scopes %q lack %s", rec.Scopes, scopeChatCreate)
			}
			if live := e.google.LiveRefreshTokens(aliceSub); !slices.Contains(live, rec.RefreshToken) {
				t.Errorf("the stored refresh token is not one the fake Google issued")
			}
			if rec.Expiry.Before(time.Now()) || rec.CreatedAt.IsZero() || rec.UpdatedAt.IsZero() {
				t.Errorf("stored times: expiry %v created %v updated %v", rec.Expiry, rec.CreatedAt, rec.UpdatedAt)
			}
			byEmail, err := e.srv.store.tokenByEmail(t.Context(), aliceEmail)
			if err != nil || byEmail.Sub != aliceSub {
				t.Errorf("tokenByEmail: got %v, %v; want sub %s", byEmail, err, aliceSub)
			}
			if body := strings.ToLower(body); strings.Contains(body, strings.ToLower(rec.RefreshToken)) || strings.Contains(body, strings.ToLower(rec.AccessToken)) {
				t.Error("the success page shows a token")
			}
		})
	}
}

// TestStartRequest checks what OAuthStart sends to Google and to the
// browser.
func TestStartRequest(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	b := newBrowser(t)
	// A spoofed Host and X-Forwarded-Host must not move the redirect URI.
	b.header.Set("X-Forwarded-Host", "evil.example")
	b.header.Set("X-Forwarded-Proto", "https")
	challenges := map[string]bool{}
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest(http.MethodGet, e.base+"/OAuthStart?login_hint=alice%40example.com", nil)
		req.Host = "evil.example"
		req.Header = b.header.Clone()
		sent := e.clock.Now()
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answered := e.clock.Now()
		resp.Body.Close()
		u := location(t, resp)
		q := u.Query()
		want := map[string]string{
			"response_type":          "code",
			"client_id":              e.google.ClientID(),
			"redirect_uri":           e.cfg.RedirectURL,
			"scope":                  "openid email " + scopeChatCreate,
			"code_challenge_method":  "S256",
			"access_type":            "offline",
			"prompt":                 "consent",
			"include_granted_scopes": "true",
			"login_hint":             aliceEmail,
		}
		for k, v := range want {
			if got := q[k]; len(got) != 1 || got[0] != v {
				t.Errorf("auth URL %s: got %q, want [%q]", k, got, v)
			}
		}
		if !strings.HasPrefix(u.String(), e.srv.client.AuthURI+"?") {
			t.Errorf("auth URL %s is not the client JSON's auth_uri %s", u, e.srv.client.AuthURI)
		}
		if len(q.Get("state")) < 43 {
			t.Errorf("state %d characters long, want at least 43 (32 random bytes)", len(q.Get("state")))
		}
		ch := q.Get("code_challenge")
		if len(ch) != 43 || challenges[ch] {
			t.Errorf("code_challenge %q: want 43 characters, new on every start", ch)
		}
		challenges[ch] = true
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control: got %q, want no-store", got)
		}
		state := q.Get("state")
		var cookie *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == flowCookieName(state) {
				cookie = c
			}
		}
		if cookie == nil || len(resp.Cookies()) != 1 {
			t.Fatalf("cookies set: %v; want exactly the flow's %s", resp.Cookies(), flowCookieName(state))
		}
		if !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteLaxMode || cookie.Path != "/" || cookie.MaxAge <= 0 || cookie.MaxAge > 600 || cookie.Domain != "" {
			t.Errorf("cookie attributes: got %+v, want HttpOnly Secure SameSite=Lax Path=/ 0<Max-Age<=600 no Domain", cookie)
		}
		if !strings.HasPrefix(cookie.Name, "__Host-") {
			t.Errorf("cookie name %q lacks the __Host- prefix", cookie.Name)
		}
		// The cookie carries the flow sealed: the verifier whose S256 is
		// the challenge sent, the login hint and the start time, none of
		// them readable in the value.
		rec, err := e.srv.openFlow(state, cookie.Value)
		if err != nil {
			t.Fatalf("the flow cookie does not open: %v", err)
		}
		if got := s256(rec.Verifier); got != ch {
			t.Errorf("sealed verifier's S256 %q does not match the challenge %q", got, ch)
		}
		if rec.LoginHint != aliceEmail || rec.CreatedAt.Before(sent.Truncate(time.Second)) || rec.CreatedAt.After(answered) {
			t.Errorf("flow record: hint %q created %v; want %q and between %v and %v", rec.LoginHint, rec.CreatedAt, aliceEmail, sent, answered)
		}
		for what, secret := range map[string]string{"state": state, "verifier": rec.Verifier, "login hint": aliceEmail, "escaped login hint": url.QueryEscape(aliceEmail)} {
			if strings.Contains(cookie.Value, secret) {
				t.Errorf("the cookie carries the %s in clear", what)
			}
		}
	}
}

// TestStartRejects covers OAuthStart's refusals.
func TestStartRejects(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	for _, tc := range []struct {
		name, method, query string
		code                int
		status              string
	}{
		{"POST", http.MethodPost, "", 405, statusMethodNotAllowed},
		{"bad login_hint", http.MethodGet, "?login_hint=not-an-email", 400, statusInvalidArgument},
		{"repeated login_hint", http.MethodGet, "?login_hint=a%40example.com&login_hint=b%40example.com", 400, statusInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.base+"/OAuthStart"+tc.query, nil)
			req.Header.Set("Accept", "application/json")
			resp, err := noRedirects.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			checkJSONError(t, resp, tc.code, tc.status)
		})
	}
}

// TestCallbackRejects covers every refused callback: each answers its
// status, stores nothing, and where the state is bad never calls Google's
// token endpoint.
func TestCallbackRejects(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			for _, tc := range callbackRejectCases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					e := newTestEnv(t, kind)
					b := newBrowser(t)
					cb := tc.prepare(t, e, b)
					b.header.Set("Accept", "application/json")
					resp, body := b.get(cb)
					if resp.StatusCode != tc.code {
						t.Fatalf("got status %d, want %d; body: %s", resp.StatusCode, tc.code, body)
					}
					checkJSONBody(t, body, tc.code, tc.status)
					if e.storedToken(aliceSub) != nil {
						t.Error("a token was stored for a refused callback")
					}
					if got := e.google.ExchangeCalls(); tc.noExchange && got != 0 {
						t.Errorf("token endpoint called %d times, want 0", got)
					}
					if tc.status == statusAuthorizationRequired && !strings.Contains(body, `"authorizeUrl":"`+e.base+`/OAuthStart`) {
						t.Errorf("AUTHORIZATION_REQUIRED without an authorizeUrl on PUBLIC_URL: %s", body)
					}
				})
			}
		})
	}
}

var callbackRejectCases = []struct {
	name       string
	prepare    func(t *testing.T, e *testEnv, b *browser) string // returns the callback URL
	code       int
	status     string
	noExchange bool
}{
	{"forged state", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, "")
		return withParam(cb, "state", randomToken())
	}, 403, statusPermissionDenied, true},
	{"empty state", func(t *testing.T, e *testEnv, b *browser) string {
		return withParam(e.startConsent(b, ""), "state", "")
	}, 400, statusInvalidArgument, true},
	{"repeated state", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, "")
		return cb.String() + "&state=" + url.QueryEscape(cb.Query().Get("state"))
	}, 400, statusInvalidArgument, true},
	{"missing code", func(t *testing.T, e *testEnv, b *browser) string {
		return withParam(e.startConsent(b, ""), "code", "")
	}, 400, statusInvalidArgument, true},
	{"repeated code", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, "")
		return cb.String() + "&code=other"
	}, 400, statusInvalidArgument, true},
	{"cookie of another browser", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, "")
		other := newBrowser(t)
		otherCB := e.startConsent(other, "")
		b.cookies[flowCookieName(cb.Query().Get("state"))] = other.cookies[flowCookieName(otherCB.Query().Get("state"))]
		return cb.String()
	}, 403, statusPermissionDenied, true},
	{"no cookie", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, "")
		delete(b.cookies, flowCookieName(cb.Query().Get("state")))
		return cb.String()
	}, 403, statusPermissionDenied, true},
	{"replayed callback", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, "")
		first := newBrowser(t)
		name := flowCookieName(cb.Query().Get("state"))
		first.cookies = map[string]string{name: b.cookies[name]}
		if resp, body := first.get(cb.String()); resp.StatusCode != 200 {
			t.Fatalf("first callback: %d %s", resp.StatusCode, body)
		}
		// The record the first callback stored is removed so that the check
		// "nothing stored" is about the replay.
		if err := e.srv.store.deleteToken(t.Context(), aliceSub, nil); err != nil {
			t.Fatal(err)
		}
		e.google.FailTokenEndpoint(500, "replay_reached_token_endpoint", 1)
		return cb.String()
	}, 403, statusPermissionDenied, false},
	{"expired state", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, "")
		e.clock.Advance(stateTTL + time.Second)
		return cb.String()
	}, 403, statusPermissionDenied, true},
	{"access denied", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, aliceEmail)
		q := url.Values{"error": {"access_denied"}, "state": {cb.Query().Get("state")}}
		cb.RawQuery = q.Encode()
		return cb.String()
	}, 403, statusAuthorizationRequired, true},
	{"other error", func(t *testing.T, e *testEnv, b *browser) string {
		cb := e.startConsent(b, "")
		cb.RawQuery = url.Values{"error": {"<script>"}, "state": {cb.Query().Get("state")}}.Encode()
		return cb.String()
	}, 400, statusInvalidArgument, true},
	{"issuer mix-up", func(t *testing.T, e *testEnv, b *browser) string {
		return withParam(e.startConsent(b, ""), "iss", "https://evil.example")
	}, 403, statusPermissionDenied, true},
	{"empty iss", func(t *testing.T, e *testEnv, b *browser) string {
		return withParam(e.startConsent(b, ""), "iss", "")
	}, 403, statusPermissionDenied, true},
	{"repeated iss", func(t *testing.T, e *testEnv, b *browser) string {
		return e.startConsent(b, "").String() + "&iss=https%3A%2F%2Faccounts.google.com"
	}, 400, statusInvalidArgument, true},
	{"scope not granted", func(t *testing.T, e *testEnv, b *browser) string {
		e.google.SetGrantedScopes("openid", "email")
		return e.startConsent(b, "").String()
	}, 403, statusAuthorizationRequired, false},
	{"invalid_grant at exchange", func(t *testing.T, e *testEnv, b *browser) string {
		e.google.FailTokenEndpoint(400, "invalid_grant", 1)
		return e.startConsent(b, "").String()
	}, 403, statusAuthorizationRequired, false},
	{"token endpoint down", func(t *testing.T, e *testEnv, b *browser) string {
		e.google.FailTokenEndpoint(503, "backend_error", 1)
		return e.startConsent(b, "").String()
	}, 502, statusUpstreamError, false},
	{"code of another flow", func(t *testing.T, e *testEnv, b *browser) string {
		// Code injection: the attacker's code with the victim's state and
		// cookie. The verifier stored with the victim's state does not
		// match the attacker's challenge, so Google refuses the code.
		cb := e.startConsent(b, "")
		attacker := e.startConsent(newBrowser(t), "")
		return withParam(cb, "code", attacker.Query().Get("code"))
	}, 403, statusAuthorizationRequired, false},
	{"id_token of another client", func(t *testing.T, e *testEnv, b *browser) string {
		e.google.SetIDTokenClaims(func(c map[string]any) { c["aud"] = "other-client" })
		return e.startConsent(b, "").String()
	}, 502, statusUpstreamError, false},
	{"id_token from another issuer", func(t *testing.T, e *testEnv, b *browser) string {
		e.google.SetIDTokenClaims(func(c map[string]any) { c["iss"] = "https://evil.example" })
		return e.startConsent(b, "").String()
	}, 502, statusUpstreamError, false},
	{"unverified email", func(t *testing.T, e *testEnv, b *browser) string {
		e.google.SetIDTokenClaims(func(c map[string]any) { c["email_verified"] = false })
		return e.startConsent(b, "").String()
	}, 403, statusPermissionDenied, false},
}

// TestCallbackErrorPage checks that a browser gets a readable HTML page,
// not JSON, with a way to start again.
func TestCallbackErrorPage(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	b := newBrowser(t)
	cb := e.startConsent(b, aliceEmail)
	resp, body := b.get(withParam(cb, "state", randomToken()))
	if resp.StatusCode != 403 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("got %d %s, want 403 text/html", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(body, "Start again") || !strings.Contains(body, e.base+"/OAuthStart") {
		t.Errorf("the error page offers no fresh start: %s", body)
	}
	if strings.Contains(body, cb.Query().Get("code")) {
		t.Error("the error page shows the authorization code")
	}
}

// TestReconsentKeepsRefreshToken: a re-consent whose answer carries no
// refresh token keeps the stored one, and updates the rest.
func TestReconsentKeepsRefreshToken(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			if resp, body := e.consent(newBrowser(t), ""); resp.StatusCode != 200 {
				t.Fatalf("first consent: %d %s", resp.StatusCode, body)
			}
			first := e.storedToken(aliceSub)
			e.google.SetOmitRefreshToken(true)
			if resp, body := e.consent(newBrowser(t), ""); resp.StatusCode != 200 {
				t.Fatalf("re-consent: %d %s", resp.StatusCode, body)
			}
			second := e.storedToken(aliceSub)
			if second.RefreshToken != first.RefreshToken {
				t.Error("a re-consent without refresh_token replaced the stored refresh token")
			}
			if second.AccessToken == first.AccessToken {
				t.Error("the re-consent's new access token was not stored")
			}
			if !second.CreatedAt.Equal(first.CreatedAt) {
				t.Errorf("createdAt changed from %v to %v", first.CreatedAt, second.CreatedAt)
			}
		})
	}
}

// TestFirstConsentWithoutRefreshToken: with no refresh token stored and
// none sent, the user is asked to consent again and nothing is stored.
func TestFirstConsentWithoutRefreshToken(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.google.SetOmitRefreshToken(true)
	b := newBrowser(t)
	b.header.Set("Accept", "application/json")
	resp, body := e.consent(b, "")
	checkJSONBody(t, body, 403, statusAuthorizationRequired)
	if resp.StatusCode != 403 || e.storedToken(aliceSub) != nil {
		t.Errorf("got %d and a stored record %v; want 403 and nothing stored", resp.StatusCode, e.storedToken(aliceSub))
	}
}

func withParam(u *url.URL, k, v string) string {
	c := *u
	q := c.Query()
	q.Set(k, v)
	c.RawQuery = q.Encode()
	return c.String()
}

func s256(verifier string) string { return oauth2.S256ChallengeFromVerifier(verifier) }

func checkJSONError(t *testing.T, resp *http.Response, code int, status string) {
	t.Helper()
	var buf strings.Builder
	if _, err := io.Copy(&buf, resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != code {
		t.Errorf("got status %d, want %d; body: %s", resp.StatusCode, code, buf.String())
	}
	checkJSONBody(t, buf.String(), code, status)
}

// checkJSONBody checks the JSON error envelope (README.md, "Errors"; openapi.yaml, Error).
func checkJSONBody(t *testing.T, body string, code int, status string) {
	t.Helper()
	var env struct {
		Error struct {
			Code         int    `json:"code"`
			Status       string `json:"status"`
			Message      string `json:"message"`
			AuthorizeURL string `json:"authorizeUrl"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("not the JSON error envelope: %v; body: %s", err, body)
	}
	if env.Error.Code != code || env.Error.Status != status || env.Error.Message == "" {
		t.Errorf("error envelope: got %d %s %q, want %d %s with a message", env.Error.Code, env.Error.Status, env.Error.Message, code, status)
	}
}
