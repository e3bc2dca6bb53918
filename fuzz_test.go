package chatauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// The fuzz targets. Each states its invariants; beyond them,
// none may panic. Seed corpora are in testdata/fuzz/<name>; .ci/run fuzzes
// each for a bounded time, and TESTING.md has the commands.

// fuzzNow is the fixed clock of the pure targets.
var fuzzNow = time.Unix(1_750_000_000, 0)

// quietContext carries a logger that discards, so that fuzzing does not
// write a log line per input.
func quietContext() context.Context {
	return withLogger(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// FuzzSignatureHeader fuzzes the X-Signature parser and check. Invariants:
// an accepted header names a t within ±300 s and a v1 that is the
// HMAC-SHA256 of "<t>.<body>" under one of the secrets (checked here
// independently of the parser); a refusal is UNAUTHENTICATED and does not
// echo the header.
func FuzzSignatureHeader(f *testing.F) {
	body := []byte(callerBody)
	ts := strconv.FormatInt(fuzzNow.Unix(), 10)
	f.Add(signatureHeaderValue(callerSecret1, fuzzNow.Unix(), body), body)
	f.Add(signatureHeaderValue(callerSecret2, fuzzNow.Unix()-299, body), body)
	f.Add("v1="+hmacSignature(callerSecret1, ts, body)+",t="+ts+",v2=abc", body)
	f.Add("t="+ts+",v1="+strings.ToUpper(hmacSignature(callerSecret1, ts, nil)), []byte{})
	f.Add("t="+ts+",t="+ts+",v1="+hmacSignature(callerSecret1, ts, body), body)
	f.Add("t=0"+ts+",v1="+hmacSignature(callerSecret1, "0"+ts, body), body)
	f.Add("", body)
	a, err := newCallerAuth(context.Background(), [][]byte{callerSecret1, callerSecret2}, nil, nil, nil, func() time.Time { return fuzzNow })
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		_, _, err := a.verifyHMAC(header, body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status != statusUnauthenticated {
				t.Fatalf("refusal %v is not UNAUTHENTICATED", err)
			}
			if len(header) >= 16 && strings.Contains(e.Message, header) {
				t.Fatalf("the refusal echoes the header: %q", e.Message)
			}
			return
		}
		// Accepted: find t and v1 as the format defines them and check the
		// MAC here, without the parser's help.
		fields := map[string]string{}
		for _, kv := range strings.Split(header, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if _, dup := fields[k]; dup && (k == "t" || k == "v1") {
				t.Fatalf("accepted a header with %s repeated: %q", k, header)
			}
			fields[k] = v
		}
		tv, err := strconv.ParseInt(fields["t"], 10, 64)
		if err != nil || tv < fuzzNow.Unix()-signatureWindow || tv > fuzzNow.Unix()+signatureWindow {
			t.Fatalf("accepted t %q outside the window", fields["t"])
		}
		mac, err := hex.DecodeString(fields["v1"])
		if err != nil {
			t.Fatalf("accepted a v1 that is not hex: %q", fields["v1"])
		}
		for _, secret := range [][]byte{callerSecret1, callerSecret2} {
			m := hmac.New(sha256.New, secret)
			m.Write([]byte(fields["t"] + "."))
			m.Write(body)
			if hmac.Equal(m.Sum(nil), mac) {
				return
			}
		}
		t.Fatalf("accepted %q without a valid MAC of the body", header)
	})
}

// memStore is a tokenStore in memory for the pure fuzz targets:
// used-state markers only, and no token records (a lookup finds none).
type memStore struct {
	mu     sync.Mutex
	used   map[string]time.Time
	marked int // markers created
	writes int // token writes attempted
}

var _ tokenStore = (*memStore)(nil)

func (m *memStore) markStateUsed(_ context.Context, key string, expireAt time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.used[key]; ok {
		return errAlreadyExists
	}
	if m.used == nil {
		m.used = map[string]time.Time{}
	}
	m.used[key] = expireAt
	m.marked++
	return nil
}

func (m *memStore) getToken(context.Context, string) (*tokenRecord, error) {
	return nil, errNotFound
}

func (m *memStore) tokenByEmail(context.Context, string) (*tokenRecord, error) {
	return nil, errNotFound
}

func (m *memStore) updateToken(context.Context, string, func(*tokenRecord) (*tokenRecord, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	return errors.New("memStore holds no tokens")
}

func (m *memStore) putConsent(ctx context.Context, sub string, fn func(*tokenRecord) (*tokenRecord, error)) error {
	return m.updateToken(ctx, sub, fn)
}

func (m *memStore) deleteToken(context.Context, string, func(*tokenRecord) error) error { return nil }
func (m *memStore) listTokens(context.Context, tokenQuery) ([]*tokenRecord, error)      { return nil, nil }
func (m *memStore) close() error                                                        { return nil }

// fuzzState is the state of FuzzCallbackState's one pending consent.
// In the fuzzed Cookie header, $FLOW stands for the flow cookie sealed for
// it and $OTHER for one sealed for another state (another flow of the same
// browser): sealing draws a fresh nonce, so no fixed text could hold them.
const fuzzState = "Zm9vYmFyLXN0YXRlLWZvci10aGUtZnV6ei10YXJnZXQtMDAw"

// FuzzCallbackState fuzzes OAuthCallback's query and Cookie header against
// a server whose browser holds one pending consent (fuzzState) and whose
// token endpoint only counts calls; each input is sent twice. Invariants:
// the token endpoint is called only for a callback without error that
// carries code once, fuzzState exactly once, the genuine flow cookie under
// fuzzState's cookie name, and no iss but Google's exactly; a state is
// marked used only with its genuine cookie, and at most once; the second
// sending never reaches the token endpoint again; no token is written;
// every answer is an *Error of a status the callback may give, and a
// refusal never clears another flow's cookie.
func FuzzCallbackState(f *testing.F) {
	name := flowCookieName(fuzzState)
	f.Add("code=4%2F0abc&state="+fuzzState+"&iss="+url.QueryEscape(googleIssuer), name+"=$FLOW")
	f.Add("code=4%2F0abc&state="+fuzzState, name+"=$FLOW")
	f.Add("code=4%2F0abc&state="+fuzzState+"&iss=", name+"=$FLOW")
	f.Add("code=4%2F0abc&state="+fuzzState+"&iss=a&iss="+url.QueryEscape(googleIssuer), name+"=$FLOW")
	f.Add("code=4%2F0abc&state="+fuzzState+"&state="+fuzzState, name+"=$FLOW")
	f.Add("code=4%2F0abc&state="+fuzzState, name+"=$OTHER; "+name+"=$FLOW")
	f.Add("code=4%2F0abc&state="+fuzzState, name+"=$OTHER")
	f.Add("code=4%2F0abc&state="+fuzzState, flowCookiePrefix+"0123456789abcdef=$FLOW")
	f.Add("error=access_denied&state="+fuzzState, name+"=$FLOW")
	f.Add("code=x&state="+fuzzState[:20]+"&iss=https%3A%2F%2Fevil.example", "")
	f.Add("code=%zz&state=;"+fuzzState, name+"=\"$FLOW\"")
	allowed := []string{statusInvalidArgument, statusPermissionDenied, statusAuthorizationRequired, statusUpstreamError, statusDeadlineExceeded, statusMethodNotAllowed}
	keyset, err := generateKeyset()
	if err != nil {
		f.Fatal(err)
	}
	cipher, err := newTokenCipher(keyset)
	if err != nil {
		f.Fatal(err)
	}
	seal := func(t *testing.T, s *server, state string) string {
		v, err := s.sealFlow(state, &stateRecord{Verifier: oauth2.GenerateVerifier(), LoginHint: "alice@example.com", CreatedAt: fuzzNow.Add(-time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	f.Fuzz(func(t *testing.T, rawQuery, cookie string) {
		calls := 0
		mem := &memStore{}
		s := &server{
			cfg:     Config{PublicURL: "https://chatauth.example"},
			store:   mem,
			tickets: cipher.aead,
			now:     func() time.Time { return fuzzNow },
			oauth: &oauth2.Config{ClientID: "client", ClientSecret: "secret", RedirectURL: "https://chatauth.example/OAuthCallback",
				Endpoint: oauth2.Endpoint{TokenURL: "https://oauth2.example/token", AuthStyle: oauth2.AuthStyleInParams}},
			http: &http.Client{Transport: roundTripperFunc(func(*http.Request) (*http.Response, error) {
				calls++
				return nil, errors.New("the fuzz target has no network")
			})},
		}
		s.consents = &consents{store: mem, oauth: s.oauth, http: s.http, publicURL: s.cfg.PublicURL, now: s.now}
		genuine, other := seal(t, s, fuzzState), seal(t, s, "another-flow-of-the-same-browser")
		cookie = strings.NewReplacer("$FLOW", genuine, "$OTHER", other).Replace(cookie)
		r := (&http.Request{
			Method: http.MethodGet,
			URL:    &url.URL{Path: "/OAuthCallback", RawQuery: rawQuery},
			Header: http.Header{"Cookie": {cookie}},
		}).WithContext(quietContext())
		q := r.URL.Query()
		for range 2 {
			before := calls
			w := httptest.NewRecorder()
			err := s.handleCallback(w, r)
			var e *Error
			if !errors.As(err, &e) || !slices.Contains(allowed, e.Status) {
				t.Fatalf("answer %v: want an *Error of %v", err, allowed)
			}
			for _, c := range w.Result().Cookies() {
				sent := slices.ContainsFunc(r.Cookies(), func(rc *http.Cookie) bool { return rc.Name == c.Name })
				if c.MaxAge >= 0 || c.Name != flowCookieName(q.Get("state")) || !sent {
					t.Fatalf("the callback set cookie %s (Max-Age %d); it may only clear the cookie it was sent for the state it names", c.Name, c.MaxAge)
				}
			}
			if before > 0 && calls > before {
				t.Fatal("the same callback reached the token endpoint twice")
			}
		}
		if mem.marked > 1 || mem.writes > 0 {
			t.Fatalf("markers created %d, token writes %d; want at most 1 and 0", mem.marked, mem.writes)
		}
		withCookie := slices.ContainsFunc(r.Cookies(), func(c *http.Cookie) bool { return c.Name == name && c.Value == genuine })
		if mem.marked > 0 && (!withCookie || len(q["state"]) != 1 || q.Get("state") != fuzzState) {
			t.Fatalf("the state was marked used without its flow's cookie (query %q, Cookie %q)", rawQuery, cookie)
		}
		if calls == 0 {
			return
		}
		switch {
		case q.Has("error"):
			t.Fatal("the code was exchanged for a callback that carries error")
		case len(q["code"]) != 1 || q.Get("code") == "":
			t.Fatalf("the code was exchanged with code %q", q["code"])
		case len(q["state"]) != 1 || q.Get("state") != fuzzState:
			t.Fatalf("the code was exchanged with state %q", q["state"])
		case !withCookie:
			t.Fatalf("the code was exchanged without the flow's cookie (Cookie: %q)", cookie)
		case len(q["iss"]) > 1 || q.Has("iss") && q.Get("iss") != googleIssuer:
			t.Fatalf("the code was exchanged with iss %q", q["iss"])
		case mem.marked != 1:
			t.Fatal("the code was exchanged without marking the state used")
		}
	})
}

// hidesText is the fuzz oracle for names that hide nothing, written apart
// from hiddenRune: a control, a line or paragraph separator, or a format
// character other than a zero-width joiner.
func hidesText(s string) bool {
	for _, r := range s {
		if r != '\u200d' && (unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)) {
			return true
		}
	}
	return false
}

// FuzzCreateSpaceRequest fuzzes CreateSpace's decoder and validator.
// Invariants: a refusal is INVALID_ARGUMENT; an accepted body is valid
// UTF-8, a JSON object whose keys are exactly the documented names, each
// once, whose values (read here with a case-exact parser) are the
// request's, and which satisfies every documented limit.
func FuzzCreateSpaceRequest(f *testing.F) {
	for _, s := range []string{
		`{"user":"users/112233445566778899000","displayName":"Incident 4711","spaceType":"SPACE","description":"disk full","members":["users/123","bob@example.com"],"requestId":"form-response-8f2c"}`,
		`{"user":"alice@example.com","spaceType":"GROUP_CHAT","members":["users/1","users/2"]}`,
		`{"user":"alice@example.com","spaceType":"DIRECT_MESSAGE","members":["bob@example.com"]}`,
		`{"user":"alice@example.com","displayName":"a","User":"bob@example.com"}`,
		`{"user":"alice@example.com","displayName":"a\u0000"}`,
		`{"user":"alice@example.com","displayName":"x","description":"line\nline\r\n\ttab"}`,
		`{"user":"alice@example.com","displayName":"x","members":["users/1","USERS/1"]}`,
		"{\"user\":\"alice@example.com\",\"displayName\":\"\xff\"}",
		`{"user":"alice@example.com","displayName":"a\u200eb"}`,
		`{"user":"alice@example.com","displayName":"\ud83e\uddd1\u200d\ud83d\udcbb"}`,
		`{"user":"alice@example.com","displayName":"x","description":"a\u2028b"}`,
		`[]`, `null`, ``,
		// The fast path's scan: brackets, commas and quotes inside strings,
		// nesting, white space everywhere, escaped and repeated keys.
		` { "user" : "a@b.c" , "displayName" : "x,}]{[\"y" , "members" : [ "users/1" , "users/2" ] } `,
		`{"user":"a@b.c","displayName":"x"}{}`,
		`{"user":"a@b.c","displayName":"x"}}`,
		`{"user":"a@b.c","displayName":{"a":[1,{"b":"}"}]}}`,
		`{"\u0075ser":"a@b.c","displayName":"x"}`,
		`{"user":"a@b.c","user":"b@b.c","displayName":"x"}`,
		`{"user":"a@b.c",,"displayName":"x"}`,
		`{"user":"a@b.c","displayName":"x",}`,
		`{"user" "a@b.c"}`, `{"user":}`, `{"user":"a@b.c"`, `{}`, `{ }`, `{"user":tru e}`,
	} {
		f.Add([]byte(s))
	}
	names := jsonNames(&createSpaceRequest{})
	f.Fuzz(func(t *testing.T, body []byte) {
		checkStrictPaths(t, body, names)
		var q createSpaceRequest
		err := decodeStrict(body, &q)
		if err == nil {
			err = q.validate()
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status != statusInvalidArgument {
				t.Fatalf("refusal %v is not INVALID_ARGUMENT", err)
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatal("accepted invalid UTF-8")
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("accepted a body that is not a JSON object: %v", err)
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.Token()
		seen := map[string]bool{}
		for dec.More() {
			tok, _ := dec.Token()
			k := tok.(string)
			if !names[k] || seen[k] {
				t.Fatalf("accepted the key %q (unknown or repeated)", k)
			}
			seen[k] = true
			var skip json.RawMessage
			dec.Decode(&skip)
		}
		str := func(k string) string {
			var s string
			if v, ok := raw[k]; ok && string(v) != "null" {
				if err := json.Unmarshal(v, &s); err != nil {
					t.Fatalf("accepted %s of another type", k)
				}
			}
			return s
		}
		if str("user") != q.User || str("displayName") != q.DisplayName || str("description") != q.Description || str("requestId") != q.RequestID {
			t.Fatalf("the request %+v differs from the body's values", q)
		}
		if st := str("spaceType"); st != q.SpaceType && !(st == "" && q.SpaceType == spaceTypeSpace) {
			t.Fatalf("spaceType %q became %q", st, q.SpaceType)
		}

		n := utf8.RuneCountInString(q.DisplayName)
		switch {
		case !validUser(q.User):
			t.Fatalf("accepted user %q", q.User)
		case n > 128 || hidesText(q.DisplayName):
			t.Fatalf("accepted displayName %q", q.DisplayName)
		case utf8.RuneCountInString(q.Description) > 4096 || hidesText(strings.NewReplacer("\n", "", "\r", "", "\t", "").Replace(q.Description)):
			t.Fatalf("accepted description %q", q.Description)
		case q.Description != "" && q.SpaceType != spaceTypeSpace:
			t.Fatal("accepted a description outside a SPACE")
		case len(q.Members) > 49:
			t.Fatalf("accepted %d members", len(q.Members))
		case q.RequestID != "" && !requestIDPattern().MatchString(q.RequestID):
			t.Fatalf("accepted requestId %q", q.RequestID)
		}
		switch q.SpaceType {
		case spaceTypeSpace:
			if n == 0 {
				t.Fatal("accepted a SPACE without displayName")
			}
		case spaceTypeGroupChat:
			if len(q.Members) < 2 {
				t.Fatal("accepted a GROUP_CHAT of fewer than 2 members")
			}
		case spaceTypeDM:
			if len(q.Members) != 1 || n != 0 {
				t.Fatal("accepted a DIRECT_MESSAGE without exactly one member, or with a name")
			}
		default:
			t.Fatalf("accepted spaceType %q", q.SpaceType)
		}
		folded := map[string]bool{}
		for _, m := range q.Members {
			if !validUser(m) || folded[strings.ToLower(m)] {
				t.Fatalf("accepted member %q (invalid or repeated)", m)
			}
			folded[strings.ToLower(m)] = true
		}
	})
}

// idTokenVerifiers are the three bearer-token verifiers, wired to a fake
// Google, and the public keys whose signatures make a token genuine.
type idTokenVerifiers struct {
	google   *fakegoogle.Server
	chat     *fakegoogle.ChatApp
	callers  *callerAuth
	endpoint *chatAuth // ENDPOINT_URL
	addOn    *chatAuth // ENDPOINT_URL with CHAT_PROJECT_NUMBER
	project  *chatAuth // PROJECT_NUMBER
	keys     map[string]*rsa.PublicKey
}

const (
	fuzzChatEndpoint = "https://chatauth.example/ChatEvents"
	fuzzChatProject  = "123456789012"
)

func newIDTokenVerifiers(f *testing.F) *idTokenVerifiers {
	g, err := fakegoogle.New(fakegoogle.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(g.Close)
	chat, err := fakegoogle.NewChatApp(g)
	if err != nil {
		f.Fatal(err)
	}
	v := &idTokenVerifiers{google: g, chat: chat, keys: map[string]*rsa.PublicKey{g.KeyID(): g.PublicKey()}}
	if v.callers, err = newCallerAuth(context.Background(), nil, []string{callerAudience1}, []string{"scheduler@example.iam.gserviceaccount.com"}, g.HTTPClient(), time.Now); err != nil {
		f.Fatal(err)
	}
	if v.endpoint, err = newChatAuth(context.Background(), chatAudienceEndpoint, fuzzChatEndpoint, "", chat.HTTPClient(), chatCertsURL, time.Now); err != nil {
		f.Fatal(err)
	}
	if v.addOn, err = newChatAuth(context.Background(), chatAudienceEndpoint, fuzzChatEndpoint, fuzzChatProject, chat.HTTPClient(), chatCertsURL, time.Now); err != nil {
		f.Fatal(err)
	}
	if v.project, err = newChatAuth(context.Background(), chatAudienceProject, fuzzChatProject, "", chat.HTTPClient(), chatCertsURL, time.Now); err != nil {
		f.Fatal(err)
	}
	var certs map[string]string
	if err := json.Unmarshal(chat.CertsJSON(), &certs); err != nil {
		f.Fatal(err)
	}
	for kid, p := range certs {
		block, _ := pem.Decode([]byte(p))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			f.Fatal(err)
		}
		v.keys[kid] = cert.PublicKey.(*rsa.PublicKey)
	}
	return v
}

// genuine reports whether tok carries a valid RS256 signature by one of the
// fake's keys, read here without the verifiers' help.
func (v *idTokenVerifiers) genuine(tok string) bool {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	for _, k := range v.keys {
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil {
			return true
		}
	}
	return false
}

// FuzzIDToken fuzzes the Authorization header through every bearer-token
// verifier: webhook callers' Google ID tokens, and Google Chat's tokens of
// both audience kinds. Invariants: nothing is accepted that does not carry
// a genuine signature (checked here independently); an accepted caller has
// the claims the checks require; a refusal is UNAUTHENTICATED, or
// UNAVAILABLE when keys cannot be fetched.
// checkStrictPaths holds decodeStrict's fast path to its full checks: a
// body the fast path (scanKeys, then json.Unmarshal) accepts must pass the
// full checks with the same result, and a well-formed body without escaped
// keys that the full checks accept must take the fast path, or the fast
// path would be a slow path in disguise.
func checkStrictPaths(t *testing.T, body []byte, names map[string]bool) {
	t.Helper()
	if !utf8.Valid(body) {
		return
	}
	var fast, slow createSpaceRequest
	fastOK := scanKeys(body, names) && json.Unmarshal(body, &fast) == nil
	slowErr := decodeStrictSlow(body, &slow, names)
	if fastOK && slowErr != nil {
		t.Fatalf("the fast path accepted %q, the full checks refuse it: %v", body, slowErr)
	}
	if fastOK && !reflect.DeepEqual(fast, slow) {
		t.Fatalf("the paths decoded %q differently: fast %+v, full %+v", body, fast, slow)
	}
	if !fastOK && slowErr == nil && !bytes.Contains(body, []byte(`\`)) {
		t.Fatalf("the full checks accept %q but the fast path does not", body)
	}
}

func FuzzIDToken(f *testing.F) {
	v := newIDTokenVerifiers(f)
	now := time.Now()
	good := v.google.MintIDToken(callerClaims(now, nil))
	for _, s := range []string{
		good,
		v.google.MintIDToken(callerClaims(now, map[string]any{"aud": "https://evil.example"})),
		v.google.MintIDToken(callerClaims(now, map[string]any{"email_verified": "true"})),
		v.chat.EndpointToken(fuzzChatEndpoint, nil),
		v.chat.ProjectToken(fuzzChatProject, nil),
		v.chat.AddOnToken(fuzzChatEndpoint, fuzzChatProject, nil),
		v.chat.AddOnToken(fuzzChatEndpoint, "111111111111", nil),
		good[:strings.LastIndex(good, ".")+1],
		"eyJhbGciOiJub25lIn0.eyJhdWQiOiJ4In0.",
		"not.a.jwt",
	} {
		f.Add("Bearer " + s)
	}
	f.Add("")
	f.Add("Basic dXNlcjpwYXNz")
	f.Fuzz(func(t *testing.T, authz string) {
		refused := func(err error, who string) {
			var e *Error
			if !errors.As(err, &e) || e.Status != statusUnauthenticated && e.Status != statusUnavailable {
				t.Fatalf("%s: refusal %v is not UNAUTHENTICATED or UNAVAILABLE", who, err)
			}
		}
		_, tok, _ := strings.Cut(authz, " ")
		tok = strings.TrimLeft(tok, " ")
		c, err := v.callers.verifyIDToken(context.Background(), authz)
		if err != nil {
			refused(err, "caller")
		} else {
			if !v.genuine(tok) {
				t.Fatalf("caller: accepted a token without a genuine signature: %q", authz)
			}
			if c.method != callerIDToken || !validEmail(c.email) {
				t.Fatalf("caller: accepted as %+v", c)
			}
		}
		r := &http.Request{Header: http.Header{"Authorization": {authz}}}
		for who, a := range map[string]*chatAuth{"chat endpoint": v.endpoint, "chat add-on": v.addOn, "chat project": v.project} {
			if _, err := a.verify(context.Background(), r); err != nil {
				refused(err, who)
			} else if !v.genuine(tok) {
				t.Fatalf("%s: accepted a token without a genuine signature: %q", who, authz)
			}
		}
	})
}

// FuzzChatEvent fuzzes the Chat event decoder and the answer to an event
// from a user who has not connected (so that nothing leaves the process).
// Invariants: a create command's name comes from the message; mentions
// are distinct Chat users other than the actor; the requestId a message
// yields passes CreateSpace's validation; an answer's text carries no "<"
// or ">" (which would let a name like <users/all> notify a whole space);
// a configuration prompt links to chatauth's OAuthStart with a ticket
// for the actor that carries Chat's redirect only when it fits; and a
// redirect the allow-list admits is https on exactly chat.google.com.
func FuzzChatEvent(f *testing.F) {
	for _, s := range []string{
		`{"type":"MESSAGE","user":{"name":"users/123","email":"alice@example.com","type":"HUMAN"},"configCompleteRedirectUrl":"https://chat.google.com/api/bot_config_complete?token=abc","message":{"name":"spaces/AAA/messages/1","text":"/createspace Launch @Bob","argumentText":" Launch @Bob","slashCommand":{"commandId":"1"},"annotations":[{"type":"USER_MENTION","startIndex":20,"length":4,"userMention":{"user":{"name":"users/456","displayName":"Bob","type":"HUMAN"}}}]}}`,
		`{"type":"MESSAGE","user":{"name":"users/123","type":"HUMAN"},"message":{"text":"create space <users/all> party","argumentText":"create space <users/all> party"}}`,
		`{"type":"APP_COMMAND","user":{"name":"users/123","type":"HUMAN"},"appCommandMetadata":{"appCommandId":2,"appCommandType":"SLASH_COMMAND"},"message":{"name":"spaces/A/messages/B"}}`,
		`{"type":"ADDED_TO_SPACE","user":{"name":"users/123","type":"HUMAN"}}`,
		`{"type":"MESSAGE","message":{"sender":{"name":"users/9","type":"HUMAN"},"text":"@x","annotations":[{"type":"USER_MENTION","startIndex":-1,"length":99,"userMention":{"user":{"name":"users/9"}}}]}}`,
		`{"type":"MESSAGE","user":{"name":"users/1","type":"HUMAN"},"configCompleteRedirectUrl":"https://chat.google.com\\@evil.example/","message":{"text":"create space x"}}`,
		`{"commonEventObject":{"hostApp":"CHAT"},"authorizationEventObject":{"systemIdToken":"x"},"chat":{"user":{"name":"users/123","email":"alice@example.com","type":"HUMAN"},"messagePayload":{"configCompleteRedirectUri":"https://chat.google.com/api/bot_config_complete?token=abc","message":{"name":"spaces/AAA/messages/1","text":"create space Launch","argumentText":"create space Launch"}}}}`,
		`{"commonEventObject":{"hostApp":"CHAT"},"chat":{"user":{"name":"users/123","type":"HUMAN"},"appCommandPayload":{"appCommandMetadata":{"appCommandId":"2","appCommandType":"SLASH_COMMAND"},"message":{"name":"spaces/A/messages/B"}}}}`,
		`{"chat":{"user":{"name":"users/123","type":"HUMAN"},"addedToSpacePayload":{"interactionAdd":true},"removedFromSpacePayload":{}}}`,
	} {
		f.Add([]byte(s))
	}
	keyset, err := generateKeyset()
	if err != nil {
		f.Fatal(err)
	}
	cipher, err := newTokenCipher(keyset)
	if err != nil {
		f.Fatal(err)
	}
	s := &server{cfg: Config{PublicURL: "https://chatauth.example"}, store: &memStore{},
		tickets: cipher.aead, now: func() time.Time { return fuzzNow }}
	s.consents = &consents{store: s.store, publicURL: s.cfg.PublicURL, now: s.now}
	start := s.cfg.PublicURL + "/OAuthStart?ticket="
	f.Fuzz(func(t *testing.T, body []byte) {
		format := formatClassic
		evp, err := parseChatEvent(body, format)
		if err != nil {
			format = formatAddOn
			if evp, err = parseChatEvent(body, format); err != nil {
				if e := asError(err); e.Status != statusInvalidArgument && e.Status != statusUnauthenticated {
					t.Fatalf("refusal %v is not INVALID_ARGUMENT or UNAUTHENTICATED", err)
				}
				return
			}
		}
		ev := *evp
		if r := ev.ConfigCompleteRedirectURL; chatRedirectAllowed(r) {
			u, err := url.Parse(r)
			if err != nil || u.Scheme != "https" || u.Host != "chat.google.com" || strings.ContainsAny(r, "\\ \t\r\n") {
				t.Fatalf("the allow-list admits %q", r)
			}
		}
		if m := ev.Message; m != nil {
			if cmd, arg := ev.command(); cmd == cmdCreate && !strings.Contains(m.ArgumentText, arg) && !strings.Contains(m.Text, arg) {
				t.Fatalf("a create command's name %q is not from the message", arg)
			}
			actor := "users/1"
			members, texts := m.mentions(actor)
			seen := map[string]bool{}
			for _, u := range members {
				if !isUserID(u) || u == actor || seen[u] {
					t.Fatalf("mention %q: not a user, the actor, or repeated", u)
				}
				seen[u] = true
			}
			for _, x := range texts {
				if !strings.HasPrefix(x, "@") {
					t.Fatalf("mention text %q", x)
				}
			}
			if id := chatRequestID(m.Name); !requestIDPattern().MatchString(id) {
				t.Fatalf("requestId %q would be refused", id)
			}
		}
		reply := s.chatEvent(quietContext(), &ev)
		if _, err := json.Marshal(reply.answer(format)); err != nil {
			t.Fatalf("the answer does not encode: %v", err)
		}
		if strings.ContainsAny(reply.Text, "<>") {
			t.Fatalf("the answer carries < or >: %q", reply.Text)
		}
		if ar := reply.ActionResponse; ar != nil {
			raw, ok := strings.CutPrefix(ar.URL, start)
			if ar.Type != "REQUEST_CONFIG" || !ok {
				t.Fatalf("configuration prompt %+v", ar)
			}
			ticket, err := url.QueryUnescape(raw)
			if err != nil {
				t.Fatal(err)
			}
			tk, err := s.openTicket(ticket)
			if err != nil {
				t.Fatalf("the prompt's ticket does not open: %v", err)
			}
			actor := ev.User
			if actor == nil && ev.Message != nil {
				actor = ev.Message.Sender
			}
			if actor == nil || tk.User != actor.Name {
				t.Fatalf("ticket for %q, want the actor", tk.User)
			}
			if want := ev.ConfigCompleteRedirectURL; tk.Redirect != want && (len(want) <= maxChatRedirect || tk.Redirect != "") {
				t.Fatalf("ticket redirect %q for configCompleteRedirectUrl %q", tk.Redirect, want)
			}
		}
	})
}
