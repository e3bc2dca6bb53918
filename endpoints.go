package chatauth

import (
	"fmt"
	"slices"
	"strings"
)

// A deployed function sends refresh tokens, the OAuth client secret,
// delegation assertions and users' access tokens to the endpoints below,
// and to no others. The endpoints can be overridden (the client JSON's
// auth_uri and token_uri, CHAT_API_ENDPOINT, OAUTH_REVOKE_URL,
// IAM_CREDENTIALS_ENDPOINT, a delegation key's token_uri) so that offline
// runs and tests drive the whole flow against a fake; deployed (K_SERVICE
// set), an override that is not Google's is refused, so whoever can add a
// version to a secret or change one variable cannot send those credentials
// to a host of their choosing. README.md, "Deploy to Google Cloud", says so.
var (
	// googleAuthURLs are the authorization endpoints Google's client JSON
	// files name (auth_uri), old and new.
	googleAuthURLs = []string{
		"https://accounts.google.com/o/oauth2/auth",
		"https://accounts.google.com/o/oauth2/v2/auth",
	}
	// googleTokenURLs are the token endpoints Google's client JSON and
	// service-account key files name (token_uri), old and new.
	googleTokenURLs = []string{
		googleTokenURL,
		"https://accounts.google.com/o/oauth2/token",
		"https://www.googleapis.com/oauth2/v4/token",
	}
	googleRevokeURLs   = []string{googleRevokeURL, "https://accounts.google.com/o/oauth2/revoke"}
	googleChatURLs     = []string{"https://chat.googleapis.com", "https://chat.googleapis.com/"}
	googleIAMCredsURLs = []string{"https://" + iamCredentialsHost, "https://" + iamCredentialsHost + "/"}
)

// notGoogle returns a problem naming field when v is not one of Google's
// endpoints in allowed, or "" when it is.
func notGoogle(field, v string, allowed []string) string {
	if slices.Contains(allowed, v) {
		return ""
	}
	return fmt.Sprintf("%s: %q is not Google's endpoint; a deployed function talks only to Google (%s); overrides are for offline runs and tests",
		field, v, strings.Join(allowed, " or "))
}

// checkDeployedEndpoints is loadConfig's part of the rule: deployed, the
// endpoint overrides in the environment must name Google's endpoints.
func checkDeployedEndpoints(c *Config) []string {
	if !c.Deployed {
		return nil
	}
	var problems []string
	for _, f := range []struct {
		name, v string
		allowed []string
	}{
		{"CHAT_API_ENDPOINT", c.ChatEndpoint, googleChatURLs},
		{"OAUTH_REVOKE_URL", c.RevokeURL, googleRevokeURLs},
		{"IAM_CREDENTIALS_ENDPOINT", c.IAMCredentialsEndpoint, googleIAMCredsURLs},
	} {
		if f.v == "" {
			continue
		}
		if p := notGoogle(f.name, f.v, f.allowed); p != "" {
			problems = append(problems, p)
		}
	}
	return problems
}

// checkClientEndpoints is newServer's part of the rule for the client
// JSON, which is read only after the configuration: deployed, its auth_uri
// and token_uri must be Google's. The error names the fields, never the
// client secret.
func checkClientEndpoints(cs *clientSecrets) error {
	var problems []string
	if p := notGoogle("auth_uri", cs.AuthURI, googleAuthURLs); p != "" {
		problems = append(problems, p)
	}
	if p := notGoogle("token_uri", cs.TokenURI, googleTokenURLs); p != "" {
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("client secrets (CLIENT_SECRETS): %s", strings.Join(problems, "; "))
	}
	return nil
}
