package chatauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// bobSub is the account that takes alice's address in these tests.
const bobSub = "104857600000000000042"

// subOf is the account id of a test caller's email: alice's account for
// alice@, another for anyone else.
func subOf(email string) string {
	if strings.EqualFold(email, aliceEmail) {
		return aliceSub
	}
	return "4242"
}

// moveAliceAddress gives alice@'s address to another Google account, as an
// administrator reassigning it would: the old account is renamed, the new
// one has the address.
func (e *testEnv) moveAliceAddress() {
	e.google.AddUser(fakegoogle.User{Sub: aliceSub, Email: "alice.old@example.com", EmailVerified: true})
	e.google.AddUser(fakegoogle.User{Sub: bobSub, Email: aliceEmail, EmailVerified: true})
}

// consentAs runs the consent flow for hint and fails the test unless it
// is stored.
func (e *testEnv) consentAs(hint string) {
	e.t.Helper()
	if resp, body := e.consent(newBrowser(e.t), hint); resp.StatusCode != 200 {
		e.t.Fatalf("consent for %s: %d %s", hint, resp.StatusCode, body)
	}
}

// createdBy creates a space for user and returns the account the fake Chat
// API saw create it, or the failure.
func (e *testEnv) createdBy(user, name string) (string, int, string) {
	e.t.Helper()
	code, body := e.signed("CreateSpace", fmt.Sprintf(`{"user":%q,"displayName":%q}`, user, name))
	if code != 200 {
		return "", code, body
	}
	sp, ok := e.google.SpaceByName(decodeSpace(e.t, body).Name)
	if !ok {
		e.t.Fatalf("the space answered is not in the fake Chat API: %s", body)
	}
	return sp.Creator, code, body
}

// TestEmailMovesBetweenAccounts: an address that moves to another account
// names the account that consented with it last; a refresh of the older
// account's record never moves it back, the instance's token cache drops
// the old account at once, and Disconnect by the address ends exactly the
// account it names, after which it names nobody.
func TestEmailMovesBetweenAccounts(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			e.connect()
			// Served from the store, then kept in the instance's cache.
			if by, code, body := e.createdBy(aliceEmail, "Before the move"); by != aliceSub {
				t.Fatalf("before the move: created by %q (%d %s), want alice's account", by, code, body)
			}

			captured := `{"user":"alice@example.com","displayName":"Signed before the move"}`
			capturedSig := map[string]string{"X-Signature": signBody(testWebhookSecret, e.clock.Now(), []byte(captured))}

			e.clock.Advance(2 * time.Second)
			e.moveAliceAddress()
			e.consentAs(aliceEmail)
			if got := e.storedToken(bobSub); got == nil || got.Email != aliceEmail || got.ConsentedAt.IsZero() {
				t.Fatalf("the new account's record: %+v", got)
			}
			// A request signed while the address named alice's account does
			// not act as the account that took it since.
			calls := e.google.TotalChatCalls()
			code, body, _ := e.post("CreateSpace", captured, capturedSig)
			checkJSONBody(t, body, 409, statusAlreadyExists)
			if code != 409 || e.google.TotalChatCalls() != calls {
				t.Errorf("a request signed before the move: %d %s, %d Chat calls; want 409 and none", code, body, e.google.TotalChatCalls()-calls)
			}
			// On this instance at once, whatever the cache held.
			if by, code, body := e.createdBy(aliceEmail, "After the move"); by != bobSub {
				t.Errorf("after the move: created by %q (%d %s), want the account that consented last", by, code, body)
			}

			// The older account stays reachable by its id until revoked, and
			// a refresh of its record (its access token expired) moves
			// nothing.
			e.google.ExpireAccessTokens(aliceSub)
			e.clock.Advance(2 * time.Hour)
			refreshes := e.google.RefreshCalls(aliceSub)
			if by, code, body := e.createdBy("users/"+aliceSub, "Older account by id"); by != aliceSub {
				t.Errorf("the older account by id: created by %q (%d %s)", by, code, body)
			}
			if e.google.RefreshCalls(aliceSub) == refreshes {
				t.Error("the older account's token was not refreshed; the test needs a refresh")
			}
			if by, code, body := e.createdBy(aliceEmail, "After the refresh"); by != bobSub {
				t.Errorf("after a refresh of the older record: created by %q (%d %s), want the account that consented last", by, code, body)
			}

			// Disconnect by address ends the newer account only.
			code, body = e.signed("Disconnect", `{"user":"alice@example.com"}`)
			if code != 200 {
				t.Fatalf("Disconnect: %d %s", code, body)
			}
			var got struct{ User, Email string }
			if err := json.Unmarshal([]byte(body), &got); err != nil || got.User != "users/"+bobSub || got.Email != aliceEmail {
				t.Errorf("Disconnect answered %s, want the account the address named", body)
			}
			if e.storedToken(bobSub) != nil || e.storedToken(aliceSub) == nil {
				t.Errorf("after Disconnect: new account kept %v, older account kept %v; want false, true", e.storedToken(bobSub) != nil, e.storedToken(aliceSub) != nil)
			}
			// The address names nobody, though the older record carries it.
			_, _, body = e.createdBy(aliceEmail, "After Disconnect")
			checkJSONBody(t, body, 403, statusAuthorizationRequired)
			if !strings.Contains(body, "login_hint=alice%40example.com") {
				t.Errorf("the answer does not offer alice@ a consent: %s", body)
			}
			_, body = e.signed("Disconnect", `{"user":"alice@example.com"}`)
			checkJSONBody(t, body, 404, statusNotFound)
			if by, code, body := e.createdBy("users/"+aliceSub, "Older account still"); by != aliceSub {
				t.Errorf("the older account by id after the newer one disconnected: created by %q (%d %s)", by, code, body)
			}
		})
	}
}

// TestIDTokenCallerIsItsAccount: an ID-token caller acting for itself is
// its account (sub), not its address: a token for alice@ from another
// account does not act as, nor disconnect, the alice@ that consented.
func TestIDTokenCallerIsItsAccount(t *testing.T) {
	t.Parallel()
	const audience = "https://chatauth.example/CreateSpace"
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind, func(c *Config) { c.AllowedAudiences = []string{audience} })
			e.connect()
			token := func(sub string) map[string]string {
				now := e.clock.Now()
				tok := e.google.MintIDToken(map[string]any{
					"iss": fakegoogle.GoogleIssuer, "aud": audience, "sub": sub, "email": aliceEmail,
					"email_verified": true, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
				})
				sensitive.add(tok)
				return map[string]string{"Authorization": "Bearer " + tok}
			}
			calls := e.google.TotalChatCalls()
			for _, user := range []string{aliceEmail, "users/" + bobSub} {
				code, body, _ := e.post("CreateSpace", fmt.Sprintf(`{"user":%q,"displayName":"Impostor"}`, user), token(bobSub))
				checkJSONBody(t, body, 403, statusAuthorizationRequired)
				if code != 403 || !strings.Contains(body, "login_hint=alice%40example.com") {
					t.Errorf("another account's token as %s: %d %s; want 403 asking that account to consent", user, code, body)
				}
			}
			code, body, _ := e.post("CreateSpace", `{"user":"users/`+aliceSub+`","displayName":"Impostor"}`, token(bobSub))
			checkJSONBody(t, body, 403, statusPermissionDenied)
			if code != 403 {
				t.Errorf("another account's token as users/{alice}: %d", code)
			}
			code, body, _ = e.post("Disconnect", `{"user":"alice@example.com"}`, token(bobSub))
			checkJSONBody(t, body, 404, statusNotFound)
			if code != 404 || e.storedToken(aliceSub) == nil || e.google.RevokeCalls() != 0 {
				t.Errorf("another account's Disconnect of alice@: %d, kept %v, %d revocations", code, e.storedToken(aliceSub) != nil, e.google.RevokeCalls())
			}
			if e.google.TotalChatCalls() != calls {
				t.Error("the Chat API was called for another account's token")
			}
			// Alice's own token acts, named either way.
			for i, user := range []string{aliceEmail, "users/" + aliceSub} {
				code, body, _ := e.post("CreateSpace", fmt.Sprintf(`{"user":%q,"displayName":"Own %d"}`, user, i), token(aliceSub))
				if code != 200 {
					t.Errorf("alice's own token as %s: %d %s", user, code, body)
				}
			}
		})
	}
}

// TestDisconnectReplay: a Disconnect signed before the user consented
// again cannot end the new consent; it answers 409 and changes nothing.
func TestDisconnectReplay(t *testing.T) {
	t.Parallel()
	const audience = "https://chatauth.example/Disconnect"
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind, func(c *Config) { c.AllowedAudiences = []string{audience} })
			e.connect()
			body := `{"user":"alice@example.com"}`
			captured := map[string]string{"X-Signature": signBody(testWebhookSecret, e.clock.Now(), []byte(body))}
			now := e.clock.Now()
			tok := e.google.MintIDToken(map[string]any{
				"iss": fakegoogle.GoogleIssuer, "aud": audience, "sub": aliceSub, "email": aliceEmail,
				"email_verified": true, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			})
			sensitive.add(tok)
			capturedToken := map[string]string{"Authorization": "Bearer " + tok}

			// The signer's own Disconnect works once; its replay finds nothing.
			if code, resp, _ := e.post("Disconnect", body, captured); code != 200 {
				t.Fatalf("Disconnect: %d %s", code, resp)
			}
			code, resp, _ := e.post("Disconnect", body, captured)
			checkJSONBody(t, resp, 404, statusNotFound)
			if code != 404 {
				t.Errorf("replay after Disconnect: %d", code)
			}

			// Alice connects again two seconds later; both captured requests
			// are still inside their windows, and end nothing.
			e.clock.Advance(2 * time.Second)
			rec := e.connect()
			revokes := e.google.RevokeCalls()
			for name, h := range map[string]map[string]string{"X-Signature": captured, "ID token": capturedToken} {
				for _, user := range []string{aliceEmail, "users/" + aliceSub} {
					b := fmt.Sprintf(`{"user":%q}`, user)
					if name == "X-Signature" && user != aliceEmail {
						continue // the signature covers the body: only the captured one replays
					}
					code, resp, _ := e.post("Disconnect", b, h)
					checkJSONBody(t, resp, 409, statusAlreadyExists)
					if code != 409 || !strings.Contains(resp, "after this request was signed") {
						t.Errorf("replayed %s Disconnect of %s: %d %s", name, user, code, resp)
					}
				}
			}
			if got := e.storedToken(aliceSub); got == nil || got.RefreshToken != rec.RefreshToken {
				t.Error("a replayed Disconnect ended the new consent")
			}
			if e.google.RevokeCalls() != revokes || slices.Contains(e.google.RevokedTokens(), rec.RefreshToken) {
				t.Error("a replayed Disconnect revoked the new consent at Google")
			}
			if by, code, body := e.createdBy(aliceEmail, "Still connected"); by != aliceSub {
				t.Errorf("after the replays: %q %d %s", by, code, body)
			}
			// A request signed now ends it.
			code, resp = e.signed("Disconnect", body)
			if code != 200 || e.storedToken(aliceSub) != nil {
				t.Errorf("a fresh Disconnect: %d %s", code, resp)
			}
		})
	}
}

// TestDerivedRequestID: a CreateSpace without requestId gets one derived
// from the signed request, so the same signed bytes, sent any number of
// times, make one space; other signed bytes make another.
func TestDerivedRequestID(t *testing.T) {
	t.Parallel()
	const audience = "https://chatauth.example/CreateSpace"
	e := newTestEnv(t, storeLocal, func(c *Config) { c.AllowedAudiences = []string{audience} })
	e.connect()
	e.google.AddUser(fakegoogle.User{Sub: "3003", Email: "carol@example.com", EmailVerified: true})
	countSpaces := func(spaceType string) int {
		n := 0
		for _, sp := range e.google.Spaces() {
			if sp.SpaceType == spaceType {
				n++
			}
		}
		return n
	}
	sendThrice := func(t *testing.T, body string, h map[string]string) string {
		t.Helper()
		var names []string
		for i := range 3 {
			code, resp, _ := e.post("CreateSpace", body, h)
			if code != 200 {
				t.Fatalf("send %d: %d %s", i+1, code, resp)
			}
			names = append(names, decodeSpace(t, resp).Name)
		}
		if names[0] != names[1] || names[1] != names[2] {
			t.Errorf("three sends of one signed request answered %v, want one space", names)
		}
		return names[0]
	}
	for _, tc := range []struct{ spaceType, body string }{
		{spaceTypeGroupChat, `{"user":"alice@example.com","spaceType":"GROUP_CHAT","members":["users/2002","users/3003"]}`},
		{spaceTypeDM, `{"user":"alice@example.com","spaceType":"DIRECT_MESSAGE","members":["users/3003"]}`},
		{spaceTypeSpace, `{"user":"alice@example.com","displayName":"Replayed launch"}`},
	} {
		t.Run(tc.spaceType, func(t *testing.T) {
			before := countSpaces(tc.spaceType)
			sig := signBody(testWebhookSecret, e.clock.Now(), []byte(tc.body))
			name := sendThrice(t, tc.body, map[string]string{"X-Signature": sig})
			if got := countSpaces(tc.spaceType); got != before+1 {
				t.Errorf("%d %s spaces created, want 1", got-before, tc.spaceType)
			}
			sp, _ := e.google.SpaceByName(name)
			if !strings.HasPrefix(sp.RequestID, "chatauth-") || len(sp.RequestID) != len("chatauth-")+40 || !requestIDPattern().MatchString(sp.RequestID) {
				t.Errorf("derived requestId %q does not have the documented form", sp.RequestID)
			}
			// The MAC's hex in capitals is the same signed request.
			upper := strings.Replace(sig, sig[strings.Index(sig, "v1=")+3:], strings.ToUpper(sig[strings.Index(sig, "v1=")+3:]), 1)
			if again := sendThrice(t, tc.body, map[string]string{"X-Signature": upper}); again != name {
				t.Errorf("the signature in capitals made another space")
			}
		})
	}
	t.Run("another signature is another request", func(t *testing.T) {
		body := `{"user":"alice@example.com","spaceType":"GROUP_CHAT","members":["users/2002","users/3003"]}`
		before := countSpaces(spaceTypeGroupChat)
		e.clock.Advance(time.Second)
		sendThrice(t, body, map[string]string{"X-Signature": signBody(testWebhookSecret, e.clock.Now(), []byte(body))})
		if got := countSpaces(spaceTypeGroupChat); got != before+1 {
			t.Errorf("a request signed a second later made %d group chats, want 1 more", got-before)
		}
	})
	t.Run("ID token", func(t *testing.T) {
		body := `{"user":"alice@example.com","spaceType":"GROUP_CHAT","members":["users/3003","users/4004"]}`
		now := e.clock.Now()
		mint := func(iat time.Time) map[string]string {
			tok := e.google.MintIDToken(map[string]any{
				"iss": fakegoogle.GoogleIssuer, "aud": audience, "sub": aliceSub, "email": aliceEmail,
				"email_verified": true, "iat": iat.Unix(), "exp": iat.Add(time.Hour).Unix(),
			})
			sensitive.add(tok)
			return map[string]string{"Authorization": "Bearer " + tok}
		}
		before := countSpaces(spaceTypeGroupChat)
		sendThrice(t, body, mint(now))
		if got := countSpaces(spaceTypeGroupChat); got != before+1 {
			t.Errorf("%d group chats from one token and body, want 1", got-before)
		}
		sendThrice(t, body, mint(now.Add(-time.Minute)))
		if got := countSpaces(spaceTypeGroupChat); got != before+2 {
			t.Errorf("another token made %d group chats in all, want 2", got-before)
		}
	})
	t.Run("a requestId given is used as it is", func(t *testing.T) {
		body := `{"user":"alice@example.com","displayName":"Named request","requestId":"form-response-8f2c"}`
		code, resp := e.signed("CreateSpace", body)
		if code != 200 {
			t.Fatalf("%d %s", code, resp)
		}
		if sp, _ := e.google.SpaceByName(decodeSpace(t, resp).Name); sp.RequestID != "form-response-8f2c" {
			t.Errorf("requestId %q, want the caller's", sp.RequestID)
		}
	})
}

// TestDerivedRequestIDUnique: the derived requestId differs with every
// part of the signed request, and not with the MAC's letter case.
func TestDerivedRequestIDUnique(t *testing.T) {
	t.Parallel()
	base := caller{method: callerHMAC, proof: []byte("mac-1"), body: []byte(`{"user":"a@example.com"}`)}
	seen := map[string]string{base.requestID(): "base"}
	for name, c := range map[string]caller{
		"another MAC":    {method: callerHMAC, proof: []byte("mac-2"), body: base.body},
		"another body":   {method: callerHMAC, proof: base.proof, body: []byte(`{"user":"b@example.com"}`)},
		"an ID token":    {method: callerIDToken, proof: base.proof, body: base.body},
		"shifted bytes":  {method: callerHMAC, proof: []byte("mac-1\x00{"), body: []byte(`"user":"a@example.com"}`)},
		"empty proof":    {method: callerHMAC, body: base.body},
		"the same again": base,
	} {
		id := c.requestID()
		if len(id) > 128 || !requestIDPattern().MatchString(id) {
			t.Errorf("%s: %q does not fit the requestId rules", name, id)
		}
		if prev, ok := seen[id]; ok && name != "the same again" {
			t.Errorf("%s has the requestId of %s", name, prev)
		}
		seen[id] = name
	}
	if _, err := url.Parse("http://x/?requestId=" + base.requestID()); err != nil {
		t.Error(err)
	}
}

// consentDuringDelete is a store on which the user consents again just
// before a Disconnect deletes the record, as a consent on another instance
// could.
type consentDuringDelete struct {
	tokenStore
	at time.Time
}

func (s consentDuringDelete) deleteToken(ctx context.Context, sub string, check func(*tokenRecord) error) error {
	err := s.tokenStore.putConsent(ctx, sub, func(cur *tokenRecord) (*tokenRecord, error) {
		next := *cur
		next.RefreshToken, next.ConsentedAt = "1//consented-meanwhile", s.at
		return &next, nil
	})
	if err != nil {
		return err
	}
	return s.tokenStore.deleteToken(ctx, sub, check)
}

// TestDisconnectSparesConsentGivenMeanwhile: a consent stored while a
// Disconnect signed before it is being served is not deleted.
func TestDisconnectSparesConsentGivenMeanwhile(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			e.connect()
			inner := e.srv.store
			setStore(e.srv, consentDuringDelete{tokenStore: inner, at: e.clock.Now().Add(2 * time.Second)})
			code, body := e.signed("Disconnect", `{"user":"alice@example.com"}`)
			checkJSONBody(t, body, 409, statusAlreadyExists)
			setStore(e.srv, inner)
			if got := e.storedToken(aliceSub); code != 409 || got == nil || got.RefreshToken != "1//consented-meanwhile" {
				t.Errorf("got %d, record %v; want 409 and the consent given meanwhile kept", code, got)
			}
			wantEmailNames(t, inner, aliceEmail, aliceSub, "after the refused Disconnect")
		})
	}
}

// TestConcurrentConsentsOneAddress: two accounts consenting with one
// address at once, through the server's whole store (encryption, token
// cache), leave the address naming exactly one of them, and CreateSpace
// by address acts as that one, on both stores.
func TestConcurrentConsentsOneAddress(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			e.connect()
			e.google.AddUser(fakegoogle.User{Sub: bobSub, Email: aliceEmail, EmailVerified: true})
			// Served once, so the instance's cache holds alice@.
			if by, code, body := e.createdBy(aliceEmail, "Before"); by != aliceSub {
				t.Fatalf("before: %q %d %s", by, code, body)
			}
			e.clock.Advance(2 * time.Second)
			var wg sync.WaitGroup
			for _, sub := range []string{aliceSub, bobSub} {
				access, refresh := e.google.IssueTokens(sub, scopeChatCreate)
				now := e.clock.Now()
				rec := &tokenRecord{Sub: sub, Email: aliceEmail, AccessToken: access, RefreshToken: refresh, Expiry: now.Add(time.Hour),
					Scopes: []string{scopeChatCreate}, Status: tokenActive, CreatedAt: now, UpdatedAt: now, ConsentedAt: now}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := e.srv.store.putConsent(context.Background(), sub, func(*tokenRecord) (*tokenRecord, error) { return rec, nil }); err != nil {
						t.Errorf("putConsent(%s): %v", sub, err)
					}
				}()
			}
			wg.Wait()
			named, err := e.srv.store.tokenByEmail(context.Background(), aliceEmail)
			if err != nil || (named.Sub != aliceSub && named.Sub != bobSub) {
				t.Fatalf("tokenByEmail after concurrent consents: %v, %v", named, err)
			}
			for i := range 3 {
				if by, code, body := e.createdBy(aliceEmail, fmt.Sprint("After ", i)); by != named.Sub {
					t.Errorf("create %d by address: created by %q (%d %s), want %s, whom the address names", i, by, code, body, named.Sub)
				}
			}
			for _, sub := range []string{aliceSub, bobSub} {
				if by, code, body := e.createdBy("users/"+sub, "By id "+sub); by != sub {
					t.Errorf("create by users/%s: created by %q (%d %s)", sub, by, code, body)
				}
			}
		})
	}
}
