package fakegoogle

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Google Chat's side of a Chat app with an HTTP endpoint: who signs the
// bearer token of every interaction event, and where the keys are.
const (
	// ChatServiceAccount is the account Google Chat calls Chat apps as. It
	// is the email claim of the "HTTP endpoint URL" ID token and the issuer
	// of the "Project number" JWT.
	ChatServiceAccount = "chat@system.gserviceaccount.com"
	// ChatCertsPath is where Google publishes that account's public keys,
	// as a JSON object mapping key ids to PEM X.509 certificates, on
	// https://www.googleapis.com.
	ChatCertsPath = "/service_accounts/v1/metadata/x509/" + ChatServiceAccount
	// ChatCertsURL is the production URL of ChatCertsPath.
	ChatCertsURL = "https://www.googleapis.com" + ChatCertsPath
	// ChatTokenPath is the fake's own endpoint, not Google's, that mints
	// the bearer token Google Chat sends a Chat app, so that a process
	// other than the one holding the ChatApp (a shell in the offline demo)
	// can send a Chat event. POST {"audience": "<project number>"} mints
	// the "Project number" token, {"audience": "<endpoint URL>"} the "HTTP
	// endpoint URL" one, and {"audience": "<endpoint URL>",
	// "addOnProject": "<project number>"} a Workspace add-on's; each
	// answers {"token": …}, the shape of IAM Credentials' generateIdToken.
	ChatTokenPath = "/fakegoogle/v1/chat:generateToken"

	// AddOnAgentDomain is the domain of every Google Cloud project's
	// Google Workspace add-on service agent, the account that signs the
	// requests of a Chat app built as an add-on.
	AddOnAgentDomain = "gcp-sa-gsuiteaddons.iam.gserviceaccount.com"
	// ConfigCompletePath is where, on https://chat.google.com, a Chat
	// app sends the browser once a user has finished configuring it: the
	// configCompleteRedirectUrl (an add-on's configCompleteRedirectUri)
	// of the event that asked, which Chat then sends again.
	ConfigCompletePath = "/api/bot_config_complete"
)

// AddOnServiceAgent is the add-on service agent of the project numbered
// projectNumber: service-NUMBER@gcp-sa-gsuiteaddons.iam.gserviceaccount.com.
func AddOnServiceAgent(projectNumber string) string {
	return "service-" + projectNumber + "@" + AddOnAgentDomain
}

// ChatApp plays Google Chat calling a Chat app's HTTP endpoint. It mints
// the bearer tokens of both "Authentication audience" settings of the
// Chat API's configuration page:
//
//   - "HTTP endpoint URL": an OpenID Connect ID token signed by Google's
//     OAuth key (the Server's, published at /oauth2/v3/certs), with iss
//     https://accounts.google.com, aud the endpoint URL and email
//     chat@system.gserviceaccount.com (EndpointToken).
//   - "Project number": a JWT signed by the chat@system.gserviceaccount.com
//     service account's own key, published at ChatCertsURL, with that
//     account as iss and the project number as aud (ProjectToken).
//
// The service account's certificates are served by Transport, which
// answers ChatCertsURL itself and passes every other request to the
// Server's Transport; a client that verifies both kinds of token uses
// HTTPClient. A ChatApp is safe for concurrent use.
type ChatApp struct {
	google *Server

	mu          sync.Mutex
	sent        map[string]sentEvent // by configCompleteRedirectUrl: what Send delivered
	answers     []Answer             // what the endpoint answered Send, in order
	keys        []*chatKey           // the published keys; the last one signs
	certFetches int
	certFaults  []int // HTTP statuses for the next certificate fetches
}

type chatKey struct {
	key          *rsa.PrivateKey
	kid, certPEM string
}

// NewChatApp makes the service account's first signing key. Tokens of
// the "HTTP endpoint URL" kind are signed by google.
//
// The Server publishes the latest ChatApp's certificates on its listener
// too, at ChatCertsPath (Server.ChatCertsURL), and mints its tokens at
// ChatTokenPath, for verifiers in other processes.
func NewChatApp(google *Server) (*ChatApp, error) {
	c := &ChatApp{google: google}
	if err := c.RotateKey(); err != nil {
		return nil, err
	}
	google.chatApp.Store(c)
	return c, nil
}

// handleChatCerts serves GET ChatCertsPath on the Server's listener from
// the latest ChatApp, 404 before there is one.
func (s *Server) handleChatCerts(w http.ResponseWriter, r *http.Request) {
	c := s.chatApp.Load()
	if c == nil {
		(&apiError{code: http.StatusNotFound, message: "No Chat app: this fake has no chat@system keys (NewChatApp)."}).write(w)
		return
	}
	c.ServeHTTP(w, r)
}

// handleChatToken serves POST ChatTokenPath: the latest ChatApp's token
// for the audience given: with addOnProject, the AddOnToken of that
// project for the endpoint URL in audience; else, for an http(s) URL, the
// EndpointToken; else the ProjectToken for a project number.
func (s *Server) handleChatToken(w http.ResponseWriter, r *http.Request) {
	c := s.chatApp.Load()
	if c == nil {
		(&apiError{code: http.StatusNotFound, message: "No Chat app: this fake has no chat@system keys (NewChatApp)."}).write(w)
		return
	}
	var in struct {
		Audience     string `json:"audience"`
		AddOnProject string `json:"addOnProject"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxFormBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		invalidArgument("Invalid JSON payload received. %v", err).write(w)
		return
	}
	if in.Audience == "" {
		invalidArgument("audience is required: the Chat app's project number.").write(w)
		return
	}
	var tok string
	switch {
	case in.AddOnProject != "":
		tok = c.AddOnToken(in.Audience, in.AddOnProject, nil)
	case strings.HasPrefix(in.Audience, "http://") || strings.HasPrefix(in.Audience, "https://"):
		tok = c.EndpointToken(in.Audience, nil)
	default:
		tok = c.ProjectToken(in.Audience, nil)
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}

// RotateKey adds a new signing key, as Google rotates service account
// keys: the new key signs from now on and both are published, so a
// verifier that cached the old set must fetch the certificates again.
func (c *ChatApp) RotateKey() error {
	key, kid, certPEM, err := newSigningKey(c.google.now())
	if err != nil {
		return fmt.Errorf("fakegoogle: chat signing key: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = append(c.keys, &chatKey{key: key, kid: kid, certPEM: certPEM})
	return nil
}

// KeyID returns the kid of the key that signs ProjectToken's tokens now.
func (c *ChatApp) KeyID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys[len(c.keys)-1].kid
}

// EndpointToken returns the bearer token Chat sends with the "HTTP
// endpoint URL" audience setting: a Google ID token for endpointURL,
// issued now and valid for an hour. edit, when not nil, may change the
// claims before signing (tests make wrong ones this way).
func (c *ChatApp) EndpointToken(endpointURL string, edit func(claims map[string]any)) string {
	now := c.google.now()
	claims := map[string]any{
		"iss":            GoogleIssuer,
		"aud":            endpointURL,
		"azp":            "113760208830946925151", // a numeric client id, as Google's tokens carry
		"sub":            "113760208830946925151",
		"email":          ChatServiceAccount,
		"email_verified": true,
		"iat":            now.Unix(),
		"exp":            now.Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(claims)
	}
	return c.google.MintIDToken(claims)
}

// AddOnToken returns the bearer token Chat sends a Chat app built as a
// Google Workspace add-on of the project numbered projectNumber: a Google
// ID token for endpointURL (an add-on's audience is always its HTTP
// endpoint URL) whose email is the project's add-on service agent,
// issued now and valid for an hour. The same token rides in the event's
// authorizationEventObject.systemIdToken. edit, when not nil, may change
// the claims before signing.
func (c *ChatApp) AddOnToken(endpointURL, projectNumber string, edit func(claims map[string]any)) string {
	return c.EndpointToken(endpointURL, func(claims map[string]any) {
		claims["email"] = AddOnServiceAgent(projectNumber)
		claims["sub"] = "10" + projectNumber // a service agent's numeric account id
		claims["azp"] = claims["sub"]
		if edit != nil {
			edit(claims)
		}
	})
}

// ProjectToken returns the bearer token Chat sends with the "Project
// number" audience setting: a JWT from chat@system.gserviceaccount.com for
// projectNumber, issued now and valid for an hour, signed by the service
// account's current key. edit, when not nil, may change the claims.
func (c *ChatApp) ProjectToken(projectNumber string, edit func(claims map[string]any)) string {
	now := c.google.now()
	claims := map[string]any{
		"iss": ChatServiceAccount,
		"aud": projectNumber,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(claims)
	}
	return c.MintJWT(claims)
}

// MintJWT signs claims exactly as given (RS256) with the service
// account's current key. It returns "" only if claims cannot be encoded.
func (c *ChatApp) MintJWT(claims map[string]any) string {
	c.mu.Lock()
	k := c.keys[len(c.keys)-1]
	c.mu.Unlock()
	header, err := json.Marshal(map[string]string{"alg": "RS256", "kid": k.kid, "typ": "JWT"})
	if err != nil {
		return ""
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return ""
	}
	input := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.key, crypto.SHA256, digest[:])
	if err != nil {
		return ""
	}
	return input + "." + b64(sig)
}

// CertsJSON returns the body served at ChatCertsURL: every published key
// id mapped to its PEM certificate.
func (c *ChatApp) CertsJSON() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]string, len(c.keys))
	for _, k := range c.keys {
		m[k.kid] = k.certPEM
	}
	b, _ := json.Marshal(m)
	return b
}

// FailCerts makes the next n certificate fetches answer status, as a
// Google outage would.
func (c *ChatApp) FailCerts(status, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range n {
		c.certFaults = append(c.certFaults, status)
	}
}

// CertFetches returns how many times the certificates were requested, so
// tests can check that a verifier caches them.
func (c *ChatApp) CertFetches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.certFetches
}

// ServeHTTP serves GET ChatCertsPath in Google's format, with a short
// max-age so that caching verifiers notice a rotation soon, and GET
// ConfigCompletePath as chat.google.com does (serveConfigComplete).
func (c *ChatApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == ConfigCompletePath {
		c.serveConfigComplete(w, r)
		return
	}
	if r.URL.Path != ChatCertsPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	c.mu.Lock()
	c.certFetches++
	status := 0
	if len(c.certFaults) > 0 {
		status, c.certFaults = c.certFaults[0], c.certFaults[1:]
	}
	c.mu.Unlock()
	if status != 0 {
		writeJSON(w, status, map[string]any{"error": map[string]any{"code": status, "message": defaultMessage(status), "status": rpcStatus(status)}})
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Cache-Control", certCacheControl)
	_, _ = w.Write(c.CertsJSON())
}

// Transport answers requests for ChatCertsURL and for chat.google.com's
// ConfigCompletePath in process and sends every other request to the Server's Transport, which routes Google's hosts to
// the fake and refuses the rest.
func (c *ChatApp) Transport() http.RoundTripper {
	next := c.google.Transport()
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		certs := r.URL.Hostname() == "www.googleapis.com" && r.URL.Path == ChatCertsPath
		configured := r.URL.Hostname() == "chat.google.com" && r.URL.Path == ConfigCompletePath
		if !certs && !configured {
			return next.RoundTrip(r)
		}
		if err := r.Context().Err(); err != nil {
			return nil, err
		}
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, r)
		resp := rec.Result()
		resp.Request = r
		return resp, nil
	})
}

// HTTPClient returns a client that uses Transport: it fetches Google's
// OAuth keys from the Server and the Chat service account's certificates
// from c.
func (c *ChatApp) HTTPClient() *http.Client {
	return &http.Client{Transport: c.Transport(), Timeout: 30 * time.Second}
}
