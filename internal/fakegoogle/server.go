// Package fakegoogle is an in-process fake of Google's OAuth 2.0 authorization
// server, the OpenID Connect pieces around it (id_tokens, JWKS, discovery,
// revocation) and the part of the Google Chat API that chatauth calls
// (spaces.create, spaces.setup, spaces.get).
//
// It speaks Google's wire formats — paths, parameters, JSON shapes and error
// texts — so tests and the offline demo drive it through the real
// golang.org/x/oauth2 and google.golang.org/api/chat/v1 clients instead of
// mocks, and code tested against it builds and parses the same requests and
// responses it will meet in production. It is stricter than Google where strictness catches bugs in the product: it
// insists on PKCE with S256 and on exact redirect URIs. Where Google has
// habits that trip clients up, it copies them:
//
//   - Token responses name scopes as Google does: "email" and "profile"
//     come back as the userinfo.email and userinfo.profile URLs.
//   - A refresh token is issued only with access_type=offline, and on a
//     repeat consent only when prompt=consent was sent or the earlier grant
//     was revoked.
//   - Revoking a refresh or an access token revokes every token issued from
//     the same consent.
//   - id_tokens carry Google's issuer, https://accounts.google.com, although
//     the fake's own key signs them.
//
// A Server keeps all state in memory, listens only on a loopback address and
// is safe for concurrent use; its Set*, Fail*, Inject* methods let tests
// shape the next answers and its counters let them assert on traffic.
package fakegoogle

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Default values for Options fields left empty.
const (
	DefaultClientID     = "test-client.apps.googleusercontent.com"
	DefaultClientSecret = "test-secret"
	DefaultUserSub      = "112233445566778899000"
	DefaultUserEmail    = "alice@example.com"

	// GoogleIssuer is the iss claim of every id_token the fake issues, the
	// same value Google uses, so issuer checks written for production pass.
	GoogleIssuer = "https://accounts.google.com"

	defaultAccessTokenTTL = 3599 * time.Second
	authCodeTTL           = 10 * time.Minute
	idTokenTTL            = time.Hour
	maxFormBytes          = 1 << 20
)

// User is an account that can sign in at the fake consent screen.
type User struct {
	// Sub is the stable numeric account id Google puts in the id_token's
	// sub claim, such as "112233445566778899000".
	Sub string
	// Email is the account's address; login_hint selects a user by it.
	Email string
	// EmailVerified becomes the id_token's email_verified claim.
	EmailVerified bool
}

// Options configures a Server. The zero value is usable: every empty field
// takes the default documented on it.
type Options struct {
	// ClientID and ClientSecret identify the single OAuth client the fake
	// knows; they default to DefaultClientID and DefaultClientSecret.
	ClientID, ClientSecret string
	// RedirectURIs are the registered redirect URIs. Like Google, the fake
	// requires an exact match. They may also be set later with
	// SetRedirectURIs, for servers whose callback URL is only known once
	// they listen.
	RedirectURIs []string
	// AutoConsent makes the authorization endpoint redirect back with a code
	// at once, as if the user had pressed Allow; tests use it to skip the
	// browser. Without it the endpoint shows an HTML consent page.
	AutoConsent bool
	// Users are the accounts that can sign in. By default there is one:
	// DefaultUserSub, DefaultUserEmail, verified.
	Users []User
	// Addr is the listen address and must be a loopback address; it
	// defaults to "127.0.0.1:0" (any free port).
	Addr string
	// Now is the clock for expiries and timestamps; it defaults to time.Now.
	// Tests move it forward to expire codes and access tokens.
	Now func() time.Time
}

// Server is a running fake. Create it with New and stop it with Close.
type Server struct {
	clientID     string
	clientSecret string
	issued       []string // every code and token handed out, for leak checks
	autoConsent  bool
	now          func() time.Time

	listener  net.Listener
	http      *http.Server
	baseURL   string
	transport *http.Transport
	closeOnce sync.Once

	key     *rsa.PrivateKey
	kid     string
	certPEM string

	chatApp atomic.Pointer[ChatApp] // the latest NewChatApp's, served at ChatCertsPath

	mu sync.Mutex
	oauthState
	chatState
	dwdState
}

// New starts a fake on a loopback listener and returns once it accepts
// connections. It uses a plain net/http server rather than httptest so the
// offline demo can run it outside tests.
func New(opts Options) (*Server, error) {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = DefaultClientSecret
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if len(opts.Users) == 0 {
		opts.Users = []User{{Sub: DefaultUserSub, Email: DefaultUserEmail, EmailVerified: true}}
	}
	if err := checkLoopback(opts.Addr); err != nil {
		return nil, err
	}
	key, kid, certPEM, err := newSigningKey(opts.Now())
	if err != nil {
		return nil, fmt.Errorf("fakegoogle: signing key: %w", err)
	}
	s := &Server{
		clientID:     opts.ClientID,
		clientSecret: opts.ClientSecret,
		autoConsent:  opts.AutoConsent,
		now:          opts.Now,
		key:          key,
		kid:          kid,
		certPEM:      certPEM,
		oauthState:   newOAuthState(),
		chatState:    newChatState(),
		dwdState:     newDWDState(),
	}
	s.redirectURIs = slices.Clone(opts.RedirectURIs)
	for _, u := range opts.Users {
		s.addUserLocked(u)
	}

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("fakegoogle: listen %s: %w", opts.Addr, err)
	}
	s.listener = ln
	s.baseURL = "http://" + ln.Addr().String()
	// The transport behind Transport() dials only the fake, so it needs
	// no proxy; a clone of the default keeps its timeouts.
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		s.transport = dt.Clone()
	} else {
		s.transport = &http.Transport{}
	}
	s.transport.Proxy = nil
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		// Serve returns ErrServerClosed after Close; any other error means
		// the listener died, which tests notice as refused connections.
		_ = s.http.Serve(ln)
	}()
	return s, nil
}

// checkLoopback refuses addresses that would expose the fake, which accepts
// any password-less sign-in, beyond this machine.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("fakegoogle: bad listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("fakegoogle: listen address %q is not a loopback address", addr)
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleIndex)
	for _, p := range []string{"/o/oauth2/v2/auth", "/o/oauth2/auth"} {
		mux.HandleFunc("GET "+p, s.handleAuthorize)
		mux.HandleFunc("POST "+p, s.handleConsent)
	}
	mux.HandleFunc("POST /token", s.handleToken)
	mux.HandleFunc("POST /revoke", s.handleRevoke)
	mux.HandleFunc("GET /tokeninfo", s.handleTokenInfo)
	mux.HandleFunc("GET /v1/userinfo", s.handleUserInfo)
	mux.HandleFunc("GET /oauth2/v3/userinfo", s.handleUserInfo)
	mux.HandleFunc("GET /oauth2/v3/certs", s.handleJWKS)
	mux.HandleFunc("GET /oauth2/v1/certs", s.handlePEMCerts)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.handleDiscovery)
	mux.HandleFunc("GET "+ChatCertsPath, s.handleChatCerts)
	mux.HandleFunc("POST "+ChatTokenPath, s.handleChatToken)
	mux.HandleFunc("POST /v1/spaces", s.handleCreateSpace)
	mux.HandleFunc("POST /v1/spaces:setup", s.handleSetupSpace)
	mux.HandleFunc("GET /v1/spaces/{id}", s.handleGetSpace)
	mux.HandleFunc("POST /v1/projects/{project}/locations/{location}/keyRings/{keyRing}/cryptoKeys/{keyVerb}", s.handleKMS)
	mux.HandleFunc("POST /v1/projects/{project}/serviceAccounts/{account}", s.handleIAMCredentials)
	return mux
}

// Close stops the server and drops its connections. It is safe to call more
// than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		for _, h := range s.holds {
			h.Release()
		}
		s.mu.Unlock()
		_ = s.http.Close()
		s.transport.CloseIdleConnections()
		releaseRSAKeys(s.privateKeys())
	})
}

// privateKeys lists the keys the Server signs with: its own, its latest
// Chat app's and its service accounts' Google-managed ones.
func (s *Server) privateKeys() []*rsa.PrivateKey {
	keys := []*rsa.PrivateKey{s.key}
	if c := s.chatApp.Load(); c != nil {
		c.mu.Lock()
		for _, k := range c.keys {
			keys = append(keys, k.key)
		}
		c.mu.Unlock()
	}
	s.mu.Lock()
	for _, sa := range s.accounts {
		keys = append(keys, sa.managed)
	}
	s.mu.Unlock()
	return keys
}

// URL returns the server's base URL, such as "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.baseURL }

// AuthURL returns the authorization endpoint, the fake's
// https://accounts.google.com/o/oauth2/v2/auth.
func (s *Server) AuthURL() string { return s.baseURL + "/o/oauth2/v2/auth" }

// TokenURL returns the token endpoint, the fake's
// https://oauth2.googleapis.com/token.
func (s *Server) TokenURL() string { return s.baseURL + "/token" }

// RevokeURL returns the revocation endpoint, the fake's
// https://oauth2.googleapis.com/revoke.
func (s *Server) RevokeURL() string { return s.baseURL + "/revoke" }

// JWKSURL returns where the signing keys are published, the fake's
// https://www.googleapis.com/oauth2/v3/certs.
func (s *Server) JWKSURL() string { return s.baseURL + "/oauth2/v3/certs" }

// ChatCertsURL returns where the fake publishes the chat@system service
// account's certificates, the fake's ChatCertsURL constant: the keys of
// the latest ChatApp made for this Server (NewChatApp).
func (s *Server) ChatCertsURL() string { return s.baseURL + ChatCertsPath }

// ChatTokenURL returns the fake-only endpoint that mints Google Chat's
// "Project number" bearer tokens (ChatTokenPath).
func (s *Server) ChatTokenURL() string { return s.baseURL + ChatTokenPath }

// ChatEndpoint returns the Chat API base URL with its trailing slash, the
// form option.WithEndpoint expects for chat/v1.
func (s *Server) ChatEndpoint() string { return s.baseURL + "/" }

// ClientID returns the OAuth client id the fake accepts.
func (s *Server) ClientID() string { return s.clientID }

// ClientSecret returns the OAuth client secret the fake accepts.
func (s *Server) ClientSecret() string { return s.clientSecret }

// SetRedirectURIs replaces the registered redirect URIs.
func (s *Server) SetRedirectURIs(uris ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirectURIs = slices.Clone(uris)
}

// RedirectURIs returns the registered redirect URIs.
func (s *Server) RedirectURIs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.redirectURIs)
}

// ClientJSON returns the OAuth client in the format of the client-secret
// file the Google Cloud console downloads, with auth_uri and token_uri
// pointing at the fake, so google.ConfigFromJSON and the product's loader
// read it unchanged. kind is "web" or "installed"; any other kind yields nil.
func (s *Server) ClientJSON(kind string) []byte {
	if kind != "web" && kind != "installed" {
		return nil
	}
	redirects := s.RedirectURIs()
	if redirects == nil {
		redirects = []string{}
	}
	if kind == "installed" && len(redirects) == 0 {
		redirects = []string{"http://localhost"}
	}
	client := struct {
		ClientID                string   `json:"client_id"`
		ProjectID               string   `json:"project_id"`
		AuthURI                 string   `json:"auth_uri"`
		TokenURI                string   `json:"token_uri"`
		AuthProviderX509CertURL string   `json:"auth_provider_x509_cert_url"`
		ClientSecret            string   `json:"client_secret"`
		RedirectURIs            []string `json:"redirect_uris"`
	}{
		ClientID:                s.clientID,
		ProjectID:               "fake-project",
		AuthURI:                 s.baseURL + "/o/oauth2/auth",
		TokenURI:                s.TokenURL(),
		AuthProviderX509CertURL: s.baseURL + "/oauth2/v1/certs",
		ClientSecret:            s.clientSecret,
		RedirectURIs:            redirects,
	}
	b, err := json.Marshal(map[string]any{kind: client})
	if err != nil {
		return nil
	}
	return b
}

// googleHosts are the Google hosts whose requests Transport sends to the
// fake instead.
var googleHosts = map[string]bool{
	"accounts.google.com":           true,
	"oauth2.googleapis.com":         true,
	"www.googleapis.com":            true,
	"openidconnect.googleapis.com":  true,
	"chat.googleapis.com":           true,
	"iamcredentials.googleapis.com": true,
}

// Transport returns a RoundTripper that sends requests for Google's OAuth,
// certificate, Chat and IAM Credentials hosts (accounts.google.com,
// oauth2.googleapis.com, www.googleapis.com, openidconnect.googleapis.com,
// chat.googleapis.com, iamcredentials.googleapis.com) to
// the fake over plain HTTP, keeping the path. It exists for clients whose
// Google URLs are fixed, such as google.golang.org/api/idtoken, which always
// fetches https://www.googleapis.com/oauth2/v3/certs. Requests for any other
// host fail, so a test cannot reach the network by accident.
func (s *Server) Transport() http.RoundTripper {
	host := s.listener.Addr().String()
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if !googleHosts[r.URL.Hostname()] && r.URL.Host != host {
			return nil, fmt.Errorf("fakegoogle: refusing request to %s: not a Google host served by the fake", r.URL.Host)
		}
		r2 := r.Clone(r.Context())
		r2.URL.Scheme = "http"
		r2.URL.Host = host
		r2.Host = host
		return s.transport.RoundTrip(r2)
	})
}

// HTTPClient returns a client that uses Transport, for
// option.WithHTTPClient and similar hooks.
func (s *Server) HTTPClient() *http.Client {
	return &http.Client{Transport: s.Transport(), Timeout: 30 * time.Second}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// handleIndex serves GET / with a short list of what the fake offers, for
// people who open the demo's URL in a browser.
func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "fake Google (OAuth 2.0, OpenID Connect, Chat API) for client %s\n\n", s.clientID)
	for _, line := range s.Endpoints() {
		fmt.Fprintln(w, line)
	}
}

// Endpoints describes every route the fake serves, one line each, for the
// index page and the standalone runner's banner.
func (s *Server) Endpoints() []string {
	b := s.baseURL
	return []string{
		"authorize  GET  " + b + "/o/oauth2/v2/auth (also /o/oauth2/auth)",
		"token      POST " + b + "/token",
		"revoke     POST " + b + "/revoke",
		"tokeninfo  GET  " + b + "/tokeninfo?access_token=…",
		"userinfo   GET  " + b + "/v1/userinfo",
		"jwks       GET  " + b + "/oauth2/v3/certs (PEM map at /oauth2/v1/certs)",
		"chat certs GET  " + b + ChatCertsPath + " (with a ChatApp)",
		"chat token POST " + b + ChatTokenPath + " {\"audience\": project number or endpoint URL, \"addOnProject\"?: number} (fake only: signs as Google Chat or an add-on's agent)",
		"discovery  GET  " + b + "/.well-known/openid-configuration",
		"chat       POST " + b + "/v1/spaces, POST " + b + "/v1/spaces:setup, GET " + b + "/v1/spaces/{id}",
		"iamcreds   POST " + b + "/v1/projects/-/serviceAccounts/{email}:signJwt (and :generateIdToken)",
	}
}

// handleDiscovery serves GET /.well-known/openid-configuration in Google's
// shape, with the endpoints pointing at the fake but the issuer left as
// Google's, because that is what the id_tokens carry.
func (s *Server) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	b := s.baseURL
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                GoogleIssuer,
		"authorization_endpoint":                b + "/o/oauth2/v2/auth",
		"token_endpoint":                        b + "/token",
		"userinfo_endpoint":                     b + "/v1/userinfo",
		"revocation_endpoint":                   b + "/revoke",
		"jwks_uri":                              b + "/oauth2/v3/certs",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "email", "profile"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "client_secret_basic"},
		"claims_supported":                      []string{"aud", "email", "email_verified", "exp", "iat", "iss", "sub", "azp", "at_hash", "nonce"},
		"code_challenge_methods_supported":      []string{"S256"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token", GrantTypeJWTBearer},
	})
}

// writeJSON writes v as the JSON body with Google's no-store caching headers,
// which token and API responses always carry.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "fakegoogle: cannot encode response", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// sleep waits d or until ctx ends, whichever is first, so injected latency
// never outlives a client that gave up.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bearerToken returns the token of an "Authorization: Bearer" header, or ""
// when there is none.
func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
