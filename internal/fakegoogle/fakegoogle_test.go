package fakegoogle

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/idtoken"
	"google.golang.org/api/option"
)

const testRedirect = "http://localhost:8080/OAuthCallback"

// productScopes are the scopes chatauth's OAuthStart requests.
var productScopes = []string{"openid", "email", ScopeChatSpacesCreate}

// newTestServer starts a fake with testRedirect registered and closes it
// when the test ends.
func newTestServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.RedirectURIs == nil {
		opts.RedirectURIs = []string{testRedirect}
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func oauthConfig(s *Server, scopes ...string) *oauth2.Config {
	if scopes == nil {
		scopes = productScopes
	}
	return &oauth2.Config{
		ClientID:     s.ClientID(),
		ClientSecret: s.ClientSecret(),
		Endpoint:     oauth2.Endpoint{AuthURL: s.AuthURL(), TokenURL: s.TokenURL(), AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL:  testRedirect,
		Scopes:       scopes,
	}
}

// noRedirects is a client that hands back 302s instead of following them,
// so tests can read the redirect like the browser would.
var noRedirects = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

// get fetches u without following redirects and returns the status, the
// Location header parsed, and the body.
func get(t *testing.T, u string) (int, *url.URL, string) {
	t.Helper()
	resp, err := noRedirects.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return readResponse(t, resp)
}

func readResponse(t *testing.T, resp *http.Response) (int, *url.URL, string) {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	var loc *url.URL
	if l := resp.Header.Get("Location"); l != "" {
		if loc, err = url.Parse(l); err != nil {
			t.Fatalf("bad Location %q: %v", l, err)
		}
	}
	return resp.StatusCode, loc, string(body)
}

// authorize runs the authorization request for cfg on an AutoConsent fake
// and returns the callback's query.
func authorize(t *testing.T, cfg *oauth2.Config, state, verifier string, opts ...oauth2.AuthCodeOption) url.Values {
	t.Helper()
	opts = append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.AccessTypeOffline}, opts...)
	status, loc, body := get(t, cfg.AuthCodeURL(state, opts...))
	if status != http.StatusFound || loc == nil {
		t.Fatalf("authorize: got status %d, want 302; body: %s", status, body)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != cfg.RedirectURL {
		t.Fatalf("authorize redirected to %s, want %s", got, cfg.RedirectURL)
	}
	return loc.Query()
}

// login runs authorize and Exchange and returns the token.
func login(t *testing.T, cfg *oauth2.Config, opts ...oauth2.AuthCodeOption) *oauth2.Token {
	t.Helper()
	v := oauth2.GenerateVerifier()
	q := authorize(t, cfg, "st", v, opts...)
	tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	return tok
}

func wantRetrieveError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("got error %v, want *oauth2.RetrieveError", err)
	}
	if re.Response.StatusCode != status || re.ErrorCode != code {
		t.Fatalf("got %d %q (%s), want %d %q", re.Response.StatusCode, re.ErrorCode, re.ErrorDescription, status, code)
	}
}

func TestAuthorizeRedirectsWithCode(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	cfg := oauthConfig(s)
	q := authorize(t, cfg, "state-ü/+=", oauth2.GenerateVerifier())

	if got := q.Get("state"); got != "state-ü/+=" {
		t.Errorf("state: got %q, want it untouched", got)
	}
	if !strings.HasPrefix(q.Get("code"), "4/0") {
		t.Errorf("code: got %q, want Google's 4/0 prefix", q.Get("code"))
	}
	want := map[string]string{"authuser": "0", "prompt": "consent", "iss": GoogleIssuer}
	for k, v := range want {
		if got := q.Get(k); got != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
	scopes := strings.Fields(q.Get("scope"))
	for _, sc := range []string{"email", ScopeEmail, "openid", ScopeChatSpacesCreate} {
		if !slices.Contains(scopes, sc) {
			t.Errorf("scope: got %q, want it to contain %s", q.Get("scope"), sc)
		}
	}
}

func TestAuthorizeRejectsBadRequests(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	good := func() url.Values {
		u, _ := url.Parse(oauthConfig(s).AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		return u.Query()
	}
	tests := []struct {
		name   string
		change func(url.Values)
		want   string
	}{
		{"unknown client", func(v url.Values) { v.Set("client_id", "other.apps.googleusercontent.com") }, "invalid_client"},
		{"missing client", func(v url.Values) { v.Del("client_id") }, "invalid_request"},
		{"unregistered redirect", func(v url.Values) { v.Set("redirect_uri", "http://localhost:8080/OAuthCallback/") }, "redirect_uri_mismatch"},
		{"missing redirect", func(v url.Values) { v.Del("redirect_uri") }, "invalid_request"},
		{"token response type", func(v url.Values) { v.Set("response_type", "token") }, "invalid_request"},
		{"missing scope", func(v url.Values) { v.Del("scope") }, "invalid_request"},
		{"unknown scope", func(v url.Values) { v.Set("scope", "openid chat") }, "invalid_scope"},
		{"missing challenge", func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }, "invalid_request"},
		{"plain method", func(v url.Values) { v.Set("code_challenge_method", "plain") }, "invalid_request"},
		{"missing method", func(v url.Values) { v.Del("code_challenge_method") }, "invalid_request"},
		{"short challenge", func(v url.Values) { v.Set("code_challenge", "abc") }, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := good()
			tt.change(v)
			status, loc, body := get(t, s.AuthURL()+"?"+v.Encode())
			if status != http.StatusBadRequest {
				t.Fatalf("status: got %d (Location %v), want 400", status, loc)
			}
			if want := "Error 400: " + tt.want; !strings.Contains(body, want) {
				t.Errorf("body: got %q, want it to contain %q", body, want)
			}
		})
	}
}

func TestExchangeIssuesGoogleShapedTokens(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	cfg := oauthConfig(s)
	tok := login(t, cfg)

	if !strings.HasPrefix(tok.AccessToken, "ya29.fake-") {
		t.Errorf("access_token: got %q, want prefix ya29.fake-", tok.AccessToken)
	}
	if !strings.HasPrefix(tok.RefreshToken, "1//fake-") {
		t.Errorf("refresh_token: got %q, want prefix 1//fake-", tok.RefreshToken)
	}
	if tok.TokenType != "Bearer" || tok.ExpiresIn != 3599 {
		t.Errorf("got token_type %q expires_in %d, want Bearer 3599", tok.TokenType, tok.ExpiresIn)
	}
	wantScope := strings.Join(canonicalScopes(productScopes), " ")
	if got := tok.Extra("scope"); got != wantScope {
		t.Errorf("scope: got %v, want %q", got, wantScope)
	}
	raw, _ := tok.Extra("id_token").(string)
	claims := verifyWithJWKS(t, s, raw)
	want := map[string]any{
		"iss": GoogleIssuer, "aud": s.ClientID(), "azp": s.ClientID(),
		"sub": DefaultUserSub, "email": DefaultUserEmail, "email_verified": true,
		"at_hash": atHash(tok.AccessToken),
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s: got %v, want %v", k, claims[k], v)
		}
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if exp-iat != 3600 {
		t.Errorf("exp-iat: got %v, want 3600", exp-iat)
	}
	if got := s.ExchangeCalls(); got != 1 {
		t.Errorf("ExchangeCalls: got %d, want 1", got)
	}
}

// verifyWithJWKS checks a JWT's RS256 signature against the key published
// at the JWKS URL, the way a relying party does, and returns its claims.
func verifyWithJWKS(t *testing.T, s *Server, jwt string) map[string]any {
	t.Helper()
	resp, err := http.Get(s.JWKSURL())
	if err != nil {
		t.Fatalf("GET JWKS: %v", err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct{ Kty, Alg, Use, Kid, N, E string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("decode JWKS: %v", err)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("id_token: got %d parts, want 3", len(parts))
	}
	var header struct{ Alg, Kid string }
	decodeSegment(t, parts[0], &header)
	if header.Alg != "RS256" || header.Kid != s.KeyID() {
		t.Fatalf("header: got alg %q kid %q, want RS256 %q", header.Alg, header.Kid, s.KeyID())
	}
	var key *rsa.PublicKey
	for _, k := range set.Keys {
		if k.Kid == header.Kid && k.Kty == "RSA" && k.Alg == "RS256" && k.Use == "sig" {
			n, _ := base64.RawURLEncoding.DecodeString(k.N)
			e, _ := base64.RawURLEncoding.DecodeString(k.E)
			key = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		}
	}
	if key == nil {
		t.Fatalf("no JWKS key with kid %q", header.Kid)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("signature does not verify with the JWKS key: %v", err)
	}
	var claims map[string]any
	decodeSegment(t, parts[1], &claims)
	return claims
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("decode segment: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("unmarshal segment: %v", err)
	}
}

func TestExchangeRejects(t *testing.T) {
	tests := []struct {
		name string
		// run gets a fresh code and its verifier and returns the exchange error.
		run        func(t *testing.T, s *Server, cfg *oauth2.Config, code, verifier string) error
		wantStatus int
		wantCode   string
	}{
		{"code used twice", func(t *testing.T, s *Server, cfg *oauth2.Config, code, verifier string) error {
			if _, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier)); err != nil {
				t.Fatalf("first Exchange: %v", err)
			}
			_, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
			return err
		}, 400, "invalid_grant"},
		{"PKCE mismatch", func(t *testing.T, s *Server, cfg *oauth2.Config, code, verifier string) error {
			_, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
			return err
		}, 400, "invalid_grant"},
		{"no verifier", func(t *testing.T, s *Server, cfg *oauth2.Config, code, verifier string) error {
			_, err := cfg.Exchange(context.Background(), code)
			return err
		}, 400, "invalid_grant"},
		{"unknown code", func(t *testing.T, s *Server, cfg *oauth2.Config, code, verifier string) error {
			_, err := cfg.Exchange(context.Background(), code+"x", oauth2.VerifierOption(verifier))
			return err
		}, 400, "invalid_grant"},
		{"other redirect_uri", func(t *testing.T, s *Server, cfg *oauth2.Config, code, verifier string) error {
			cfg.RedirectURL = "http://localhost:9999/cb"
			_, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
			return err
		}, 400, "redirect_uri_mismatch"},
		{"wrong secret", func(t *testing.T, s *Server, cfg *oauth2.Config, code, verifier string) error {
			cfg.ClientSecret = "nope"
			_, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
			return err
		}, 401, "invalid_client"},
		{"wrong secret basic", func(t *testing.T, s *Server, cfg *oauth2.Config, code, verifier string) error {
			cfg.ClientSecret = "nope"
			cfg.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
			_, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
			return err
		}, 401, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Options{AutoConsent: true})
			cfg := oauthConfig(s)
			v := oauth2.GenerateVerifier()
			q := authorize(t, cfg, "st", v)
			wantRetrieveError(t, tt.run(t, s, cfg, q.Get("code"), v), tt.wantStatus, tt.wantCode)
		})
	}
}

func TestExchangeRejectsExpiredCode(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newTestServer(t, Options{AutoConsent: true, Now: clock})
	cfg := oauthConfig(s)
	v := oauth2.GenerateVerifier()
	q := authorize(t, cfg, "st", v)
	mu.Lock()
	now = now.Add(10 * time.Minute)
	mu.Unlock()
	_, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	wantRetrieveError(t, err, 400, "invalid_grant")
}

func TestClientAuthenticationStyles(t *testing.T) {
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader, oauth2.AuthStyleAutoDetect} {
		t.Run(map[oauth2.AuthStyle]string{0: "autodetect", 1: "params", 2: "header"}[style], func(t *testing.T) {
			// A secret with characters that oauth2 URL-encodes for Basic auth.
			s := newTestServer(t, Options{AutoConsent: true, ClientSecret: "s3cr+t/=?&"})
			cfg := oauthConfig(s)
			cfg.Endpoint.AuthStyle = style
			login(t, cfg)
			if got := s.TokenCalls(); got != 1 {
				t.Errorf("TokenCalls: got %d, want 1", got)
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	cfg := oauthConfig(s)
	tok := login(t, cfg)

	tok.Expiry = time.Now().Add(-time.Minute)
	fresh, err := cfg.TokenSource(context.Background(), tok).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if fresh.AccessToken == tok.AccessToken {
		t.Errorf("refresh returned the old access token")
	}
	if got := fresh.Extra("refresh_token"); got != nil {
		t.Errorf("refresh response refresh_token: got %v, want none without rotation", got)
	}
	if got := fresh.Extra("scope"); got != tok.Extra("scope") {
		t.Errorf("refresh scope: got %v, want %v", got, tok.Extra("scope"))
	}
	if fresh.Extra("id_token") == nil {
		t.Errorf("refresh response has no id_token, want one for openid scopes")
	}
	if got, want := s.RefreshCalls(DefaultUserSub), 1; got != want {
		t.Errorf("RefreshCalls: got %d, want %d", got, want)
	}
	if got, want := s.TotalRefreshCalls(), 1; got != want {
		t.Errorf("TotalRefreshCalls: got %d, want %d", got, want)
	}
	if !s.AccessTokenValid(tok.AccessToken) || !s.AccessTokenValid(fresh.AccessToken) {
		t.Errorf("both access tokens should stay valid until they expire")
	}

	s.SetRotateRefreshTokens(true)
	fresh.Expiry = time.Now().Add(-time.Minute)
	rotated, err := cfg.TokenSource(context.Background(), fresh).Token()
	if err != nil {
		t.Fatalf("refresh with rotation: %v", err)
	}
	if rotated.RefreshToken == tok.RefreshToken || !strings.HasPrefix(rotated.RefreshToken, "1//fake-") {
		t.Errorf("rotated refresh token: got %q, want a new one", rotated.RefreshToken)
	}
	tok.Expiry = time.Now().Add(-time.Minute)
	if _, err := cfg.TokenSource(context.Background(), tok).Token(); err != nil {
		t.Errorf("old refresh token after rotation: got %v, want it still valid", err)
	}
	if got, want := s.RefreshCalls(DefaultUserSub), 3; got != want {
		t.Errorf("RefreshCalls: got %d, want %d", got, want)
	}
}

// TestHoldRefreshes: a held refresh waits until released, the one after
// it does not, an exchange is never held, and a revocation made while a
// refresh waits decides its answer.
func TestHoldRefreshes(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	cfg := oauthConfig(s)
	tok := login(t, cfg)
	tok.Expiry = time.Now().Add(-time.Minute)
	h := s.HoldRefreshes(1)
	held := make(chan error, 1)
	go func() {
		_, err := cfg.TokenSource(context.Background(), tok).Token()
		held <- err
	}()
	select {
	case <-h.Arrived():
	case <-time.After(time.Minute):
		t.Fatal("the held refresh never arrived")
	}
	if _, err := cfg.TokenSource(context.Background(), tok).Token(); err != nil {
		t.Fatalf("the refresh after the held one: %v", err)
	}
	login(t, cfg) // an exchange while a refresh is held
	select {
	case err := <-held:
		t.Fatalf("the held refresh was answered before its release: %v", err)
	default:
	}
	s.RevokeUser(DefaultUserSub)
	h.Release()
	h.Release() // more than once is fine
	wantRetrieveError(t, <-held, 400, "invalid_grant")
	if got := s.RefreshCalls(DefaultUserSub); got != 2 {
		t.Errorf("RefreshCalls: got %d, want 2", got)
	}
}

func TestRefreshUnknownToken(t *testing.T) {
	s := newTestServer(t, Options{})
	cfg := oauthConfig(s)
	_, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: "1//nope"}).Token()
	wantRetrieveError(t, err, 400, "invalid_grant")
	if got := s.TotalRefreshCalls(); got != 1 {
		t.Errorf("TotalRefreshCalls: got %d, want 1", got)
	}
}

// revoke posts token to the revocation endpoint and returns status and body.
func revoke(t *testing.T, s *Server, token string) (int, string) {
	t.Helper()
	resp, err := http.PostForm(s.RevokeURL(), url.Values{"token": {token}})
	if err != nil {
		t.Fatalf("POST revoke: %v", err)
	}
	status, _, body := readResponse(t, resp)
	return status, body
}

func TestRevoke(t *testing.T) {
	tests := []struct {
		name  string
		which func(*oauth2.Token) string
	}{
		{"refresh token", func(tok *oauth2.Token) string { return tok.RefreshToken }},
		{"access token", func(tok *oauth2.Token) string { return tok.AccessToken }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Options{AutoConsent: true})
			cfg := oauthConfig(s)
			tok := login(t, cfg)

			if status, body := revoke(t, s, tt.which(tok)); status != 200 || strings.TrimSpace(body) != "{}" {
				t.Fatalf("revoke: got %d %s, want 200 {}", status, body)
			}
			tok.Expiry = time.Now().Add(-time.Minute)
			_, err := cfg.TokenSource(context.Background(), tok).Token()
			wantRetrieveError(t, err, 400, "invalid_grant")
			var re *oauth2.RetrieveError
			if errors.As(err, &re) && re.ErrorDescription != "Token has been expired or revoked." {
				t.Errorf("error_description: got %q, want Google's", re.ErrorDescription)
			}
			if s.AccessTokenValid(tok.AccessToken) {
				t.Errorf("access token still valid after revoking the grant")
			}
			status, body := revoke(t, s, tt.which(tok))
			if status != 400 || !strings.Contains(body, `"invalid_token"`) {
				t.Errorf("second revoke: got %d %s, want 400 invalid_token", status, body)
			}
			if got, want := s.RevokedTokens(), []string{tt.which(tok)}; !slices.Equal(got, want) {
				t.Errorf("RevokedTokens: got %q, want %q", got, want)
			}
			if got := s.RevokeCalls(); got != 2 {
				t.Errorf("RevokeCalls: got %d, want 2", got)
			}
		})
	}
}

func TestFailRevoke(t *testing.T) {
	s := newTestServer(t, Options{})
	_, rt := s.IssueTokens(DefaultUserSub, productScopes...)
	s.FailRevoke(503, 1)
	if status, _ := revoke(t, s, rt); status != 503 {
		t.Errorf("first revoke: got %d, want 503", status)
	}
	if status, _ := revoke(t, s, rt); status != 200 {
		t.Errorf("second revoke: got %d, want 200", status)
	}
}

func TestRevokeUser(t *testing.T) {
	s := newTestServer(t, Options{})
	at, rt := s.IssueTokens(DefaultUserSub, productScopes...)
	s.RevokeUser(DefaultUserSub)
	if s.AccessTokenValid(at) {
		t.Errorf("access token valid after RevokeUser")
	}
	_, err := oauthConfig(s).TokenSource(context.Background(), &oauth2.Token{RefreshToken: rt}).Token()
	wantRetrieveError(t, err, 400, "invalid_grant")
	if got := s.LiveRefreshTokens(DefaultUserSub); len(got) != 0 {
		t.Errorf("LiveRefreshTokens: got %q, want none", got)
	}
}

func TestFailTokenEndpoint(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	cfg := oauthConfig(s)
	v := oauth2.GenerateVerifier()
	q := authorize(t, cfg, "st", v)
	s.FailTokenEndpoint(503, "temporarily_unavailable", 1)
	_, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	wantRetrieveError(t, err, 503, "temporarily_unavailable")
	if _, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v)); err != nil {
		t.Errorf("exchange after the fault: %v (a failed call must not use the code up)", err)
	}
	if got := s.TokenCalls(); got != 2 {
		t.Errorf("TokenCalls: got %d, want 2", got)
	}
}

func TestTokenLatency(t *testing.T) {
	s := newTestServer(t, Options{})
	_, rt := s.IssueTokens(DefaultUserSub, productScopes...)
	s.SetTokenLatency(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := oauthConfig(s).TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded", err)
	}
}

func TestAccessTokenTTL(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	s.SetAccessTokenTTL(90 * time.Second)
	tok := login(t, oauthConfig(s))
	if tok.ExpiresIn != 90 {
		t.Errorf("expires_in: got %d, want 90", tok.ExpiresIn)
	}
	s.ExpireAccessTokens(DefaultUserSub)
	if s.AccessTokenValid(tok.AccessToken) {
		t.Errorf("access token valid after ExpireAccessTokens")
	}
}

func TestRefreshTokenIssuance(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(t *testing.T, s *Server, cfg *oauth2.Config)
		opts        []oauth2.AuthCodeOption
		wantRefresh bool
	}{
		{"first offline consent", nil, nil, true},
		{"online access", nil, []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("access_type", "online")}, false},
		{"repeat consent without prompt", func(t *testing.T, s *Server, cfg *oauth2.Config) { login(t, cfg) }, nil, false},
		{"repeat consent with prompt=consent", func(t *testing.T, s *Server, cfg *oauth2.Config) { login(t, cfg) },
			[]oauth2.AuthCodeOption{oauth2.ApprovalForce}, true},
		{"repeat consent after revocation", func(t *testing.T, s *Server, cfg *oauth2.Config) {
			login(t, cfg)
			s.RevokeUser(DefaultUserSub)
		}, nil, true},
		{"SetOmitRefreshToken", func(t *testing.T, s *Server, cfg *oauth2.Config) { s.SetOmitRefreshToken(true) },
			[]oauth2.AuthCodeOption{oauth2.ApprovalForce}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Options{AutoConsent: true})
			cfg := oauthConfig(s)
			if tt.setup != nil {
				tt.setup(t, s, cfg)
			}
			tok := login(t, cfg, tt.opts...)
			if got := tok.RefreshToken != ""; got != tt.wantRefresh {
				t.Errorf("got refresh token %v, want %v", got, tt.wantRefresh)
			}
		})
	}
}

func TestGrantedScopes(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	cfg := oauthConfig(s)
	s.SetGrantedScopes("openid", "email")
	tok := login(t, cfg)
	if got, want := tok.Extra("scope"), "https://www.googleapis.com/auth/userinfo.email openid"; got != want {
		t.Errorf("scope with SetGrantedScopes: got %v, want %q", got, want)
	}

	// include_granted_scopes adds what was granted before to a new consent.
	s.SetGrantedScopes()
	cfg2 := oauthConfig(s, "openid", ScopeChatSpaces)
	tok = login(t, cfg2, oauth2.SetAuthURLParam("include_granted_scopes", "true"))
	want := strings.Join(canonicalScopes([]string{"openid", "email", ScopeChatSpaces}), " ")
	if got := tok.Extra("scope"); got != want {
		t.Errorf("scope with include_granted_scopes: got %v, want %q", got, want)
	}
}

func TestLoginHintSelectsUser(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	bob := s.AddUser(User{Email: "bob@example.com"})
	if len(bob.Sub) != 21 || strings.Trim(bob.Sub, "0123456789") != "" {
		t.Fatalf("AddUser sub: got %q, want 21 digits", bob.Sub)
	}
	if again := s.AddUser(User{Email: "bob@example.com"}); again.Sub != bob.Sub {
		t.Errorf("AddUser of the same email: got sub %q, want the stable %q", again.Sub, bob.Sub)
	}
	tok := login(t, oauthConfig(s), oauth2.SetAuthURLParam("login_hint", "Bob@Example.com"))
	claims := verifyWithJWKS(t, s, tok.Extra("id_token").(string))
	if claims["sub"] != bob.Sub || claims["email"] != "bob@example.com" || claims["email_verified"] != false {
		t.Errorf("claims: got sub %v email %v verified %v, want bob's", claims["sub"], claims["email"], claims["email_verified"])
	}
	if got := len(s.Users()); got != 2 {
		t.Errorf("Users: got %d, want 2", got)
	}
}

func TestIDTokenHookAndNonce(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	s.SetIDTokenClaims(func(c map[string]any) { c["iss"] = "https://evil.example.com" })
	tok := login(t, oauthConfig(s), oauth2.SetAuthURLParam("nonce", "n-123"))
	claims := verifyWithJWKS(t, s, tok.Extra("id_token").(string))
	if claims["iss"] != "https://evil.example.com" || claims["nonce"] != "n-123" {
		t.Errorf("claims: got iss %v nonce %v, want the hook's iss and n-123", claims["iss"], claims["nonce"])
	}
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

func TestConsentPage(t *testing.T) {
	s := newTestServer(t, Options{})
	cfg := oauthConfig(s)
	v := oauth2.GenerateVerifier()
	status, _, page := get(t, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(v), oauth2.AccessTypeOffline))
	if status != 200 {
		t.Fatalf("consent page: got status %d, want 200", status)
	}
	for _, want := range []string{"<title>Sign in – Google Accounts (fake)</title>", `id="allow"`, `id="deny"`, DefaultUserEmail, ScopeChatSpacesCreate} {
		if !strings.Contains(page, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		form.Set(m[1], htmlUnescape(m[2]))
	}

	submit := func(t *testing.T, extra url.Values) url.Values {
		t.Helper()
		f := url.Values{}
		for k, vs := range form {
			f[k] = vs
		}
		for k, vs := range extra {
			f[k] = vs
		}
		resp, err := noRedirects.PostForm(s.AuthURL(), f)
		if err != nil {
			t.Fatalf("POST consent: %v", err)
		}
		status, loc, body := readResponse(t, resp)
		if status != http.StatusFound || loc == nil {
			t.Fatalf("consent POST: got %d, want 302; body %s", status, body)
		}
		return loc.Query()
	}

	t.Run("deny", func(t *testing.T) {
		q := submit(t, url.Values{"decision": {"deny"}})
		if q.Get("error") != "access_denied" || q.Get("state") != "st" || q.Has("code") {
			t.Errorf("deny redirect: got %v, want error=access_denied&state=st", q)
		}
	})
	t.Run("allow without the chat scope", func(t *testing.T) {
		q := submit(t, url.Values{"decision": {"allow"}, "account": {DefaultUserSub}})
		if slices.Contains(strings.Fields(q.Get("scope")), ScopeChatSpacesCreate) {
			t.Errorf("scope: got %q, want the unticked chat scope missing", q.Get("scope"))
		}
		tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatalf("Exchange: %v", err)
		}
		if got := tok.Extra("scope"); got != "https://www.googleapis.com/auth/userinfo.email openid" {
			t.Errorf("token scope: got %v", got)
		}
	})
	t.Run("tampered redirect_uri", func(t *testing.T) {
		f := url.Values{}
		for k, vs := range form {
			f[k] = vs
		}
		f.Set("decision", "allow")
		f.Set("redirect_uri", "https://attacker.example/cb")
		resp, err := noRedirects.PostForm(s.AuthURL(), f)
		if err != nil {
			t.Fatalf("POST consent: %v", err)
		}
		if status, loc, body := readResponse(t, resp); status != 400 || loc != nil || !strings.Contains(body, "redirect_uri_mismatch") {
			t.Errorf("got %d %v, want 400 redirect_uri_mismatch and no redirect", status, loc)
		}
	})
	t.Run("allow everything", func(t *testing.T) {
		q := submit(t, url.Values{"decision": {"allow"}, "grant": {ScopeChatSpacesCreate}})
		if !slices.Contains(strings.Fields(q.Get("scope")), ScopeChatSpacesCreate) || q.Get("state") != "st" {
			t.Errorf("allow redirect: got %v, want the chat scope and state", q)
		}
	})
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">").Replace(s)
}

func TestMintIDTokenValidatesWithIDTokenPackage(t *testing.T) {
	s := newTestServer(t, Options{})
	ctx := context.Background()
	v, err := idtoken.NewValidator(ctx, option.WithHTTPClient(s.HTTPClient()))
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	now := time.Now()
	tok := s.MintIDToken(map[string]any{
		"iss": GoogleIssuer, "aud": "https://example.com/CreateSpace",
		"email": "script@example.com", "email_verified": true, "sub": "42",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	p, err := v.Validate(ctx, tok, "https://example.com/CreateSpace")
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if p.Issuer != GoogleIssuer || p.Claims["email"] != "script@example.com" {
		t.Errorf("payload: got iss %q email %v", p.Issuer, p.Claims["email"])
	}
	if _, err := v.Validate(ctx, tok, "https://other.example.com"); err == nil {
		t.Errorf("Validate with another audience: got nil error, want one")
	}
	other := newTestServer(t, Options{})
	forged := other.MintIDToken(map[string]any{"aud": "a", "exp": now.Add(time.Hour).Unix()})
	if _, err := v.Validate(ctx, forged, "a"); err == nil {
		t.Errorf("Validate of another fake's token: got nil error, want one")
	}
}

func TestClientJSON(t *testing.T) {
	s := newTestServer(t, Options{})
	for _, kind := range []string{"web", "installed"} {
		t.Run(kind, func(t *testing.T) {
			cfg, err := google.ConfigFromJSON(s.ClientJSON(kind), ScopeChatSpacesCreate)
			if err != nil {
				t.Fatalf("ConfigFromJSON: %v", err)
			}
			if cfg.ClientID != s.ClientID() || cfg.ClientSecret != s.ClientSecret() || cfg.RedirectURL != testRedirect {
				t.Errorf("got client %q secret %q redirect %q", cfg.ClientID, cfg.ClientSecret, cfg.RedirectURL)
			}
			if cfg.Endpoint.TokenURL != s.TokenURL() || !strings.HasPrefix(cfg.Endpoint.AuthURL, s.URL()+"/o/oauth2/") {
				t.Errorf("got endpoint %+v, want the fake's", cfg.Endpoint)
			}
		})
	}
	if got := s.ClientJSON("service_account"); got != nil {
		t.Errorf("ClientJSON(service_account): got %s, want nil", got)
	}
	s.SetRedirectURIs("http://127.0.0.1:1/cb")
	var parsed map[string]struct {
		RedirectURIs []string `json:"redirect_uris"`
	}
	if err := json.Unmarshal(s.ClientJSON("web"), &parsed); err != nil || !slices.Equal(parsed["web"].RedirectURIs, []string{"http://127.0.0.1:1/cb"}) {
		t.Errorf("redirect_uris after SetRedirectURIs: got %v (%v)", parsed, err)
	}
}

func TestDiscoveryAndPEMCerts(t *testing.T) {
	s := newTestServer(t, Options{})
	var disc map[string]any
	getJSON(t, s.URL()+"/.well-known/openid-configuration", &disc)
	if disc["issuer"] != GoogleIssuer || disc["token_endpoint"] != s.TokenURL() || disc["jwks_uri"] != s.JWKSURL() {
		t.Errorf("discovery: got %v", disc)
	}
	var certs map[string]string
	getJSON(t, s.URL()+"/oauth2/v1/certs", &certs)
	block, _ := pem.Decode([]byte(certs[s.KeyID()]))
	if block == nil {
		t.Fatalf("no PEM certificate for kid %s in %v", s.KeyID(), certs)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}
	if !s.PublicKey().Equal(cert.PublicKey) {
		t.Errorf("certificate key differs from PublicKey()")
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decode %s: %v", u, err)
	}
}

func TestTokenInfoAndUserInfo(t *testing.T) {
	s := newTestServer(t, Options{})
	at, _ := s.IssueTokens(DefaultUserSub, productScopes...)
	var info map[string]string
	getJSON(t, s.URL()+"/tokeninfo?access_token="+url.QueryEscape(at), &info)
	if info["sub"] != DefaultUserSub || info["email"] != DefaultUserEmail || !strings.Contains(info["scope"], ScopeChatSpacesCreate) {
		t.Errorf("tokeninfo: got %v", info)
	}
	req, _ := http.NewRequest("GET", s.URL()+"/v1/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	status, _, body := readResponse(t, resp)
	if status != 200 || !strings.Contains(body, DefaultUserEmail) {
		t.Errorf("userinfo: got %d %s", status, body)
	}
}

func TestNewRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "192.0.2.1:0", "example.com:80", "nonsense"} {
		if s, err := New(Options{Addr: addr}); err == nil {
			s.Close()
			t.Errorf("New(Addr %q): got nil error, want a refusal", addr)
		}
	}
}

func TestTransportRefusesOtherHosts(t *testing.T) {
	s := newTestServer(t, Options{})
	if _, err := s.HTTPClient().Get("https://example.com/"); err == nil {
		t.Errorf("got nil error for a non-Google host, want a refusal")
	}
	resp, err := s.HTTPClient().Get("https://www.googleapis.com/oauth2/v3/certs")
	if err != nil {
		t.Fatalf("GET certs through Transport: %v", err)
	}
	if status, _, body := readResponse(t, resp); status != 200 || !strings.Contains(body, s.KeyID()) {
		t.Errorf("certs through Transport: got %d %s", status, body)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	cfg := oauthConfig(s)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			// t.Fatal must not run outside the test goroutine, so the
			// flow is spelled out with t.Error.
			v := oauth2.GenerateVerifier()
			resp, err := noRedirects.Get(cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(v), oauth2.AccessTypeOffline, oauth2.ApprovalForce))
			if err != nil {
				t.Errorf("authorize %d: %v", i, err)
				return
			}
			resp.Body.Close()
			loc, err := resp.Location()
			if err != nil {
				t.Errorf("authorize %d: %v", i, err)
				return
			}
			tok, err := cfg.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(v))
			if err != nil {
				t.Errorf("exchange %d: %v", i, err)
				return
			}
			tok.Expiry = time.Now().Add(-time.Minute)
			if _, err := cfg.TokenSource(context.Background(), tok).Token(); err != nil {
				t.Errorf("refresh %d: %v", i, err)
			}
			s.FailTokenEndpoint(500, "", 0)
			_ = s.TokenCalls()
			_ = s.Spaces()
		})
	}
	wg.Wait()
	if got := s.RefreshCalls(DefaultUserSub); got != 8 {
		t.Errorf("RefreshCalls: got %d, want 8", got)
	}
	if got := len(s.LiveRefreshTokens(DefaultUserSub)); got != 8 {
		t.Errorf("LiveRefreshTokens: got %d, want 8", got)
	}
}

func TestRevokeOnCodeReuse(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	s.SetRevokeOnCodeReuse(true)
	cfg := oauthConfig(s)
	v := oauth2.GenerateVerifier()
	q := authorize(t, cfg, "st", v)
	tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	_, err = cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	wantRetrieveError(t, err, 400, "invalid_grant")
	if s.AccessTokenValid(tok.AccessToken) || len(s.LiveRefreshTokens(DefaultUserSub)) != 0 {
		t.Errorf("tokens from a reused code: got them still valid, want them revoked")
	}
}
