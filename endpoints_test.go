package chatauth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// hostileEndpoints are overrides an attacker who can change a variable or
// add a secret version might try: another host, Google's name inside
// another host's name or path, plain http, a different scheme or path.
func hostileEndpoints(google string) []string {
	host := strings.TrimPrefix(google, "https://")
	return []string{
		"https://evil.example",
		"https://evil.example/" + host,
		"https://" + strings.SplitN(host, "/", 2)[0] + ".evil.example/" + strings.SplitN(host+"/", "/", 2)[1],
		"http://" + host,
		"https://" + host + "/../../evil",
		"https://" + host + "?next=https://evil.example",
		"http://127.0.0.1:8080",
	}
}

// TestDeployedEndpointOverrides: deployed, CHAT_API_ENDPOINT,
// OAUTH_REVOKE_URL and IAM_CREDENTIALS_ENDPOINT must be Google's; the
// error names the variable. Undeployed, a local fake is accepted.
func TestDeployedEndpointOverrides(t *testing.T) {
	t.Parallel()
	deployed := map[string]string{
		"GOOGLE_CLOUD_PROJECT": "p",
		"CLIENT_SECRETS":       "projects/p/secrets/client/versions/3",
		"WEBHOOK_SECRETS":      "projects/p/secrets/webhook/versions/2",
		"TOKEN_KEYSET":         "projects/p/secrets/keyset/versions/1",
		"REDIRECT_URL":         "https://europe-west1-p.cloudfunctions.net/OAuthCallback",
		"PUBLIC_URL":           "https://europe-west1-p.cloudfunctions.net",
		"K_SERVICE":            "createspace",
		"FUNCTION_TARGET":      "CreateSpace",
		// Delegation on, so that IAM_CREDENTIALS_ENDPOINT is read.
		"CREDENTIAL_SOURCE":          "delegation",
		"DELEGATED_DOMAINS":          "example.com",
		"DELEGATION_SERVICE_ACCOUNT": "chatauth-delegate@p.iam.gserviceaccount.com",
	}
	with := func(env map[string]string, k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range env {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name   string
		google []string
	}{
		{"CHAT_API_ENDPOINT", googleChatURLs},
		{"OAUTH_REVOKE_URL", googleRevokeURLs},
		{"IAM_CREDENTIALS_ENDPOINT", googleIAMCredsURLs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, g := range tc.google {
				if _, err := loadConfig(envMap(with(deployed, tc.name, g))); err != nil {
					t.Errorf("Google's own %s=%s refused: %v", tc.name, g, err)
				}
			}
			for _, v := range hostileEndpoints(tc.google[0]) {
				_, err := loadConfig(envMap(with(deployed, tc.name, v)))
				if err == nil || !strings.Contains(err.Error(), tc.name+": ") {
					t.Errorf("deployed %s=%s: got %v, want an error naming %s", tc.name, v, err, tc.name)
				}
			}
			// Offline (no K_SERVICE) the override drives a local fake.
			local := with(deployed, tc.name, "http://127.0.0.1:8080")
			delete(local, "K_SERVICE")
			if _, err := loadConfig(envMap(local)); err != nil {
				t.Errorf("undeployed %s on loopback refused: %v", tc.name, err)
			}
		})
	}
}

// googleClientJSON is a client JSON as the Google Cloud console issues
// it, with the fake's id and secret.
func googleClientJSON(t *testing.T, e *testEnv, authURI, tokenURI string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"web": map[string]any{
		"client_id": e.google.ClientID(), "client_secret": e.google.ClientSecret(),
		"project_id": testProject, "auth_uri": authURI, "token_uri": tokenURI,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"redirect_uris":               []string{e.cfg.RedirectURL},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeployedClientEndpoints: deployed, the client JSON's auth_uri and
// token_uri must be Google's, or the server is not built; the error names
// the field and never quotes the client secret. Every endpoint Google's
// client files have named is accepted.
func TestDeployedClientEndpoints(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	e.srv.close() // the embedded store admits one holder
	build := func(client []byte, deployed bool) error {
		t.Helper()
		writeFile(t, e.cfg.ClientSecrets, client)
		cfg := e.cfg
		cfg.Deployed = deployed
		cfg.ChatEndpoint, cfg.RevokeURL = "", googleRevokeURL
		s, err := newServer(t.Context(), cfg, serverOptions{logger: newLogger(e.logs)})
		if err == nil {
			s.close()
		}
		return err
	}
	fake := e.google.ClientJSON("web")
	if err := build(fake, false); err != nil {
		t.Fatalf("undeployed, the fake's client JSON: %v", err)
	}
	// Through the handler: 500 with the JSON envelope, the detail in the
	// log only, and no client secret anywhere.
	logs := &syncBuffer{}
	inst := &instance{log: newLogger(logs), build: func(ctx context.Context) (*server, error) {
		cfg := e.cfg
		cfg.Deployed = true
		return newServer(ctx, cfg, serverOptions{logger: newLogger(logs)})
	}}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/CreateSpace", strings.NewReader(`{}`))
	i := slices.IndexFunc(registered, func(f function) bool { return f.name == "CreateSpace" })
	inst.handler(registered[i])(rec, req)
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"status":"INTERNAL"`) ||
		strings.Contains(rec.Body.String(), "auth_uri") {
		t.Errorf("deployed with the fake's client JSON: got %d %s, want 500 INTERNAL without the detail", rec.Code, rec.Body.String())
	}
	if !strings.Contains(logs.String(), "auth_uri") || strings.Contains(logs.String()+rec.Body.String(), e.google.ClientSecret()) {
		t.Errorf("the log should name auth_uri and never the client secret:\n%s", logs.String())
	}
	err := build(fake, true)
	if err == nil || !strings.Contains(err.Error(), "auth_uri") || !strings.Contains(err.Error(), "token_uri") {
		t.Errorf("deployed, the fake's client JSON: got %v, want an error naming auth_uri and token_uri", err)
	}
	for _, auth := range googleAuthURLs {
		for _, token := range googleTokenURLs {
			if err := build(googleClientJSON(t, e, auth, token), true); err != nil {
				t.Errorf("deployed, auth_uri %s and token_uri %s refused: %v", auth, token, err)
			}
		}
	}
	for _, v := range hostileEndpoints(googleTokenURL) {
		err := build(googleClientJSON(t, e, googleAuthURLs[0], v), true)
		if err == nil || !strings.Contains(err.Error(), "token_uri") || strings.Contains(err.Error(), "auth_uri") {
			t.Errorf("deployed, token_uri %s: got %v, want an error naming token_uri only", v, err)
		}
		if err != nil && strings.Contains(err.Error(), e.google.ClientSecret()) {
			t.Errorf("the error quotes the client secret: %v", err)
		}
	}
	for _, v := range hostileEndpoints(googleAuthURLs[0]) {
		err := build(googleClientJSON(t, e, v, googleTokenURL), true)
		if err == nil || !strings.Contains(err.Error(), "auth_uri") {
			t.Errorf("deployed, auth_uri %s: got %v, want an error naming auth_uri", v, err)
		}
	}
}

// TestDeployedDelegationKeyEndpoint: deployed, a DELEGATION_KEY whose
// token_uri is not Google's is refused, naming it; Google's is accepted.
func TestDeployedDelegationKeyEndpoint(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	if _, err := e.google.AddServiceAccount(fakegoogle.ServiceAccount{Email: delegationSA}); err != nil {
		t.Fatal(err)
	}
	key, err := e.google.CreateServiceAccountKey(delegationSA)
	if err != nil {
		t.Fatal(err)
	}
	var kf map[string]any
	if err := json.Unmarshal(key, &kf); err != nil {
		t.Fatal(err)
	}
	if pk, ok := kf["private_key"].(string); ok {
		sensitive.add(pk)
	}
	withTokenURI := func(u string) []byte {
		kf["token_uri"] = u
		b, _ := json.Marshal(kf)
		return b
	}
	cfg := e.cfg
	cfg.CredentialSource, cfg.DelegatedDomains = credentialDelegation, []string{"example.com"}
	cfg.DelegationKey = filepath.Join(t.TempDir(), "key.json")
	o := serverOptions{httpClient: http.DefaultClient, now: time.Now}
	newDeployed := func(key []byte, deployed bool) error {
		c := cfg
		c.Deployed = deployed
		_, err := newDelegator(t.Context(), c, key, googleTokenURL, o)
		return err
	}
	if err := newDeployed(key, false); err != nil {
		t.Fatalf("undeployed, the fake's key: %v", err)
	}
	for _, u := range googleTokenURLs {
		if err := newDeployed(withTokenURI(u), true); err != nil {
			t.Errorf("deployed, token_uri %s refused: %v", u, err)
		}
	}
	for _, u := range append(hostileEndpoints(googleTokenURL), e.google.TokenURL()) {
		if strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "http://127.") {
			continue // refused as plain http whether deployed or not
		}
		err := newDeployed(withTokenURI(u), true)
		if err == nil || !strings.Contains(err.Error(), "DELEGATION_KEY's token_uri") {
			t.Errorf("deployed, token_uri %s: got %v, want an error naming DELEGATION_KEY's token_uri", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("the error quotes the key: %v", err)
		}
	}
}
