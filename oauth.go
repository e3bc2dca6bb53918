package chatauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Scopes. Only chat.spaces.create is needed to act; openid and email name
// the account that consented.
const scopeChatCreate = "https://www.googleapis.com/auth/chat.spaces.create"

var consentScopes = []string{"openid", "email", scopeChatCreate}

const (
	// googleIssuer is Google's issuer, in the id_token and in the RFC 9207
	// iss parameter of the authorization response.
	googleIssuer = "https://accounts.google.com"
	// stateTTL bounds how long a consent may take, from OAuthStart to
	// OAuthCallback; the flow's cookie lives as long.
	stateTTL = 10 * time.Minute
)

// handleStart serves GET /OAuthStart: it makes a state and a PKCE
// verifier, seals them into a cookie of this flow's own (flow.go), and
// sends the browser to Google's consent screen. It writes nothing to the
// store.
func (s *server) handleStart(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return errorf(statusMethodNotAllowed, "OAuthStart is opened with GET, in a browser")
	}
	hint, ticket, err := s.startParams(r.URL.Query())
	if err != nil {
		return err
	}

	state, verifier := randomToken(), oauth2.GenerateVerifier()
	rec := &stateRecord{Verifier: verifier, LoginHint: hint, CreatedAt: s.now()}
	if ticket != nil {
		rec.ChatUser = ticket.User
		// A redirect longer than Chat sends is not kept: the flow's
		// cookie must stay within what browsers keep.
		if len(ticket.Redirect) <= maxChatRedirect {
			rec.ChatRedirect = ticket.Redirect
		}
	}
	value, err := s.sealFlow(state, rec)
	if err != nil {
		return err
	}
	cleared := clearOldFlows(w, r)
	if err := setFlowCookie(w, state, value); err != nil {
		return err
	}
	opts := []oauth2.AuthCodeOption{
		oauth2.AccessTypeOffline,
		oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("prompt", "consent"),
		oauth2.SetAuthURLParam("include_granted_scopes", "true"),
	}
	if hint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", hint))
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Location", s.oauth.AuthCodeURL(state, opts...))
	w.WriteHeader(http.StatusFound)
	loggerFrom(r.Context()).Info("consent started", "loginHint", hint != "", "oldFlowsCleared", cleared)
	return nil
}

// startParams reads OAuthStart's login_hint and ticket. A ticket (from
// ChatEvents' Configure prompt) binds the consent to a Chat user and says
// where Chat wants the browser back; its email is the hint when none is
// given.
func (s *server) startParams(q url.Values) (hint string, ticket *chatTicket, err error) {
	if hint, err = optionalParam(q, "login_hint"); err != nil {
		return "", nil, err
	}
	if hint != "" && !validEmail(hint) {
		return "", nil, errorf(statusInvalidArgument, "login_hint must be an email address, like alice@example.com")
	}
	if _, ok := q["ticket"]; ok {
		raw, err := requiredParam(q, "ticket", maxTicket)
		if err != nil {
			return "", nil, err
		}
		if ticket, err = s.openTicket(raw); err != nil {
			return "", nil, err
		}
		if hint == "" && validEmail(ticket.Email) {
			hint = ticket.Email
		}
	}
	return hint, ticket, nil
}

// handleCallback serves GET /OAuthCallback. The order matters: the
// state's flow cookie is opened, the issuer checked and the state marked
// used before the code is sent anywhere, so a forged, replayed,
// cross-browser or mixed-up callback never reaches the token endpoint;
// and nothing is marked for a callback whose cookie does not open, so a
// guess at someone's state cannot end their consent.
func (s *server) handleCallback(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		return errorf(statusMethodNotAllowed, "OAuthCallback is reached by Google's redirect, with GET")
	}
	ctx := r.Context()
	q := r.URL.Query()
	if _, ok := q["error"]; ok {
		return s.callbackRefused(w, r, q)
	}
	code, state, iss, err := callbackParams(q)
	if err != nil {
		return err
	}
	rec, err := s.findFlow(r, state)
	if err != nil {
		return err
	}
	// RFC 9207: an authorization response from another issuer is a mix-up
	// attack; its code is never sent to Google. An iss that is present
	// must be Google's exactly, so an empty one is refused too.
	if _, present := q["iss"]; present && iss != googleIssuer {
		return s.restartError(statusPermissionDenied, "the sign-in answer came from an unexpected issuer, so it was discarded", rec.LoginHint)
	}
	if err := s.useState(ctx, w, state, rec); err != nil {
		return err
	}

	tok, sub, email, scopes, err := s.exchange(ctx, code, rec)
	if err != nil {
		return err
	}
	if err := s.consents.save(ctx, sub, email, tok, scopes); err != nil {
		return err
	}
	if s.redirectToChat(w, r, rec) {
		return nil
	}
	renderPage(w, http.StatusOK, page{
		Title:   "Google Chat connected",
		Heading: "Google Chat is connected",
		Lines: []string{
			"chatauth can now create Google Chat spaces as " + email + ".",
			"You can close this tab. To take the permission back, remove the app at https://myaccount.google.com/connections.",
		},
	})
	return nil
}

var errNoRefreshToken = errors.New("no refresh token")

// callbackParams reads an authorization response's code and state, each
// required once, and its optional iss.
func callbackParams(q url.Values) (code, state, iss string, err error) {
	if code, err = requiredParam(q, "code", 4096); err != nil {
		return "", "", "", err
	}
	if state, err = requiredParam(q, "state", maxState); err != nil {
		return "", "", "", err
	}
	if iss, err = optionalParam(q, "iss"); err != nil {
		return "", "", "", err
	}
	return code, state, iss, nil
}

// exchange trades the code of the flow rec for tokens and reads who
// consented from the id_token: an account with a verified email, the one
// a consent started from Chat was for, that granted Chat's scope.
func (s *server) exchange(ctx context.Context, code string, rec *stateRecord) (tok *oauth2.Token, sub, email string, scopes []string, err error) {
	tok, err = s.oauth.Exchange(context.WithValue(ctx, oauth2.HTTPClient, s.http), code, oauth2.VerifierOption(rec.Verifier))
	if err != nil {
		return nil, "", "", nil, exchangeError(err, s.cfg.PublicURL, rec.LoginHint)
	}
	idToken, _ := tok.Extra("id_token").(string)
	user, err := parseIDToken(idToken, s.oauth.ClientID, s.now())
	if err != nil {
		return nil, "", "", nil, wrapError(statusUpstreamError, err, "Google's answer did not identify the account; try connecting again")
	}
	if !user.EmailVerified {
		return nil, "", "", nil, errorf(statusPermissionDenied, "the Google account's email address is not verified, so it cannot be connected")
	}
	email = strings.ToLower(user.Email)
	if err := checkChatUser(ctx, rec, user.Sub, email); err != nil {
		return nil, "", "", nil, err
	}
	scopeText, _ := tok.Extra("scope").(string)
	scopes = strings.Fields(scopeText)
	if !slices.Contains(scopes, scopeChatCreate) {
		e := s.reauthError(email, "Google Chat was not connected: the permission to create Chat spaces was not granted. Connect again and allow “Create conversations and spaces”.")
		e.Err = fmt.Errorf("granted scopes %q lack %s", scopeText, scopeChatCreate)
		return nil, "", "", nil, e
	}
	return tok, user.Sub, email, scopes, nil
}

// useState marks the state used in the store, so that it serves one
// callback across instances, and clears the flow's cookie; a state used
// already is refused. A store that cannot be reached leaves the flow as
// it was, cookie included, for the browser to try again.
func (s *server) useState(ctx context.Context, w http.ResponseWriter, state string, rec *stateRecord) error {
	err := s.store.markStateUsed(ctx, hashToken(state), usedStateExpiry(rec, s.now()))
	switch {
	case errors.Is(err, errAlreadyExists):
		clearFlowCookie(w, state)
		return s.restartError(statusPermissionDenied, "this sign-in link was already used", rec.LoginHint)
	case err != nil:
		return err
	}
	clearFlowCookie(w, state)
	return nil
}

// callbackRefused answers Google's error redirect (the user declined, or
// the request was refused). It clears the named flow's cookie, so the flow
// cannot be resumed, and stores nothing. The page names the flow's login
// hint only when this browser sent that flow's cookie: a state alone, in
// anyone's hands, reveals nothing.
func (s *server) callbackRefused(w http.ResponseWriter, r *http.Request, q url.Values) error {
	hint := ""
	if states := q["state"]; len(states) == 1 && states[0] != "" && len(states[0]) <= maxState {
		state := states[0]
		if _, err := r.Cookie(flowCookieName(state)); err == nil {
			if rec, err := s.findFlow(r, state); err == nil {
				hint = rec.LoginHint
			}
			clearFlowCookie(w, state)
		}
	}
	code := q.Get("error")
	if code == "access_denied" {
		e := s.reauthError(hint, "Google Chat was not connected: access was declined on Google's consent screen. You can connect at any time.")
		if hint == "" {
			e.AuthorizeURL = s.startURL("")
		}
		return e
	}
	if len(code) > 64 || !oauthErrorCode().MatchString(code) {
		code = "unknown"
	}
	return errorf(statusInvalidArgument, "Google refused the sign-in request (%s); the operator should check the OAuth client's configuration", code)
}

// oauthErrorCode bounds no length: a counted repetition ({1,64}) is
// costly to compile at a cold start (BENCHMARKS.md), so the caller checks
// the length itself.
var oauthErrorCode = lazyRegexp(`^[a-z_]+$`)

// exchangeError maps a failed call to the token endpoint (a code exchange
// or a refresh). The endpoint's body is not logged: only its status and
// error code.
func exchangeError(err error, publicURL, loginHint string) error {
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode == "invalid_grant":
		return &Error{Status: statusAuthorizationRequired, AuthorizeURL: startURL(publicURL, loginHint),
			Message: "Google did not accept this sign-in (it expired or was already used); connect again",
			Err:     errors.New("token endpoint: invalid_grant")}
	case errors.As(err, &re):
		code := 0
		if re.Response != nil {
			code = re.Response.StatusCode
		}
		return wrapError(statusUpstreamError, fmt.Errorf("token endpoint answered %d %q", code, re.ErrorCode), "Google's token endpoint refused the request; try again, or ask the operator to check the OAuth client")
	case errors.Is(err, context.DeadlineExceeded):
		return wrapError(statusDeadlineExceeded, err, "Google's token endpoint did not answer in time; try again")
	default:
		return wrapError(statusUpstreamError, err, "Google's token endpoint could not be reached; try again")
	}
}

// reauthError asks the user to consent (again), with the link to do so.
func (s *server) reauthError(email, msg string) *Error {
	return &Error{Status: statusAuthorizationRequired, Message: msg, AuthorizeURL: s.startURL(email)}
}

// restartError is a refused callback; the page offers a fresh start.
func (s *server) restartError(status, msg, loginHint string) *Error {
	return &Error{Status: status, Message: "Google Chat was not connected: " + msg + ". Start again.", restartURL: s.startURL(loginHint)}
}

// startURL is the OAuthStart link, on PUBLIC_URL, for a user.
func (s *server) startURL(loginHint string) string { return startURL(s.cfg.PublicURL, loginHint) }

// startURL is the OAuthStart link on publicURL for a user.
func startURL(publicURL, loginHint string) string {
	u := publicURL + "/OAuthStart"
	if loginHint != "" {
		u += "?login_hint=" + url.QueryEscape(loginHint)
	}
	return u
}

// requiredParam returns a query parameter that must appear exactly once,
// non-empty and at most max bytes long.
func requiredParam(q url.Values, name string, max int) (string, error) {
	v := q[name]
	switch {
	case len(v) == 0 || v[0] == "":
		return "", errorf(statusInvalidArgument, "the %s parameter is missing; open OAuthStart to connect", name)
	case len(v) > 1:
		return "", errorf(statusInvalidArgument, "the %s parameter appears more than once", name)
	case len(v[0]) > max:
		return "", errorf(statusInvalidArgument, "the %s parameter is too long", name)
	}
	return v[0], nil
}

// optionalParam returns a query parameter that may appear at most once.
func optionalParam(q url.Values, name string) (string, error) {
	v := q[name]
	if len(v) > 1 {
		return "", errorf(statusInvalidArgument, "the %s parameter appears more than once", name)
	}
	if len(v) == 0 {
		return "", nil
	}
	if len(v[0]) > 512 {
		return "", errorf(statusInvalidArgument, "the %s parameter is too long", name)
	}
	return v[0], nil
}

// randomToken returns 32 random bytes, base64url-encoded.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashToken is the store key of a secret value: SHA-256, hex.
func hashToken(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

var emailPattern = lazyRegexp(`^[^\s@<>()",;:\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$`)

// idClaims are the id_token claims the callback uses.
type idClaims struct {
	Iss           string   `json:"iss"`
	Aud           audience `json:"aud"`
	Sub           string   `json:"sub"`
	Email         string   `json:"email"`
	EmailVerified flexBool `json:"email_verified"`
	Exp           int64    `json:"exp"`
}

// parseIDToken reads the id_token of a token response. It came straight
// from Google's token endpoint over TLS, so (OpenID Connect Core 3.1.3.7)
// its signature need not be checked; its issuer, audience and expiry are.
func parseIDToken(raw, clientID string, now time.Time) (*idClaims, error) {
	if raw == "" {
		return nil, errors.New("id_token: missing from the token response (was the openid scope granted?)")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("id_token: not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, errors.New("id_token: payload is not base64url")
	}
	var c idClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, errors.New("id_token: payload is not JSON claims")
	}
	switch {
	case c.Iss != googleIssuer && c.Iss != "accounts.google.com":
		return nil, fmt.Errorf("id_token: issuer %q is not Google", c.Iss)
	case !slices.Contains(c.Aud, clientID):
		return nil, errors.New("id_token: audience is not this client")
	case c.Sub == "":
		return nil, errors.New("id_token: no subject")
	case c.Email == "":
		return nil, errors.New("id_token: no email (was the email scope granted?)")
	case now.After(time.Unix(c.Exp, 0).Add(5 * time.Minute)):
		return nil, errors.New("id_token: expired")
	}
	return &c, nil
}

// audience is the aud claim: a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}
