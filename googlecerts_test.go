package chatauth

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// loopbackOnly is a client that reaches loopback hosts only: a server
// given it can fetch keys from a fake Google's listener, never from
// Google's own URLs.
func loopbackOnly() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	dial := t.DialContext
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("loopbackOnly: refusing %s", addr)
		}
		return dial(ctx, network, addr)
	}
	return &http.Client{Transport: t, Timeout: 10 * time.Second}
}

// TestCertsOverrides: with GOOGLE_CERTS_URL and CHAT_CERTS_URL pointing
// at the fake Google's listener, a webhook caller's ID token and both
// kinds of Google Chat token verify through a client that reaches
// loopback only, so the keys came from the overrides; without them the
// same tokens cannot be checked (Google's URLs are out of reach), and a
// token signed by a key the overrides do not publish is refused.
func TestCertsOverrides(t *testing.T) {
	t.Parallel()
	const (
		audience = "https://chatauth.example/CreateSpace"
		trusted  = "scheduler@example.iam.gserviceaccount.com"
	)
	for _, mode := range chatModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			c := newChatEnv(t, storeLocal, mode)
			c.connect()
			c.cfg.AllowedAudiences, c.cfg.TrustedCallers = []string{audience}, []string{trusted}
			idToken := func(g *fakegoogle.Server) string {
				now := c.clock.Now()
				tok := g.MintIDToken(map[string]any{"iss": fakegoogle.GoogleIssuer, "aud": audience, "sub": "1234567890",
					"email": trusted, "email_verified": true, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
				sensitive.add(tok)
				return tok
			}
			createWith := func(tok, name string) (int, string) {
				code, body, _ := c.post("CreateSpace", fmt.Sprintf(`{"user":"alice@example.com","displayName":%q}`, name),
					map[string]string{"Authorization": "Bearer " + tok})
				return code, body
			}
			chatEvent := func(tok string) (int, string) {
				code, body, _ := c.post("ChatEvents", chatMsg{text: "help"}.json(), map[string]string{"Authorization": "Bearer " + tok})
				return code, body
			}

			// Without the overrides the keys are Google's, out of reach.
			c.restart(func(o *serverOptions) { o.certsClient = loopbackOnly() })
			if code, body := createWith(idToken(c.google), "Unverifiable"); code != http.StatusServiceUnavailable {
				t.Errorf("ID token, no GOOGLE_CERTS_URL: got %d %s, want 503 (Google's keys unreachable)", code, body)
			}
			if code, body := chatEvent(c.token(nil)); code != http.StatusServiceUnavailable {
				t.Errorf("Chat token, no override: got %d %s, want 503 (Google's keys unreachable)", code, body)
			}

			c.cfg.GoogleCertsURL, c.cfg.ChatCertsURL = c.google.JWKSURL(), c.google.ChatCertsURL()
			c.restart(func(o *serverOptions) { o.certsClient = loopbackOnly() })
			if code, body := createWith(idToken(c.google), "Verified by the override"); code != http.StatusOK || !strings.Contains(body, "Verified by the override") {
				t.Errorf("ID token with GOOGLE_CERTS_URL: got %d %s, want the space", code, body)
			}
			if code, body := chatEvent(c.token(nil)); code != http.StatusOK || !strings.Contains(body, "createspace") {
				t.Errorf("Chat token with the overrides: got %d %s, want Chat's help reply", code, body)
			}

			// Another fake's key is not published at the overrides.
			other, err := fakegoogle.New(fakegoogle.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if code, body := createWith(idToken(other), "Forged"); code != http.StatusUnauthorized {
				t.Errorf("ID token of another key: got %d %s, want 401", code, body)
			}
			otherApp, err := fakegoogle.NewChatApp(other)
			if err != nil {
				t.Fatal(err)
			}
			forged := otherApp.ProjectToken(chatProjectNumber, nil)
			if mode == chatAudienceEndpoint {
				forged = otherApp.EndpointToken(chatEndpointURL, nil)
			}
			sensitive.add(forged)
			if code, body := chatEvent(forged); code != http.StatusUnauthorized {
				t.Errorf("Chat token of another key: got %d %s, want 401", code, body)
			}
		})
	}
}

// TestCertsOverridesConfig: the overrides are URLs like CHAT_API_ENDPOINT
// (http on loopback only) and are refused when deployed.
func TestCertsOverridesConfig(t *testing.T) {
	t.Parallel()
	local := map[string]string{
		"STORE": storeLocal, "CLIENT_SECRETS": "c.json", "WEBHOOK_SECRETS": "w", "TOKEN_KEYSET": "k.json",
		"REDIRECT_URL": "http://localhost:8080/OAuthCallback", "PUBLIC_URL": "http://localhost:8080",
		"GOOGLE_CERTS_URL": "http://127.0.0.1:9090/oauth2/v3/certs",
		"CHAT_CERTS_URL":   "http://127.0.0.1:9090" + fakegoogle.ChatCertsPath,
	}
	c, err := loadConfig(envMap(local))
	if err != nil || c.GoogleCertsURL != local["GOOGLE_CERTS_URL"] || c.ChatCertsURL != local["CHAT_CERTS_URL"] {
		t.Fatalf("local overrides: got %q %q, %v", c.GoogleCertsURL, c.ChatCertsURL, err)
	}
	for _, name := range []string{"GOOGLE_CERTS_URL", "CHAT_CERTS_URL"} {
		env := map[string]string{}
		for k, v := range local {
			env[k] = v
		}
		env[name] = "http://keys.example/certs"
		if _, err := loadConfig(envMap(env)); err == nil || !strings.Contains(err.Error(), name+": must use https") {
			t.Errorf("%s on a non-loopback http URL: got %v", name, err)
		}
		env[name] = local[name]
		env["K_SERVICE"], env["STORE"], env["GOOGLE_CLOUD_PROJECT"] = "createspace", storeFirestore, "p"
		if _, err := loadConfig(envMap(env)); err == nil || !strings.Contains(err.Error(), name+": replaces Google's signing keys") || !strings.Contains(err.Error(), "refused when deployed") {
			t.Errorf("%s deployed: got %v, want it refused, named", name, err)
		}
	}
}
