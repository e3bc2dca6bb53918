package chatauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// Secrets of the caller tests; long enough for newCallerAuth.
var (
	callerSecret1 = []byte("whsec-callers-one-0123456789abcdef")
	callerSecret2 = []byte("whsec-callers-two-fedcba9876543210")
	callerWrong   = []byte("whsec-callers-bad-0000000000000000")
)

// callerTestNow is the fixed clock of the HMAC tests.
var callerTestNow = time.Unix(1_750_000_000, 0)

const (
	callerAudience1 = "https://europe-west1-chatauth-test.cloudfunctions.net/CreateSpace"
	callerAudience2 = "https://chatauth.example.com/CreateSpace"
	callerBody      = `{"user":"users/112233445566778899000","displayName":"Launch"}`
)

// hmacSignature is the v1 of secret over "<t>.<body>", in lowercase hex.
func hmacSignature(secret []byte, t string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(t + "."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// signatureHeaderValue is a well-formed X-Signature for t and body.
func signatureHeaderValue(secret []byte, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	return "t=" + ts + ",v1=" + hmacSignature(secret, ts, body)
}

func newTestCallerAuth(t testing.TB, secrets [][]byte, audiences, trusted []string, client *http.Client, now func() time.Time) *callerAuth {
	t.Helper()
	a, err := newCallerAuth(context.Background(), secrets, audiences, trusted, client, now)
	if err != nil {
		t.Fatalf("newCallerAuth: %v", err)
	}
	return a
}

// callerRequest is a POST to CreateSpace with the given headers, each
// name followed by its value; a name may repeat.
func callerRequest(body string, headers ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/CreateSpace", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

// checkRefused checks that err is an *Error with status, answered as the
// JSON error envelope, and that neither its message, its Error() text nor
// the JSON answer contains any of hidden (secrets, signatures, tokens,
// header values). Values shorter than 8 bytes are too short to mean
// anything and are skipped.
func checkRefused(t *testing.T, err error, status string, hidden ...string) *Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", status)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %T %v, want *Error", err, err)
	}
	if e.Status != status {
		t.Errorf("got status %s (%q), want %s", e.Status, e.Message, status)
	}
	rec := httptest.NewRecorder()
	writeErrorJSON(rec, e)
	if rec.Code != httpCodes[status] {
		t.Errorf("got HTTP %d, want %d", rec.Code, httpCodes[status])
	}
	checkJSONBody(t, rec.Body.String(), httpCodes[status], status)
	for _, h := range hidden {
		if len(h) < 8 {
			continue
		}
		for where, s := range map[string]string{"message": e.Message, "Error()": e.Error(), "JSON answer": rec.Body.String()} {
			if strings.Contains(s, h) {
				t.Errorf("%s %q contains a credential (%.12s…)", where, s, h)
			}
		}
	}
	return e
}

func TestCallerAuthHMAC(t *testing.T) {
	t.Parallel()
	body := []byte(callerBody)
	now := callerTestNow.Unix()
	sig := func(secret []byte, dt int64) string { return signatureHeaderValue(secret, now+dt, body) }
	validSig := hmacSignature(callerSecret1, strconv.FormatInt(now, 10), body)
	tests := []struct {
		name    string
		header  string
		body    *string // sent; nil: callerBody
		wantErr string  // substring of the message; "" for success
	}{
		{name: "valid", header: sig(callerSecret1, 0)},
		{name: "second secret of two", header: sig(callerSecret2, 0)},
		{name: "uppercase hex", header: "t=" + strconv.FormatInt(now, 10) + ",v1=" + strings.ToUpper(validSig)},
		{name: "fields reversed", header: "v1=" + validSig + ",t=" + strconv.FormatInt(now, 10)},
		{name: "unknown field ignored", header: sig(callerSecret1, 0) + ",v2=c29tZXRoaW5nLW5ldw=="},
		{name: "t with a leading zero, signed as sent", header: "t=0" + strconv.FormatInt(now, 10) + ",v1=" + hmacSignature(callerSecret1, "0"+strconv.FormatInt(now, 10), body)},
		{name: "299 s old", header: sig(callerSecret1, -299)},
		{name: "299 s ahead", header: sig(callerSecret1, 299)},
		{name: "300 s old", header: sig(callerSecret1, -300)},
		{name: "300 s ahead", header: sig(callerSecret1, 300)},
		{name: "301 s old", header: sig(callerSecret1, -301), wantErr: "more than 300 seconds old"},
		{name: "301 s ahead", header: sig(callerSecret1, 301), wantErr: "more than 300 seconds from now"},
		{name: "an hour old", header: sig(callerSecret1, -3600), wantErr: "seconds old"},
		{name: "t zero", header: "t=0,v1=" + hmacSignature(callerSecret1, "0", body), wantErr: "seconds old"},
		{name: "wrong secret", header: sig(callerWrong, 0), wantErr: "does not match the body"},
		{name: "body altered by one byte", header: sig(callerSecret1, 0), body: callerBodyPtr(strings.Replace(callerBody, "Launch", "Lbunch", 1)), wantErr: "does not match"},
		{name: "body re-serialized", header: sig(callerSecret1, 0), body: callerBodyPtr(`{"displayName": "Launch", "user": "users/112233445566778899000"}`), wantErr: "does not match"},
		{name: "body with trailing newline", header: sig(callerSecret1, 0), body: callerBodyPtr(callerBody + "\n"), wantErr: "does not match"},
		{name: "empty body", header: sig(callerSecret1, 0), body: callerBodyPtr(""), wantErr: "does not match"},
		{name: "signed over the body alone", header: "t=" + strconv.FormatInt(now, 10) + ",v1=" + func() string {
			m := hmac.New(sha256.New, callerSecret1)
			m.Write(body)
			return hex.EncodeToString(m.Sum(nil))
		}(), wantErr: "does not match"},
		{name: "t changed after signing", header: "t=" + strconv.FormatInt(now+1, 10) + ",v1=" + validSig, wantErr: "does not match"},
	}
	a := newTestCallerAuth(t, [][]byte{callerSecret1, callerSecret2}, nil, nil, nil, func() time.Time { return callerTestNow })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent := callerBody
			if tt.body != nil {
				sent = *tt.body
			}
			c, err := a.authenticate(callerRequest(sent, "X-Signature", tt.header), []byte(sent))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				if c.signedAt.IsZero() || len(c.proof) != sha256.Size || string(c.body) != sent {
					t.Errorf("caller: signed at %v, proof of %d bytes, body %q; want the signature's time, its MAC and the body", c.signedAt, len(c.proof), c.body)
				}
				got := *c
				got.signedAt, got.proof, got.body = time.Time{}, nil, nil
				if diff := cmp.Diff(&caller{method: callerHMAC, trusted: true}, &got, cmp.AllowUnexported(caller{})); diff != "" {
					t.Errorf("caller (-want +got):\n%s", diff)
				}
				return
			}
			if c != nil {
				t.Errorf("got caller %+v, want none", c)
			}
			e := checkRefused(t, err, statusUnauthenticated, tt.header, validSig, strings.ToUpper(validSig),
				string(callerSecret1), string(callerSecret2), string(callerWrong), hmacSignature(callerWrong, strconv.FormatInt(now, 10), body))
			if !strings.Contains(e.Message, tt.wantErr) {
				t.Errorf("got message %q, want it to contain %q", e.Message, tt.wantErr)
			}
		})
	}
}

func TestCallerAuthHMACMalformed(t *testing.T) {
	t.Parallel()
	body := []byte(callerBody)
	now := callerTestNow.Unix()
	ts := strconv.FormatInt(now, 10)
	sig := hmacSignature(callerSecret1, ts, body)
	valid := "t=" + ts + ",v1=" + sig
	tests := []struct {
		name    string
		headers []string // X-Signature values, one header each
		wantErr string   // substring of the message
	}{
		{"empty", []string{""}, "malformed (empty)"},
		{"missing t", []string{"v1=" + sig}, "(no t)"},
		{"missing v1", []string{"t=" + ts}, "(no v1)"},
		{"empty values", []string{"t=,v1="}, "key=value"},
		{"empty t", []string{"t=,v1=" + sig}, "key=value"},
		{"empty v1", []string{"t=" + ts + ",v1="}, "key=value"},
		{"non-digit t", []string{"t=17500000x0,v1=" + sig}, "t must be unix seconds"},
		{"negative t", []string{"t=-" + ts + ",v1=" + sig}, "t must be unix seconds"},
		{"plus-signed t", []string{"t=+" + ts + ",v1=" + sig}, "t must be unix seconds"},
		{"fractional t", []string{"t=" + ts + ".5,v1=" + sig}, "t must be unix seconds"},
		{"t with a space", []string{"t= " + ts + ",v1=" + sig}, "spaces"},
		{"space after the comma", []string{"t=" + ts + ", v1=" + sig}, "spaces"},
		{"tab", []string{"t=" + ts + ",\tv1=" + sig}, "spaces"},
		{"t of 13 digits", []string{"t=000" + ts + ",v1=" + sig}, "t must be unix seconds"},
		{"t that overflows int64", []string{"t=99999999999999999999,v1=" + sig}, "t must be unix seconds"},
		{"non-hex v1", []string{"t=" + ts + ",v1=" + strings.Repeat("g", 64)}, "v1 must be 64 hex digits"},
		{"v1 of 63 chars", []string{"t=" + ts + ",v1=" + sig[:63]}, "v1 must be 64 hex digits"},
		{"v1 of 62 chars", []string{"t=" + ts + ",v1=" + sig[:62]}, "v1 must be 64 hex digits"},
		{"v1 of 65 chars", []string{valid + "0"}, "v1 must be 64 hex digits"},
		{"v1 with 0x", []string{"t=" + ts + ",v1=0x" + sig[:62]}, "v1 must be 64 hex digits"},
		{"v1 in base64", []string{"t=" + ts + ",v1=" + base64.StdEncoding.EncodeToString([]byte(sig[:32]))}, "v1 must be 64 hex digits"},
		{"v1 with a trailing =", []string{valid + "="}, "v1 must be 64 hex digits"},
		{"repeated t", []string{"t=" + ts + ",t=" + ts + ",v1=" + sig}, "t appears more than once"},
		{"repeated t, second one different", []string{valid + ",t=1"}, "t appears more than once"},
		{"repeated v1", []string{valid + ",v1=" + sig}, "v1 appears more than once"},
		{"repeated unknown field", []string{valid + ",x=1,x=2"}, "a field appears more than once"},
		{"semicolon separator", []string{"t=" + ts + ";v1=" + sig}, "(no v1)"},
		{"colon instead of =", []string{"t:" + ts + ",v1:" + sig}, "key=value"},
		{"v0 only", []string{"t=" + ts + ",v0=" + sig}, "(no v1)"},
		{"uppercase keys", []string{"T=" + ts + ",V1=" + sig}, "key=value"},
		{"10 KB header", []string{valid + ",x=" + strings.Repeat("a", 10<<10)}, "longer than 512 bytes"},
		{"513 bytes", []string{valid + ",x=" + strings.Repeat("a", 513-len(valid)-3)}, "longer than 512 bytes"},
		{"too many fields", []string{valid + ",a=1,b=1,c=1,d=1,e=1,f=1,g=1"}, "more than 8 fields"},
		{"two X-Signature headers", []string{valid, valid}, "exactly one X-Signature"},
		{"leading junk", []string{"junk," + valid}, "key=value"},
		{"trailing junk", []string{valid + ",junk"}, "key=value"},
		{"trailing comma", []string{valid + ","}, "key=value"},
		{"leading comma", []string{"," + valid}, "key=value"},
		{"double comma", []string{"t=" + ts + ",,v1=" + sig}, "key=value"},
		{"leading space", []string{" " + valid}, "spaces"},
		{"trailing newline", []string{valid + "\n"}, "spaces"},
		{"non-ASCII", []string{valid + ",x=é"}, "non-ASCII characters"},
		{"quoted values", []string{`t="` + ts + `",v1="` + sig + `"`}, "t must be unix seconds"},
		{"scheme prefix", []string{"sha256=" + sig}, "(no t)"},
		{"bare hex", []string{sig}, "key=value"},
	}
	a := newTestCallerAuth(t, [][]byte{callerSecret1}, nil, nil, nil, func() time.Time { return callerTestNow })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h []string
			for _, v := range tt.headers {
				h = append(h, "X-Signature", v)
			}
			c, err := a.authenticate(callerRequest(callerBody, h...), body)
			if c != nil {
				t.Errorf("got caller %+v, want none", c)
			}
			hidden := append([]string{sig, strings.ToUpper(sig), sig[:32], string(callerSecret1)}, tt.headers...)
			e := checkRefused(t, err, statusUnauthenticated, hidden...)
			if !strings.Contains(e.Message, tt.wantErr) {
				t.Errorf("got message %q, want it to contain %q", e.Message, tt.wantErr)
			}
			if e.Err != nil {
				t.Errorf("got cause %v, want none for a malformed header", e.Err)
			}
		})
	}
}

func TestCallerAuthCredentials(t *testing.T) {
	t.Parallel()
	g := newCallerFake(t)
	body := []byte(callerBody)
	now := time.Now()
	sig := signatureHeaderValue(callerSecret1, now.Unix(), body)
	tok := g.MintIDToken(callerClaims(now, nil))
	tests := []struct {
		name      string
		secrets   [][]byte
		audiences []string
		headers   []string
		wantErr   string
	}{
		{"neither", [][]byte{callerSecret1}, []string{callerAudience1}, nil, "no credentials: send X-Signature or Authorization: Bearer <Google ID token>"},
		{"unrelated headers only", [][]byte{callerSecret1}, []string{callerAudience1}, []string{"X-Api-Key", string(callerSecret1), "Cookie", "s=" + string(callerSecret1)}, "no credentials"},
		{"both", [][]byte{callerSecret1}, []string{callerAudience1}, []string{"X-Signature", sig, "Authorization", "Bearer " + tok}, "not both"},
		{"both, Authorization empty", [][]byte{callerSecret1}, []string{callerAudience1}, []string{"X-Signature", sig, "Authorization", ""}, "not both"},
		{"two Authorization headers", [][]byte{callerSecret1}, []string{callerAudience1}, []string{"Authorization", "Bearer " + tok, "Authorization", "Bearer " + tok}, "exactly one Authorization"},
		{"signature without secrets", nil, []string{callerAudience1}, []string{"X-Signature", sig}, "no webhook secrets are configured"},
		{"ID token without audiences", [][]byte{callerSecret1}, nil, []string{"Authorization", "Bearer " + tok}, "ALLOWED_AUDIENCES is empty"},
		{"nothing configured", nil, nil, []string{"Authorization", "Bearer " + tok}, "ALLOWED_AUDIENCES is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestCallerAuth(t, tt.secrets, tt.audiences, nil, g.HTTPClient(), time.Now)
			c, err := a.authenticate(callerRequest(callerBody, tt.headers...), body)
			if c != nil {
				t.Errorf("got caller %+v, want none", c)
			}
			e := checkRefused(t, err, statusUnauthenticated, sig, tok, string(callerSecret1))
			if !strings.Contains(e.Message, tt.wantErr) {
				t.Errorf("got message %q, want it to contain %q", e.Message, tt.wantErr)
			}
		})
	}
}

func TestNewCallerAuthRefusesShortSecrets(t *testing.T) {
	t.Parallel()
	for _, s := range [][]byte{nil, {}, []byte("short")} {
		if _, err := newCallerAuth(context.Background(), [][]byte{callerSecret1, s}, nil, nil, nil, nil); err == nil {
			t.Errorf("newCallerAuth with a %d-byte secret: got no error, want one", len(s))
		} else if strings.Contains(err.Error(), string(callerSecret1)) {
			t.Errorf("error %q contains a secret", err)
		}
	}
}

// newCallerFake starts a fake Google for ID-token tests.
func newCallerFake(t *testing.T) *fakegoogle.Server {
	t.Helper()
	g, err := fakegoogle.New(fakegoogle.Options{})
	if err != nil {
		t.Fatalf("start fake Google: %v", err)
	}
	t.Cleanup(g.Close)
	return g
}

// callerClaims are the claims of a good ID token minted at now, with edit
// applied: a nil value deletes a claim.
func callerClaims(now time.Time, edit map[string]any) map[string]any {
	c := map[string]any{
		"iss":            fakegoogle.GoogleIssuer,
		"aud":            callerAudience1,
		"azp":            "112233445566778899001",
		"sub":            "112233445566778899001",
		"email":          "Robot@Example.com",
		"email_verified": true,
		"iat":            now.Unix(),
		"exp":            now.Add(time.Hour).Unix(),
	}
	for k, v := range edit {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// craftJWT encodes header and claims and signs them with sign, for tokens
// the fake would never mint.
func craftJWT(t *testing.T, header, claims map[string]any, sign func(input string) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign(input))
}

// withHeader replaces a minted token's header, keeping its payload and
// signature, which then no longer match.
func withHeader(t *testing.T, tok string, header map[string]any) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(tok, ".")
	return base64.RawURLEncoding.EncodeToString(h) + "." + rest
}

// withPayload replaces a minted token's payload, keeping its header and
// signature.
func withPayload(t *testing.T, tok string, claims map[string]any) string {
	t.Helper()
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + parts[2]
}

func TestCallerAuthIDToken(t *testing.T) {
	t.Parallel()
	g := newCallerFake(t)
	other := newCallerFake(t) // a different key, as an attacker's would be
	now := time.Now()
	mint := func(edit map[string]any) string { return g.MintIDToken(callerClaims(now, edit)) }
	good := mint(nil)
	robotCaller := &caller{method: callerIDToken, email: "robot@example.com", sub: "112233445566778899001",
		signedAt: time.Unix(now.Unix(), 0), proof: []byte("112233445566778899001." + fmt.Sprint(now.Unix())), body: []byte(callerBody)}

	pubDER, err := x509.MarshalPKIXPublicKey(g.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs256 := func(key []byte) func(string) []byte {
		return func(input string) []byte {
			m := hmac.New(sha256.New, key)
			m.Write([]byte(input))
			return m.Sum(nil)
		}
	}
	noSig := func(string) []byte { return nil }
	fakeSig := func(string) []byte { return []byte("not a signature at all, but long enough to look like one") }

	tests := []struct {
		name       string
		authz      string
		want       *caller // nil: refused
		wantStatus string  // default UNAUTHENTICATED
		wantErr    string  // substring of the message
	}{
		{name: "valid", authz: "Bearer " + good, want: robotCaller},
		{name: "second audience", authz: "Bearer " + mint(map[string]any{"aud": callerAudience2}), want: robotCaller},
		{name: "trusted caller", authz: "Bearer " + mint(map[string]any{"email": "Scheduler@Example.iam.gserviceaccount.com"}), want: &caller{method: callerIDToken, email: "scheduler@example.iam.gserviceaccount.com", trusted: true,
			sub: robotCaller.sub, signedAt: robotCaller.signedAt, proof: robotCaller.proof, body: robotCaller.body}},
		{name: "scheme in lowercase", authz: "bearer " + good, want: robotCaller},
		{name: "issuer without https", authz: "Bearer " + mint(map[string]any{"iss": "accounts.google.com"}), want: robotCaller},
		{name: "email_verified as a string", authz: "Bearer " + mint(map[string]any{"email_verified": "true"}), want: robotCaller},
		{name: "issued a minute ahead", authz: "Bearer " + mint(map[string]any{"iat": now.Add(time.Minute).Unix()}), want: &caller{method: callerIDToken, email: "robot@example.com",
			sub: robotCaller.sub, signedAt: time.Unix(now.Add(time.Minute).Unix(), 0), proof: []byte(robotCaller.sub + "." + fmt.Sprint(now.Add(time.Minute).Unix())), body: robotCaller.body}},

		{name: "no sub", authz: "Bearer " + mint(map[string]any{"sub": nil}), wantErr: "names no Google account"},
		{name: "sub not an account id", authz: "Bearer " + mint(map[string]any{"sub": "robot@example.com"}), wantErr: "names no Google account"},
		{name: "no iat", authz: "Bearer " + mint(map[string]any{"iat": nil}), wantErr: "no issue time"},
		{name: "issued an hour ahead", authz: "Bearer " + mint(map[string]any{"iat": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()}), wantErr: "issued more than 300 seconds from now"},

		{name: "wrong audience", authz: "Bearer " + mint(map[string]any{"aud": "https://evil.example.com/CreateSpace"}), wantErr: "audience is not accepted"},
		{name: "OAuth client id as audience", authz: "Bearer " + mint(map[string]any{"aud": fakegoogle.DefaultClientID}), wantErr: "audience is not accepted"},
		{name: "audience as an array", authz: "Bearer " + mint(map[string]any{"aud": []string{callerAudience1}}), wantErr: "claims are malformed"},
		{name: "no audience", authz: "Bearer " + mint(map[string]any{"aud": nil}), wantErr: "audience is not accepted"},
		{name: "expired", authz: "Bearer " + mint(map[string]any{"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}), wantErr: "has expired"},
		{name: "expired a second ago", authz: "Bearer " + mint(map[string]any{"exp": now.Add(-time.Second).Unix()}), wantErr: "has expired"},
		{name: "no expiry", authz: "Bearer " + mint(map[string]any{"exp": nil}), wantErr: "no expiry"},
		{name: "wrong issuer", authz: "Bearer " + mint(map[string]any{"iss": "https://evil.example.com"}), wantErr: "not issued by Google"},
		{name: "IAP issuer", authz: "Bearer " + mint(map[string]any{"iss": "https://cloud.google.com/iap"}), wantErr: "not issued by Google"},
		{name: "no issuer", authz: "Bearer " + mint(map[string]any{"iss": nil}), wantErr: "not issued by Google"},
		{name: "email_verified false", authz: "Bearer " + mint(map[string]any{"email_verified": false}), wantErr: "email is not verified"},
		{name: "email_verified missing", authz: "Bearer " + mint(map[string]any{"email_verified": nil}), wantErr: "email is not verified"},
		{name: "email_verified as a number", authz: "Bearer " + mint(map[string]any{"email_verified": 1}), wantErr: "claims are malformed"},
		{name: "missing email", authz: "Bearer " + mint(map[string]any{"email": nil}), wantErr: "no email"},
		{name: "empty email", authz: "Bearer " + mint(map[string]any{"email": ""}), wantErr: "no email"},
		{name: "email not an address", authz: "Bearer " + mint(map[string]any{"email": "robot"}), wantErr: "not an email address"},

		{name: "alg none", authz: "Bearer " + craftJWT(t, map[string]any{"alg": "none", "typ": "JWT"}, callerClaims(now, nil), noSig), wantErr: "must be signed with RS256"},
		{name: "alg none with kid and a signature", authz: "Bearer " + craftJWT(t, map[string]any{"alg": "none", "kid": g.KeyID()}, callerClaims(now, nil), fakeSig), wantErr: "must be signed with RS256"},
		{name: "alg None", authz: "Bearer " + withHeader(t, good, map[string]any{"alg": "None", "kid": g.KeyID()}), wantErr: "must be signed with RS256"},
		{name: "no alg", authz: "Bearer " + withHeader(t, good, map[string]any{"kid": g.KeyID()}), wantErr: "must be signed with RS256"},
		{name: "HS256 keyed with the public key PEM", authz: "Bearer " + craftJWT(t, map[string]any{"alg": "HS256", "kid": g.KeyID(), "typ": "JWT"}, callerClaims(now, nil), hs256(pubPEM)), wantErr: "must be signed with RS256"},
		{name: "HS256 keyed with the public key DER", authz: "Bearer " + craftJWT(t, map[string]any{"alg": "HS256", "kid": g.KeyID()}, callerClaims(now, nil), hs256(pubDER)), wantErr: "must be signed with RS256"},
		// The validator would check ES256 against IAP's keys, and panics on
		// a short signature: it must never see one.
		{name: "ES256 with a short signature", authz: "Bearer " + craftJWT(t, map[string]any{"alg": "ES256", "kid": g.KeyID()}, callerClaims(now, nil), func(string) []byte { return []byte{1} }), wantErr: "must be signed with RS256"},
		{name: "RS512", authz: "Bearer " + withHeader(t, good, map[string]any{"alg": "RS512", "kid": g.KeyID()}), wantErr: "must be signed with RS256"},
		{name: "unknown kid", authz: "Bearer " + withHeader(t, good, map[string]any{"alg": "RS256", "kid": "0123456789abcdef0123456789abcdef01234567", "typ": "JWT"}), wantErr: "key Google does not publish"},
		{name: "no kid", authz: "Bearer " + withHeader(t, good, map[string]any{"alg": "RS256", "typ": "JWT"}), wantErr: "names no signing key"},
		{name: "critical header", authz: "Bearer " + withHeader(t, good, map[string]any{"alg": "RS256", "kid": g.KeyID(), "crit": []string{"b64"}, "b64": false}), wantErr: "critical header"},
		{name: "signed by another key", authz: "Bearer " + other.MintIDToken(callerClaims(now, nil)), wantErr: "key Google does not publish"},
		{name: "signed by another key under our kid", authz: "Bearer " + withHeader(t, other.MintIDToken(callerClaims(now, nil)), map[string]any{"alg": "RS256", "kid": g.KeyID(), "typ": "JWT"}), wantErr: "signature is not valid"},
		{name: "payload altered", authz: "Bearer " + withPayload(t, good, callerClaims(now, map[string]any{"email": "boss@example.com"})), wantErr: "signature is not valid"},
		{name: "signature truncated", authz: "Bearer " + good[:len(good)-4], wantErr: "signature is not valid"},
		{name: "signature of another token", authz: "Bearer " + withPayload(t, good, callerClaims(now, map[string]any{"exp": now.Add(2 * time.Hour).Unix()})), wantErr: "signature is not valid"},
		{name: "unsigned (two parts)", authz: "Bearer " + good[:strings.LastIndex(good, ".")], wantErr: "not a Google ID token"},
		{name: "empty signature", authz: "Bearer " + good[:strings.LastIndex(good, ".")+1], wantErr: "not a Google ID token"},

		{name: "garbage token", authz: "Bearer not-a-jwt", wantErr: "not a Google ID token"},
		{name: "four parts", authz: "Bearer " + good + ".x", wantErr: "not a Google ID token"},
		{name: "padded base64", authz: "Bearer " + strings.Replace(good, ".", "=.", 1), wantErr: "not a Google ID token"},
		{name: "header not JSON", authz: "Bearer " + base64.RawURLEncoding.EncodeToString([]byte("{alg")) + good[strings.Index(good, "."):], wantErr: "not a Google ID token"},
		{name: "claims not JSON", authz: "Bearer " + strings.Split(good, ".")[0] + ".bm90IGpzb24." + strings.Split(good, ".")[2], wantErr: "claims are malformed"},
		{name: "token with a space inside", authz: "Bearer " + good[:20] + " " + good[20:], wantErr: "not a Google ID token"},
		{name: "oversized token", authz: "Bearer " + good + strings.Repeat("A", 8<<10), wantErr: "longer than 8192 bytes"},
		{name: "Bearer without token", authz: "Bearer", wantErr: "no token after Bearer"},
		{name: "Bearer and spaces", authz: "Bearer   ", wantErr: "no token after Bearer"},
		{name: "empty Authorization", authz: "", wantErr: "must be \"Bearer <Google ID token>\""},
		{name: "token without scheme", authz: good, wantErr: "must be \"Bearer <Google ID token>\""},
		{name: "Basic scheme", authz: "Basic " + base64.StdEncoding.EncodeToString([]byte("robot:"+string(callerSecret1))), wantErr: "no other scheme"},
		{name: "Bearer glued to the token", authz: "Bearer" + good, wantErr: "no other scheme"},
	}
	a := newTestCallerAuth(t, [][]byte{callerSecret1}, []string{callerAudience1, callerAudience2},
		[]string{"scheduler@example.iam.gserviceaccount.com"}, g.HTTPClient(), time.Now)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.authenticate(callerRequest(callerBody, "Authorization", tt.authz), []byte(callerBody))
			if tt.want != nil {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				if diff := cmp.Diff(tt.want, c, cmp.AllowUnexported(caller{})); diff != "" {
					t.Errorf("caller (-want +got):\n%s", diff)
				}
				return
			}
			if c != nil {
				t.Errorf("got caller %+v, want none", c)
			}
			tok := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(tt.authz, "Bearer"), "bearer"))
			hidden := []string{tt.authz, tok, good, string(callerSecret1)}
			if parts := strings.Split(tok, "."); len(parts) == 3 {
				hidden = append(hidden, parts[1], parts[2])
			}
			status := tt.wantStatus
			if status == "" {
				status = statusUnauthenticated
			}
			e := checkRefused(t, err, status, hidden...)
			if !strings.Contains(e.Message, tt.wantErr) {
				t.Errorf("got message %q, want it to contain %q", e.Message, tt.wantErr)
			}
		})
	}
}

// countingTransport counts the requests it passes on.
type countingTransport struct {
	base http.RoundTripper
	n    atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(r)
}

func TestCallerAuthIDTokenCachesKeys(t *testing.T) {
	t.Parallel()
	g := newCallerFake(t)
	ct := &countingTransport{base: g.Transport()}
	a := newTestCallerAuth(t, nil, []string{callerAudience1}, nil, &http.Client{Transport: ct}, time.Now)
	for i := range 5 {
		tok := g.MintIDToken(callerClaims(time.Now(), map[string]any{"sub": fmt.Sprint(i)}))
		if _, err := a.authenticate(callerRequest(callerBody, "Authorization", "Bearer "+tok), []byte(callerBody)); err != nil {
			t.Fatalf("token %d: got error %v, want none", i, err)
		}
	}
	if got := ct.n.Load(); got != 1 {
		t.Errorf("got %d fetches of Google's keys for 5 tokens, want 1", got)
	}
}

// TestCallerAuthIDTokenKeysUnavailable checks that failing to fetch
// Google's keys is answered as UNAVAILABLE, not as a bad token, and that
// nothing is accepted meanwhile.
func TestCallerAuthIDTokenKeysUnavailable(t *testing.T) {
	t.Parallel()
	g := newCallerFake(t)
	tok := g.MintIDToken(callerClaims(time.Now(), nil))
	failing := map[string]http.RoundTripper{
		"network error": roundTripperFunc(func(*http.Request) (*http.Response, error) {
			return nil, errors.New("dial tcp: connection refused")
		}),
		"HTTP 500": roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			rec := httptest.NewRecorder()
			http.Error(rec, "backend error", http.StatusInternalServerError)
			return rec.Result(), nil
		}),
		"not JSON": roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			rec := httptest.NewRecorder()
			rec.WriteString("<html>")
			return rec.Result(), nil
		}),
	}
	for name, rt := range failing {
		t.Run(name, func(t *testing.T) {
			a := newTestCallerAuth(t, nil, []string{callerAudience1}, nil, &http.Client{Transport: rt}, time.Now)
			c, err := a.authenticate(callerRequest(callerBody, "Authorization", "Bearer "+tok), []byte(callerBody))
			if c != nil {
				t.Errorf("got caller %+v, want none", c)
			}
			e := checkRefused(t, err, statusUnavailable, tok, strings.Split(tok, ".")[2])
			if e.RetryAfter <= 0 {
				t.Errorf("got RetryAfter %d, want a positive delay", e.RetryAfter)
			}
		})
	}
}

// callerBodyPtr is a body to send instead of callerBody.
func callerBodyPtr(s string) *string { return &s }

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestCallerActAs(t *testing.T) {
	t.Parallel()
	hmacCaller := &caller{method: callerHMAC, trusted: true}
	trusted := &caller{method: callerIDToken, email: "scheduler@example.iam.gserviceaccount.com", sub: "5", trusted: true}
	robot := &caller{method: callerIDToken, email: "robot@example.com", sub: "77"}
	tests := []struct {
		name        string
		caller      *caller
		user        string
		ok          bool
		name2, mail string // the name looked up and the email given, when ok
	}{
		{"HMAC caller for a user id", hmacCaller, "users/112233445566778899000", true, "users/112233445566778899000", ""},
		{"HMAC caller for an email", hmacCaller, "alice@example.com", true, "alice@example.com", ""},
		{"trusted ID-token caller for a user id", trusted, "users/123", true, "users/123", ""},
		{"trusted ID-token caller for an email", trusted, "alice@example.com", true, "alice@example.com", ""},
		{"untrusted caller as itself", robot, "robot@example.com", true, "users/77", "robot@example.com"},
		{"untrusted caller as itself, other case", robot, "Robot@EXAMPLE.com", true, "users/77", "robot@example.com"},
		{"untrusted caller as its own account", robot, "users/77", true, "users/77", "robot@example.com"},
		{"untrusted caller for someone else", robot, "alice@example.com", false, "", ""},
		{"untrusted caller for a user id", robot, "users/123", false, "", ""},
		{"untrusted caller for a longer user id", robot, "users/770", false, "", ""},
		{"untrusted caller as users/<its email>", robot, "users/robot@example.com", false, "", ""},
		{"untrusted caller with a longer address", robot, "robot@example.com.evil", false, "", ""},
		{"untrusted caller with a Kelvin sign", &caller{method: callerIDToken, email: "kate@example.com", sub: "8"}, "\u212Aate@example.com", false, "", ""},
		{"untrusted caller for nobody", robot, "", false, "", ""},
		{"untrusted caller without an email", &caller{method: callerIDToken, sub: "9"}, "", false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, email, err := tt.caller.actAs(tt.user)
			if tt.ok {
				if err != nil || name != tt.name2 || email != tt.mail {
					t.Errorf("got %q, %q, %v; want %q, %q, no error", name, email, err, tt.name2, tt.mail)
				}
				return
			}
			e := checkRefused(t, err, statusPermissionDenied)
			if !strings.Contains(e.Message, "TRUSTED_CALLERS") || !strings.Contains(e.Message, tt.caller.email) {
				t.Errorf("got message %q, want it to name the caller and TRUSTED_CALLERS", e.Message)
			}
		})
	}
	if _, _, err := robot.actAs("alice@example.com"); err.(*Error).Message != "caller robot@example.com may act only as itself; add it to TRUSTED_CALLERS to act for others" {
		t.Errorf("got message %q", err.(*Error).Message)
	}
}

func BenchmarkVerifyHMAC(b *testing.B) {
	for _, bc := range []struct {
		name    string
		secrets [][]byte
		size    int
	}{
		{"1secret/200B", [][]byte{callerSecret1}, 200},
		{"2secrets/200B", [][]byte{callerSecret1, callerSecret2}, 200},
		{"1secret/64KiB", [][]byte{callerSecret1}, 64 << 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(strings.Repeat("x", bc.size))
			a := newTestCallerAuth(b, bc.secrets, nil, nil, nil, func() time.Time { return callerTestNow })
			r := callerRequest("", "X-Signature", signatureHeaderValue(bc.secrets[len(bc.secrets)-1], callerTestNow.Unix(), body))
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.authenticate(r, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSignBody: the CLI's signature is one the function accepts, made with
// the first secret of the file, and a file the function would refuse is
// refused without quoting it.
func TestSignBody(t *testing.T) {
	t.Parallel()
	file := []byte("\n  " + string(callerSecret1) + "  \n" + string(callerSecret2) + "\n")
	body := []byte(`{"user":"alice@example.com"}`)
	sig, err := SignBody(file, body, callerTestNow)
	if err != nil {
		t.Fatal(err)
	}
	if want := signatureHeaderValue(callerSecret1, callerTestNow.Unix(), body); sig != want {
		t.Errorf("SignBody: got %q, want %q (the first secret)", sig, want)
	}
	a := newTestCallerAuth(t, [][]byte{callerSecret2, callerSecret1}, nil, nil, nil, func() time.Time { return callerTestNow })
	if _, err := a.authenticate(callerRequest(string(body), "X-Signature", sig), body); err != nil {
		t.Errorf("the function refuses SignBody's signature: %v", err)
	}
	for _, bad := range []string{"", "\n\n", "short-secret\n"} {
		if _, err := SignBody([]byte(bad), body, callerTestNow); err == nil || strings.Contains(err.Error(), "short-secret") {
			t.Errorf("SignBody(%q): got %v, want a refusal that does not quote the file", bad, err)
		}
	}
}
