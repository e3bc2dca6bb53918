package chatauth

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Store kinds accepted in STORE.
const (
	storeFirestore = "firestore"
	storeLocal     = "local"
)

// Config is the function's whole configuration, read from the environment
// in one place (loadConfig). Handlers never read the environment.
type Config struct {
	Project           string   // GOOGLE_CLOUD_PROJECT
	ClientSecrets     string   // CLIENT_SECRETS: secret reference to the OAuth client JSON
	WebhookSecrets    string   // WEBHOOK_SECRETS: secret reference, one HMAC secret per line
	TokenKeyset       string   // TOKEN_KEYSET: secret reference to the Tink AEAD keyset (JSON) that encrypts stored tokens
	TokenKeysetKMSKey string   // TOKEN_KEYSET_KMS_KEY: Cloud KMS key that wraps TOKEN_KEYSET; empty: cleartext keyset
	RedirectURL       string   // REDIRECT_URL: the exact OAuthCallback URL registered on the client
	PublicURL         string   // PUBLIC_URL: base URL of the functions, for authorizeUrl links
	AllowedAudiences  []string // ALLOWED_AUDIENCES
	TrustedCallers    []string // TRUSTED_CALLERS
	Store             string   // STORE: firestore or local
	DataDir           string   // DATA_DIR: the embedded store's directory
	FirestoreDatabase string   // FIRESTORE_DATABASE
	ChatEndpoint      string   // CHAT_API_ENDPOINT: empty means Google's
	RevokeURL         string   // OAUTH_REVOKE_URL
	GoogleCertsURL    string   // GOOGLE_CERTS_URL: the JWK set of Google's ID-token keys; empty means Google's (googlecerts.go)
	ChatCertsURL      string   // CHAT_CERTS_URL: chat@system's X.509 certificates; empty means Google's
	ChatAudienceType  string   // CHAT_AUDIENCE_TYPE: ENDPOINT_URL or PROJECT_NUMBER; empty: ChatEvents is off
	ChatAudience      string   // CHAT_AUDIENCE: the ChatEvents URL, or the project number, as set in the Chat app's configuration
	ChatProjectNumber string   // CHAT_PROJECT_NUMBER: the project whose Workspace add-on service agent may send add-on Chat events; empty: none (chataddon.go)
	Deployed          bool     // K_SERVICE is set: running on Cloud Functions / Cloud Run
	Function          string   // FUNCTION_TARGET: the one function a deployed instance serves; empty: every function

	// Domain-wide delegation (delegation.go).
	CredentialSource       string   // CREDENTIAL_SOURCE: consent (default), delegation, consent_then_delegation or delegation_then_consent
	DelegatedDomains       []string // DELEGATED_DOMAINS: the Workspace domains whose users delegation may act for, lowercase
	DelegationAccount      string   // DELEGATION_SERVICE_ACCOUNT: the service account keyless delegation signs as, lowercase
	DelegationKey          string   // DELEGATION_KEY: secret reference to a service account's JSON key, instead of keyless
	IAMCredentialsEndpoint string   // IAM_CREDENTIALS_ENDPOINT: IAM Credentials API base URL; empty means Google's
}

// Google's token revocation endpoint.
const googleRevokeURL = "https://oauth2.googleapis.com/revoke"

// callerFree names the functions that never authenticate a webhook caller:
// deployed alone (FUNCTION_TARGET), they need neither WEBHOOK_SECRETS nor
// ALLOWED_AUDIENCES, so their service account need not read the webhook
// secret (README.md, "Deploy to Google Cloud"). Any other function, a new
// one included, needs one of the two.
var callerFree = map[string]bool{"OAuthStart": true, "OAuthCallback": true, "ChatEvents": true}

// loadConfig reads the configuration with getenv (os.Getenv in production,
// a map in tests). Its error names every missing or invalid variable at
// once, so an operator fixes a deployment in one go.
func loadConfig(getenv func(string) string) (Config, error) {
	c := readConfig(getenv)
	missing := c.missing()
	invalid := c.invalid()
	var errs []string
	if len(missing) > 0 {
		errs = append(errs, "missing "+strings.Join(missing, ", "))
	}
	errs = append(errs, invalid...)
	if len(errs) > 0 {
		return c, &ConfigError{Problems: errs}
	}
	return c, nil
}

// readConfig reads the variables, trimmed, with their defaults.
func readConfig(getenv func(string) string) Config {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	c := Config{
		Project:           get("GOOGLE_CLOUD_PROJECT"),
		ClientSecrets:     get("CLIENT_SECRETS"),
		WebhookSecrets:    get("WEBHOOK_SECRETS"),
		TokenKeyset:       get("TOKEN_KEYSET"),
		TokenKeysetKMSKey: get(tokenKeysetKMSKeyVar),
		RedirectURL:       get("REDIRECT_URL"),
		PublicURL:         strings.TrimRight(get("PUBLIC_URL"), "/"),
		AllowedAudiences:  splitList(get("ALLOWED_AUDIENCES")),
		TrustedCallers:    splitList(strings.ToLower(get("TRUSTED_CALLERS"))),
		Store:             get("STORE"),
		DataDir:           get("DATA_DIR"),
		FirestoreDatabase: get("FIRESTORE_DATABASE"),
		ChatEndpoint:      get("CHAT_API_ENDPOINT"),
		RevokeURL:         get("OAUTH_REVOKE_URL"),
		GoogleCertsURL:    get("GOOGLE_CERTS_URL"),
		ChatCertsURL:      get("CHAT_CERTS_URL"),
		ChatAudienceType:  strings.ToUpper(get("CHAT_AUDIENCE_TYPE")),
		ChatAudience:      get("CHAT_AUDIENCE"),
		ChatProjectNumber: get("CHAT_PROJECT_NUMBER"),
		Deployed:          get("K_SERVICE") != "",
		Function:          get("FUNCTION_TARGET"),

		CredentialSource:       strings.ToLower(get("CREDENTIAL_SOURCE")),
		DelegatedDomains:       splitList(strings.ToLower(get("DELEGATED_DOMAINS"))),
		DelegationAccount:      strings.ToLower(get("DELEGATION_SERVICE_ACCOUNT")),
		DelegationKey:          get("DELEGATION_KEY"),
		IAMCredentialsEndpoint: strings.TrimRight(get("IAM_CREDENTIALS_ENDPOINT"), "/"),
	}
	if c.Store == "" {
		c.Store = storeFirestore
	}
	if c.FirestoreDatabase == "" {
		c.FirestoreDatabase = "(default)"
	}
	if c.RevokeURL == "" {
		c.RevokeURL = googleRevokeURL
	}
	if c.DataDir == "" {
		c.DataDir = ".chatauth"
	}
	if c.CredentialSource == "" {
		c.CredentialSource = credentialConsent
	}
	return c
}

// missing names the required variables that are not set.
func (c *Config) missing() []string {
	var missing []string
	need := func(name, v string) {
		if v == "" {
			missing = append(missing, name)
		}
	}
	need("CLIENT_SECRETS", c.ClientSecrets)
	need("TOKEN_KEYSET", c.TokenKeyset)
	need("REDIRECT_URL", c.RedirectURL)
	need("PUBLIC_URL", c.PublicURL)
	if c.Store == storeFirestore {
		need("GOOGLE_CLOUD_PROJECT", c.Project)
	}
	if c.WebhookSecrets == "" && len(c.AllowedAudiences) == 0 && !callerFree[c.Function] {
		missing = append(missing, "WEBHOOK_SECRETS (or ALLOWED_AUDIENCES, when only Google ID tokens call)")
	}
	return missing
}

// invalid lists every set variable whose value is wrong, each with what
// to set instead. The checks of one feature live with it (checkChatAudience,
// checkDelegation...); some fill in what a value implies.
func (c *Config) invalid() []string {
	var invalid []string
	switch c.Store {
	case storeFirestore:
	case storeLocal:
		if c.Deployed {
			invalid = append(invalid, `STORE: "local" keeps tokens on an instance's disk, which Cloud Functions discards; deployed, the store is always "firestore"`)
		}
	default:
		invalid = append(invalid, fmt.Sprintf("STORE: %q is not a store; use %q or %q", c.Store, storeFirestore, storeLocal))
	}
	for _, v := range []struct{ name, ref string }{
		{"CLIENT_SECRETS", c.ClientSecrets}, {"WEBHOOK_SECRETS", c.WebhookSecrets},
		{"TOKEN_KEYSET", c.TokenKeyset}, {"DELEGATION_KEY", c.DelegationKey},
	} {
		if p := secretRefProblem(v.name, v.ref); p != "" {
			invalid = append(invalid, p)
		}
	}
	if c.TokenKeysetKMSKey != "" && !kmsKeyURIPattern().MatchString(c.TokenKeysetKMSKey) {
		invalid = append(invalid, tokenKeysetKMSKeyVar+": must be gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K (the key, not a key version)")
	}
	if c.RedirectURL != "" {
		if err := checkBaseURL(c.RedirectURL, true); err != nil {
			invalid = append(invalid, "REDIRECT_URL: "+err.Error())
		}
	}
	if c.PublicURL != "" {
		if err := checkBaseURL(c.PublicURL, false); err != nil {
			invalid = append(invalid, "PUBLIC_URL: "+err.Error())
		}
	}
	for name, v := range map[string]string{"CHAT_API_ENDPOINT": c.ChatEndpoint, "OAUTH_REVOKE_URL": c.RevokeURL} {
		if v != "" {
			if err := checkBaseURL(v, false); err != nil {
				invalid = append(invalid, name+": "+err.Error())
			}
		}
	}

	invalid = append(invalid, checkChatAudience(c.ChatAudienceType, c.ChatAudience)...)
	invalid = append(invalid, checkChatProjectNumber(c)...)
	invalid = append(invalid, checkDeployedEndpoints(c)...)
	invalid = append(invalid, checkCertsOverrides(*c)...)
	invalid = append(invalid, checkDelegation(c)...)
	invalid = append(invalid, unbuilt(*c)...)
	return invalid
}

// ConfigError reports everything wrong with the configuration at once.
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return "chatauth configuration: " + strings.Join(e.Problems, "; ")
}

// checkBaseURL accepts an absolute https URL, or an http URL on a loopback
// host (local runs and tests). A redirect URL must also name a path and may
// carry no fragment, as Google requires.
func checkBaseURL(raw string, redirect bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("must be an absolute http(s) URL")
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return errors.New("must use https (http is accepted only for localhost)")
	}
	if u.Fragment != "" || u.User != nil {
		return errors.New("must not carry a fragment or user info")
	}
	if redirect && (u.Path == "" || u.Path == "/") {
		return errors.New("must be the full OAuthCallback URL, e.g. https://REGION-PROJECT.cloudfunctions.net/OAuthCallback")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
