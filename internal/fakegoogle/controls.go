package fakegoogle

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// This file holds the OAuth test controls and counters. Every method is safe
// to call while requests are in flight.

// SetGrantedScopes makes every following consent grant exactly these scopes
// instead of the ones requested, to simulate a user who unticks a checkbox
// (typically the Chat scope) on Google's granular consent screen. With no
// arguments consents grant what was requested again.
func (s *Server) SetGrantedScopes(scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(scopes) == 0 {
		s.grantedScopes = nil
		return
	}
	s.grantedScopes = slices.Clone(scopes)
}

// SetOmitRefreshToken makes code exchanges answer without a refresh_token,
// as Google does on a repeat consent that was not forced with
// prompt=consent. (The fake already does that by itself when a live refresh
// token exists and prompt=consent was not sent, and never issues one without
// access_type=offline.)
func (s *Server) SetOmitRefreshToken(omit bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.omitRefreshToken = omit
}

// SetRotateRefreshTokens makes refresh grants also return a new refresh
// token. The old one stays valid, as at Google, where rotation is rare but
// clients must store a refresh token they are handed.
func (s *Server) SetRotateRefreshTokens(rotate bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotateRefreshTokens = rotate
}

// SetRevokeOnCodeReuse makes a second redemption of a code also revoke the
// tokens the first one issued, the defence RFC 6749 §4.1.2 recommends. It is
// off by default so a stray retry in one test does not revoke tokens that
// test still uses.
func (s *Server) SetRevokeOnCodeReuse(revoke bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokeOnCodeReuse = revoke
}

// SetAccessTokenTTL sets the lifetime of access tokens issued from now on;
// zero or less restores Google's 3599 seconds.
func (s *Server) SetAccessTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		d = defaultAccessTokenTTL
	}
	s.accessTokenTTL = d
}

// FailTokenEndpoint makes the next n token requests, of any grant type,
// answer status with {"error": errorCode}. Note that golang.org/x/oauth2,
// when its Config has no AuthStyle and has not yet succeeded against this
// token URL, retries a failed request once with the other client
// authentication style, consuming two failures per call.
func (s *Server) FailTokenEndpoint(status int, errorCode string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if errorCode == "" {
		errorCode = "internal_failure"
	}
	for range n {
		s.tokenFaults = append(s.tokenFaults, tokenFault{status, errorCode})
	}
}

// SetTokenLatency delays every token response by d.
func (s *Server) SetTokenLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLatency = d
}

// Hold keeps refresh grants waiting at the token endpoint (HoldRefreshes),
// so that a test decides when a refresh in flight ends, without sleeping.
type Hold struct {
	arrived  chan struct{}
	released chan struct{}
	once     sync.Once
}

// HoldRefreshes makes the next n refresh_token requests, once counted and
// before they are answered (and before SetTokenLatency's delay), wait until the Hold is released, the server is
// closed or their client gives up. Faults and revocations apply when a
// held request is answered, so a grant revoked while held answers
// invalid_grant. Requests after the n-th are not held.
func (s *Server) HoldRefreshes(n int) *Hold {
	h := &Hold{arrived: make(chan struct{}, n), released: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.refreshHolds = append(s.refreshHolds, h)
	}
	s.holds = append(s.holds, h)
	return h
}

// Arrived receives once for each held request as it starts waiting.
func (h *Hold) Arrived() <-chan struct{} { return h.arrived }

// Release lets every request the Hold keeps, and any it would still keep,
// be answered. It may be called more than once.
func (h *Hold) Release() { h.once.Do(func() { close(h.released) }) }

// wait blocks a held request; a nil Hold holds nothing.
func (h *Hold) wait(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.arrived <- struct{}{} // buffered for every request the Hold keeps
	select {
	case <-h.released:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetIDTokenClaims installs a hook that may change the claims of every
// id_token the token endpoint issues, just before signing, for tests of a
// wrong iss or aud, an unverified email or an expired token. nil removes it.
// The hook runs without the server's lock held.
func (s *Server) SetIDTokenClaims(hook func(claims map[string]any)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idTokenHook = hook
}

// FailRevoke makes the next n revocation requests answer status.
func (s *Server) FailRevoke(status int, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.revokeFaults = append(s.revokeFaults, status)
	}
}

// IssueTokens mints a valid access and refresh token for sub directly, as if
// the user had consented to scopes, for tests that seed a token store. The
// scopes are reported the way Google reports them ("email" becomes the
// userinfo.email URL). sub need not be a known user.
func (s *Server) IssueTokens(sub string, scopes ...string) (accessToken, refreshToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	granted := canonicalScopes(scopes)
	s.consented[sub] = unionScopes(s.consented[sub], granted)
	res := s.mintLocked(sub, s.clientID, granted, true, "")
	return res.access, res.refresh
}

// RevokeUser revokes every token of sub, as when the user removes the app
// at myaccount.google.com/permissions: refresh grants answer invalid_grant
// and the Chat API refuses the access tokens.
func (s *Server) RevokeUser(sub string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.refreshTokens {
		if g.sub == sub {
			g.revoked = true
		}
	}
	for _, a := range s.accessTokens {
		if a.sub == sub {
			a.revoked = true
		}
	}
	delete(s.consented, sub)
}

// ExpireAccessTokens makes every access token of sub expired now, without
// moving the clock, so the next Chat call answers 401 and the client must
// refresh.
func (s *Server) ExpireAccessTokens(sub string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := s.now().Add(-time.Second)
	for _, a := range s.accessTokens {
		if a.sub == sub {
			a.expiry = past
		}
	}
}

// LiveRefreshTokens returns sub's refresh tokens that are not revoked, in no
// particular order.
func (s *Server) LiveRefreshTokens(sub string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for tok, g := range s.refreshTokens {
		if g.sub == sub && !g.revoked {
			out = append(out, tok)
		}
	}
	slices.Sort(out)
	return out
}

// AccessTokenValid reports whether token is a live access token: issued
// here, not revoked and not expired.
func (s *Server) AccessTokenValid(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveAccessLocked(token) != nil
}

// TokenCalls counts every request to the token endpoint, failed ones too.
func (s *Server) TokenCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenCalls
}

// ExchangeCalls counts authorization_code requests, failed ones too.
func (s *Server) ExchangeCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exchangeCalls
}

// RefreshCalls counts refresh_token requests made with a refresh token of
// sub (revoked ones included), failed ones too.
func (s *Server) RefreshCalls(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshCalls[sub]
}

// TotalRefreshCalls counts all refresh_token requests, including those with
// unknown tokens.
func (s *Server) TotalRefreshCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.totalRefreshCalls
}

// RefreshCallsBySub returns a copy of the per-user refresh counts.
func (s *Server) RefreshCallsBySub() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.refreshCalls)
}

// RevokeCalls counts every request to the revocation endpoint.
func (s *Server) RevokeCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revokeCalls
}

// RevokedTokens returns, in order, the tokens successfully revoked through
// the revocation endpoint (not those revoked by RevokeUser or as part of a
// grant).
func (s *Server) RevokedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.revoked)
}

// IssuedSecrets returns every authorization code, access token and refresh
// token the fake has issued, and the client secret: the values that must
// never appear in a response or a log line of the product.
func (s *Server) IssuedSecrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(slices.Clone(s.issued), s.clientSecret)
}
