package fakegoogle

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// refreshGrant is an issued refresh token. Tokens minted from the same
// consent share a family; revoking any of them revokes the family, as
// revoking at Google ends the whole grant.
type refreshGrant struct {
	sub, clientID, family string
	scopes                []string
	revoked               bool
}

// accessGrant is an issued access token.
type accessGrant struct {
	sub, clientID, family string
	scopes                []string
	expiry                time.Time
	revoked               bool
}

// tokenFault is one injected token-endpoint failure.
type tokenFault struct {
	status int
	code   string
}

// oauthError is a token-endpoint error in RFC 6749 form, which
// golang.org/x/oauth2 turns into *oauth2.RetrieveError.
type oauthError struct {
	status            int
	code, description string
}

func (e *oauthError) write(w http.ResponseWriter) {
	body := map[string]string{"error": e.code}
	if e.description != "" {
		body["error_description"] = e.description
	}
	writeJSON(w, e.status, body)
}

func invalidGrant(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_grant", desc}
}

// tokenResult is what a successful grant hands to the response writer;
// id_token signing happens outside the lock.
type tokenResult struct {
	access, refresh, sub, nonce string
	scopes                      []string
	ttl                         time.Duration
	user                        User
	hook                        func(map[string]any)
}

// handleToken serves POST /token for the authorization_code and
// refresh_token grants, with the client authenticated by client_secret_post
// or HTTP Basic, and for the JWT-bearer grant (delegation.go), which the
// assertion's signature authenticates.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	form, formErr := readForm(w, r)
	grantType := form.Get("grant_type")

	s.mu.Lock()
	s.tokenCalls++
	var hold *Hold
	switch grantType {
	case "authorization_code":
		s.exchangeCalls++
	case "refresh_token":
		s.totalRefreshCalls++
		if g := s.refreshTokens[form.Get("refresh_token")]; g != nil {
			s.refreshCalls[g.sub]++
		}
		if len(s.refreshHolds) > 0 {
			hold = s.refreshHolds[0]
			s.refreshHolds = s.refreshHolds[1:]
		}
	}
	var fault *tokenFault
	if len(s.tokenFaults) > 0 {
		fault = &s.tokenFaults[0]
		s.tokenFaults = s.tokenFaults[1:]
	}
	latency := s.tokenLatency
	s.mu.Unlock()

	if hold.wait(r.Context()) != nil || sleep(r.Context(), latency) != nil {
		return
	}
	if fault != nil {
		writeJSON(w, fault.status, map[string]string{"error": fault.code})
		return
	}
	if formErr != nil {
		formErr.write(w)
		return
	}
	if isJWTBearer(form) {
		s.jwtBearerGrant(w, form) // delegation.go
		return
	}
	clientID, cerr := s.authenticateClient(r, form)
	if cerr != nil {
		cerr.write(w)
		return
	}

	var res *tokenResult
	var err *oauthError
	switch grantType {
	case "authorization_code":
		res, err = s.exchangeCode(form, clientID)
	case "refresh_token":
		res, err = s.refresh(form, clientID)
	case "":
		err = &oauthError{http.StatusBadRequest, "invalid_request", "Missing required parameter: grant_type"}
	default:
		err = &oauthError{http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: " + grantType}
	}
	if err != nil {
		err.write(w)
		return
	}
	s.writeToken(w, res)
}

// readForm parses an application/x-www-form-urlencoded body, the only
// encoding Google's token endpoint takes.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, *oauthError) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return url.Values{}, &oauthError{http.StatusBadRequest, "invalid_request", "Invalid Content-Type: the body must be application/x-www-form-urlencoded"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return url.Values{}, &oauthError{http.StatusBadRequest, "invalid_request", "Malformed request body"}
	}
	return r.PostForm, nil
}

// authenticateClient checks the client's credentials. HTTP Basic wins when
// present; golang.org/x/oauth2 URL-encodes both parts before base64, as RFC
// 6749 §2.3.1 asks, so they are decoded first.
func (s *Server) authenticateClient(r *http.Request, form url.Values) (string, *oauthError) {
	id, secret, basic := r.BasicAuth()
	if basic {
		id, secret = queryUnescape(id), queryUnescape(secret)
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	switch {
	case id == "":
		return "", &oauthError{http.StatusUnauthorized, "invalid_client", "Could not determine client ID from request."}
	case id != s.clientID:
		return "", &oauthError{http.StatusUnauthorized, "invalid_client", "The OAuth client was not found."}
	case subtle.ConstantTimeCompare([]byte(secret), []byte(s.clientSecret)) != 1:
		return "", &oauthError{http.StatusUnauthorized, "invalid_client", "Unauthorized"}
	}
	return id, nil
}

func queryUnescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// exchangeCode redeems an authorization code, checking it is this client's,
// unused, unexpired, sent with the same redirect_uri, and that the PKCE
// verifier matches the S256 challenge. The error texts are Google's.
func (s *Server) exchangeCode(form url.Values, clientID string) (*tokenResult, *oauthError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.codes[form.Get("code")]
	switch {
	case form.Get("code") == "":
		return nil, &oauthError{http.StatusBadRequest, "invalid_request", "Missing required parameter: code"}
	case c == nil:
		return nil, invalidGrant("Malformed auth code.")
	case c.clientID != clientID:
		return nil, invalidGrant("Bad Request")
	case c.used:
		if s.revokeOnCodeReuse && c.family != "" {
			s.revokeFamilyLocked(c.family)
		}
		return nil, invalidGrant("Bad Request")
	case !s.now().Before(c.expiry):
		return nil, invalidGrant("Bad Request")
	case form.Get("redirect_uri") != c.redirectURI:
		return nil, &oauthError{http.StatusBadRequest, "redirect_uri_mismatch", "Bad Request"}
	}
	verifier := form.Get("code_verifier")
	if verifier == "" {
		return nil, invalidGrant("Missing code verifier.")
	}
	sum := sha256.Sum256([]byte(verifier))
	if len(verifier) < 43 || len(verifier) > 128 || !isUnreserved(verifier) ||
		subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(c.challenge)) != 1 {
		return nil, invalidGrant("Invalid code verifier.")
	}
	c.used = true

	// Like Google, a refresh token comes only with access_type=offline, and
	// on a repeat consent only when prompt=consent forced the screen.
	withRefresh := c.offline && !s.omitRefreshToken && (c.promptConsent || !s.hasLiveRefreshLocked(c.sub, clientID))
	res := s.mintLocked(c.sub, clientID, c.scopes, withRefresh, "")
	res.nonce = c.nonce
	c.family = res.family
	return &res.tokenResult, nil
}

// refresh serves the refresh_token grant. An optional scope parameter may
// narrow, never widen, the grant.
func (s *Server) refresh(form url.Values, clientID string) (*tokenResult, *oauthError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := form.Get("refresh_token")
	if rt == "" {
		return nil, &oauthError{http.StatusBadRequest, "invalid_request", "Missing required parameter: refresh_token"}
	}
	g := s.refreshTokens[rt]
	if g == nil || g.revoked {
		return nil, invalidGrant("Token has been expired or revoked.")
	}
	if g.clientID != clientID {
		return nil, &oauthError{http.StatusBadRequest, "unauthorized_client", "Unauthorized"}
	}
	scopes := g.scopes
	if sc := form.Get("scope"); sc != "" {
		scopes = canonicalScopes(strings.Fields(sc))
		for _, want := range scopes {
			if !slices.Contains(g.scopes, want) {
				return nil, &oauthError{http.StatusBadRequest, "invalid_scope", "Some requested scopes were invalid. {invalid=[" + want + "]}"}
			}
		}
	}
	res := s.mintLocked(g.sub, clientID, scopes, s.rotateRefreshTokens, g.family)
	return &res.tokenResult, nil
}

type minted struct {
	tokenResult
	family string
}

// mintLocked creates an access token, and a refresh token when withRefresh,
// in family (a new family when empty).
func (s *Server) mintLocked(sub, clientID string, scopes []string, withRefresh bool, family string) minted {
	access := "ya29.fake-" + rand.Text() + rand.Text()
	if family == "" {
		family = access
	}
	var refresh string
	if withRefresh {
		refresh = "1//fake-" + rand.Text() + rand.Text()
		s.refreshTokens[refresh] = &refreshGrant{sub: sub, clientID: clientID, family: family, scopes: slices.Clone(scopes)}
	}
	s.issued = append(s.issued, access)
	if refresh != "" {
		s.issued = append(s.issued, refresh)
	}
	s.accessTokens[access] = &accessGrant{
		sub: sub, clientID: clientID, family: family,
		scopes: slices.Clone(scopes),
		expiry: s.now().Add(s.accessTokenTTL),
	}
	user, _ := s.userBySubLocked(sub)
	user.Sub = sub
	return minted{
		tokenResult: tokenResult{
			access: access, refresh: refresh, sub: sub,
			scopes: slices.Clone(scopes), ttl: s.accessTokenTTL, user: user, hook: s.idTokenHook,
		},
		family: family,
	}
}

func (s *Server) hasLiveRefreshLocked(sub, clientID string) bool {
	for _, g := range s.refreshTokens {
		if g.sub == sub && g.clientID == clientID && !g.revoked {
			return true
		}
	}
	return false
}

// writeToken writes Google's token response. An id_token comes with it when
// an OpenID scope was granted, on refreshes too, as Google does.
func (s *Server) writeToken(w http.ResponseWriter, res *tokenResult) {
	body := map[string]any{
		"access_token": res.access,
		"expires_in":   int64(res.ttl / time.Second),
		"scope":        strings.Join(res.scopes, " "),
		"token_type":   "Bearer",
	}
	if res.refresh != "" {
		body["refresh_token"] = res.refresh
	}
	if wantsIDToken(res.scopes) {
		now := s.now()
		claims := map[string]any{
			"iss":     GoogleIssuer,
			"azp":     s.clientID,
			"aud":     s.clientID,
			"sub":     res.sub,
			"at_hash": atHash(res.access),
			"iat":     now.Unix(),
			"exp":     now.Add(idTokenTTL).Unix(),
		}
		if slices.Contains(res.scopes, ScopeEmail) {
			claims["email"] = res.user.Email
			claims["email_verified"] = res.user.EmailVerified
		}
		if res.nonce != "" {
			claims["nonce"] = res.nonce
		}
		if res.hook != nil {
			res.hook(claims)
		}
		idToken, err := s.sign(claims)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal_failure", "error_description": "cannot sign id_token"})
			return
		}
		body["id_token"] = idToken
	}
	writeJSON(w, http.StatusOK, body)
}

func wantsIDToken(scopes []string) bool {
	return slices.Contains(scopes, ScopeOpenID) || slices.Contains(scopes, ScopeEmail) || slices.Contains(scopes, ScopeProfile)
}

// handleRevoke serves POST /revoke. Like Google it takes the token from the
// form or the query string, revokes the whole grant the token belongs to
// (refresh token and access tokens alike), and answers 400 invalid_token for
// a token that is unknown, expired or already revoked.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	_ = r.ParseForm()
	token := r.Form.Get("token")

	s.mu.Lock()
	s.revokeCalls++
	if len(s.revokeFaults) > 0 {
		status := s.revokeFaults[0]
		s.revokeFaults = s.revokeFaults[1:]
		s.mu.Unlock()
		writeJSON(w, status, map[string]string{"error": "backend_error", "error_description": "Backend Error"})
		return
	}
	defer s.mu.Unlock()
	if token == "" {
		(&oauthError{http.StatusBadRequest, "invalid_request", "Bad Request"}).write(w)
		return
	}
	family := ""
	if g := s.refreshTokens[token]; g != nil && !g.revoked {
		family = g.family
	} else if a := s.liveAccessLocked(token); a != nil {
		family = a.family
	}
	if family == "" {
		(&oauthError{http.StatusBadRequest, "invalid_token", "Token expired or revoked"}).write(w)
		return
	}
	s.revokeFamilyLocked(family)
	s.revoked = append(s.revoked, token)
	writeJSON(w, http.StatusOK, map[string]any{})
}

// revokeFamilyLocked revokes every token of a grant and forgets its scopes
// for include_granted_scopes, since the user's consent is gone.
func (s *Server) revokeFamilyLocked(family string) {
	for _, g := range s.refreshTokens {
		if g.family == family {
			g.revoked = true
			delete(s.consented, g.sub)
		}
	}
	for _, a := range s.accessTokens {
		if a.family == family {
			a.revoked = true
			delete(s.consented, a.sub)
		}
	}
}

// liveAccessLocked returns the grant of a known, unrevoked, unexpired
// access token, or nil.
func (s *Server) liveAccessLocked(token string) *accessGrant {
	a := s.accessTokens[token]
	if a == nil || a.revoked || !s.now().Before(a.expiry) {
		return nil
	}
	return a
}

// handleTokenInfo serves GET /tokeninfo?access_token=…, Google's token
// introspection, handy for checking what a stored token grants.
func (s *Server) handleTokenInfo(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("access_token")
	s.mu.Lock()
	a := s.liveAccessLocked(token)
	var body map[string]string
	if a != nil {
		user, _ := s.userBySubLocked(a.sub)
		body = map[string]string{
			"azp":        a.clientID,
			"aud":        a.clientID,
			"sub":        a.sub,
			"scope":      strings.Join(a.scopes, " "),
			"exp":        strconv.FormatInt(a.expiry.Unix(), 10),
			"expires_in": strconv.FormatInt(int64(a.expiry.Sub(s.now())/time.Second), 10),
		}
		if slices.Contains(a.scopes, ScopeEmail) {
			body["email"] = user.Email
			body["email_verified"] = strconv.FormatBool(user.EmailVerified)
		}
	}
	s.mu.Unlock()
	if a == nil {
		(&oauthError{http.StatusBadRequest, "invalid_token", "Invalid Value"}).write(w)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// handleUserInfo serves GET /v1/userinfo and /oauth2/v3/userinfo, the
// OpenID Connect userinfo endpoint, for a bearer access token.
func (s *Server) handleUserInfo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	a := s.liveAccessLocked(bearerToken(r))
	var body map[string]any
	if a != nil {
		user, _ := s.userBySubLocked(a.sub)
		body = map[string]any{"sub": a.sub}
		if slices.Contains(a.scopes, ScopeEmail) {
			body["email"] = user.Email
			body["email_verified"] = user.EmailVerified
		}
	}
	s.mu.Unlock()
	if a == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/", error="invalid_token"`)
		(&oauthError{http.StatusUnauthorized, "invalid_request", "Invalid Credentials"}).write(w)
		return
	}
	writeJSON(w, http.StatusOK, body)
}
