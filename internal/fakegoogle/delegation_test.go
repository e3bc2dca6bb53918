package fakegoogle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/impersonate"
	"google.golang.org/api/option"
)

const (
	testSA     = "chatauth@fake-project.iam.gserviceaccount.com"
	otherSA    = "other@fake-project.iam.gserviceaccount.com"
	otherEmail = "carol@other.example"
)

// newDelegationServer is a fake with alice (example.com) and carol
// (other.example), a service account, and delegation of the Chat scope
// granted by example.com's administrator.
func newDelegationServer(t *testing.T) (*Server, ServiceAccount) {
	t.Helper()
	s := newTestServer(t, Options{Users: []User{
		{Sub: DefaultUserSub, Email: DefaultUserEmail, EmailVerified: true},
		{Email: otherEmail, EmailVerified: true},
	}})
	sa, err := s.AddServiceAccount(ServiceAccount{Email: testSA})
	if err != nil {
		t.Fatal(err)
	}
	s.GrantDomainWideDelegation("example.com", sa.UniqueID, ScopeChatSpacesCreate)
	if _, err := s.AddServiceAccount(ServiceAccount{Email: otherSA}); err != nil {
		t.Fatal(err)
	}
	return s, sa
}

// TestDelegationWithKey: golang.org/x/oauth2/google's JWT config, from a
// key file the fake created, gets alice's token, which the Chat API takes.
func TestDelegationWithKey(t *testing.T) {
	s, sa := newDelegationServer(t)
	key, err := s.CreateServiceAccountKey(testSA)
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		ClientID string `json:"client_id"`
		TokenURI string `json:"token_uri"`
		KeyID    string `json:"private_key_id"`
	}
	if err := json.Unmarshal(key, &kf); err != nil {
		t.Fatal(err)
	}
	if kf.ClientID != sa.UniqueID || kf.TokenURI != s.TokenURL() {
		t.Errorf("key file: client_id %q token_uri %q, want %q and %q", kf.ClientID, kf.TokenURI, sa.UniqueID, s.TokenURL())
	}
	cfg, err := google.JWTConfigFromJSON(key, ScopeChatSpacesCreate)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Subject, cfg.Audience = DefaultUserEmail, GoogleTokenAudience
	tok, err := cfg.TokenSource(context.Background()).Token()
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	var info map[string]string
	getJSON(t, s.URL()+"/tokeninfo?access_token="+url.QueryEscape(tok.AccessToken), &info)
	if info["sub"] != DefaultUserSub || info["scope"] != ScopeChatSpacesCreate || info["azp"] != sa.UniqueID {
		t.Errorf("tokeninfo: got %v, want alice's token for the service account's client with the Chat scope", info)
	}
	if got := s.DelegatedTokenCalls("ALICE@example.com"); got != 1 {
		t.Errorf("DelegatedTokenCalls: got %d, want 1", got)
	}

	// A deleted key signs nothing any more.
	s.DeleteServiceAccountKey(testSA, kf.KeyID)
	// (The jwt package leaves RetrieveError.ErrorCode empty; the body has it.)
	_, err = cfg.TokenSource(context.Background()).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != http.StatusBadRequest || !strings.Contains(string(re.Body), msgBadSignature) {
		t.Errorf("deleted key: got %v, want 400 invalid_grant %q", err, msgBadSignature)
	}
}

// TestDelegationKeyless: google.golang.org/api/impersonate with a Subject,
// its Google URLs routed to the fake, signs through signJwt and exchanges
// the assertion (in the legacy grant form it sends).
func TestDelegationKeyless(t *testing.T) {
	s, _ := newDelegationServer(t)
	ts, err := impersonate.CredentialsTokenSource(context.Background(), impersonate.CredentialsConfig{
		TargetPrincipal: testSA, Scopes: []string{ScopeChatSpacesCreate}, Subject: DefaultUserEmail,
	}, option.WithHTTPClient(s.HTTPClient()))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	if !s.AccessTokenValid(tok.AccessToken) || s.SignJwtCalls() != 1 || s.DelegatedTokenCalls(DefaultUserEmail) != 1 {
		t.Errorf("valid %v, signJwt calls %d, grants %d; want a valid token from one signJwt and one grant",
			s.AccessTokenValid(tok.AccessToken), s.SignJwtCalls(), s.DelegatedTokenCalls(DefaultUserEmail))
	}
}

// signJwt calls the fake's IAM Credentials API.
func signJwt(t *testing.T, s *Server, account string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(s.URL()+"/v1/projects/-/serviceAccounts/"+account+":signJwt", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// grant posts an assertion to the token endpoint and returns the status and
// the error code and description (empty on success).
func grant(t *testing.T, s *Server, form url.Values) (int, string, string) {
	t.Helper()
	resp, err := http.PostForm(s.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
		AccessToken      string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode == http.StatusOK && out.AccessToken == "" {
		t.Error("200 without an access_token")
	}
	return resp.StatusCode, out.Error, out.ErrorDescription
}

// TestJWTBearerRejects checks the assertion as Google does.
func TestJWTBearerRejects(t *testing.T) {
	s, sa := newDelegationServer(t)
	now := time.Now()
	claims := func(edit map[string]any) map[string]any {
		c := map[string]any{"iss": testSA, "sub": DefaultUserEmail, "scope": ScopeChatSpacesCreate,
			"aud": GoogleTokenAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range edit {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	// viaSignJwt has the service account's Google-managed key sign claims.
	viaSignJwt := func(c map[string]any) string {
		payload, _ := json.Marshal(c)
		code, out := signJwt(t, s, testSA, map[string]string{"payload": string(payload)})
		if code != http.StatusOK {
			t.Fatalf("signJwt: %d %v", code, out)
		}
		return out["signedJwt"].(string)
	}
	// withKey signs claims as a key file's holder does: with the account's
	// user-managed key, or a key Google does not know.
	saKey := userManagedKey(t, s)
	stranger, _ := rsa.GenerateKey(rand.Reader, 2048)
	sign := func(key *rsa.PrivateKey, c map[string]any) string {
		input := b64(mustJSON(map[string]string{"alg": "RS256", "typ": "JWT"})) + "." + b64(mustJSON(c))
		d := sha256.Sum256([]byte(input))
		sig, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
		return input + "." + b64(sig)
	}
	withKey := func(c map[string]any) string { return sign(saKey, c) }
	withStranger := func(c map[string]any) string { return sign(stranger, c) }
	bearer := func(assertion string) url.Values {
		return url.Values{"grant_type": {GrantTypeJWTBearer}, "assertion": {assertion}}
	}
	for _, tc := range []struct {
		name       string
		form       url.Values
		status     int
		code, desc string
	}{
		{"ok", bearer(viaSignJwt(claims(nil))), 200, "", ""},
		{"legacy grant form", url.Values{"grant_type": {"assertion"}, "assertion_type": {legacyAssertionType}, "assertion": {viaSignJwt(claims(nil))}}, 200, "", ""},
		{"user by id", bearer(viaSignJwt(claims(map[string]any{"sub": DefaultUserSub}))), 200, "", ""},
		{"no assertion", url.Values{"grant_type": {GrantTypeJWTBearer}}, 400, "invalid_request", ""},
		{"unknown user", bearer(viaSignJwt(claims(map[string]any{"sub": "nobody@example.com"}))), 400, "invalid_grant", msgUnknownUser},
		{"domain did not grant", bearer(viaSignJwt(claims(map[string]any{"sub": otherEmail}))), 401, "unauthorized_client", msgUnauthorizedClient},
		{"scope not granted", bearer(viaSignJwt(claims(map[string]any{"scope": ScopeChatSpacesCreate + " " + ScopeChatSpaces}))), 401, "unauthorized_client", msgUnauthorizedClient},
		{"no scope", bearer(viaSignJwt(claims(map[string]any{"scope": nil}))), 400, "invalid_scope", ""},
		{"wrong audience", bearer(viaSignJwt(claims(map[string]any{"aud": s.TokenURL()}))), 400, "invalid_grant", msgAudience},
		{"longer than an hour", bearer(viaSignJwt(claims(map[string]any{"exp": now.Add(2 * time.Hour).Unix()}))), 400, "invalid_grant", msgShortLived},
		{"issued in the future", bearer(viaSignJwt(claims(map[string]any{"iat": now.Add(10 * time.Minute).Unix(), "exp": now.Add(30 * time.Minute).Unix()}))), 400, "invalid_grant", msgShortLived},
		{"user-managed key", bearer(withKey(claims(nil))), 200, "", ""},
		{"expired", bearer(withKey(claims(map[string]any{"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}))), 400, "invalid_grant", msgShortLived},
		{"no iat", bearer(withKey(claims(map[string]any{"iat": nil}))), 400, "invalid_grant", msgShortLived},
		{"unknown issuer", bearer(withStranger(claims(map[string]any{"iss": "someone@else.iam.gserviceaccount.com"}))), 400, "invalid_grant", msgAccountNotFound},
		{"signed by another key", bearer(withStranger(claims(nil))), 400, "invalid_grant", msgBadSignature},
		{"issuer is another account", bearer(withKey(claims(map[string]any{"iss": otherSA}))), 400, "invalid_grant", msgBadSignature},
		{"alg none", bearer(b64([]byte(`{"alg":"none"}`)) + "." + b64(mustJSON(claims(nil))) + "."), 400, "invalid_grant", msgBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code, desc := grant(t, s, tc.form)
			if status != tc.status || code != tc.code || (tc.desc != "" && desc != tc.desc) {
				t.Errorf("got %d %q %q, want %d %q %q", status, code, desc, tc.status, tc.code, tc.desc)
			}
		})
	}

	// The grant is per domain and client: granting other.example lets carol
	// through, and revoking example.com's stops alice.
	s.GrantDomainWideDelegation("other.example", sa.UniqueID, ScopeChatSpacesCreate)
	if status, code, _ := grant(t, s, bearer(viaSignJwt(claims(map[string]any{"sub": otherEmail})))); status != 200 {
		t.Errorf("after other.example granted: got %d %s", status, code)
	}
	s.GrantDomainWideDelegation("example.com", sa.UniqueID)
	if _, code, _ := grant(t, s, bearer(viaSignJwt(claims(nil)))); code != "unauthorized_client" {
		t.Errorf("after example.com revoked: got %q, want unauthorized_client", code)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestSignJwt checks the IAM Credentials call's own rules.
func TestSignJwt(t *testing.T) {
	s, sa := newDelegationServer(t)
	now := time.Now()
	payload := func(c map[string]any) map[string]string { return map[string]string{"payload": string(mustJSON(c))} }

	code, out := signJwt(t, s, testSA, payload(map[string]any{"iss": testSA, "sub": DefaultUserEmail}))
	if code != 200 {
		t.Fatalf("signJwt: %d %v", code, out)
	}
	signed := out["signedJwt"].(string)
	parts := strings.Split(signed, ".")
	var hdr struct{ Kid string }
	var c struct{ Exp int64 }
	if decodeJWTSegment(parts[0], &hdr) != nil || decodeJWTSegment(parts[1], &c) != nil {
		t.Fatalf("signedJwt is not a JWT: %q", signed)
	}
	if hdr.Kid != out["keyId"] || hdr.Kid == "" {
		t.Errorf("header kid %q, keyId %v: want the same", hdr.Kid, out["keyId"])
	}
	if d := time.Until(time.Unix(c.Exp, 0)); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("an exp was added %v ahead, want an hour", d)
	}

	for _, tc := range []struct {
		name    string
		account string
		body    any
		status  int
		message string
	}{
		{"unknown account", "nobody@fake-project.iam.gserviceaccount.com", payload(nil), 403, "Permission 'iam.serviceAccounts.signJwt' denied on resource (or it may not exist)."},
		{"exp beyond 12 hours", testSA, payload(map[string]any{"exp": now.Add(13 * time.Hour).Unix()}), 400, ""},
		{"exp in the past", testSA, payload(map[string]any{"exp": now.Add(-time.Minute).Unix()}), 400, ""},
		{"payload not an object", testSA, map[string]string{"payload": "[1]"}, 400, ""},
		{"no payload", testSA, map[string]string{}, 400, ""},
		{"unknown field", testSA, map[string]string{"payload": "{}", "lifetime": "3600s"}, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := signJwt(t, s, tc.account, tc.body)
			e, _ := out["error"].(map[string]any)
			if code != tc.status || (tc.message != "" && e["message"] != tc.message) {
				t.Errorf("got %d %v, want %d %q", code, out, tc.status, tc.message)
			}
		})
	}

	s.DenySignJwt(testSA, true)
	if code, _ := signJwt(t, s, testSA, payload(nil)); code != 403 {
		t.Errorf("denied: got %d, want 403", code)
	}
	s.DenySignJwt(testSA, false)

	// generateIdToken tells the account's unique id, its OAuth client id.
	body, _ := json.Marshal(map[string]any{"audience": "chatauth", "includeEmail": true})
	resp, err := http.Post(s.URL()+"/v1/projects/-/serviceAccounts/"+testSA+":generateIdToken", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idt struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&idt)
	claims := verifyWithJWKS(t, s, idt.Token)
	if claims["sub"] != sa.UniqueID || claims["email"] != testSA || claims["aud"] != "chatauth" {
		t.Errorf("ID token claims: got %v, want sub %s", claims, sa.UniqueID)
	}
	resp, err = http.Post(s.URL()+"/v1/projects/fake-project/serviceAccounts/"+testSA+":signJwt", "application/json", strings.NewReader(`{"payload":"{}"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("a project id instead of the - wildcard: got %d, want 400", resp.StatusCode)
	}
}

// userManagedKey creates a key for testSA and returns its private half.
func userManagedKey(t *testing.T, s *Server) *rsa.PrivateKey {
	t.Helper()
	file, err := s.CreateServiceAccountKey(testSA)
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		PrivateKey string `json:"private_key"`
	}
	json.Unmarshal(file, &kf)
	block, _ := pem.Decode([]byte(kf.PrivateKey))
	if block == nil {
		t.Fatal("the key file has no PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}
