package chatauth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
	"google.golang.org/api/chat/v1"
)

// signBody returns the X-Signature header for body at time t.
func signBody(secret string, t time.Time, body []byte) string {
	ts := fmt.Sprint(t.Unix())
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// post sends body to a function with the given headers and returns the
// status and body.
func (e *testEnv) post(function, body string, header map[string]string) (int, string, http.Header) {
	e.t.Helper()
	return e.send(http.MethodPost, "/"+function, "application/json", body, header)
}

// send makes one request to the Functions Framework with the given method,
// path, Content-Type and headers (an empty value removes a header), and
// returns the status, the body and the headers of the answer. Header
// values are recorded as secrets for the log-leak check.
func (e *testEnv) send(method, path, contentType, body string, header map[string]string) (int, string, http.Header) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
			sensitive.add(v, strings.TrimPrefix(v, "Bearer "))
		}
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// signed posts body with a valid HMAC signature.
func (e *testEnv) signed(function, body string) (int, string) {
	e.t.Helper()
	code, resp, _ := e.post(function, body, map[string]string{"X-Signature": signBody(testWebhookSecret, e.clock.Now(), []byte(body))})
	return code, resp
}

// connect stores alice's consent through the real flow.
func (e *testEnv) connect() *tokenRecord {
	e.t.Helper()
	if resp, body := e.consent(newBrowser(e.t), aliceEmail); resp.StatusCode != 200 {
		e.t.Fatalf("consent: %d %s", resp.StatusCode, body)
	}
	return e.storedToken(aliceSub)
}

type spaceJSON struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName"`
	SpaceType   string `json:"spaceType"`
	SpaceURI    string `json:"spaceUri"`
}

func decodeSpace(t *testing.T, body string) spaceJSON {
	t.Helper()
	var s spaceJSON
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Name == "" {
		t.Fatalf("not a Space: %v: %s", err, body)
	}
	return s
}

// TestCreateSpace: consent, then a signed CreateSpace creates the space in
// Chat with the user's own access token, on every store.
func TestCreateSpace(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			rec := e.connect()
			code, body := e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"Incident 4711","description":"disk full","requestId":"form-response-8f2c"}`)
			if code != 200 {
				t.Fatalf("got %d, want 200: %s", code, body)
			}
			got := decodeSpace(t, body)
			if got.DisplayName != "Incident 4711" || got.SpaceType != "SPACE" || got.SpaceURI == "" {
				t.Errorf("answer: got %+v", got)
			}
			sp, ok := e.google.SpaceByName(got.Name)
			if !ok {
				t.Fatalf("the space %s does not exist in Chat", got.Name)
			}
			if sp.Creator != aliceSub || sp.AccessToken != rec.AccessToken || sp.RequestID != "form-response-8f2c" || sp.Description != "disk full" {
				t.Errorf("created as %s with the stored token %v, requestId %q, description %q; want alice, true, form-response-8f2c, disk full",
					sp.Creator, sp.AccessToken == rec.AccessToken, sp.RequestID, sp.Description)
			}
			if got := e.google.TotalRefreshCalls(); got != 0 {
				t.Errorf("a valid access token was refreshed %d times", got)
			}
			// By user id as well as by email.
			if code, body := e.signed("CreateSpace", `{"user":"users/`+aliceSub+`","displayName":"By id"}`); code != 200 {
				t.Errorf("by users/{id}: got %d: %s", code, body)
			}
		})
	}
}

// TestCreateSpaceWithMembers uses spaces.setup.
func TestCreateSpaceWithMembers(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.connect()
	for _, tc := range []struct{ body, spaceType string }{
		{`{"user":"alice@example.com","displayName":"Launch","members":["users/123","Bob@Example.com"]}`, "SPACE"},
		{`{"user":"alice@example.com","spaceType":"GROUP_CHAT","members":["users/123","bob@example.com"]}`, "GROUP_CHAT"},
		{`{"user":"alice@example.com","spaceType":"DIRECT_MESSAGE","members":["bob@example.com"]}`, "DIRECT_MESSAGE"},
	} {
		code, body := e.signed("CreateSpace", tc.body)
		if code != 200 {
			t.Fatalf("%s: got %d: %s", tc.spaceType, code, body)
		}
		sp, _ := e.google.SpaceByName(decodeSpace(t, body).Name)
		if sp.Route != "spaces.setup" || sp.SpaceType != tc.spaceType || len(sp.Members) == 0 {
			t.Errorf("%s: route %q type %q members %q; want spaces.setup with members", tc.spaceType, sp.Route, sp.SpaceType, sp.Members)
		}
	}
	if sp := e.google.Spaces()[0]; strings.Join(sp.Members, ",") != "users/123,users/bob@example.com" {
		t.Errorf("members: got %q, want users/123 and users/bob@example.com", sp.Members)
	}
	if got := e.google.ChatCalls("spaces.create"); got != 0 {
		t.Errorf("spaces.create called %d times for requests with members", got)
	}
}

// TestCreateSpaceIDTokenCaller: a Google ID token caller acting as itself
// succeeds; acting for someone else is 403 unless trusted.
func TestCreateSpaceIDTokenCaller(t *testing.T) {
	t.Parallel()
	const audience = "https://chatauth.example/CreateSpace"
	e := newTestEnv(t, storeLocal, func(c *Config) {
		c.AllowedAudiences = []string{audience}
		c.TrustedCallers = []string{"scheduler@p.iam.gserviceaccount.com"}
	})
	g := e.google
	e.connect()

	token := func(email string, edit func(map[string]any)) string {
		c := map[string]any{
			"iss": "https://accounts.google.com", "aud": audience, "sub": aliceSub, "email": email,
			"email_verified": true, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
		}
		if edit != nil {
			edit(c)
		}
		return "Bearer " + g.MintIDToken(c)
	}
	otherAccount := func(c map[string]any) { c["sub"] = "999" }
	body := `{"user":"alice@example.com","displayName":"From Apps Script"}`
	for _, tc := range []struct {
		name   string
		auth   string
		code   int
		status string
	}{
		{"self", token("Alice@example.com", nil), 200, ""},
		// A token for alice@ from another account is not the account that
		// consented as alice@: it is asked to consent itself.
		{"same email, another account", token(aliceEmail, otherAccount), 403, statusAuthorizationRequired},
		{"same email, another account, as users/{stored id}", token(aliceEmail, otherAccount), 403, statusPermissionDenied},
		{"trusted for another", token("scheduler@p.iam.gserviceaccount.com", nil), 200, ""},
		{"untrusted for another", token("mallory@example.com", nil), 403, statusPermissionDenied},
		{"wrong audience", token(aliceEmail, func(c map[string]any) { c["aud"] = "https://other.example" }), 401, statusUnauthenticated},
		{"expired", token(aliceEmail, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), 401, statusUnauthenticated},
		{"email not verified", token(aliceEmail, func(c map[string]any) { c["email_verified"] = false }), 401, statusUnauthenticated},
		{"wrong issuer", token(aliceEmail, func(c map[string]any) { c["iss"] = "https://evil.example" }), 401, statusUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := g.TotalChatCalls()
			b := body
			if strings.Contains(tc.name, "users/{stored id}") {
				b = strings.Replace(b, aliceEmail, "users/"+aliceSub, 1)
			}
			code, resp, _ := e.post("CreateSpace", strings.Replace(b, "From", tc.name, 1), map[string]string{"Authorization": tc.auth})
			if code != tc.code {
				t.Fatalf("got %d, want %d: %s", code, tc.code, resp)
			}
			if tc.code != 200 {
				checkJSONBody(t, resp, tc.code, tc.status)
				if g.TotalChatCalls() != before {
					t.Error("the Chat API was called for a refused caller")
				}
			}
		})
	}
}

// TestCreateSpaceUnauthenticated: every bad credential is 401 and the Chat
// API is never called, nor the user's token read.
func TestCreateSpaceUnauthenticated(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.connect()
	body := `{"user":"alice@example.com","displayName":"Nope"}`
	// The server's clock stands still: a signature's timestamp is whole
	// seconds, so a second going by between signing and checking would
	// move a row across the window's edge.
	e.clock.Freeze(t)
	now := e.clock.Now()
	for _, tc := range []struct {
		name, sig string
		body      string
		code      int
	}{
		{"no credentials", "", body, 401},
		{"malformed", "t=abc,v1=zz", body, 401},
		{"wrong secret", signBody("another-secret-0123456789abcdef", now, []byte(body)), body, 401},
		{"body changed by one byte", signBody(testWebhookSecret, now, []byte(body)), strings.Replace(body, "Nope", "Nopf", 1), 401},
		{"re-serialized JSON", signBody(testWebhookSecret, now, []byte(body)), `{"user": "alice@example.com", "displayName": "Nope"}`, 401},
		{"301 s old", signBody(testWebhookSecret, now.Add(-301*time.Second), []byte(body)), body, 401},
		{"301 s ahead", signBody(testWebhookSecret, now.Add(301*time.Second), []byte(body)), body, 401},
		{"299 s old", signBody(testWebhookSecret, now.Add(-299*time.Second), []byte(strings.Replace(body, "Nope", "Old", 1))), strings.Replace(body, "Nope", "Old", 1), 200},
		{"299 s ahead", signBody(testWebhookSecret, now.Add(299*time.Second), []byte(strings.Replace(body, "Nope", "Ahead", 1))), strings.Replace(body, "Nope", "Ahead", 1), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.google.TotalChatCalls()
			code, resp, _ := e.post("CreateSpace", tc.body, map[string]string{"X-Signature": tc.sig})
			if code != tc.code {
				t.Fatalf("got %d, want %d: %s", code, tc.code, resp)
			}
			if tc.code == 401 {
				checkJSONBody(t, resp, 401, statusUnauthenticated)
				if e.google.TotalChatCalls() != before {
					t.Error("the Chat API was called for an unauthenticated caller")
				}
			}
		})
	}
}

// TestCreateSpaceBadRequests: each malformed request gets its status and
// the JSON error naming the problem.
func TestCreateSpaceBadRequests(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.connect()
	sign := func(b string) map[string]string {
		return map[string]string{"X-Signature": signBody(testWebhookSecret, e.clock.Now(), []byte(b))}
	}
	longName := strings.Repeat("x", 129)
	many := `"users/1"` + strings.Repeat(`,"users/1"`, 49)
	for _, tc := range []struct {
		name, method, contentType, body string
		code                            int
		status, inMessage               string
	}{
		{"GET", http.MethodGet, "application/json", "", 405, statusMethodNotAllowed, "POST"},
		{"form body", http.MethodPost, "application/x-www-form-urlencoded", "user=a", 415, statusUnsupportedMediaType, "application/json"},
		{"too large", http.MethodPost, "application/json", `{"user":"` + strings.Repeat("a", 70<<10) + `"}`, 413, statusPayloadTooLarge, "KiB"},
		{"not JSON", http.MethodPost, "application/json", `user=alice`, 400, statusInvalidArgument, "JSON"},
		{"unknown field", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x","colour":"red"}`, 400, statusInvalidArgument, "colour"},
		{"duplicate key", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x","user":"bob@example.com"}`, 400, statusInvalidArgument, `"user" appears more than once`},
		{"wrong type", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":7}`, 400, statusInvalidArgument, "displayName"},
		{"no user", http.MethodPost, "application/json", `{"displayName":"x"}`, 400, statusInvalidArgument, `"user" is required`},
		{"bad user", http.MethodPost, "application/json", `{"user":"alice","displayName":"x"}`, 400, statusInvalidArgument, `"user" must be`},
		{"no name", http.MethodPost, "application/json", `{"user":"alice@example.com"}`, 400, statusInvalidArgument, `"displayName" is required`},
		{"long name", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"` + longName + `"}`, 400, statusInvalidArgument, "128"},
		{"control character", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"a\u0007b"}`, 400, statusInvalidArgument, "control"},
		{"bidi override", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"invoice\u202egpj.exe"}`, 400, statusInvalidArgument, "U+202E (RIGHT-TO-LEFT OVERRIDE), a character that changes the direction"},
		{"bidi isolate in description", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x","description":"a\u2066b"}`, 400, statusInvalidArgument, `"description" contains U+2066 (LEFT-TO-RIGHT ISOLATE)`},
		{"bad type", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x","spaceType":"ROOM"}`, 400, statusInvalidArgument, "spaceType"},
		{"DM without member", http.MethodPost, "application/json", `{"user":"alice@example.com","spaceType":"DIRECT_MESSAGE"}`, 400, statusInvalidArgument, "exactly 1"},
		{"group of one", http.MethodPost, "application/json", `{"user":"alice@example.com","spaceType":"GROUP_CHAT","members":["users/1"]}`, 400, statusInvalidArgument, "at least 2"},
		{"50 members", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x","members":[` + many + `]}`, 400, statusInvalidArgument, "49"},
		{"bad member", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x","members":["bob"]}`, 400, statusInvalidArgument, `"members"[0]`},
		{"long description", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x","description":"` + strings.Repeat("d", 4097) + `"}`, 400, statusInvalidArgument, "4096"},
		{"bad requestId", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x","requestId":"a b"}`, 400, statusInvalidArgument, "requestId"},
		{"invalid UTF-8", http.MethodPost, "application/json", "{\"user\":\"alice@example.com\",\"displayName\":\"\xff\"}", 400, statusInvalidArgument, "UTF-8"},
		{"trailing data", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x"} {}`, 400, statusInvalidArgument, "after the JSON"},
		{"a stray closing brace", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x"}}`, 400, statusInvalidArgument, "after the JSON"},
		{"a stray closing bracket", http.MethodPost, "application/json", `{"user":"alice@example.com","displayName":"x"} ]`, 400, statusInvalidArgument, "after the JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b, _ := e.send(tc.method, "/CreateSpace", tc.contentType, tc.body, sign(tc.body))
			if code != tc.code {
				t.Fatalf("got %d, want %d: %s", code, tc.code, b)
			}
			checkJSONBody(t, string(b), tc.code, tc.status)
			if !strings.Contains(string(b), tc.inMessage) && !strings.Contains(string(b), strings.ReplaceAll(tc.inMessage, `"`, `\"`)) {
				t.Errorf("message does not mention %q: %s", tc.inMessage, b)
			}
		})
	}
	if got := e.google.TotalChatCalls(); got != 0 {
		t.Errorf("the Chat API was called %d times for bad requests", got)
	}
}

// TestCreateSpaceNotAuthorized: an unknown user gets AUTHORIZATION_REQUIRED
// with an authorizeUrl that starts the consent for that user.
func TestCreateSpaceNotAuthorized(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	code, body := e.signed("CreateSpace", `{"user":"bob@example.com","displayName":"x"}`)
	checkJSONBody(t, body, 403, statusAuthorizationRequired)
	var env struct {
		Error struct{ AuthorizeURL string } `json:"error"`
	}
	json.Unmarshal([]byte(body), &env)
	if code != 403 || env.Error.AuthorizeURL != e.base+"/OAuthStart?login_hint=bob%40example.com" {
		t.Fatalf("got %d with authorizeUrl %q", code, env.Error.AuthorizeURL)
	}
	resp, _ := newBrowser(t).get(env.Error.AuthorizeURL)
	if u := location(t, resp); u.Query().Get("login_hint") != "bob@example.com" {
		t.Errorf("authorizeUrl led to %s, want Google's consent with login_hint bob@example.com", u)
	}
}

// TestRefreshPersisted: an expired access token is refreshed once, the new
// token is stored, and a restarted server uses it without refreshing.
func TestRefreshPersisted(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			old := e.connect()
			e.clock.Advance(2 * time.Hour) // the stored access token is now expired
			e.google.SetRotateRefreshTokens(true)
			if code, body := e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"After expiry"}`); code != 200 {
				t.Fatalf("got %d: %s", code, body)
			}
			if got := e.google.RefreshCalls(aliceSub); got != 1 {
				t.Fatalf("refreshes: got %d, want 1", got)
			}
			rec := e.storedToken(aliceSub)
			if rec.AccessToken == old.AccessToken || !rec.Expiry.After(e.clock.Now()) || rec.LastRefreshAt.IsZero() {
				t.Errorf("the refreshed token was not saved: %+v", rec)
			}
			if rec.RefreshToken == old.RefreshToken {
				t.Error("a rotated refresh token was not saved")
			}
			sp := e.google.Spaces()[0]
			if sp.AccessToken != rec.AccessToken {
				t.Error("the space was not created with the refreshed token")
			}
			e.restart() // a restarted instance
			if code, body := e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"After restart"}`); code != 200 {
				t.Fatalf("after restart: got %d: %s", code, body)
			}
			if got := e.google.RefreshCalls(aliceSub); got != 1 {
				t.Errorf("after restart: refreshes %d, want still 1", got)
			}
		})
	}
}

// TestConcurrentRefresh: 20 concurrent requests with an expired token
// cause exactly one refresh and all succeed.
func TestConcurrentRefresh(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			e.connect()
			e.clock.Advance(2 * time.Hour)
			e.google.SetTokenLatency(50 * time.Millisecond) // keep the refresh in flight while others arrive
			var wg sync.WaitGroup
			codes := make([]int, 20)
			for i := range codes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					codes[i], _ = e.signed("CreateSpace", fmt.Sprintf(`{"user":"alice@example.com","displayName":"Room %d"}`, i))
				}()
			}
			wg.Wait()
			for i, c := range codes {
				if c != 200 {
					t.Errorf("request %d: got %d, want 200", i, c)
				}
			}
			if got := e.google.RefreshCalls(aliceSub); got != 1 {
				t.Errorf("refreshes: got %d, want exactly 1", got)
			}
			if got := len(e.google.Spaces()); got != 20 {
				t.Errorf("spaces: got %d, want 20", got)
			}
		})
	}
}

// TestInvalidGrant: a revoked consent marks the record needs_reauth, asks
// for consent, is not retried, and a re-consent restores service.
func TestInvalidGrant(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			e.connect()
			e.google.RevokeUser(aliceSub)
			e.clock.Advance(2 * time.Hour)
			code, body := e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"Revoked"}`)
			checkJSONBody(t, body, 403, statusAuthorizationRequired)
			if code != 403 || !strings.Contains(body, "/OAuthStart?login_hint=alice%40example.com") {
				t.Fatalf("got %d: %s", code, body)
			}
			rec := e.storedToken(aliceSub)
			if rec.Status != tokenNeedsReauth || !strings.Contains(rec.LastError, "invalid_grant") || rec.RefreshToken == "" {
				t.Errorf("record after invalid_grant: status %q lastError %q refresh kept %v", rec.Status, rec.LastError, rec.RefreshToken != "")
			}
			refreshes := e.google.RefreshCalls(aliceSub)
			if code, _ := e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"Again"}`); code != 403 {
				t.Errorf("second call: got %d, want 403", code)
			}
			if got := e.google.RefreshCalls(aliceSub); got != refreshes {
				t.Errorf("a needs_reauth record was refreshed again (%d → %d)", refreshes, got)
			}
			e.connect()
			if code, body := e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"Restored"}`); code != 200 {
				t.Errorf("after re-consent: got %d: %s", code, body)
			}
		})
	}
}

// TestChatFaults covers retries, idempotency and the mapping of Chat's
// answers.
func TestChatFaults(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.connect()
	req := func(name, requestID string) (int, string) {
		return e.signed("CreateSpace", fmt.Sprintf(`{"user":"alice@example.com","displayName":%q,"requestId":%q}`, name, requestID))
	}

	t.Run("same requestId twice", func(t *testing.T) {
		_, a := req("Idem", "req-1")
		_, b := req("Idem", "req-1")
		if decodeSpace(t, a).Name != decodeSpace(t, b).Name {
			t.Errorf("two spaces for one requestId: %s / %s", a, b)
		}
	})
	t.Run("503 503 200", func(t *testing.T) {
		before := e.google.ChatCalls("spaces.create")
		e.google.InjectChatFaults(fakegoogle.ChatFault{Status: 503}, fakegoogle.ChatFault{Status: 503})
		code, body := req("Flaky", "req-2")
		if code != 200 {
			t.Fatalf("got %d: %s", code, body)
		}
		if got := e.google.ChatCalls("spaces.create") - before; got != 3 {
			t.Errorf("Chat calls: got %d, want 3", got)
		}
		n := 0
		for _, sp := range e.google.Spaces() {
			if sp.RequestID == "req-2" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("spaces with requestId req-2: got %d, want 1", n)
		}
	})
	t.Run("429 Retry-After honoured", func(t *testing.T) {
		e.google.InjectChatFaults(fakegoogle.ChatFault{Status: 429, RetryAfter: "1"})
		start := time.Now()
		if code, body := req("Busy", "req-3"); code != 200 {
			t.Fatalf("got %d: %s", code, body)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Errorf("retried after %v, before the 1 s Retry-After", waited)
		}
	})
	t.Run("409", func(t *testing.T) {
		req("Taken", "req-4")
		code, body := req("Taken", "req-5")
		checkJSONBody(t, body, 409, statusAlreadyExists)
		if code != 409 {
			t.Errorf("got %d", code)
		}
	})
	t.Run("requestId of another user", func(t *testing.T) {
		bob := e.google.AddUser(fakegoogle.User{Email: "bob@example.com", EmailVerified: true})
		if resp, body := e.consent(newBrowser(t), bob.Email); resp.StatusCode != 200 {
			t.Fatalf("bob's consent: %d %s", resp.StatusCode, body)
		}
		if code, body := req("Alice's", "req-shared"); code != 200 {
			t.Fatalf("alice: got %d: %s", code, body)
		}
		for _, body := range []string{
			`{"user":"bob@example.com","displayName":"Bob's","requestId":"req-shared"}`,
			// A name that is free: the conflict is the requestId's.
			`{"user":"bob@example.com","displayName":"Free name 4711","requestId":"req-shared"}`,
			`{"user":"bob@example.com","spaceType":"GROUP_CHAT","members":["users/1","users/2"],"requestId":"req-shared"}`,
		} {
			code, got := e.signed("CreateSpace", body)
			checkJSONBody(t, got, 409, statusAlreadyExists)
			if code != 409 || !strings.Contains(got, "requestId was already used by another user") || strings.Contains(got, "displayName") {
				t.Errorf("%s: got %d: %s; want 409 saying the requestId is another user's", body, code, got)
			}
		}
		// Should Chat answer this with a 400, it reads the same.
		e.google.InjectChatFaults(fakegoogle.ChatFault{Status: 400, Message: "Request ID req-x was already used by a different user."})
		code, got := req("Four hundred", "req-x")
		if code != 409 || !strings.Contains(got, "requestId was already used by another user") {
			t.Errorf("a 400 naming the request ID: got %d: %s", code, got)
		}
		// A taken name is still a taken name.
		code, got = req("Alice's", "req-other")
		if code != 409 || !strings.Contains(got, "choose another displayName") {
			t.Errorf("a taken name: got %d: %s", code, got)
		}
	})
	t.Run("403 keeps the token", func(t *testing.T) {
		e.google.InjectChatFaults(fakegoogle.ChatFault{Status: 403, Message: "The caller does not have permission"})
		code, body := req("Forbidden", "req-6")
		checkJSONBody(t, body, 403, statusPermissionDenied)
		if rec := e.storedToken(aliceSub); code != 403 || rec.Status != tokenActive {
			t.Errorf("got %d, record status %q; want 403 and the token kept active", code, rec.Status)
		}
	})
	t.Run("Chat app not found", func(t *testing.T) {
		e.google.SetChatAppConfigured(false)
		defer e.google.SetChatAppConfigured(true)
		code, body := req("No app", "req-7")
		checkJSONBody(t, body, 502, statusUpstreamError)
		if code != 502 || !strings.Contains(body, "configure a Chat app") {
			t.Errorf("got %d: %s", code, body)
		}
	})
	t.Run("persistent 500", func(t *testing.T) {
		e.srv.chatDeadline = 2 * time.Second
		defer func() { e.srv.chatDeadline = 30 * time.Second }()
		faults := make([]fakegoogle.ChatFault, 50)
		for i := range faults {
			faults[i] = fakegoogle.ChatFault{Status: 500}
		}
		e.google.InjectChatFaults(faults...)
		defer e.google.ClearChatFaults()
		code, body := req("Down", "req-8")
		checkJSONBody(t, body, 502, statusUpstreamError)
		if code != 502 {
			t.Errorf("got %d", code)
		}
	})
	t.Run("500, then the retry hangs", func(t *testing.T) {
		// The deadline cuts the retry, wherever it falls: Chat's 500 is
		// the answer, not a 504.
		e.srv.chatDeadline = 2 * time.Second
		defer func() { e.srv.chatDeadline = 30 * time.Second }()
		e.google.InjectChatFaults(fakegoogle.ChatFault{Status: 500}, fakegoogle.ChatFault{Latency: time.Hour})
		defer e.google.ClearChatFaults()
		code, body := req("Down then slow", "req-10")
		checkJSONBody(t, body, 502, statusUpstreamError)
		if code != 502 {
			t.Errorf("got %d", code)
		}
	})
	t.Run("hanging Chat API", func(t *testing.T) {
		e.srv.chatDeadline = time.Second
		defer func() { e.srv.chatDeadline = 30 * time.Second }()
		e.google.SetChatLatency(5 * time.Second)
		defer e.google.SetChatLatency(0)
		code, body := req("Slow", "req-9")
		checkJSONBody(t, body, 504, statusDeadlineExceeded)
		if code != 504 {
			t.Errorf("got %d", code)
		}
	})
}

// BenchmarkCreateSpaceWarm measures the warm path in process: a signed
// request for a user whose access token is valid, against the fake Chat
// API on loopback and the embedded store.
func BenchmarkCreateSpaceWarm(b *testing.B) {
	g, err := fakegoogle.New(fakegoogle.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	dir := b.TempDir()
	writeFile(b, dir+"/client.json", g.ClientJSON("web"))
	writeFile(b, dir+"/webhook", []byte(testWebhookSecret))
	writeFile(b, dir+"/keyset.json", testKeyset(b))
	cfg := Config{ClientSecrets: dir + "/client.json", WebhookSecrets: dir + "/webhook", TokenKeyset: dir + "/keyset.json", RedirectURL: "http://localhost/OAuthCallback",
		PublicURL: "http://localhost", Store: storeLocal, DataDir: dir + "/data", ChatEndpoint: g.ChatEndpoint()}
	s, err := newServer(context.Background(), cfg, serverOptions{logger: newLogger(io.Discard)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.close()
	access, refresh := g.IssueTokens(aliceSub, scopeChatCreate)
	rec := &tokenRecord{Sub: aliceSub, Email: aliceEmail, AccessToken: access, RefreshToken: refresh,
		Expiry: time.Now().Add(time.Hour), Status: tokenActive, Scopes: []string{scopeChatCreate}, ConsentedAt: time.Now().Add(-time.Hour)}
	s.store.putConsent(context.Background(), aliceSub, func(*tokenRecord) (*tokenRecord, error) { return rec, nil })
	inst := &instance{log: s.log}
	inst.srv.Store(s)
	h := inst.handler(function{"CreateSpace", (*server).handleCreateSpace, false})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		body := []byte(fmt.Sprintf(`{"user":"alice@example.com","displayName":"Bench %d"}`, i))
		req := httptest.NewRequest(http.MethodPost, "/CreateSpace", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Signature", signBody(testWebhookSecret, time.Now(), body))
		w := httptest.NewRecorder()
		h(w, req)
		if w.Code != 200 {
			b.Fatalf("got %d: %s", w.Code, w.Body)
		}
	}
}

// TestDisplayNameCharacters: names that display as something else, or
// hide characters, are refused with the field and the code point named;
// emoji sequences and other scripts are not.
func TestDisplayNameCharacters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		want string // "" when accepted; else what the message must say
	}{
		{"Incident 4711", ""},
		{"Équipe \U0001f9d1\u200d\U0001f4bb (ZWJ)", ""},
		{"\U0001f469\U0001f3fd\u200d\U0001f4bb and \U0001f3f3\ufe0f\u200d\U0001f308 and \U0001f468\u200d\U0001f469\u200d\U0001f467", ""},
		{"\u2764\ufe0f 1\ufe0f\u20e3", ""},
		{"事故対応 4711", ""},
		{"שלום עולם", ""},
		{"مرحبا بالعالم", ""},
		{"non\u00a0breaking", ""},
		{"invoice\u202egpj.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE), a character that changes the direction"},
		{"a\u2067b\u2069", "U+2067 (RIGHT-TO-LEFT ISOLATE), a character that changes the direction"},
		{"admin\u200e", "U+200E (LEFT-TO-RIGHT MARK), a character that changes the direction"},
		{"\u200fadmin", "U+200F (RIGHT-TO-LEFT MARK)"},
		{"a\u061cb", "U+061C (ARABIC LETTER MARK)"},
		{"ad\u200bmin", "U+200B (ZERO WIDTH SPACE), an invisible character"},
		{"ad\u200dmin", "U+200D (ZERO WIDTH JOINER), an invisible character"},
		{"\u200d\U0001f4bb", "U+200D (ZERO WIDTH JOINER)"},
		{"\U0001f4bb\u200d", "U+200D (ZERO WIDTH JOINER)"},
		{"\U0001f4bb\u200da", "U+200D (ZERO WIDTH JOINER)"},
		{"ad\u200cmin", "U+200C (ZERO WIDTH NON-JOINER)"},
		{"ad\u2060min", "U+2060 (WORD JOINER)"},
		{"\ufeffadmin", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"},
		{"x\u2062y", "U+2062 (INVISIBLE TIMES)"},
		{"x\u00ady", "U+00AD (SOFT HYPHEN)"},
		{"tag\U000e0041\U000e0042", "U+E0041 (TAG LATIN CAPITAL LETTER A)"},
		{"hangul\u3164filler", "U+3164 (HANGUL FILLER), an invisible character"},
		{"cg\u034fj", "U+034F (COMBINING GRAPHEME JOINER)"},
		{"\ufe0fstart", "U+FE0F (VARIATION SELECTOR-16)"},
		{"run\ufe00\ufe01", "U+FE01 (VARIATION SELECTOR-2)"},
		{"space \U000e0100", "U+E0100 (VARIATION SELECTOR-17)"},
		{"line\u2028sep", "U+2028 (LINE SEPARATOR), a line or paragraph separator"},
		{"para\u2029sep", "U+2029 (PARAGRAPH SEPARATOR)"},
		{"tab\tinside", "U+0009, a control character"},
		{"new\nline", "U+000A, a control character"},
		{"escape \u001b[31mred", "U+001B, a control character"},
		{"next line \u0085 inside", "U+0085, a control character"},
		{"nul\u0000", "U+0000, a control character"},
	} {
		q := createSpaceRequest{User: aliceEmail, DisplayName: tc.name}
		err := q.validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q: got %v, want accepted", tc.name, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Status != statusInvalidArgument {
			t.Errorf("%q: got %v, want INVALID_ARGUMENT", tc.name, err)
			continue
		}
		if !strings.HasPrefix(e.Message, `"displayName" contains `) || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%q: got %q, want it to name the field and say %q", tc.name, e.Message, tc.want)
		}
	}
}

// TestDescriptionCharacters: a description keeps its line breaks and tabs
// and nothing else that does not show.
func TestDescriptionCharacters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		want string
	}{
		{"disk full\non db-3\r\n\tsee runbook", ""},
		{"\U0001f9d1\u200d\U0001f4bb on call", ""},
		{"see\u2028below", `"description" contains U+2028 (LINE SEPARATOR), a line or paragraph separator`},
		{"see\u2029below", "U+2029 (PARAGRAPH SEPARATOR)"},
		{"bell\a", `"description" contains U+0007, a control character (only line breaks and tabs are allowed)`},
		{"vt\v", "U+000B, a control character"},
		{"ok\n\u202eevil", "U+202E (RIGHT-TO-LEFT OVERRIDE)"},
		{"hidden\u200bword", "U+200B (ZERO WIDTH SPACE), an invisible character"},
		{"bom\ufeff", "U+FEFF"},
	} {
		q := createSpaceRequest{User: aliceEmail, DisplayName: "Incident", Description: tc.desc}
		err := q.validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q: got %v, want accepted", tc.desc, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Status != statusInvalidArgument || !strings.HasPrefix(e.Message, `"description" contains `) || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%q: got %v, want INVALID_ARGUMENT naming the field and saying %q", tc.desc, err, tc.want)
		}
	}
}

// TestChatNamesItsOwnSpaces: a GROUP_CHAT or DIRECT_MESSAGE takes no
// displayName, refused here naming the field, before any round trip.
func TestChatNamesItsOwnSpaces(t *testing.T) {
	t.Parallel()
	for _, q := range []createSpaceRequest{
		{User: aliceEmail, SpaceType: spaceTypeGroupChat, DisplayName: "Team", Members: []string{"users/1", "users/2"}},
		{User: aliceEmail, SpaceType: spaceTypeGroupChat, DisplayName: "Team"}, // the displayName is named first
		{User: aliceEmail, SpaceType: spaceTypeDM, DisplayName: "Bob", Members: []string{"users/1"}},
	} {
		err := q.validate()
		var e *Error
		if !errors.As(err, &e) || e.Status != statusInvalidArgument || !strings.Contains(e.Message, `has no "displayName"`) || !strings.Contains(e.Message, q.SpaceType) {
			t.Errorf("%s with displayName: got %v, want INVALID_ARGUMENT naming displayName and %s", q.SpaceType, err, q.SpaceType)
		}
	}
	ok := createSpaceRequest{User: aliceEmail, SpaceType: spaceTypeGroupChat, Members: []string{"users/1", "users/2"}}
	if err := ok.validate(); err != nil {
		t.Errorf("GROUP_CHAT without displayName: %v", err)
	}
}

// fullSpace has every kind of field a Space answer can carry, the nested
// messages and characters encoding/json escapes among them.
func fullSpace() *chat.Space {
	return &chat.Space{
		Name: "spaces/AAAA", DisplayName: `Incident <4711> & "friends" é 🙂`, SpaceType: "SPACE", Type: "ROOM",
		SpaceUri: "https://chat.google.com/room/AAAA?cls=11", CreateTime: "2026-11-26T07:00:00Z",
		LastActiveTime: "2026-11-26T07:00:01Z", Customer: "customers/my_customer",
		SpaceThreadingState: "THREADED_MESSAGES", SpaceHistoryState: "HISTORY_ON", Threaded: true,
		ExternalUserAllowed: true, AdminInstalled: false, ImportMode: false,
		SpaceDetails:       &chat.SpaceDetails{Description: "disk\nfull", Guidelines: "be kind"},
		MembershipCount:    &chat.MembershipCount{JoinedDirectHumanUserCount: 3, JoinedGroupCount: 1},
		AccessSettings:     &chat.AccessSettings{AccessState: "PRIVATE", Audience: "audiences/default"},
		PermissionSettings: &chat.PermissionSettings{ManageMembersAndGroups: &chat.PermissionSetting{ManagersAllowed: true}},
	}
}

// TestSpaceJSON: CreateSpace answers the Space without chat.Space's
// MarshalJSON; the JSON must mean exactly what the method's does.
func TestSpaceJSON(t *testing.T) {
	t.Parallel()
	for _, sp := range []*chat.Space{fullSpace(), {Name: "spaces/B", SpaceType: "GROUP_CHAT"}, {}} {
		want, err := json.Marshal(sp)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false) // as writeJSON does
		if err := enc.Encode((*plainSpace)(sp)); err != nil {
			t.Fatal(err)
		}
		var gotV, wantV any
		if err := json.Unmarshal(buf.Bytes(), &gotV); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(want, &wantV)
		if !reflect.DeepEqual(gotV, wantV) {
			t.Errorf("got %s\nwant %s", buf.Bytes(), want)
		}
	}
}

// BenchmarkSpaceJSON: writeJSON's encoding of a Space answer, through
// chat.Space's MarshalJSON and without it.
func BenchmarkSpaceJSON(b *testing.B) {
	sp := fullSpace()
	for _, c := range []struct {
		name string
		v    any
	}{{"MarshalJSON", sp}, {"plain", (*plainSpace)(sp)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				writeJSON(httptest.NewRecorder(), http.StatusOK, c.v)
			}
		})
	}
}

func TestIsUserID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"users/1", true},
		{"users/" + strings.Repeat("9", 64), true},
		{"users/" + strings.Repeat("9", 65), false},
		{"users/", false},
		{"users/12a", false},
		{"users/-1", false},
		{"users/１２", false}, // fullwidth digits
		{"Users/1", false},
		{"users/1 ", false},
		{"1", false},
	} {
		if got := isUserID(tc.in); got != tc.want {
			t.Errorf("isUserID(%q): got %v, want %v", tc.in, got, tc.want)
		}
	}
}
