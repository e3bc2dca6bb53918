package chatauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

const (
	// delegationSA is the function's service account in the tests.
	delegationSA = "chatauth@chatauth-test.iam.gserviceaccount.com"
	bobEmail     = "bob@example.com"
	carolEmail   = "carol@other.example" // a user of a domain not allow-listed
)

// delegationEnv is a testEnv whose fake Google knows the function's
// service account, bob (example.com) and carol (other.example), and whose
// example.com administrator granted the service account the Chat scope.
type delegationEnv struct {
	*testEnv
	sa      fakegoogle.ServiceAccount
	keyFile string // DELEGATION_KEY, when key-based
}

// newDelegationEnv serves with CREDENTIAL_SOURCE=source and
// DELEGATED_DOMAINS=example.com, keyless or with a key.
func newDelegationEnv(t *testing.T, storeKind, source string, keyless bool) *delegationEnv {
	t.Helper()
	e := newTestEnv(t, storeKind)
	g := e.google
	sa, err := g.AddServiceAccount(fakegoogle.ServiceAccount{Email: delegationSA})
	if err != nil {
		t.Fatal(err)
	}
	g.AddUser(fakegoogle.User{Email: bobEmail, EmailVerified: true})
	g.AddUser(fakegoogle.User{Email: carolEmail, EmailVerified: true})
	g.GrantDomainWideDelegation("example.com", sa.UniqueID, delegationScope)
	d := &delegationEnv{testEnv: e, sa: sa}
	e.cfg.CredentialSource = source
	e.cfg.DelegatedDomains = []string{"example.com"}
	if keyless {
		e.cfg.DelegationAccount = delegationSA
		e.cfg.IAMCredentialsEndpoint = g.URL()
	} else {
		key, err := g.CreateServiceAccountKey(delegationSA)
		if err != nil {
			t.Fatal(err)
		}
		var kf struct {
			PrivateKey string `json:"private_key"`
		}
		json.Unmarshal(key, &kf)
		sensitive.add(kf.PrivateKey)
		d.keyFile = filepath.Join(t.TempDir(), "delegation-key.json")
		writeFile(t, d.keyFile, key)
		e.cfg.DelegationKey = d.keyFile
	}
	d.restart()
	return d
}

// restart serves with the env's configuration; the IAM Credentials API is
// called without credentials (the fake does not check them).
func (d *delegationEnv) restart(edit ...func(*serverOptions)) {
	d.t.Helper()
	d.testEnv.restart(append([]func(*serverOptions){func(o *serverOptions) { o.iamClient = d.google.HTTPClient() }}, edit...)...)
}

// sub is the Google account id of a user of the fake.
func (d *delegationEnv) sub(email string) string {
	d.t.Helper()
	for _, u := range d.google.Users() {
		if u.Email == email {
			return u.Sub
		}
	}
	d.t.Fatalf("no user %s", email)
	return ""
}

// create posts a signed CreateSpace for user and returns the status and
// body.
func (d *delegationEnv) create(user, name string) (int, string) {
	d.t.Helper()
	return d.signed("CreateSpace", fmt.Sprintf(`{"user":%q,"displayName":%q}`, user, name))
}

// created posts a signed CreateSpace for user that must succeed and
// returns the Chat space it made.
func (d *delegationEnv) created(t *testing.T, user, name string) fakegoogle.Space {
	t.Helper()
	code, body := d.create(user, name)
	if code != http.StatusOK {
		t.Fatalf("CreateSpace for %s: got %d, want 200: %s", user, code, body)
	}
	sp, ok := d.google.SpaceByName(decodeSpace(t, body).Name)
	if !ok {
		t.Fatal("the space does not exist in Chat")
	}
	return sp
}

// tokenScopes asks the fake's tokeninfo what an access token grants.
func (d *delegationEnv) tokenScopes(t *testing.T, token string) string {
	t.Helper()
	resp, err := http.Get(d.google.URL() + "/tokeninfo?access_token=" + url.QueryEscape(token))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		Scope string `json:"scope"`
	}
	json.NewDecoder(resp.Body).Decode(&info)
	return info.Scope
}

// errorMessage is the message of a JSON error answer.
func errorMessage(t *testing.T, body string) string {
	t.Helper()
	var env struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("not the JSON error envelope: %s", body)
	}
	return env.Error.Message
}

// TestDelegationKeyless: with CREDENTIAL_SOURCE=delegation a user who never
// consented gets a space created as themselves, with a token the function's
// own service account got through signJwt and the JWT-bearer grant,
// carrying only chat.spaces.create. Nothing is stored.
func TestDelegationKeyless(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			d := newDelegationEnv(t, kind, credentialDelegation, true)
			g := d.google
			sp := d.created(t, "Alice@Example.com", "Onboarding Alice")
			if sp.Creator != aliceSub {
				t.Errorf("created by %s, want alice (%s)", sp.Creator, aliceSub)
			}
			if got := d.tokenScopes(t, sp.AccessToken); got != delegationScope {
				t.Errorf("the token grants %q, want only %s", got, delegationScope)
			}
			if g.SignJwtCalls() != 1 || g.DelegatedTokenCalls(aliceEmail) != 1 {
				t.Errorf("signJwt %d, grants %d; want 1 and 1", g.SignJwtCalls(), g.DelegatedTokenCalls(aliceEmail))
			}
			if g.ExchangeCalls() != 0 || g.TotalRefreshCalls() != 0 || d.storedToken(aliceSub) != nil {
				t.Error("delegation used or stored consent")
			}
			if !strings.Contains(d.logs.String(), `"via":"delegation"`) {
				t.Error(`the "space created" log line does not say the space was created through delegation`)
			}
		})
	}
}

// TestDelegationWithKey: DELEGATION_KEY, the fallback, signs the assertion
// itself; signJwt is never called.
func TestDelegationWithKey(t *testing.T) {
	t.Parallel()
	d := newDelegationEnv(t, storeLocal, credentialDelegation, false)
	g := d.google
	sp := d.created(t, bobEmail, "Onboarding Bob")
	if want := d.sub(bobEmail); sp.Creator != want {
		t.Errorf("created by %q, want bob (%s)", sp.Creator, want)
	}
	if got := d.tokenScopes(t, sp.AccessToken); got != delegationScope {
		t.Errorf("the token grants %q, want only %s", got, delegationScope)
	}
	if g.SignJwtCalls() != 0 || g.DelegatedTokenCalls(bobEmail) != 1 {
		t.Errorf("signJwt %d, grants %d; want 0 and 1", g.SignJwtCalls(), g.DelegatedTokenCalls(bobEmail))
	}
}

// TestDelegationAllowList: only users named by email, in DELEGATED_DOMAINS,
// are delegated; nothing is asked of Google for the others.
func TestDelegationAllowList(t *testing.T) {
	t.Parallel()
	d := newDelegationEnv(t, storeLocal, credentialDelegation, true)
	g := d.google
	for _, tc := range []struct {
		name, user string
		code       int
		status     string
	}{
		{"other domain", carolEmail, 403, statusPermissionDenied},
		{"look-alike domain", "alice@example.com.evil.example", 403, statusPermissionDenied},
		{"subdomain", "alice@eu.example.com", 403, statusPermissionDenied},
		{"users/{id}", "users/" + aliceSub, 400, statusInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := d.create(tc.user, "Refused "+tc.name)
			if code != tc.code {
				t.Fatalf("got %d, want %d: %s", code, tc.code, body)
			}
			checkJSONBody(t, body, tc.code, tc.status)
		})
	}
	if g.TotalDelegatedTokenCalls() != 0 || g.SignJwtCalls() != 0 || g.TotalChatCalls() != 0 {
		t.Errorf("Google was asked: %d grants, %d signJwt, %d Chat calls", g.TotalDelegatedTokenCalls(), g.SignJwtCalls(), g.TotalChatCalls())
	}
}

// TestDelegationCache: N concurrent requests for one user mint one token;
// later requests reuse it until shortly before it expires; a token Chat
// refuses is replaced once.
func TestDelegationCache(t *testing.T) {
	t.Parallel()
	d := newDelegationEnv(t, storeLocal, credentialDelegation, true)
	g := d.google
	// Slow Google down so that the requests overlap the first mint.
	g.SetTokenLatency(300 * time.Millisecond)
	const n = 16
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			codes[i], _ = d.create(bobEmail, fmt.Sprintf("Concurrent %d", i))
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d: got %d, want 200", i, c)
		}
	}
	if got := g.DelegatedTokenCalls(bobEmail); got != 1 {
		t.Errorf("%d concurrent requests minted %d tokens, want 1", n, got)
	}
	if got := g.SignJwtCalls(); got != 1 {
		t.Errorf("signJwt called %d times, want 1", got)
	}
	g.SetTokenLatency(0)

	// Another user has a token of their own.
	d.created(t, aliceEmail, "Alice's own")
	if g.DelegatedTokenCalls(aliceEmail) != 1 || g.DelegatedTokenCalls(bobEmail) != 1 {
		t.Errorf("grants: alice %d, bob %d; want 1 each", g.DelegatedTokenCalls(aliceEmail), g.DelegatedTokenCalls(bobEmail))
	}

	// Shortly before expiry (Google's tokens live 3599 s, the margin is a
	// minute) a new token is minted.
	d.clock.Advance(58 * time.Minute)
	d.created(t, bobEmail, "Still cached")
	if got := g.DelegatedTokenCalls(bobEmail); got != 1 {
		t.Errorf("after 58 minutes: %d grants, want 1 (still cached)", got)
	}
	d.clock.Advance(time.Minute + 30*time.Second)
	first := d.created(t, bobEmail, "Renewed")
	if got := g.DelegatedTokenCalls(bobEmail); got != 2 {
		t.Errorf("within a minute of expiry: %d grants, want 2", got)
	}

	// A token Chat refuses (revoked early) is replaced, once.
	g.ExpireAccessTokens(first.Creator)
	sp := d.created(t, bobEmail, "After a refused token")
	if got := g.DelegatedTokenCalls(bobEmail); got != 3 || sp.AccessToken == first.AccessToken {
		t.Errorf("after Chat refused the token: %d grants (want 3), same token %v", got, sp.AccessToken == first.AccessToken)
	}
}

// TestDelegationErrors: each refusal is answered with what to do about it,
// and a failure is not cached.
func TestDelegationErrors(t *testing.T) {
	t.Parallel()
	for _, keyless := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyless=%v", keyless), func(t *testing.T) {
			t.Parallel()
			d := newDelegationEnv(t, storeLocal, credentialDelegation, keyless)
			g := d.google

			// Delegation not granted (or not for this scope): the answer
			// names the client id and the scope to enter in the Admin
			// console, the service account's unique id (keyless: learnt
			// from the IAM Credentials API).
			g.GrantDomainWideDelegation("example.com", d.sa.UniqueID, fakegoogle.ScopeChatSpaces)
			code, body := d.create(aliceEmail, "Not granted")
			if code != 403 {
				t.Fatalf("not granted: got %d, want 403: %s", code, body)
			}
			checkJSONBody(t, body, 403, statusPermissionDenied)
			msg := errorMessage(t, body)
			for _, want := range []string{"Client ID " + d.sa.UniqueID, "OAuth scope " + delegationScope, "Domain Wide Delegation", "example.com"} {
				if !strings.Contains(msg, want) {
					t.Errorf("not granted: message %q does not say %q", msg, want)
				}
			}
			// Granted: the next request works; the refusal was not kept.
			g.GrantDomainWideDelegation("example.com", d.sa.UniqueID, delegationScope)
			d.created(t, aliceEmail, "Granted")

			// A user the domain does not know.
			code, body = d.create("nobody@example.com", "Nobody")
			if code != 404 {
				t.Fatalf("unknown user: got %d, want 404: %s", code, body)
			}
			checkJSONBody(t, body, 404, statusNotFound)
			if msg := errorMessage(t, body); !strings.Contains(msg, "nobody@example.com") {
				t.Errorf("unknown user: message %q does not name the user", msg)
			}

			// Google's token endpoint failing is a 502, and passes.
			g.FailTokenEndpoint(http.StatusServiceUnavailable, "", 1)
			code, body = d.create(bobEmail, "Google down")
			if code != 502 {
				t.Fatalf("token endpoint down: got %d, want 502: %s", code, body)
			}
			checkJSONBody(t, body, 502, statusUpstreamError)
			d.created(t, bobEmail, "Google back")
		})
	}

	t.Run("signJwt denied", func(t *testing.T) {
		t.Parallel()
		d := newDelegationEnv(t, storeLocal, credentialDelegation, true)
		d.google.DenySignJwt(delegationSA, true)
		code, body := d.create(aliceEmail, "Cannot sign")
		if code != 500 {
			t.Fatalf("got %d, want 500: %s", code, body)
		}
		checkJSONBody(t, body, 500, statusInternal)
		if !strings.Contains(d.logs.String(), "roles/iam.serviceAccountTokenCreator") {
			t.Error("the log does not tell the operator which role is missing")
		}
	})
}

// TestCredentialSources: which source serves a request is the operator's
// choice, never a fallback.
func TestCredentialSources(t *testing.T) {
	t.Parallel()
	t.Run("consent (delegation off)", func(t *testing.T) {
		// The fake would delegate, but the function is not configured to.
		d := newDelegationEnv(t, storeLocal, credentialDelegation, true)
		d.cfg.CredentialSource, d.cfg.DelegatedDomains, d.cfg.DelegationAccount, d.cfg.IAMCredentialsEndpoint = credentialConsent, nil, "", ""
		d.restart()
		if d.srv.delegation != nil {
			t.Fatal("a delegator was built with CREDENTIAL_SOURCE=consent")
		}
		code, body := d.create(aliceEmail, "Before consent")
		checkJSONBody(t, body, 403, statusAuthorizationRequired)
		if code != 403 {
			t.Errorf("got %d, want 403", code)
		}
		rec := d.connect()
		sp := d.created(t, aliceEmail, "After consent")
		if sp.AccessToken != rec.AccessToken {
			t.Error("the space was not created with the stored consent")
		}
		if d.google.TotalDelegatedTokenCalls() != 0 || d.google.SignJwtCalls() != 0 {
			t.Error("delegation was used with CREDENTIAL_SOURCE=consent")
		}
	})

	t.Run(credentialConsentFirst, func(t *testing.T) {
		for _, kind := range storeKinds {
			t.Run(kind, func(t *testing.T) {
				t.Parallel()
				d := newDelegationEnv(t, kind, credentialConsentFirst, true)
				g := d.google
				rec := d.connect()
				// Alice has consent: it is used.
				if sp := d.created(t, aliceEmail, "Alice by consent"); sp.AccessToken != rec.AccessToken || g.DelegatedTokenCalls(aliceEmail) != 0 {
					t.Error("alice's stored consent was not used")
				}
				// Bob has none and is in the allowed domain: delegated.
				if d.created(t, bobEmail, "Bob delegated"); g.DelegatedTokenCalls(bobEmail) != 1 {
					t.Error("bob was not delegated")
				}
				// Carol has none and is not: asked to consent, as before.
				code, body := d.create(carolEmail, "Carol")
				if code != 403 {
					t.Fatalf("carol: got %d, want 403: %s", code, body)
				}
				checkJSONBody(t, body, 403, statusAuthorizationRequired)
				// Alice revokes her consent: she is asked to consent again,
				// not silently delegated.
				g.RevokeUser(aliceSub)
				for i := range 2 {
					code, body := d.create(aliceEmail, fmt.Sprintf("Alice revoked %d", i))
					if code != 403 {
						t.Fatalf("alice revoked: got %d, want 403: %s", code, body)
					}
					checkJSONBody(t, body, 403, statusAuthorizationRequired)
				}
				if g.DelegatedTokenCalls(aliceEmail) != 0 {
					t.Error("alice was delegated after she revoked her consent")
				}
			})
		}
	})

	t.Run(credentialDelegationFirst, func(t *testing.T) {
		t.Parallel()
		d := newDelegationEnv(t, storeLocal, credentialDelegationFirst, true)
		g := d.google
		rec := d.connect()
		// Alice has consent, but the operator chose delegation first.
		if sp := d.created(t, aliceEmail, "Alice delegated"); sp.AccessToken == rec.AccessToken || g.DelegatedTokenCalls(aliceEmail) != 1 {
			t.Error("alice was not delegated")
		}
		// By id she cannot be delegated; her consent serves.
		if sp := d.created(t, "users/"+aliceSub, "Alice by id"); sp.AccessToken != rec.AccessToken {
			t.Error("alice by id was not served by her consent")
		}
		// Carol is not in the allowed domain: consent, which she has not
		// given.
		code, body := d.create(carolEmail, "Carol")
		if code != 403 {
			t.Fatalf("carol: got %d, want 403: %s", code, body)
		}
		checkJSONBody(t, body, 403, statusAuthorizationRequired)
		if g.DelegatedTokenCalls(carolEmail) != 0 {
			t.Error("carol was delegated")
		}
	})
}

// TestDelegationChatEvents: a /createspace from a Chat user who never
// consented creates the space as them, delegated by the email Chat sends.
func TestDelegationChatEvents(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatAudienceEndpoint)
	g := c.google
	sa, err := g.AddServiceAccount(fakegoogle.ServiceAccount{Email: delegationSA})
	if err != nil {
		t.Fatal(err)
	}
	g.GrantDomainWideDelegation("example.com", sa.UniqueID, delegationScope)
	c.cfg.CredentialSource, c.cfg.DelegatedDomains = credentialConsentFirst, []string{"example.com"}
	c.cfg.DelegationAccount, c.cfg.IAMCredentialsEndpoint = delegationSA, g.URL()
	c.restart(func(o *serverOptions) { o.certsClient, o.iamClient = c.app.HTTPClient(), g.HTTPClient() })

	a := c.send(chatMsg{text: "/createspace Delegated launch @Bob", slash: createCommandID, mentions: []mention{bob}})
	if !strings.Contains(a.Text, "Created the space") {
		t.Fatalf("got %s, want the space created", a.raw)
	}
	sp := g.Spaces()[0]
	if sp.Creator != aliceSub || sp.DisplayName != "Delegated launch" || g.DelegatedTokenCalls(aliceEmail) != 1 {
		t.Errorf("space %+v, grants %d: want it created by alice through delegation", sp, g.DelegatedTokenCalls(aliceEmail))
	}
	// Without an email Chat's user cannot be delegated: Chat's consent
	// prompt, as before.
	if a := c.send(chatMsg{email: "-", text: "/createspace No email", slash: createCommandID}); a.ActionResponse == nil || a.ActionResponse.Type != "REQUEST_CONFIG" {
		t.Errorf("without an email: got %s, want the consent prompt", a.raw)
	}
}

// TestDelegationConfig: the settings are checked together, and every
// problem is named.
func TestDelegationConfig(t *testing.T) {
	t.Parallel()
	base := map[string]string{
		"GOOGLE_CLOUD_PROJECT": "p",
		"CLIENT_SECRETS":       "projects/p/secrets/client/versions/latest",
		"WEBHOOK_SECRETS":      "projects/p/secrets/webhook/versions/latest",
		"TOKEN_KEYSET":         "projects/p/secrets/keyset/versions/latest",
		"REDIRECT_URL":         "https://europe-west1-p.cloudfunctions.net/OAuthCallback",
		"PUBLIC_URL":           "https://europe-west1-p.cloudfunctions.net",
	}
	load := func(extra map[string]string) (Config, error) {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return loadConfig(envMap(m))
	}
	c, err := load(nil)
	if err != nil || c.CredentialSource != credentialConsent {
		t.Fatalf("default: got %q, %v; want consent", c.CredentialSource, err)
	}
	c, err = load(map[string]string{"CREDENTIAL_SOURCE": "Delegation", "DELEGATED_DOMAINS": "Example.com, example.org", "DELEGATION_SERVICE_ACCOUNT": "ChatAuth@p.iam.gserviceaccount.com"})
	if err != nil {
		t.Fatalf("keyless: %v", err)
	}
	if c.CredentialSource != credentialDelegation || strings.Join(c.DelegatedDomains, ",") != "example.com,example.org" || c.DelegationAccount != "chatauth@p.iam.gserviceaccount.com" {
		t.Errorf("keyless: got %q %q %q", c.CredentialSource, c.DelegatedDomains, c.DelegationAccount)
	}
	if _, err := load(map[string]string{"CREDENTIAL_SOURCE": "consent_then_delegation", "DELEGATED_DOMAINS": "example.com", "DELEGATION_KEY": "projects/p/secrets/dwd-key/versions/latest"}); err != nil {
		t.Errorf("with a key: %v", err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"unknown source", map[string]string{"CREDENTIAL_SOURCE": "both"}, []string{"CREDENTIAL_SOURCE"}},
		{"delegation settings while off", map[string]string{"DELEGATED_DOMAINS": "example.com"}, []string{"DELEGATED_DOMAINS", "delegation is off"}},
		{"no domains, no account", map[string]string{"CREDENTIAL_SOURCE": "delegation"}, []string{"DELEGATED_DOMAINS", "DELEGATION_SERVICE_ACCOUNT"}},
		{"a wildcard domain", map[string]string{"CREDENTIAL_SOURCE": "delegation", "DELEGATED_DOMAINS": "*.example.com", "DELEGATION_SERVICE_ACCOUNT": "a@p.iam.gserviceaccount.com"}, []string{`"*.example.com"`}},
		{"an address for a domain", map[string]string{"CREDENTIAL_SOURCE": "delegation", "DELEGATED_DOMAINS": "admin@example.com", "DELEGATION_SERVICE_ACCOUNT": "a@p.iam.gserviceaccount.com"}, []string{"admin@example.com"}},
		{"both account and key", map[string]string{"CREDENTIAL_SOURCE": "delegation", "DELEGATED_DOMAINS": "example.com", "DELEGATION_SERVICE_ACCOUNT": "a@p.iam.gserviceaccount.com", "DELEGATION_KEY": "k"}, []string{"not both"}},
		{"account not an email", map[string]string{"CREDENTIAL_SOURCE": "delegation", "DELEGATED_DOMAINS": "example.com", "DELEGATION_SERVICE_ACCOUNT": "chatauth"}, []string{"DELEGATION_SERVICE_ACCOUNT"}},
		{"IAM endpoint over http", map[string]string{"CREDENTIAL_SOURCE": "delegation", "DELEGATED_DOMAINS": "example.com", "DELEGATION_SERVICE_ACCOUNT": "a@p.iam.gserviceaccount.com", "IAM_CREDENTIALS_ENDPOINT": "http://iam.example"}, []string{"IAM_CREDENTIALS_ENDPOINT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.env)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *ConfigError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestDelegationKeyRefused: a DELEGATION_KEY that is not a service
// account's key fails the build with an error that quotes none of it.
func TestDelegationKeyRefused(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	for name, content := range map[string]string{
		"not JSON":       "-----BEGIN PRIVATE KEY-----\nsecretish\n-----END PRIVATE KEY-----\n",
		"user creds":     `{"type":"authorized_user","client_id":"x","client_secret":"secretish","refresh_token":"secretish"}`,
		"http token_uri": `{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nsecretish\n-----END PRIVATE KEY-----\n","token_uri":"http://evil.example/token"}`,
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "key.json")
			writeFile(t, file, []byte(content))
			cfg := e.cfg
			cfg.CredentialSource, cfg.DelegatedDomains, cfg.DelegationKey = credentialDelegation, []string{"example.com"}, file
			_, err := newDelegator(t.Context(), cfg, []byte(content), e.google.TokenURL(), serverOptions{httpClient: http.DefaultClient, now: time.Now})
			if err == nil {
				t.Fatal("the key was accepted")
			}
			if strings.Contains(err.Error(), "secretish") {
				t.Errorf("the error quotes the key: %v", err)
			}
		})
	}
}
