package chatauth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestIDTokenPolicySigners: a signer is a policy over the same verifier.
// ChatEvents' policy for a Workspace add-on (CHAT_PROJECT_NUMBER) accepts
// that project's add-on service agent's Google-signed token and refuses
// every other account's token for the same audience, Chat's included,
// and a token without a verified email.
func TestIDTokenPolicySigners(t *testing.T) {
	t.Parallel()
	g := newCallerFake(t)
	now := time.Now()
	const (
		addOn    = "service-123456789012@gcp-sa-gsuiteaddons.iam.gserviceaccount.com"
		audience = "https://chatauth.example.com/ChatEvents"
	)
	a, err := newChatAuth(context.Background(), chatAudienceEndpoint, audience, "123456789012", g.HTTPClient(), chatCertsURL, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	v := a.addOn
	if v == nil || v.policy.keys != a.classic.policy.keys {
		t.Fatal("the add-on policy is not a policy over the classic one's keys")
	}
	token := func(edit map[string]any) string {
		c := callerClaims(now, map[string]any{"aud": audience, "email": addOn})
		for k, val := range edit {
			if val == nil {
				delete(c, k)
			} else {
				c[k] = val
			}
		}
		return "Bearer " + g.MintIDToken(c)
	}
	if c, err := v.verify(context.Background(), token(nil)); err != nil || c.Email != addOn {
		t.Fatalf("the add-on's token: got %+v, %v; want accepted", c, err)
	}
	if _, err := v.verify(context.Background(), token(map[string]any{"email": strings.ToUpper(addOn)})); err != nil {
		t.Errorf("the add-on's email in capitals: got %v, want accepted", err)
	}
	for name, tc := range map[string]struct {
		edit map[string]any
		want string // in the message
	}{
		"Chat's account":           {map[string]any{"email": chatServiceAccount}, "not from an account allowed"},
		"any other account":        {map[string]any{"email": "mallory@evil-project.iam.gserviceaccount.com"}, "not from an account allowed"},
		"the add-on, unverified":   {map[string]any{"email_verified": false}, "not verified"},
		"no email":                 {map[string]any{"email": nil}, "no email"},
		"another audience":         {map[string]any{"aud": callerAudience1}, "request the token for CHAT_AUDIENCE"},
		"the account as issuer":    {map[string]any{"iss": addOn}, "not issued by Google"},
		"the add-on's name as sub": {map[string]any{"email": "x" + addOn}, "not from an account allowed"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.verify(context.Background(), token(tc.edit))
			var e *Error
			if !errors.As(err, &e) || e.Status != statusUnauthenticated || !strings.Contains(e.Message, tc.want) {
				t.Fatalf("got %v, want UNAUTHENTICATED saying %q", err, tc.want)
			}
		})
	}
}
