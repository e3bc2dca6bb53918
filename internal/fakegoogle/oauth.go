package fakegoogle

import (
	"crypto/rand"
	"crypto/sha256"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Scope URLs Google reports in place of the short OpenID scope names.
const (
	ScopeEmail   = "https://www.googleapis.com/auth/userinfo.email"
	ScopeProfile = "https://www.googleapis.com/auth/userinfo.profile"
	ScopeOpenID  = "openid"

	// ScopeChatSpacesCreate and ScopeChatSpaces are the user scopes that
	// allow spaces.create and spaces.setup.
	ScopeChatSpacesCreate = "https://www.googleapis.com/auth/chat.spaces.create"
	ScopeChatSpaces       = "https://www.googleapis.com/auth/chat.spaces"
	// ScopeChatSpacesReadonly additionally allows spaces.get.
	ScopeChatSpacesReadonly = "https://www.googleapis.com/auth/chat.spaces.readonly"

	googleScopePrefix = "https://www.googleapis.com/auth/"
)

// oauthState is the Server's OAuth bookkeeping, guarded by Server.mu.
type oauthState struct {
	redirectURIs []string
	users        []User

	codes         map[string]*authCode
	refreshTokens map[string]*refreshGrant
	accessTokens  map[string]*accessGrant
	// consented holds, per sub, the scopes the user has granted this client
	// and not revoked; include_granted_scopes=true adds them to a new grant.
	consented map[string][]string

	grantedScopes       []string
	omitRefreshToken    bool
	rotateRefreshTokens bool
	revokeOnCodeReuse   bool
	accessTokenTTL      time.Duration
	tokenFaults         []tokenFault
	tokenLatency        time.Duration
	refreshHolds        []*Hold // one entry per refresh grant still to hold
	holds               []*Hold // every Hold made, released by Close
	idTokenHook         func(map[string]any)
	revokeFaults        []int

	tokenCalls, exchangeCalls, totalRefreshCalls, revokeCalls int
	refreshCalls                                              map[string]int
	revoked                                                   []string
}

func newOAuthState() oauthState {
	return oauthState{
		codes:          map[string]*authCode{},
		refreshTokens:  map[string]*refreshGrant{},
		accessTokens:   map[string]*accessGrant{},
		consented:      map[string][]string{},
		refreshCalls:   map[string]int{},
		accessTokenTTL: defaultAccessTokenTTL,
	}
}

// authCode is an issued authorization code and everything it was bound to
// at the authorization endpoint.
type authCode struct {
	clientID, redirectURI, challenge, sub, nonce string
	scopes                                       []string
	offline, promptConsent                       bool
	expiry                                       time.Time
	used                                         bool
	family                                       string // tokens issued from the code, for revoke-on-reuse
}

// authRequest is a validated authorization request.
type authRequest struct {
	clientID, redirectURI, state, challenge, loginHint, nonce string
	scopes                                                    []string // as requested
	offline, promptConsent, includeGranted                    bool
	params                                                    url.Values
}

// pageError is an authorization-endpoint failure, shown to the person in
// the browser the way Google does ("Error 400: redirect_uri_mismatch") and
// never redirected back to the client.
type pageError struct {
	code, description string
}

// parseAuthRequest checks an authorization request in the order Google
// does: the client first, then the redirect URI (a wrong one must never be
// redirected to), then the remaining parameters.
func (s *Server) parseAuthRequest(v url.Values) (*authRequest, *pageError) {
	req := &authRequest{
		clientID:    v.Get("client_id"),
		redirectURI: v.Get("redirect_uri"),
		state:       v.Get("state"),
		challenge:   v.Get("code_challenge"),
		loginHint:   v.Get("login_hint"),
		nonce:       v.Get("nonce"),
		params:      v,
	}
	switch {
	case req.clientID == "":
		return nil, &pageError{"invalid_request", "Missing required parameter: client_id"}
	case req.clientID != s.clientID:
		return nil, &pageError{"invalid_client", "The OAuth client was not found."}
	case req.redirectURI == "":
		return nil, &pageError{"invalid_request", "Missing required parameter: redirect_uri"}
	case !slices.Contains(s.RedirectURIs(), req.redirectURI):
		return nil, &pageError{"redirect_uri_mismatch", "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 policy. " +
			"The redirect_uri is not registered for this client: redirect_uri=" + req.redirectURI}
	}
	if _, err := url.Parse(req.redirectURI); err != nil {
		return nil, &pageError{"invalid_request", "Invalid parameter value for redirect_uri"}
	}
	switch rt := v.Get("response_type"); rt {
	case "code":
	case "":
		return nil, &pageError{"invalid_request", "Required parameter is missing: response_type"}
	default:
		return nil, &pageError{"invalid_request", "Invalid response_type: " + rt + " (this fake supports only code)"}
	}
	req.scopes = strings.Fields(v.Get("scope"))
	if len(req.scopes) == 0 {
		return nil, &pageError{"invalid_request", "Missing required parameter: scope"}
	}
	for _, sc := range req.scopes {
		if !knownScope(sc) {
			return nil, &pageError{"invalid_scope", "Some requested scopes were invalid. {invalid=[" + sc + "]}"}
		}
	}
	if req.challenge == "" {
		return nil, &pageError{"invalid_request", "Missing required parameter: code_challenge (this fake requires PKCE with S256)"}
	}
	switch m := v.Get("code_challenge_method"); m {
	case "S256":
	case "":
		return nil, &pageError{"invalid_request", "Missing required parameter: code_challenge_method (this fake requires S256; plain is refused)"}
	default:
		return nil, &pageError{"invalid_request", "Invalid code_challenge_method: " + m + " (this fake requires S256)"}
	}
	if len(req.challenge) != 43 || !isUnreserved(req.challenge) {
		return nil, &pageError{"invalid_request", "Invalid code_challenge: an S256 challenge is 43 base64url characters"}
	}
	switch at := v.Get("access_type"); at {
	case "offline":
		req.offline = true
	case "", "online":
	default:
		return nil, &pageError{"invalid_request", "Invalid access_type: " + at}
	}
	req.promptConsent = slices.Contains(strings.Fields(v.Get("prompt")), "consent")
	req.includeGranted = v.Get("include_granted_scopes") == "true"
	return req, nil
}

// knownScope accepts the OpenID short names and any Google API scope URL.
func knownScope(sc string) bool {
	switch sc {
	case "openid", "email", "profile":
		return true
	}
	return strings.HasPrefix(sc, googleScopePrefix) && len(sc) > len(googleScopePrefix)
}

// isUnreserved reports whether s uses only RFC 7636's unreserved characters.
func isUnreserved(s string) bool {
	for _, c := range s {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

// canonicalScopes maps scopes to the names Google reports in token
// responses ("email" becomes the userinfo.email URL), without duplicates and
// sorted so comparisons are stable.
func canonicalScopes(scopes []string) []string {
	out := make([]string, 0, len(scopes))
	for _, sc := range scopes {
		switch sc {
		case "email":
			sc = ScopeEmail
		case "profile":
			sc = ScopeProfile
		}
		if sc != "" && !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	slices.Sort(out)
	return out
}

// unionScopes returns the canonical union of a and b.
func unionScopes(a, b []string) []string {
	return canonicalScopes(append(slices.Clone(a), b...))
}

// isBasicScope reports whether the consent screen grants sc without a
// checkbox, as Google's granular consent does for sign-in scopes.
func isBasicScope(sc string) bool {
	switch sc {
	case "openid", "email", "profile", ScopeEmail, ScopeProfile:
		return true
	}
	return false
}

// redirectScopeParam is the scope parameter Google appends to the redirect:
// the granted scopes plus the short names of email and profile.
func redirectScopeParam(granted []string) string {
	var short []string
	if slices.Contains(granted, ScopeEmail) {
		short = append(short, "email")
	}
	if slices.Contains(granted, ScopeProfile) {
		short = append(short, "profile")
	}
	return strings.Join(append(short, granted...), " ")
}

// handleAuthorize serves GET /o/oauth2/v2/auth and /o/oauth2/auth: it
// validates the request, then shows the consent page or, with AutoConsent,
// approves at once.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	req, perr := s.parseAuthRequest(r.URL.Query())
	if perr != nil {
		renderError(w, perr)
		return
	}
	user := s.userForHint(req.loginHint)
	if s.autoConsent {
		s.approve(w, r, req, user, nil)
		return
	}
	renderConsent(w, r.URL.Path, req, s.Users(), user)
}

// handleConsent serves POST /o/oauth2/v2/auth and /o/oauth2/auth, the
// consent form's submission. The form carries the whole authorization
// request in hidden fields, so it is validated again here.
func (s *Server) handleConsent(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		renderError(w, &pageError{"invalid_request", "Malformed consent form."})
		return
	}
	form := r.PostForm
	req, perr := s.parseAuthRequest(form)
	if perr != nil {
		renderError(w, perr)
		return
	}
	if form.Get("decision") != "allow" {
		q := url.Values{"error": {"access_denied"}}
		if req.state != "" {
			q.Set("state", req.state)
		}
		redirectBack(w, r, req.redirectURI, q)
		return
	}
	user := s.userForHint(req.loginHint)
	if sub := form.Get("account"); sub != "" {
		u, ok := s.userBySub(sub)
		if !ok {
			renderError(w, &pageError{"invalid_request", "Unknown account."})
			return
		}
		user = u
	}
	var chosen []string
	if form.Get("granular") == "1" {
		ticked := form["grant"]
		for _, sc := range req.scopes {
			if isBasicScope(sc) || slices.Contains(ticked, sc) {
				chosen = append(chosen, sc)
			}
		}
		chosen = canonicalScopes(chosen)
	}
	s.approve(w, r, req, user, chosen)
}

// approve issues a code for user and redirects back to the client the way
// Google does after Allow. chosen, when not nil, is the subset of scopes the
// person left ticked; SetGrantedScopes overrides both.
func (s *Server) approve(w http.ResponseWriter, r *http.Request, req *authRequest, user User, chosen []string) {
	code := "4/0fake-" + rand.Text()
	s.mu.Lock()
	granted := canonicalScopes(req.scopes)
	if chosen != nil {
		granted = chosen
	}
	if s.grantedScopes != nil {
		granted = canonicalScopes(s.grantedScopes)
	}
	if req.includeGranted {
		granted = unionScopes(granted, s.consented[user.Sub])
	}
	s.consented[user.Sub] = unionScopes(s.consented[user.Sub], granted)
	s.issued = append(s.issued, code)
	s.codes[code] = &authCode{
		clientID:      req.clientID,
		redirectURI:   req.redirectURI,
		challenge:     req.challenge,
		sub:           user.Sub,
		nonce:         req.nonce,
		scopes:        granted,
		offline:       req.offline,
		promptConsent: req.promptConsent,
		expiry:        s.now().Add(authCodeTTL),
	}
	s.mu.Unlock()

	q := url.Values{
		"code":     {code},
		"scope":    {redirectScopeParam(granted)},
		"authuser": {"0"},
		"prompt":   {"consent"},
		"iss":      {GoogleIssuer},
	}
	if req.state != "" {
		q.Set("state", req.state)
	}
	redirectBack(w, r, req.redirectURI, q)
}

// redirectBack sends the browser to redirectURI with params added to any
// query it already has.
func redirectBack(w http.ResponseWriter, r *http.Request, redirectURI string, params url.Values) {
	u, err := url.Parse(redirectURI)
	if err != nil {
		renderError(w, &pageError{"invalid_request", "Invalid parameter value for redirect_uri"})
		return
	}
	q := u.Query()
	for k, vs := range params {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// Users returns the accounts that can sign in.
func (s *Server) Users() []User {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.users)
}

// AddUser adds an account, or replaces the one with the same Sub, and
// returns it. An empty Sub gets a 21-digit one like Google's, derived from
// the email so that the same account keeps its id across restarts of the
// offline demo (and stores keyed by sub keep working).
func (s *Server) AddUser(u User) User {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addUserLocked(u)
}

func (s *Server) addUserLocked(u User) User {
	if u.Sub == "" {
		u.Sub = subFor(u.Email)
	}
	for i := range s.users {
		if s.users[i].Sub == u.Sub {
			s.users[i] = u
			return u
		}
	}
	s.users = append(s.users, u)
	return u
}

// subFor returns a 21-digit numeric account id starting with 1, derived
// from email, or random when email is empty.
func subFor(email string) string {
	var seed []byte
	if email == "" {
		seed = make([]byte, 32)
		_, _ = rand.Read(seed)
	} else {
		sum := sha256.Sum256([]byte("fakegoogle-sub:" + strings.ToLower(email)))
		seed = sum[:]
	}
	var sb strings.Builder
	sb.WriteByte('1')
	for _, c := range seed[:20] {
		sb.WriteByte('0' + c%10)
	}
	return sb.String()
}

// userForHint picks the account named by login_hint (case-insensitive), or
// the first account, as if the person had chosen it in Google's account
// chooser.
func (s *Server) userForHint(hint string) User {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.users {
		if hint != "" && strings.EqualFold(u.Email, hint) {
			return u
		}
	}
	if len(s.users) == 0 {
		return User{}
	}
	return s.users[0]
}

func (s *Server) userBySub(sub string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userBySubLocked(sub)
}

func (s *Server) userBySubLocked(sub string) (User, bool) {
	for _, u := range s.users {
		if u.Sub == sub {
			return u, true
		}
	}
	return User{}, false
}

var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in – Google Accounts (fake)</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto;line-height:1.5}button{margin-right:1em}</style></head>
<body>
<h1>Sign in – Google Accounts (fake)</h1>
<p>This is an offline fake of Google's consent screen. No password is asked.</p>
<p>The app <b>{{.ClientID}}</b> wants to access your Google Account.</p>
<form method="post" action="{{.Action}}">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<input type="hidden" name="granular" value="1">
<p><label for="account">Account:</label>
<select id="account" name="account">{{range .Users}}
<option value="{{.Sub}}"{{if .Selected}} selected{{end}}>{{.Email}}</option>{{end}}
</select></p>
<p>This will allow the app to:</p>
<ul>{{range .Scopes}}
<li>{{if .Basic}}{{.Scope}}{{else}}<label><input type="checkbox" name="grant" value="{{.Scope}}" checked> {{.Scope}}</label>{{end}}</li>{{end}}
</ul>
<button type="submit" id="allow" name="decision" value="allow">Allow</button>
<button type="submit" id="deny" name="decision" value="deny">Deny</button>
</form>
</body>
</html>
`))

// consentFields are the form fields the page adds itself; request
// parameters of the same names are not copied into hidden fields.
var consentFields = map[string]bool{"decision": true, "account": true, "grant": true, "granular": true}

func renderConsent(w http.ResponseWriter, action string, req *authRequest, users []User, selected User) {
	type field struct{ Name, Value string }
	type account struct {
		Sub, Email string
		Selected   bool
	}
	type scope struct {
		Scope string
		Basic bool
	}
	data := struct {
		ClientID, Action string
		Hidden           []field
		Users            []account
		Scopes           []scope
	}{ClientID: req.clientID, Action: action}
	keys := make([]string, 0, len(req.params))
	for k := range req.params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !consentFields[k] {
			data.Hidden = append(data.Hidden, field{k, req.params.Get(k)})
		}
	}
	for _, u := range users {
		data.Users = append(data.Users, account{u.Sub, u.Email, u.Sub == selected.Sub})
	}
	for _, sc := range req.scopes {
		data.Scopes = append(data.Scopes, scope{sc, isBasicScope(sc)})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = consentPage.Execute(w, data)
}

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Error 400: {{.Code}} – Google Accounts (fake)</title></head>
<body>
<h1>Access blocked: this app's request is invalid</h1>
<p id="error">Error 400: {{.Code}}</p>
<p id="description">{{.Description}}</p>
</body>
</html>
`))

// renderError shows an authorization failure with HTTP 400, as Google's
// error page does.
func renderError(w http.ResponseWriter, e *pageError) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusBadRequest)
	_ = errorPage.Execute(w, struct{ Code, Description string }{e.code, e.description})
}
