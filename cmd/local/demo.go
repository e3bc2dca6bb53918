//go:build !nodemo

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// The demo's stand-ins for the callers that sign with Google's keys.
const (
	// demoCaller is a service account of the fake Google: a caller with a
	// Google ID token, as Cloud Scheduler or a script would be, trusted
	// to act for the user who connected.
	demoCaller = "scheduler@chatauth-demo.iam.gserviceaccount.com"
	// demoProjectNumber is the Chat app's project number: its add-on
	// service agent signs the add-on events the demo takes.
	demoProjectNumber = "123456789012"
)

// startFakeGoogle serves the fake Google on a free loopback port and points
// the configuration at it: the client JSON's auth_uri and token_uri, the
// Chat API, the revocation endpoint, and the keys Google and Google Chat
// sign with (GOOGLE_CERTS_URL, CHAT_CERTS_URL). Unless they are set, it
// also lets ID tokens in (ALLOWED_AUDIENCES: publicURL, TRUSTED_CALLERS:
// demoCaller) and turns ChatEvents on for both event formats: Chat's
// interaction events, for the ChatEvents URL as the HTTP endpoint URL
// audience, and a Workspace add-on's, from demoProjectNumber's add-on
// service agent. It returns the printout's further steps, which use them.
func startFakeGoogle(dataDir, redirectURL, publicURL string) (interface{ Close() }, string, error) {
	g, err := fakegoogle.New(fakegoogle.Options{RedirectURIs: []string{redirectURL}})
	if err != nil {
		return nil, "", fmt.Errorf("start the fake Google: %w", err)
	}
	if _, err := fakegoogle.NewChatApp(g); err != nil {
		g.Close()
		return nil, "", fmt.Errorf("start the fake Google Chat: %w", err)
	}
	if _, err := g.AddServiceAccount(fakegoogle.ServiceAccount{Email: demoCaller}); err != nil {
		g.Close()
		return nil, "", fmt.Errorf("start the fake Google: %w", err)
	}
	path := filepath.Join(dataDir, "demo_client_secrets.json")
	if err := os.WriteFile(path, g.ClientJSON("web"), 0o600); err != nil {
		g.Close()
		return nil, "", err
	}
	os.Setenv("CLIENT_SECRETS", path)
	os.Setenv("CHAT_API_ENDPOINT", g.ChatEndpoint())
	os.Setenv("OAUTH_REVOKE_URL", g.RevokeURL())
	os.Setenv("GOOGLE_CERTS_URL", g.JWKSURL())
	os.Setenv("CHAT_CERTS_URL", g.ChatCertsURL())
	idTokens := unset("ALLOWED_AUDIENCES", "TRUSTED_CALLERS")
	if idTokens {
		os.Setenv("ALLOWED_AUDIENCES", publicURL)
		os.Setenv("TRUSTED_CALLERS", demoCaller)
	}
	chatEvents := unset("CHAT_AUDIENCE_TYPE", "CHAT_AUDIENCE", "CHAT_PROJECT_NUMBER")
	chatURL := publicURL + "/ChatEvents"
	if chatEvents {
		os.Setenv("CHAT_AUDIENCE_TYPE", "ENDPOINT_URL")
		os.Setenv("CHAT_AUDIENCE", chatURL)
		os.Setenv("CHAT_PROJECT_NUMBER", demoProjectNumber)
	}
	fmt.Printf("Offline demo: a fake Google serves on %s (client JSON: %s).\n", g.URL(), path)

	// The steps are bash, printed so that they run as shown; tokens are
	// fetched by the commands, never printed.
	var steps strings.Builder
	if idTokens {
		fmt.Fprintf(&steps, "  5. Create a space with a Google ID token instead, as the trusted caller %s\n"+
			"     (the fake's IAM Credentials generateIdToken signs it with the key at GOOGLE_CERTS_URL):\n"+
			"       TOKEN=$(curl -sS -X POST '%s/v1/projects/-/serviceAccounts/%s:generateIdToken' -H 'Content-Type: application/json' -d '{\"audience\":\"%s\",\"includeEmail\":true}' | sed -n 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/p')\n"+
			"       curl -sS -X POST %s/CreateSpace -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"user\":\"%s\",\"displayName\":\"Hello from an ID token\"}'\n",
			demoCaller, g.URL(), demoCaller, publicURL, publicURL, fakegoogleUser)
	}
	if chatEvents {
		fmt.Fprintf(&steps, "  6. Send ChatEvents a message as Google Chat would, to the HTTP endpoint URL %s\n"+
			"     (the fake Google signs an ID token for it as chat@system.gserviceaccount.com):\n"+
			"       TOKEN=$(curl -sS -X POST '%s' -H 'Content-Type: application/json' -d '{\"audience\":\"%s\"}' | sed -n 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/p')\n"+
			"       curl -sS -X POST %s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"type\":\"MESSAGE\",\"user\":{\"name\":\"users/%s\",\"email\":\"%s\",\"type\":\"HUMAN\"},\"message\":{\"name\":\"spaces/DEMO/messages/1\",\"text\":\"create space Hello from Chat\"}}'\n",
			chatURL, g.ChatTokenURL(), chatURL, chatURL, fakegoogle.DefaultUserSub, fakegoogleUser)
		fmt.Fprintf(&steps, "  7. Send the same kind of message as a Chat app built as a Google Workspace add-on of project %s would\n"+
			"     (the fake Google signs as its add-on service agent %s):\n"+
			"       TOKEN=$(curl -sS -X POST '%s' -H 'Content-Type: application/json' -d '{\"audience\":\"%s\",\"addOnProject\":\"%s\"}' | sed -n 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/p')\n"+
			"       curl -sS -X POST %s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"commonEventObject\":{\"hostApp\":\"CHAT\"},\"chat\":{\"user\":{\"name\":\"users/%s\",\"email\":\"%s\",\"type\":\"HUMAN\"},\"messagePayload\":{\"message\":{\"name\":\"spaces/DEMO/messages/2\",\"text\":\"create space Hello from an add-on\"}}}}'\n",
			demoProjectNumber, fakegoogle.AddOnServiceAgent(demoProjectNumber), g.ChatTokenURL(), chatURL, demoProjectNumber, chatURL, fakegoogle.DefaultUserSub, fakegoogleUser)
	}
	return g, steps.String(), nil
}

// unset reports whether none of the variables is set.
func unset(names ...string) bool {
	for _, n := range names {
		if os.Getenv(n) != "" {
			return false
		}
	}
	return true
}

// fakegoogleUser is the account the demo's consent page signs in.
const fakegoogleUser = fakegoogle.DefaultUserEmail
