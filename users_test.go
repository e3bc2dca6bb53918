package chatauth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
	bolt "go.etcd.io/bbolt"
)

const (
	usersBobEmail = "bob@example.com"
	usersBobSub   = "100000000000000000007"
)

type usersAnswer struct {
	Users []struct {
		User        string   `json:"user"`
		Email       string   `json:"email"`
		Status      string   `json:"status"`
		Scopes      []string `json:"scopes"`
		ConnectedAt string   `json:"connectedAt"`
		RefreshedAt string   `json:"refreshedAt"`
	} `json:"users"`
	NextPageToken string `json:"nextPageToken"`
}

// decodeUsers returns the decoder of a Users answer, for use as
// decodeUsers(t)(e.signed(…)).
func decodeUsers(t *testing.T) func(code int, body string) usersAnswer {
	return func(code int, body string) usersAnswer { t.Helper(); return decodeUsersAnswer(t, code, body) }
}

func decodeUsersAnswer(t *testing.T, code int, body string) usersAnswer {
	t.Helper()
	if code != 200 {
		t.Fatalf("Users: got %d %s, want 200", code, body)
	}
	var a usersAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil || a.Users == nil {
		t.Fatalf("Users: not a listing (%v): %s", err, body)
	}
	return a
}

// names is the "user" of each entry.
func (a usersAnswer) names() []string {
	var n []string
	for _, u := range a.Users {
		n = append(n, u.User)
	}
	return n
}

// usersEnv connects alice and bob through the real flow; bob's consent
// then needs re-authorization.
func usersEnv(t *testing.T, kind string, edit ...func(*Config)) *testEnv {
	e := newTestEnv(t, kind, edit...)
	e.connect()
	e.google.AddUser(fakegoogle.User{Sub: usersBobSub, Email: usersBobEmail, EmailVerified: true})
	e.consentAs(usersBobEmail)
	err := e.srv.store.updateToken(t.Context(), usersBobSub, func(cur *tokenRecord) (*tokenRecord, error) {
		next := *cur
		next.Status, next.LastError = tokenNeedsReauth, "invalid_grant: Token has been expired or revoked."
		return &next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestUsers: a signed caller lists every consent, filtered by status or
// user, in pages; no token, ciphertext or Google error text is answered.
func TestUsers(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := usersEnv(t, kind)
			alice, bob := e.storedToken(aliceSub), e.storedToken(usersBobSub)
			code, body := e.signed("Users", `{}`)
			a := decodeUsersAnswer(t, code, body)
			if want := []string{"users/" + usersBobSub, "users/" + aliceSub}; !slices.Equal(a.names(), want) {
				t.Fatalf("users: got %q, want %q (ascending ids)", a.names(), want)
			}
			b, al := a.Users[0], a.Users[1]
			if al.Email != aliceEmail || al.Status != userConnected || !slices.Contains(al.Scopes, scopeChatCreate) ||
				al.ConnectedAt != alice.ConsentedAt.UTC().Format(time.RFC3339Nano) || a.NextPageToken != "" {
				t.Errorf("alice: got %+v (next %q), want her email, connected, her scopes, her consent time, no next page", al, a.NextPageToken)
			}
			if b.Email != usersBobEmail || b.Status != userNeedsReauth {
				t.Errorf("bob: got %+v, want needs_reauth", b)
			}
			for _, secret := range []string{alice.RefreshToken, alice.AccessToken, bob.RefreshToken, "tink1:", "invalid_grant", "expired or revoked", "refreshToken", "lastError"} {
				if strings.Contains(body, secret) {
					t.Errorf("the answer holds %.10q…", secret)
				}
			}

			for _, tc := range []struct{ body, want string }{
				{`{"status":"connected"}`, "users/" + aliceSub},
				{`{"status":"needs_reauth"}`, "users/" + usersBobSub},
				{`{"user":"Alice@Example.com"}`, "users/" + aliceSub},
				{`{"user":"users/` + usersBobSub + `"}`, "users/" + usersBobSub},
				{`{"user":"bob@example.com","status":"needs_reauth"}`, "users/" + usersBobSub},
				{`{"user":"bob@example.com","status":"connected"}`, ""},
				{`{"user":"carol@example.com"}`, ""},
				{`{"user":"users/999"}`, ""},
			} {
				got := decodeUsers(t)(e.signed("Users", tc.body))
				if want := slices.DeleteFunc([]string{tc.want}, func(s string) bool { return s == "" }); !slices.Equal(got.names(), want) {
					t.Errorf("%s: got %q, want %q", tc.body, got.names(), want)
				}
			}
			// A listing only reads.
			if after := e.storedToken(aliceSub); !after.UpdatedAt.Equal(alice.UpdatedAt) {
				t.Errorf("Users wrote alice's record: updatedAt %v, was %v", after.UpdatedAt, alice.UpdatedAt)
			}
		})
	}
}

// TestUsersPaging walks a listing of 23 consents in pages, each record
// exactly once and in order, and refuses page tokens it did not issue for
// the same query.
func TestUsersPaging(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			var want []string
			for i := range 23 {
				sub := fmt.Sprint(1000 + i*7)
				rec := sampleToken(sub, fmt.Sprintf("user%d@example.com", i))
				if i%4 == 0 {
					rec.Status = tokenNeedsReauth
				}
				if err := e.srv.store.putConsent(t.Context(), sub, func(*tokenRecord) (*tokenRecord, error) { return rec, nil }); err != nil {
					t.Fatal(err)
				}
				want = append(want, "users/"+sub)
			}
			walk := func(extra string) ([]string, []string) {
				var got, tokens []string
				next := ""
				for range 30 {
					q := `{"pageSize":5` + extra
					if next != "" {
						q += `,"pageToken":"` + next + `"`
					}
					a := decodeUsers(t)(e.signed("Users", q+"}"))
					if len(a.Users) > 5 {
						t.Fatalf("a page of %d, asked for 5", len(a.Users))
					}
					got = append(got, a.names()...)
					if next = a.NextPageToken; next == "" {
						return got, tokens
					}
					tokens = append(tokens, next)
				}
				t.Fatal("the listing does not end")
				return nil, nil
			}
			got, tokens := walk("")
			if !slices.Equal(got, want) || len(tokens) != 4 {
				t.Errorf("pages of 5: got %q with %d page tokens, want %q with 4", got, len(tokens), want)
			}
			if got, _ := walk(`,"status":"needs_reauth"`); len(got) != 6 || !slices.IsSorted(got) {
				t.Errorf("needs_reauth pages: got %q, want the 6 in order", got)
			}
			for _, sub := range []string{"1000", aliceSub} {
				if strings.Contains(strings.Join(tokens, ""), sub) {
					t.Errorf("a page token shows the id %s it continues from", sub)
				}
			}

			ct, _ := base64.RawURLEncoding.DecodeString(tokens[0])
			ct[len(ct)-1] ^= 1
			for name, q := range map[string]string{
				"another status's token": `{"status":"connected","pageToken":"` + tokens[0] + `"}`,
				"an edited token":        `{"pageToken":"` + base64.RawURLEncoding.EncodeToString(ct) + `"}`,
				"not base64":             `{"pageToken":"a+b/c=="}`,
				"made up":                `{"pageToken":"` + base64.RawURLEncoding.EncodeToString([]byte(`{"a":"1000"}`)) + `"}`,
				"too long":               `{"pageToken":"` + strings.Repeat("A", 4000) + `"}`,
				"with a user":            `{"user":"alice@example.com","pageToken":"` + tokens[0] + `"}`,
			} {
				code, body := e.signed("Users", q)
				checkJSONBody(t, body, 400, statusInvalidArgument)
				if code != 400 || !strings.Contains(body, "pageToken") {
					t.Errorf("%s: got %d %s, want 400 naming pageToken", name, code, body)
				}
			}
		})
	}
}

// TestUsersRefusals: every malformed or unauthenticated request is a JSON
// error a person can act on.
func TestUsersRefusals(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	for _, tc := range []struct {
		name, body string
		code       int
		status     string
	}{
		{"page too large", `{"pageSize":501}`, 400, statusInvalidArgument},
		{"negative page", `{"pageSize":-1}`, 400, statusInvalidArgument},
		{"page not a number", `{"pageSize":"5"}`, 400, statusInvalidArgument},
		{"stored status name", `{"status":"active"}`, 400, statusInvalidArgument},
		{"status in another case", `{"status":"Connected"}`, 400, statusInvalidArgument},
		{"bad user", `{"user":"alice"}`, 400, statusInvalidArgument},
		{"unknown field", `{"users":"all"}`, 400, statusInvalidArgument},
		{"duplicate key", `{"status":"connected","status":"needs_reauth"}`, 400, statusInvalidArgument},
		{"not an object", `[]`, 400, statusInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.signed("Users", tc.body)
			checkJSONBody(t, body, tc.code, tc.status)
			if code != tc.code {
				t.Errorf("got %d, want %d", code, tc.code)
			}
		})
	}
	t.Run("unsigned", func(t *testing.T) {
		code, body, _ := e.post("Users", `{}`, nil)
		checkJSONBody(t, body, 401, statusUnauthenticated)
		if code != 401 {
			t.Errorf("got %d", code)
		}
	})
	t.Run("GET", func(t *testing.T) {
		code, body, _ := e.send("GET", "/Users", "application/json", "", nil)
		checkJSONBody(t, body, 405, statusMethodNotAllowed)
		if code != 405 {
			t.Errorf("got %d", code)
		}
	})
}

// TestUsersIDTokenCallers: a TRUSTED_CALLERS account sees everyone; any
// other ID-token caller sees only its own account, matched by sub, even
// with another account's address.
func TestUsersIDTokenCallers(t *testing.T) {
	t.Parallel()
	const audience = "https://chatauth.example/Users"
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := usersEnv(t, kind, func(c *Config) {
				c.AllowedAudiences = []string{audience}
				c.TrustedCallers = []string{"ops@p.iam.gserviceaccount.com"}
			})
			as := func(sub, email, body string) (int, string) {
				now := e.clock.Now()
				tok := e.google.MintIDToken(map[string]any{
					"iss": fakegoogle.GoogleIssuer, "aud": audience, "sub": sub, "email": email,
					"email_verified": true, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
				})
				code, resp, _ := e.post("Users", body, map[string]string{"Authorization": "Bearer " + tok})
				return code, resp
			}
			everyone := []string{"users/" + usersBobSub, "users/" + aliceSub}
			for _, tc := range []struct {
				name, sub, email, body string
				want                   []string
			}{
				{"trusted", "55", "ops@p.iam.gserviceaccount.com", `{}`, everyone},
				{"trusted, one user", "55", "ops@p.iam.gserviceaccount.com", `{"user":"bob@example.com"}`, everyone[:1]},
				{"alice, no user", aliceSub, aliceEmail, `{}`, everyone[1:]},
				{"alice by address", aliceSub, aliceEmail, `{"user":"alice@example.com"}`, everyone[1:]},
				{"alice, another status", aliceSub, aliceEmail, `{"status":"needs_reauth"}`, nil},
				{"bob sees himself needing re-authorization", usersBobSub, usersBobEmail, `{"status":"needs_reauth"}`, everyone[:1]},
				{"another account with alice's address", "777", aliceEmail, `{}`, nil},
				{"another account naming alice's address", "777", aliceEmail, `{"user":"alice@example.com"}`, nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					got := decodeUsers(t)(as(tc.sub, tc.email, tc.body))
					if !slices.Equal(got.names(), tc.want) {
						t.Errorf("got %q, want %q", got.names(), tc.want)
					}
				})
			}
			for name, body := range map[string]string{
				"alice for bob":          `{"user":"bob@example.com"}`,
				"alice for bob's id":     `{"user":"users/` + usersBobSub + `"}`,
				"alice pages everything": `{"pageToken":"x"}`,
			} {
				code, resp := as(aliceSub, aliceEmail, body)
				if code != 403 && code != 400 {
					t.Errorf("%s: got %d %s, want a refusal", name, code, resp)
				}
				if strings.Contains(resp, usersBobEmail) {
					t.Errorf("%s: the refusal names bob: %s", name, resp)
				}
			}
		})
	}
}

// BenchmarkUsersPage measures one Users request, the whole handler
// (signature, listing, page token, JSON), over 10,000 stored consents, on
// both stores: the first page and a page from the end of the listing, of
// 100 and of 500, and a page of the one consent in ten that needs
// re-authorization. BENCHMARKS.md records the figures.
func BenchmarkUsersPage(b *testing.B) {
	const users = 10_000
	for _, kind := range storeKinds {
		b.Run(kind, func(b *testing.B) {
			e := newPerfEnv(b, kind)
			seedUsers(b, e.srv.store, users)
			h := handlerFor(b, e.srv, "Users")
			last := fmt.Sprintf("9%020d", users-600)
			for _, bc := range []struct {
				name, status, after string
				size                int
			}{
				{"first page of 100", "", "", 100},
				{"first page of 500", "", "", 500},
				{"page of 100 at the end", "", last, 100},
				{"page of 500 at the end", "", last, 500},
				{"needs_reauth page of 100", userNeedsReauth, "", 100},
				{"needs_reauth page of 100 at the end", userNeedsReauth, last, 100},
			} {
				b.Run(bc.name, func(b *testing.B) {
					q := fmt.Sprintf(`{"pageSize":%d`, bc.size)
					if bc.status != "" {
						q += `,"status":"` + bc.status + `"`
					}
					if bc.after != "" {
						tok, err := e.srv.sealUsersPage(bc.after, bc.status)
						if err != nil {
							b.Fatal(err)
						}
						q += `,"pageToken":"` + tok + `"`
					}
					body := []byte(q + "}")
					b.ReportAllocs()
					for b.Loop() {
						req := httptest.NewRequest(http.MethodPost, "/Users", bytes.NewReader(body))
						req.Header.Set("Content-Type", "application/json")
						req.Header.Set("X-Signature", signBody(testWebhookSecret, e.clock.Now(), body))
						w := httptest.NewRecorder()
						h(w, req)
						if w.Code != 200 || !strings.Contains(w.Body.String(), `"users":[{`) {
							b.Fatalf("got %d: %.200s", w.Code, w.Body.String())
						}
					}
				})
			}
		})
	}
}

// seedUsers stores n consents straight into the store under s (tokens
// left out: a listing never reads them), one in ten needing
// re-authorization, in bulk.
func seedUsers(b *testing.B, s tokenStore, n int) {
	b.Helper()
	s = innerStore(s)
	rec := func(i int) *tokenRecord {
		r := sampleToken(fmt.Sprintf("9%020d", i), fmt.Sprintf("user%d@example.com", i))
		r.RefreshToken, r.AccessToken, r.ConsentedAt, r.LastRefreshAt = "", "", sampleTime, sampleTime
		if i%10 == 0 {
			r.Status = tokenNeedsReauth
		}
		return r
	}
	switch s := s.(type) {
	case *localStore:
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := range n {
				r := rec(i)
				v, err := json.Marshal(r)
				if err != nil {
					return err
				}
				if err := tx.Bucket([]byte(tokensCollection)).Put([]byte(r.Sub), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	case *firestoreStore:
		bw := s.client.BulkWriter(b.Context())
		for i := range n {
			r := rec(i)
			if _, err := bw.Set(s.client.Collection(tokensCollection).Doc(r.Sub), r); err != nil {
				b.Fatal(err)
			}
		}
		bw.End()
	default:
		b.Fatalf("seedUsers: a %T", s)
	}
}
