package chatauth

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// doctorFiles writes a working local configuration's files and returns
// its environment.
func doctorFiles(t *testing.T) (map[string]string, *fakegoogle.Server) {
	t.Helper()
	const base = "http://localhost:8080"
	g, err := fakegoogle.New(fakegoogle.Options{RedirectURIs: []string{base + "/OAuthCallback"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, data)
		return p
	}
	sensitive.add(testWebhookSecret, g.ClientSecret())
	return map[string]string{
		"CLIENT_SECRETS":  file("client.json", g.ClientJSON("web")),
		"WEBHOOK_SECRETS": file("webhook", []byte(testWebhookSecret+"\n")),
		"TOKEN_KEYSET":    file("keyset.json", testKeyset(t)),
		"REDIRECT_URL":    base + "/OAuthCallback",
		"PUBLIC_URL":      base,
		"STORE":           "local",
		"DATA_DIR":        filepath.Join(dir, "data"),
	}, g
}

// TestDoctor provokes every finding doctor makes, one at a time, from a
// configuration that has none, and checks that no finding quotes a secret.
func TestDoctor(t *testing.T) {
	t.Parallel()
	good, g := doctorFiles(t)
	if got := diagnose(t.Context(), envMap(good), doctorOptions{}); len(got) != 0 {
		t.Fatalf("a working configuration: got findings %v, want none", got)
	}
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, data)
		return p
	}
	otherHost := fakegoogle.Options{RedirectURIs: []string{"https://elsewhere.example/OAuthCallback"}}
	g2, err := fakegoogle.New(otherHost)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	g3, err := fakegoogle.New(fakegoogle.Options{RedirectURIs: []string{"http://localhost:8080/callback"}})
	if err != nil {
		t.Fatal(err)
	}
	defer g3.Close()
	sensitive.add(g2.ClientSecret(), g3.ClientSecret())
	saKey := `{"type":"authorized_user","client_id":"x","client_secret":"delegation-secret-0123456789","refresh_token":"1//delegation-refresh-0123456789"}`
	sensitive.add("delegation-secret-0123456789", "1//delegation-refresh-0123456789")
	blocker := file("not-a-dir", []byte("x"))

	for _, tc := range []struct {
		name                    string
		edit                    map[string]string
		severity, setting, want string
	}{
		{"a variable missing", map[string]string{"TOKEN_KEYSET": ""}, SeverityError, "configuration", "missing TOKEN_KEYSET"},
		{"a pasted secret", map[string]string{"WEBHOOK_SECRETS": testWebhookSecret}, SeverityError, "WEBHOOK_SECRETS", "secret"},
		{"REDIRECT_URL's shape", map[string]string{"REDIRECT_URL": "http://example.com/OAuthCallback"}, SeverityError, "REDIRECT_URL", "https"},
		{"PUBLIC_URL's shape", map[string]string{"PUBLIC_URL": "localhost:8080"}, SeverityError, "PUBLIC_URL", "absolute"},
		{"hosts differ", map[string]string{"PUBLIC_URL": "http://127.0.0.1:8080"}, SeverityError, "REDIRECT_URL", "flow cookie"},
		{"callback path", map[string]string{"REDIRECT_URL": "http://localhost:8080/callback", "CLIENT_SECRETS": file("c2.json", g3.ClientJSON("web"))}, SeverityWarning, "REDIRECT_URL", "not PUBLIC_URL + /OAuthCallback"},
		{"redirect_uri_mismatch", map[string]string{"CLIENT_SECRETS": file("other.json", g2.ClientJSON("web"))}, SeverityError, "REDIRECT_URL", "redirect_uri_mismatch"},
		{"installed client", map[string]string{"CLIENT_SECRETS": file("installed.json", g.ClientJSON("installed"))}, SeverityWarning, "CLIENT_SECRETS", "Desktop app"},
		{"client JSON unreadable", map[string]string{"CLIENT_SECRETS": filepath.Join(dir, "absent.json")}, SeverityError, "CLIENT_SECRETS", "cannot be read"},
		{"client JSON of another kind", map[string]string{"CLIENT_SECRETS": file("notclient.json", []byte(`{"type":"service_account"}`))}, SeverityError, "CLIENT_SECRETS", "web"},
		{"webhook secret too short", map[string]string{"WEBHOOK_SECRETS": file("short", []byte("abc\n"))}, SeverityError, "WEBHOOK_SECRETS", "shorter than 16"},
		{"keyset not a keyset", map[string]string{"TOKEN_KEYSET": file("ks.json", []byte(`{"primaryKeyId":1}`))}, SeverityError, "TOKEN_KEYSET", "keyset"},
		{"KMS key not a key", map[string]string{tokenKeysetKMSKeyVar: "projects/p/keys/k"}, SeverityError, tokenKeysetKMSKeyVar, "gcp-kms://"},
		{"delegation key not a service account's", map[string]string{"CREDENTIAL_SOURCE": "delegation", "DELEGATED_DOMAINS": "example.com", "DELEGATION_KEY": file("key.json", []byte(saKey))}, SeverityError, "DELEGATION_KEY", "service account"},
		{"delegation incomplete", map[string]string{"CREDENTIAL_SOURCE": "delegation"}, SeverityError, "DELEGATED_DOMAINS", "required with CREDENTIAL_SOURCE=delegation"},
		{"store unusable", map[string]string{"DATA_DIR": filepath.Join(blocker, "data")}, SeverityError, "DATA_DIR", "does not answer"},
		{"store unknown", map[string]string{"STORE": "redis"}, SeverityError, "STORE", "not a store"},
		{"chat audience without type", map[string]string{"CHAT_AUDIENCE": "123"}, SeverityError, "", "CHAT_AUDIENCE_TYPE"},
		{"chat project number", map[string]string{"CHAT_AUDIENCE_TYPE": "PROJECT_NUMBER", "CHAT_AUDIENCE": "my-project"}, SeverityError, "CHAT_AUDIENCE", "project number"},
		{"add-on project not a number", map[string]string{"CHAT_AUDIENCE_TYPE": "ENDPOINT_URL", "CHAT_AUDIENCE": "http://localhost:8080/ChatEvents", "CHAT_PROJECT_NUMBER": "my-project"}, SeverityError, "CHAT_PROJECT_NUMBER", "project number (digits"},
		{"add-on project without audience", map[string]string{"CHAT_PROJECT_NUMBER": "123456789012"}, SeverityError, "", "CHAT_AUDIENCE_TYPE is not"},
		{"add-on with the project number audience", map[string]string{"CHAT_AUDIENCE_TYPE": "PROJECT_NUMBER", "CHAT_AUDIENCE": "123456789012", "CHAT_PROJECT_NUMBER": "123456789012"}, SeverityError, "CHAT_PROJECT_NUMBER", "HTTP endpoint URL only"},
		{"add-on endpoint elsewhere", map[string]string{"CHAT_AUDIENCE_TYPE": "ENDPOINT_URL", "CHAT_AUDIENCE": "http://localhost:8080/Chat", "CHAT_PROJECT_NUMBER": "123456789012"}, SeverityWarning, "CHAT_AUDIENCE", "not the ChatEvents URL"},
		{"chat endpoint elsewhere", map[string]string{"CHAT_AUDIENCE_TYPE": "ENDPOINT_URL", "CHAT_AUDIENCE": "http://localhost:8080/Chat"}, SeverityWarning, "CHAT_AUDIENCE", "not the ChatEvents URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := maps.Clone(good)
			maps.Copy(env, tc.edit)
			got := diagnose(t.Context(), envMap(env), doctorOptions{storeWait: 5 * time.Second})
			found := false
			for _, f := range got {
				if f.Severity == tc.severity && (tc.setting == "" || f.Setting == tc.setting) && strings.Contains(f.Problem, tc.want) {
					found = true
				}
				if f.Fix == "" {
					t.Errorf("finding %q has no fix", f)
				}
				for _, v := range sensitive.list() {
					if strings.Contains(f.String(), v) {
						t.Errorf("finding %q quotes a secret (%.4q…)", f, v)
					}
				}
			}
			if !found {
				t.Errorf("got %v, want a %s on %q saying %q", got, tc.severity, tc.setting, tc.want)
			}
			if HasErrors(got) != (tc.severity == SeverityError) {
				t.Errorf("HasErrors: got %v for %v", HasErrors(got), got)
			}
		})
	}
}

// TestDoctorFirestore: doctor's store check on Firestore, through the
// emulator, and on a Firestore that does not answer.
func TestDoctorFirestore(t *testing.T) {
	t.Parallel()
	project := needFirestore(t)
	env, _ := doctorFiles(t)
	env["STORE"], env["GOOGLE_CLOUD_PROJECT"] = "firestore", project
	if got := diagnose(t.Context(), envMap(env), doctorOptions{}); len(got) != 0 {
		t.Errorf("Firestore through the emulator: got %v, want no findings", got)
	}
	ln := httptest.NewServer(http.NotFoundHandler())
	ln.Close() // a port nothing answers on
	got := diagnose(t.Context(), envMap(env), doctorOptions{storeWait: 2 * time.Second,
		firestore: dialEmulator(t, strings.TrimPrefix(ln.URL, "http://"))})
	if len(got) != 1 || got[0].Setting != "STORE" || !strings.Contains(got[0].Problem, "does not answer") || !strings.Contains(got[0].Fix, "roles/datastore.user") {
		t.Errorf("Firestore unreachable: got %v, want one STORE finding", got)
	}
}

// TestDeployedLogsFindings: a deployed instance logs the checks that need
// no call once, at its first request, and no more.
func TestDeployedLogsFindings(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := &server{log: newLogger(&logs), cfg: Config{Deployed: true, PublicURL: "https://r-p.cloudfunctions.net",
		RedirectURL: "https://r-p.cloudfunctions.net/OAuthCallback"},
		client: &clientSecrets{Type: "web", RedirectURIs: []string{"https://r-p.cloudfunctions.net/oauthcallback"}}}
	i := &instance{build: func(context.Context) (*server, error) { return s, nil }, log: s.log}
	h := i.handler(function{name: "Users", handle: func(*server, http.ResponseWriter, *http.Request) error { return nil }})
	for range 3 {
		h(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/Users", nil))
	}
	if n := strings.Count(logs.String(), "redirect_uri_mismatch"); n != 1 || !strings.Contains(logs.String(), `"severity":"ERROR"`) {
		t.Errorf("got %d logged redirect_uri_mismatch findings, want 1 at ERROR:\n%s", n, logs.String())
	}

	logs.Reset()
	s.client.RedirectURIs = []string{s.cfg.RedirectURL}
	i = &instance{build: func(context.Context) (*server, error) { return s, nil }, log: s.log}
	h = i.handler(function{name: "Users", handle: func(*server, http.ResponseWriter, *http.Request) error { return nil }})
	h(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/Users", nil))
	if !strings.Contains(logs.String(), "configuration checks passed") {
		t.Errorf("a good configuration: logs %s, want one line saying the checks passed", logs.String())
	}
	s.cfg.Deployed = false
	logs.Reset()
	i = &instance{build: func(context.Context) (*server, error) { return s, nil }, log: s.log}
	i.handler(function{name: "Users", handle: func(*server, http.ResponseWriter, *http.Request) error { return nil }})(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/Users", nil))
	if strings.Contains(logs.String(), "configuration check") {
		t.Errorf("not deployed: logs %s, want no checks (cmd/local runs them before serving)", logs.String())
	}
}

// TestDoctorKMS: a KMS-wrapped TOKEN_KEYSET is unwrapped by doctor; the
// wrong key is a TOKEN_KEYSET error naming the KMS fix, quoting no key.
func TestDoctorKMS(t *testing.T) {
	t.Parallel()
	g, opts := kmsFake(t)
	uri := g.AddKMSKey(kmsTestKey)
	otherURI := g.AddKMSKey(kmsOtherKey)
	wrapped, clear := wrappedKeyset(t, uri, opts)
	env, _ := doctorFiles(t)
	path := filepath.Join(t.TempDir(), "wrapped.json")
	writeFile(t, path, wrapped)
	env["TOKEN_KEYSET"], env[tokenKeysetKMSKeyVar] = path, uri
	if got := diagnose(t.Context(), envMap(env), doctorOptions{kms: opts}); len(got) != 0 {
		t.Errorf("the key that wrapped it: got %v, want no findings", got)
	}
	env[tokenKeysetKMSKeyVar] = otherURI
	got := diagnose(t.Context(), envMap(env), doctorOptions{kms: opts})
	if len(got) != 1 || got[0].Setting != "TOKEN_KEYSET" || !strings.Contains(got[0].Fix, "roles/cloudkms.cryptoKeyDecrypter") {
		t.Fatalf("another key: got %v, want one TOKEN_KEYSET finding with the KMS fix", got)
	}
	for _, v := range keysetSecrets(t, wrapped, clear) {
		if strings.Contains(got[0].String(), v) {
			t.Errorf("the finding quotes the keyset (%.6q…)", v)
		}
	}
}
