//go:build !nodemo

package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// startFakeGoogle serves the fake Google on a free loopback port and points
// the configuration at it: the client JSON's auth_uri and token_uri, the
// Chat API and the revocation endpoint.
func startFakeGoogle(dataDir, redirectURL string) (interface{ Close() }, error) {
	g, err := fakegoogle.New(fakegoogle.Options{RedirectURIs: []string{redirectURL}})
	if err != nil {
		return nil, fmt.Errorf("start the fake Google: %w", err)
	}
	path := filepath.Join(dataDir, "demo_client_secrets.json")
	if err := os.WriteFile(path, g.ClientJSON("web"), 0o600); err != nil {
		g.Close()
		return nil, err
	}
	os.Setenv("CLIENT_SECRETS", path)
	os.Setenv("CHAT_API_ENDPOINT", g.ChatEndpoint())
	os.Setenv("OAUTH_REVOKE_URL", g.RevokeURL())
	fmt.Printf("Offline demo: a fake Google serves on %s (client JSON: %s).\n", g.URL(), path)
	return g, nil
}

// fakegoogleUser is the account the demo's consent page signs in.
const fakegoogleUser = fakegoogle.DefaultUserEmail
