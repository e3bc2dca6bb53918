package chatauth

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The instance's token cache (tokens.go) may serve an access token from
// memory for at most tokenCacheTTL. These tests hold it to its promise:
// writes on the same instance take effect at once, writes elsewhere within
// the bound, and a Disconnect anywhere at once, because Google then refuses
// the cached token.

const createBody = `{"user":"alice@example.com","displayName":"Cache %d"}`

// createN posts a CreateSpace for alice and returns its status and body.
func (e *testEnv) createN(n int) (int, string) {
	e.t.Helper()
	return e.signed("CreateSpace", fmt.Sprintf(createBody, n))
}

func TestTokenCacheSameInstance(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Run("Disconnect", func(t *testing.T) {
				t.Parallel()
				e := newTestEnv(t, kind)
				e.connect()
				if code, body := e.createN(1); code != 200 {
					t.Fatalf("warm create: %d %s", code, body)
				}
				if code, body := e.signed("Disconnect", `{"user":"alice@example.com"}`); code != 200 {
					t.Fatalf("Disconnect: %d %s", code, body)
				}
				chat0 := e.google.TotalChatCalls()
				code, body := e.createN(2)
				checkJSONBody(t, body, 403, statusAuthorizationRequired)
				if code != 403 {
					t.Errorf("create right after Disconnect: got %d, want 403", code)
				}
				if got := e.google.TotalChatCalls() - chat0; got != 0 {
					t.Errorf("Chat calls after Disconnect: got %d, want 0 (the record's absence decides)", got)
				}
			})
			t.Run("needs_reauth", func(t *testing.T) {
				t.Parallel()
				e := newTestEnv(t, kind)
				e.connect()
				if code, body := e.createN(1); code != 200 {
					t.Fatalf("warm create: %d %s", code, body)
				}
				// The user removes the app at Google: Chat refuses the cached
				// token, the forced refresh gets invalid_grant, and the record
				// is marked needs_reauth.
				e.google.RevokeUser(aliceSub)
				if code, body := e.createN(2); code != 403 {
					t.Fatalf("create after revocation at Google: got %d, want 403: %s", code, body)
				}
				if rec := e.storedToken(aliceSub); rec == nil || rec.Status != tokenNeedsReauth {
					t.Fatalf("record after invalid_grant: %+v, want status %s", rec, tokenNeedsReauth)
				}
				chat0 := e.google.TotalChatCalls()
				code, body := e.createN(3)
				checkJSONBody(t, body, 403, statusAuthorizationRequired)
				if code != 403 || e.google.TotalChatCalls() != chat0 {
					t.Errorf("create after needs_reauth: got %d with %d Chat calls, want 403 from the store with none", code, e.google.TotalChatCalls()-chat0)
				}
			})
		})
	}
}

// TestTokenCacheOtherInstance runs two instances on one Firestore
// database, as Cloud Functions does when it scales out.
func TestTokenCacheOtherInstance(t *testing.T) {
	t.Parallel()
	t.Run("a record deleted elsewhere is served until the bound", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t, storeFirestore)
		e.connect()
		if code, body := e.createN(1); code != 200 {
			t.Fatalf("warm create: %d %s", code, body)
		}
		// Another instance deletes the record without revoking anything
		// at Google, so the cached token is still good there.
		b := e.newServer()
		if err := b.store.deleteToken(context.Background(), aliceSub, nil); err != nil {
			t.Fatal(err)
		}
		if code, body := e.createN(2); code != 200 {
			t.Errorf("within the bound: got %d, want 200 from the cache: %s", code, body)
		}
		e.clock.Advance(tokenCacheTTL)
		code, body := e.createN(3)
		checkJSONBody(t, body, 403, statusAuthorizationRequired)
		if code != 403 {
			t.Errorf("after the bound (%s): got %d, want 403", tokenCacheTTL, code)
		}
	})
	t.Run("Disconnect elsewhere takes effect at once", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t, storeFirestore)
		a := e.srv
		e.connect()
		if code, body := e.createN(1); code != 200 {
			t.Fatalf("warm create: %d %s", code, body)
		}
		b := e.newServer()
		e.use(b)
		if code, body := e.signed("Disconnect", `{"user":"alice@example.com"}`); code != 200 {
			t.Fatalf("Disconnect on the other instance: %d %s", code, body)
		}
		e.use(a)
		code, body := e.createN(2)
		checkJSONBody(t, body, 403, statusAuthorizationRequired)
		if code != 403 {
			t.Errorf("create on the first instance right after: got %d, want 403", code)
		}
	})
}

// TestTokenCacheRace: a store read that started before a token write is
// not kept, so a write is never undone by a slower read.
func TestTokenCacheRace(t *testing.T) {
	t.Parallel()
	c := newTokenCache(time.Minute)
	now := time.Now()
	rec := &tokenRecord{Sub: "1", Email: "a@example.com", AccessToken: "old", Expiry: now.Add(time.Hour)}
	gen := c.generation()
	c.forget("1", "") // a write happens while the read is under way
	c.put("users/1", gen, rec, now)
	if _, ok := c.get("users/1", now); ok {
		t.Fatal("a read that raced a write was kept")
	}
	c.put("users/1", c.generation(), rec, now)
	if got, ok := c.get("users/1", now); !ok || got.accessToken != "old" {
		t.Fatalf("a read after the write: got %+v, %v; want it kept", got, ok)
	}
	for _, tc := range []struct {
		name string
		at   time.Time
		want bool
	}{
		{"within the bound", now.Add(time.Minute - time.Nanosecond), true},
		{"at the bound", now.Add(time.Minute), false},
		{"token within the expiry margin", now.Add(time.Hour - expiryMargin), false},
	} {
		if _, ok := c.get("users/1", tc.at); ok != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, ok, tc.want)
		}
	}
	c.forget("1", "")
	if _, ok := c.get("users/1", now); ok {
		t.Error("forget kept the entry")
	}
	var off *tokenCache
	off.put("users/1", off.generation(), rec, now)
	off.forget("1", "")
	if _, ok := off.get("users/1", now); ok {
		t.Error("a nil cache served a token")
	}
}

// TestTokenCacheBounded: the cache never holds more than tokenCacheMax
// users.
func TestTokenCacheBounded(t *testing.T) {
	t.Parallel()
	c := newTokenCache(time.Minute)
	now := time.Now()
	for i := range tokenCacheMax + 10 {
		c.put(fmt.Sprintf("users/%d", i), c.generation(), &tokenRecord{Sub: fmt.Sprint(i), AccessToken: "a", Expiry: now.Add(time.Hour)}, now)
		if n := len(c.entries); n > tokenCacheMax {
			t.Fatalf("%d entries, want at most %d", n, tokenCacheMax)
		}
	}
	if _, ok := c.get(fmt.Sprintf("users/%d", tokenCacheMax+9), now); !ok {
		t.Error("the newest entry is missing")
	}
}
