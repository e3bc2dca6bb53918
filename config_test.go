package chatauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"

	"github.com/chatauth/chatauth/internal/fakegoogle"
	"github.com/chatauth/chatauth/internal/fakesecretmanager"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestConfigMissing: one error names every missing variable.
func TestConfigMissing(t *testing.T) {
	t.Parallel()
	_, err := loadConfig(envMap(nil))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a *ConfigError", err)
	}
	for _, name := range []string{"GOOGLE_CLOUD_PROJECT", "CLIENT_SECRETS", "REDIRECT_URL", "PUBLIC_URL", "WEBHOOK_SECRETS", "TOKEN_KEYSET"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	valid := map[string]string{
		"GOOGLE_CLOUD_PROJECT": "p",
		"CLIENT_SECRETS":       "projects/p/secrets/client/versions/latest",
		"WEBHOOK_SECRETS":      "projects/p/secrets/webhook/versions/latest",
		"TOKEN_KEYSET":         "projects/p/secrets/keyset/versions/latest",
		"REDIRECT_URL":         "https://europe-west1-p.cloudfunctions.net/OAuthCallback",
		"PUBLIC_URL":           "https://europe-west1-p.cloudfunctions.net/",
		"K_SERVICE":            "oauthcallback",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range valid {
			m[a] = b
		}
		m[k] = v
		return m
	}
	t.Run("valid deployed", func(t *testing.T) {
		c, err := loadConfig(envMap(valid))
		if err != nil {
			t.Fatal(err)
		}
		if c.Store != storeFirestore || c.FirestoreDatabase != "(default)" || c.RevokeURL != googleRevokeURL || !c.Deployed {
			t.Errorf("defaults: got store %q database %q revoke %q deployed %v", c.Store, c.FirestoreDatabase, c.RevokeURL, c.Deployed)
		}
		if c.PublicURL != "https://europe-west1-p.cloudfunctions.net" {
			t.Errorf("PUBLIC_URL: got %q, want it without the trailing slash", c.PublicURL)
		}
	})
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // in the error
	}{
		{"local store deployed", with("STORE", "local"), `deployed, the store is always "firestore"`},
		{"unknown store", with("STORE", "redis"), `STORE: "redis" is not a store`},
		{"http redirect", with("REDIRECT_URL", "http://example.com/OAuthCallback"), "REDIRECT_URL: must use https"},
		{"redirect without path", with("REDIRECT_URL", "https://example.com"), "REDIRECT_URL: must be the full OAuthCallback URL"},
		{"relative public URL", with("PUBLIC_URL", "/functions"), "PUBLIC_URL: must be an absolute"},
		{"only ID tokens, no audiences", with("WEBHOOK_SECRETS", ""), "WEBHOOK_SECRETS"},
		{"project missing", with("GOOGLE_CLOUD_PROJECT", ""), "missing GOOGLE_CLOUD_PROJECT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(envMap(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("ID tokens only", func(t *testing.T) {
		env := with("WEBHOOK_SECRETS", "")
		env["ALLOWED_AUDIENCES"] = "https://a.example/CreateSpace, https://b.example"
		c, err := loadConfig(envMap(env))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.AllowedAudiences) != 2 {
			t.Errorf("ALLOWED_AUDIENCES: got %q, want two", c.AllowedAudiences)
		}
	})
	t.Run("local without project", func(t *testing.T) {
		env := with("STORE", "local")
		delete(env, "GOOGLE_CLOUD_PROJECT")
		delete(env, "K_SERVICE")
		env["REDIRECT_URL"] = "http://localhost:8080/OAuthCallback"
		if _, err := loadConfig(envMap(env)); err != nil {
			t.Errorf("local store, no project, http on localhost: %v", err)
		}
	})
}

// TestClientSecrets covers the client JSON's accepted shapes and the
// errors for the others, which must never quote the secret.
func TestClientSecrets(t *testing.T) {
	t.Parallel()
	g, err := fakegoogle.New(fakegoogle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, kind := range []string{"web", "installed"} {
		cs, err := parseClientSecrets(g.ClientJSON(kind))
		if err != nil || cs.ClientID != g.ClientID() || cs.ClientSecret != g.ClientSecret() || cs.TokenURI == "" || cs.AuthURI == "" {
			t.Errorf("%s client JSON: got %+v, %v", kind, cs, err)
		}
	}
	const secret = "GOCSPX-very-secret-value"
	for _, tc := range []struct{ name, json, want string }{
		{"not JSON", `{"web": {"client_secret": "` + secret + `"`, "not valid JSON"},
		{"service account key", `{"type":"service_account","private_key":"` + secret + `"}`, `single "web" or "installed" property`},
		{"both kinds", `{"web":{},"installed":{}}`, `single "web" or "installed" property`},
		{"array", `["` + secret + `"]`, `expected a JSON object`},
		{"fields missing", `{"web":{"client_id":"x","client_secret":"` + secret + `"}}`, "lacks auth_uri, token_uri"},
		{"wrong types", `{"web":{"client_id":1,"client_secret":"` + secret + `"}}`, "not an object of strings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseClientSecrets([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("the error quotes the secret: %v", err)
			}
		})
	}
}

func TestWebhookSecrets(t *testing.T) {
	t.Parallel()
	got, err := parseWebhookSecrets([]byte("\n  0123456789abcdef0123  \n\nfedcba9876543210fedc\n"))
	if err != nil || len(got) != 2 || string(got[0]) != "0123456789abcdef0123" {
		t.Errorf("two secrets: got %q, %v", got, err)
	}
	for _, bad := range []string{"", "\n \n", "short"} {
		if _, err := parseWebhookSecrets([]byte(bad)); err == nil {
			t.Errorf("%q: got no error", bad)
		}
	}
}

// TestSecretManager reads both secrets through the real Secret Manager
// client from the fake, and shows that a failed cold start is not kept:
// while the service is down requests get 503, and the first request after
// it is back succeeds on the same instance.
func TestSecretManager(t *testing.T) {
	t.Parallel()
	sm, err := fakesecretmanager.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	inst := &instance{log: newLogger(&syncBuffer{})}
	base := serveInstance(t, inst)
	g, err := fakegoogle.New(fakegoogle.Options{AutoConsent: true, RedirectURIs: []string{base + "/OAuthCallback"}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	clientRef := sm.Put("projects/p/secrets/oauth-client", g.ClientJSON("web"))
	webhookRef := sm.Put("projects/p/secrets/webhook", []byte(testWebhookSecret))
	keysetRef := sm.Put("projects/p/secrets/keyset", testKeyset(t))
	cfg := Config{
		ClientSecrets: clientRef, WebhookSecrets: webhookRef, TokenKeyset: keysetRef,
		RedirectURL: base + "/OAuthCallback", PublicURL: base,
		Store: storeLocal, DataDir: filepath.Join(t.TempDir(), "data"),
	}

	t.Run("checksum", func(t *testing.T) {
		r := &secretReader{opts: sm.ClientOptions()}
		defer r.close()
		if got, err := r.read(t.Context(), "WEBHOOK_SECRETS", webhookRef); err != nil || string(got) != testWebhookSecret {
			t.Fatalf("read: got %q, %v", got, err)
		}
		bad := sm.Put("projects/p/secrets/corrupt", []byte("x"))
		sm.CorruptChecksum(bad)
		if _, err := r.read(t.Context(), "WEBHOOK_SECRETS", bad); err == nil || !strings.Contains(err.Error(), "checksum") {
			t.Errorf("corrupted payload: got %v, want a checksum error", err)
		}
		if _, err := r.read(t.Context(), "WEBHOOK_SECRETS", "projects/p/secrets/absent/versions/1"); err == nil || errors.Is(err, errSecretsUnavailable) {
			t.Errorf("absent secret: got %v, want a permanent error", err)
		}
	})

	t.Run("cold start retried", func(t *testing.T) {
		inst.build = func(ctx context.Context) (*server, error) {
			return newServer(ctx, cfg, serverOptions{secretManager: sm.ClientOptions(), secretWait: time.Second})
		}
		t.Cleanup(func() {
			if s := inst.srv.Swap(nil); s != nil {
				s.close()
			}
		})
		sm.SetUnavailable(true)
		req, _ := http.NewRequest(http.MethodGet, base+"/OAuthStart", nil)
		req.Header.Set("Accept", "application/json")
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		checkJSONError(t, resp, 503, statusUnavailable)
		resp.Body.Close()
		if resp.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		sm.SetUnavailable(false)
		resp, err = noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Errorf("after Secret Manager recovered: got %d, want 302 (the instance kept its failure)", resp.StatusCode)
		}
	})
}

// TestBuildFromEnvMisconfigured: a deployment with a missing variable
// answers 500 with a message that sends the operator to the logs, and the
// logs name the variable.
func TestBuildFromEnvMisconfigured(t *testing.T) {
	for _, k := range []string{"GOOGLE_CLOUD_PROJECT", "CLIENT_SECRETS", "REDIRECT_URL", "PUBLIC_URL", "WEBHOOK_SECRETS", "TOKEN_KEYSET", "ALLOWED_AUDIENCES", "STORE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	logs := &syncBuffer{}
	inst := &instance{build: buildFromEnv, log: newLogger(logs)}
	rec := httptest.NewRecorder()
	req, _ := http.NewRequest(http.MethodGet, "/OAuthStart", nil)
	req.Header.Set("Accept", "application/json")
	inst.handler(registered[0])(rec, req)
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "function's logs") {
		t.Errorf("got %d %s, want 500 pointing at the logs", rec.Code, rec.Body.String())
	}
	for _, name := range []string{"CLIENT_SECRETS", "REDIRECT_URL", "GOOGLE_CLOUD_PROJECT"} {
		if !strings.Contains(logs.String(), name) {
			t.Errorf("the log does not name %s: %s", name, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `"severity":"ERROR"`) {
		t.Errorf("the failure is not logged at ERROR: %s", logs.String())
	}
}

// TestSecretReaderNeverLogsSecrets turns on the Google client libraries'
// debug logging, which writes whole responses to stderr, and checks that a
// secret read through Secret Manager does not reach it. The control shows
// that a client left to its defaults does log the payload.
func TestSecretReaderNeverLogsSecrets(t *testing.T) {
	sm, err := fakesecretmanager.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	const secret = "whsec-never-logged-0123456789abcdef"
	ref := sm.Put("projects/p/secrets/webhook", []byte(secret))
	t.Setenv("GOOGLE_SDK_GO_LOGGING_LEVEL", "debug")
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))

	control := captureStderr(t, func() {
		c, err := secretmanager.NewClient(t.Context(), sm.ClientOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.AccessSecretVersion(t.Context(), &secretmanagerpb.AccessSecretVersionRequest{Name: ref}); err != nil {
			t.Errorf("control access: %v", err)
		}
	})
	if !strings.Contains(control, secret) && !strings.Contains(control, b64) {
		t.Fatalf("control: the default client's debug log does not show the payload, so this test checks nothing; its stderr:\n%s", control)
	}

	got := captureStderr(t, func() {
		r := &secretReader{opts: sm.ClientOptions()}
		defer r.close()
		if _, err := r.read(t.Context(), "WEBHOOK_SECRETS", ref); err != nil {
			t.Errorf("read: %v", err)
		}
	})
	if strings.Contains(got, secret) || strings.Contains(got, b64) {
		t.Errorf("the secret reached stderr under debug logging:\n%s", got)
	}
}

// TestFailedBuildReleasesStore: the store is opened alongside the secret
// reads, so a build that fails afterwards (here: a client file that is not
// JSON) must close it; otherwise the embedded store's file lock would make
// every later try fail, and the instance would keep its failure.
func TestFailedBuildReleasesStore(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.srv.close() // the embedded store admits one holder
	good, err := os.ReadFile(e.cfg.ClientSecrets)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.cfg.ClientSecrets, []byte("not json"))
	if _, err := newServer(t.Context(), e.cfg, serverOptions{logger: newLogger(e.logs)}); err == nil {
		t.Fatal("a build with a broken client file succeeded")
	}
	writeFile(t, e.cfg.ClientSecrets, good)
	s, err := newServer(t.Context(), e.cfg, serverOptions{logger: newLogger(e.logs)})
	if err != nil {
		t.Fatalf("the next build: %v (the failed one kept the store open?)", err)
	}
	s.close()
}

// TestPastedSecretsRefused: a secret pasted into a variable that holds a
// reference to it is refused with a message naming the variable, and the
// value reaches neither the answer nor the logs — also when it looks like
// a file name. Every value is added to the leak audit of all tests' logs.
func TestPastedSecretsRefused(t *testing.T) {
	g, err := fakegoogle.New(fakegoogle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	dir := t.TempDir()
	clientFile := filepath.Join(dir, "client_secrets.json")
	writeFile(t, clientFile, g.ClientJSON("web"))
	webhookFile := filepath.Join(dir, "webhook_secrets")
	writeFile(t, webhookFile, []byte(testWebhookSecret+"\n"))
	keyset := testKeyset(t)
	keysetFile := filepath.Join(dir, "token_keyset.json")
	writeFile(t, keysetFile, keyset)
	sensitive.addKeyset(t, keysetFile)

	const (
		hexSecret = "9c3f1e0b7a6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b3a2918070f1e2d3c"
		b64Secret = "q2Vb/x9+Lr0TqYw3/ZkP1aN7mJ8cE5fH2gK4sD6uV0o="
		saKey     = `{"type":"service_account","client_email":"dwd@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7pasted\n-----END PRIVATE KEY-----\n"}`
	)
	for _, tc := range []struct {
		name, variable, value string
		pieces                []string // secret parts of value that must not appear either
		want                  string   // in the logs
	}{
		{"client JSON", "CLIENT_SECRETS", string(g.ClientJSON("web")), []string{g.ClientSecret()}, "CLIENT_SECRETS: holds JSON"},
		{"keyset JSON", "TOKEN_KEYSET", string(keyset), nil, "TOKEN_KEYSET: holds JSON"},
		{"two webhook secrets", "WEBHOOK_SECRETS", testWebhookSecret + "\n" + hexSecret, []string{testWebhookSecret, hexSecret}, "WEBHOOK_SECRETS: holds several lines"},
		{"a webhook secret with a control character", "WEBHOOK_SECRETS", hexSecret[:32] + "\x1b" + hexSecret[32:], []string{hexSecret[:32], hexSecret[32:]}, "WEBHOOK_SECRETS: holds control characters"},
		{"a hex webhook secret, like a file name", "WEBHOOK_SECRETS", hexSecret, nil, "WEBHOOK_SECRETS: no file at the path it holds"},
		{"a base64 webhook secret, like a path", "WEBHOOK_SECRETS", b64Secret, nil, "WEBHOOK_SECRETS: no file at the path it holds"},
		{"a service account key", "DELEGATION_KEY", saKey, []string{"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7pasted"}, "DELEGATION_KEY: holds JSON"},
		{"a key file's content, very long", "TOKEN_KEYSET", strings.Repeat("A", maxSecretRef+1), nil, "TOKEN_KEYSET: holds more than 4096 bytes"},
		{"a Secret Manager name without version", "CLIENT_SECRETS", "projects/p/secrets/client-" + hexSecret[:16], nil, "CLIENT_SECRETS: no file at the path it holds, and it is not a Secret Manager version name either"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{
				"STORE": storeLocal, "DATA_DIR": t.TempDir(),
				"CLIENT_SECRETS": clientFile, "WEBHOOK_SECRETS": webhookFile, "TOKEN_KEYSET": keysetFile,
				"REDIRECT_URL": "http://localhost:8080/OAuthCallback", "PUBLIC_URL": "http://localhost:8080",
			}
			for _, k := range []string{"GOOGLE_CLOUD_PROJECT", "K_SERVICE", "ALLOWED_AUDIENCES", "DELEGATION_KEY", "CREDENTIAL_SOURCE", "DELEGATED_DOMAINS", "CHAT_AUDIENCE_TYPE", "TOKEN_KEYSET_KMS_KEY"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			env[tc.variable] = tc.value
			for k, v := range env {
				t.Setenv(k, v)
			}
			secrets := append([]string{tc.value}, tc.pieces...)
			sensitive.add(secrets...)

			logs := &syncBuffer{}
			inst := &instance{build: buildFromEnv, log: newLogger(logs)}
			for _, r := range registered[:3] {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodGet, "/"+r.name, nil)
				inst.handler(r)(rec, req)
				if rec.Code != 500 {
					t.Errorf("%s: got %d, want 500", r.name, rec.Code)
				}
				for _, s := range secrets {
					if strings.Contains(rec.Body.String(), s) {
						t.Errorf("%s: the answer quotes the pasted value", r.name)
					}
				}
			}
			got := logs.String()
			if !strings.Contains(got, tc.want) {
				t.Errorf("the logs do not say %q:\n%s", tc.want, got)
			}
			for _, s := range secrets {
				if strings.Contains(got, s) {
					t.Errorf("the logs quote the pasted value (%d bytes, starting %q)", len(s), s[:4])
				}
			}
			// The JSON log escapes what it quotes: look for the escaped
			// forms too.
			for _, s := range secrets {
				if b, _ := json.Marshal(s); strings.Contains(got, strings.Trim(string(b), `"`)) {
					t.Errorf("the logs quote the pasted value, JSON-escaped")
				}
			}
		})
	}
}
