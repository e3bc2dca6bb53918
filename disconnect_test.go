package chatauth

import (
	"slices"
	"testing"
)

func TestDisconnect(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			rec := e.connect()
			code, body := e.signed("Disconnect", `{"user":"alice@example.com"}`)
			if code != 200 {
				t.Fatalf("got %d: %s", code, body)
			}
			if !slices.Contains(e.google.RevokedTokens(), rec.RefreshToken) {
				t.Error("the stored refresh token was not revoked at Google")
			}
			if e.storedToken(aliceSub) != nil {
				t.Error("the record is still stored")
			}
			code, body = e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"After"}`)
			checkJSONBody(t, body, 403, statusAuthorizationRequired)
			if code != 403 {
				t.Errorf("CreateSpace after Disconnect: got %d", code)
			}
		})
	}
}

func TestDisconnectFailures(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.connect()

	t.Run("unauthenticated", func(t *testing.T) {
		code, body, _ := e.post("Disconnect", `{"user":"alice@example.com"}`, nil)
		checkJSONBody(t, body, 401, statusUnauthenticated)
		if code != 401 || e.google.RevokeCalls() != 0 || e.storedToken(aliceSub) == nil {
			t.Errorf("got %d, %d revoke calls, record kept %v; want 401, 0, true", code, e.google.RevokeCalls(), e.storedToken(aliceSub) != nil)
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		code, body := e.signed("Disconnect", `{"user":"bob@example.com"}`)
		checkJSONBody(t, body, 404, statusNotFound)
		if code != 404 {
			t.Errorf("got %d", code)
		}
	})
	t.Run("bad user", func(t *testing.T) {
		code, body := e.signed("Disconnect", `{"user":"bob"}`)
		checkJSONBody(t, body, 400, statusInvalidArgument)
		if code != 400 {
			t.Errorf("got %d", code)
		}
	})
	t.Run("revoke fails", func(t *testing.T) {
		e.google.FailRevoke(500, 1)
		code, body := e.signed("Disconnect", `{"user":"users/`+aliceSub+`"}`)
		checkJSONBody(t, body, 502, statusUpstreamError)
		if code != 502 || e.storedToken(aliceSub) == nil {
			t.Errorf("got %d, record kept %v; want 502 and the record kept", code, e.storedToken(aliceSub) != nil)
		}
	})
	t.Run("already revoked at Google", func(t *testing.T) {
		e.google.RevokeUser(aliceSub)
		code, body := e.signed("Disconnect", `{"user":"alice@example.com"}`)
		if code != 200 || e.storedToken(aliceSub) != nil {
			t.Errorf("got %d %s, record kept %v; want 200 and the record deleted", code, body, e.storedToken(aliceSub) != nil)
		}
	})
}
