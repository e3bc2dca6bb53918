// Command local serves every chatauth function on one port through the
// Functions Framework, on the embedded store, for development and for the
// offline demo:
//
//	go run ./cmd/local          # real Google, with ./client_secrets.json
//	go run ./cmd/local -demo    # offline: a fake Google in the same process
//
// It fills in the local defaults of DESIGN.md's configuration table for
// every variable that is not set, then starts the framework; the functions
// read the environment as they do when deployed.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/chatauth/chatauth" // importing it registers the functions
	"github.com/chatauth/chatauth/internal/fakegoogle"
)

func main() {
	demo := flag.Bool("demo", false, "run offline: serve a fake Google (consent screen, token endpoint, Chat API) in this process")
	host := flag.String("host", "127.0.0.1", "address to listen on; keep it loopback unless you know why not")
	flag.Parse()
	if err := run(*demo, *host); err != nil {
		fmt.Fprintln(os.Stderr, "chatauth:", err)
		os.Exit(1)
	}
}

func run(demo bool, host string) error {
	os.Unsetenv("FUNCTION_TARGET") // serve every function at /<Name>
	port := envDefault("PORT", "8080")
	base := "http://localhost:" + port
	envDefault("STORE", "local")
	dataDir := envDefault("DATA_DIR", ".chatauth")
	envDefault("REDIRECT_URL", base+"/OAuthCallback")
	envDefault("PUBLIC_URL", base)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}

	if demo {
		g, err := startFakeGoogle(dataDir, os.Getenv("REDIRECT_URL"))
		if err != nil {
			return err
		}
		defer g.Close()
	} else {
		clientSecrets := envDefault("CLIENT_SECRETS", "client_secrets.json")
		if _, err := os.Stat(clientSecrets); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s not found.\n"+
				"  To use Google: create an OAuth client (type \"Web application\") with the redirect URI\n"+
				"  %s in the Google Cloud console, download its JSON to %s, and run again.\n"+
				"  To try it offline first: go run ./cmd/local -demo",
				clientSecrets, os.Getenv("REDIRECT_URL"), clientSecrets)
		}
	}
	if os.Getenv("WEBHOOK_SECRETS") == "" {
		path, created, err := generateOnce(filepath.Join(dataDir, "webhook_secret"), func() ([]byte, error) {
			b := make([]byte, 32)
			rand.Read(b)
			return []byte(hex.EncodeToString(b) + "\n"), nil
		})
		if err != nil {
			return err
		}
		os.Setenv("WEBHOOK_SECRETS", path)
		if created {
			fmt.Printf("Generated a webhook HMAC secret in %s (WEBHOOK_SECRETS).\n", path)
		}
	}
	if os.Getenv("TOKEN_KEYSET") == "" {
		path, created, err := generateOnce(filepath.Join(dataDir, "token_keyset.json"), chatauth.GenerateKeyset)
		if err != nil {
			return err
		}
		os.Setenv("TOKEN_KEYSET", path)
		if created {
			fmt.Printf("Generated a Tink keyset for tokens at rest in %s (TOKEN_KEYSET); keep it with the store.\n", path)
		}
	}

	fmt.Printf("\nchatauth is serving on %s (store: %s in %s).\n", base, os.Getenv("STORE"), dataDir)
	fmt.Printf("  1. Open %s/OAuthStart in your browser.\n", base)
	if demo {
		fmt.Printf("  2. On the fake Google consent page, click Allow.\n")
	} else {
		fmt.Printf("  2. Sign in with your Google Workspace account and allow access.\n")
	}
	fmt.Printf("  3. You land on %s and see \"Google Chat is connected\".\n\n", os.Getenv("REDIRECT_URL"))

	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("listen on %s:%s: %w (set PORT to use another port)", host, port, err)
	}
	ln.Close()
	return funcframework.StartHostPort(host, port)
}

// startFakeGoogle serves the fake Google on a free loopback port and points
// the configuration at it: the client JSON's auth_uri and token_uri, the
// Chat API and the revocation endpoint.
func startFakeGoogle(dataDir, redirectURL string) (*fakegoogle.Server, error) {
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

// generateOnce returns path, writing gen's secret there first if the file
// does not exist yet. Only paths are ever printed, never secrets.
func generateOnce(path string, gen func() ([]byte, error)) (string, bool, error) {
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	b, err := gen()
	if err != nil {
		return "", false, fmt.Errorf("generate %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	return path, true, nil
}

// envDefault sets k to def unless it is set, and returns its value.
func envDefault(k, def string) string {
	if v, ok := os.LookupEnv(k); ok && v != "" {
		return v
	}
	os.Setenv(k, def)
	return def
}
