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
	"net/http"
	"strings"
	"testing"

	"google.golang.org/api/idtoken"
	"google.golang.org/api/option"
)

func newTestChatApp(t *testing.T) (*Server, *ChatApp) {
	t.Helper()
	g := newTestServer(t, Options{})
	c, err := NewChatApp(g)
	if err != nil {
		t.Fatalf("NewChatApp: %v", err)
	}
	return g, c
}

// fetchChatCerts gets the certificates the way a verifier does, through
// the production URL.
func fetchChatCerts(t *testing.T, c *ChatApp) (map[string]*rsa.PublicKey, *http.Response) {
	t.Helper()
	resp, err := c.HTTPClient().Get(ChatCertsURL)
	if err != nil {
		t.Fatalf("GET %s: %v", ChatCertsURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp
	}
	var m map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("certificates: %v", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for kid, p := range m {
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			t.Fatalf("certificate %s is not PEM", kid)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("certificate %s: %v", kid, err)
		}
		keys[kid] = cert.PublicKey.(*rsa.PublicKey)
	}
	return keys, resp
}

// verifyJWT checks tok's RS256 signature with the key its kid names and
// returns its header and claims.
func verifyJWT(t *testing.T, tok string, keys map[string]*rsa.PublicKey) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	var hdr, claims map[string]any
	for i, v := range []*map[string]any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, v) != nil {
			t.Fatalf("JWT part %d is not base64url JSON", i)
		}
	}
	key := keys[hdr["kid"].(string)]
	if key == nil {
		t.Fatalf("kid %v is not published", hdr["kid"])
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("signature: %v", err)
	}
	return hdr, claims
}

// TestChatProjectToken: the "Project number" JWT verifies against the
// certificates served at Google's URL for the Chat service account, and
// carries Chat's claims.
func TestChatProjectToken(t *testing.T) {
	_, c := newTestChatApp(t)
	keys, resp := fetchChatCerts(t, c)
	if keys == nil {
		t.Fatalf("certificates: HTTP %d", resp.StatusCode)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=") {
		t.Errorf("Cache-Control %q has no max-age", cc)
	}
	hdr, claims := verifyJWT(t, c.ProjectToken("1234567890", nil), keys)
	if hdr["alg"] != "RS256" || hdr["kid"] != c.KeyID() {
		t.Errorf("header: got %v, want RS256 with kid %s", hdr, c.KeyID())
	}
	if claims["iss"] != ChatServiceAccount || claims["aud"] != "1234567890" || claims["exp"] == nil {
		t.Errorf("claims: got %v", claims)
	}
	_, claims = verifyJWT(t, c.ProjectToken("1", func(m map[string]any) { m["iss"] = "someone" }), keys)
	if claims["iss"] != "someone" {
		t.Errorf("edit: iss %v, want someone", claims["iss"])
	}
	if c.CertFetches() != 1 {
		t.Errorf("CertFetches: got %d, want 1", c.CertFetches())
	}
}

// TestChatEndpointToken: the "HTTP endpoint URL" token is a Google ID
// token that the idtoken package accepts through HTTPClient, whose
// transport still reaches the fake's OAuth keys.
func TestChatEndpointToken(t *testing.T) {
	_, c := newTestChatApp(t)
	const aud = "https://example.com/ChatEvents"
	v, err := idtoken.NewValidator(context.Background(), option.WithHTTPClient(c.HTTPClient()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Validate(context.Background(), c.EndpointToken(aud, nil), aud)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if p.Issuer != GoogleIssuer || p.Claims["email"] != ChatServiceAccount || p.Claims["email_verified"] != true {
		t.Errorf("claims: got iss %q, %v", p.Issuer, p.Claims)
	}
	// A project token is not signed by Google's OAuth key.
	if _, err := v.Validate(context.Background(), c.ProjectToken(aud, func(m map[string]any) { m["aud"] = aud }), aud); err == nil {
		t.Error("a token signed by the Chat service account passed as a Google ID token")
	}
}

// TestChatKeyRotation: after a rotation both keys are published and the
// new one signs.
func TestChatKeyRotation(t *testing.T) {
	_, c := newTestChatApp(t)
	old := c.KeyID()
	if err := c.RotateKey(); err != nil {
		t.Fatal(err)
	}
	if c.KeyID() == old {
		t.Fatal("the key id did not change")
	}
	keys, _ := fetchChatCerts(t, c)
	if len(keys) != 2 || keys[old] == nil {
		t.Fatalf("published %d keys (old one present: %v), want both", len(keys), keys[old] != nil)
	}
	if hdr, _ := verifyJWT(t, c.ProjectToken("1", nil), keys); hdr["kid"] != c.KeyID() {
		t.Errorf("signed with %v, want the new key %s", hdr["kid"], c.KeyID())
	}
}

// TestChatCertsFaultsAndRouting: injected failures come first, then the
// certificates again; other Google URLs reach the fake Server; other hosts
// are refused.
func TestChatCertsFaultsAndRouting(t *testing.T) {
	_, c := newTestChatApp(t)
	c.FailCerts(http.StatusServiceUnavailable, 1)
	if _, resp := fetchChatCerts(t, c); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("first fetch: got %d, want 503", resp.StatusCode)
	}
	if keys, resp := fetchChatCerts(t, c); keys == nil {
		t.Errorf("second fetch: got %d, want the certificates", resp.StatusCode)
	}
	resp, err := c.HTTPClient().Get("https://www.googleapis.com/oauth2/v3/certs")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("Google's OAuth keys through the Chat transport: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := c.HTTPClient().Get("https://example.com/"); err == nil {
		t.Error("a request to a non-Google host was not refused")
	}
}

// TestChatAppOnListener: the Server publishes the latest ChatApp's
// certificates on its own listener, for verifiers in another process, and
// mints its "Project number" tokens at ChatTokenPath; both answer 404
// before there is a ChatApp.
func TestChatAppOnListener(t *testing.T) {
	g := newTestServer(t, Options{})
	plain := &http.Client{}
	for _, u := range []string{g.ChatCertsURL(), g.ChatTokenURL()} {
		resp, err := plain.Post(u, "application/json", strings.NewReader(`{"audience":"1"}`))
		if u == g.ChatCertsURL() {
			resp, err = plain.Get(u)
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s without a ChatApp: got %d, want 404", u, resp.StatusCode)
		}
	}
	c, err := NewChatApp(g)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := plain.Get(g.ChatCertsURL())
	if err != nil {
		t.Fatal(err)
	}
	var certs map[string]string
	json.NewDecoder(resp.Body).Decode(&certs)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || certs[c.KeyID()] == "" {
		t.Fatalf("GET %s: got %d with keys %v, want the ChatApp's key %s", g.ChatCertsURL(), resp.StatusCode, certs, c.KeyID())
	}

	resp, err = plain.Post(g.ChatTokenURL(), "application/json", strings.NewReader(`{"audience":"123456789012"}`))
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	parts := strings.Split(out.Token, ".")
	if resp.StatusCode != http.StatusOK || len(parts) != 3 {
		t.Fatalf("POST %s: got %d, token %d parts", g.ChatTokenURL(), resp.StatusCode, len(parts))
	}
	var claims map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(b, &claims)
	if claims["iss"] != ChatServiceAccount || claims["aud"] != "123456789012" {
		t.Errorf("claims: got %v, want iss %s and aud 123456789012", claims, ChatServiceAccount)
	}
	block, _ := pem.Decode([]byte(certs[c.KeyID()]))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if err := rsa.VerifyPKCS1v15(cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("the minted token does not verify against the published certificate: %v", err)
	}

	for _, body := range []string{`{}`, `{"audience":"1","extra":true}`, `not json`} {
		resp, err := plain.Post(g.ChatTokenURL(), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s %s: got %d, want 400", g.ChatTokenURL(), body, resp.StatusCode)
		}
	}
}
