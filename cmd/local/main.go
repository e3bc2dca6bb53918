// Command local serves every chatauth function on one port through the
// Functions Framework, on the embedded store, for development and for the
// offline demo:
//
//	go run ./cmd/local          # real Google, with ./client_secrets.json
//	go run ./cmd/local -demo    # offline: a fake Google in the same process
//
// It fills in the local defaults of the README's configuration table for
// every variable that is not set, then serves the functions at /<Name>
// as the Functions Framework does, from a server with timeouts; the
// functions read the environment as they do when deployed.
//
// Built with -tags nodemo it leaves out the offline demo's fake Google, so
// that it links what a deployed function links and nothing more. Built
// with -tags localonly it also leaves out the Google Cloud clients of
// Firestore, Secret Manager and Cloud KMS, which the embedded store with
// file secrets does not use, and starts faster for it; it then refuses
// STORE=firestore, Secret Manager references and TOKEN_KEYSET_KMS_KEY,
// saying so:
//
//	go run -tags localonly ./cmd/local -demo
//
// cmd/coldstart and cmd/loadtest measure it built with -tags
// nodemo,localonly in the embedded-store setup and with -tags nodemo in
// the Firestore one.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chatauth/chatauth"
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
	// A runner built with -tags localonly refuses, before it serves, what
	// needs a Google client it leaves out (STORE=firestore, a Secret
	// Manager reference, a KMS-wrapped keyset).
	if err := chatauth.CheckBuild(); err != nil {
		return err
	}
	// A secret pasted where its reference belongs is refused before
	// anything below prints a hint that would quote it.
	if err := chatauth.CheckSecretReferences(); err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}

	var demoSteps string
	if demo {
		g, steps, err := startFakeGoogle(dataDir, os.Getenv("REDIRECT_URL"), os.Getenv("PUBLIC_URL"))
		if err != nil {
			return err
		}
		defer g.Close()
		demoSteps = steps
	} else if err := checkClientSecrets(); err != nil {
		return err
	}
	if err := generateSecrets(dataDir); err != nil {
		return err
	}
	if err := checkSecretFiles(); err != nil {
		return err
	}

	// The same checks as chatauth doctor, before serving: a configuration
	// that cannot work stops here, not at the first request's 500.
	findings := chatauth.Doctor(context.Background(), os.Getenv)
	for _, f := range findings {
		fmt.Fprintln(os.Stderr, f)
	}
	if chatauth.HasErrors(findings) {
		return errors.New("the configuration has the problems above; fix them and start again (chatauth doctor checks without serving)")
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("listen on %s:%s: %w (set PORT to use another port)", host, port, err)
	}
	// Only now is the port bound: whoever waits for "serving" can connect.
	printSteps(base, dataDir, demo)
	fmt.Print(demoSteps)
	fmt.Println()
	return newHTTPServer(chatauth.LocalHandler(), serveTimeouts).Serve(ln)
}

// checkClientSecrets checks that the OAuth client JSON CLIENT_SECRETS names
// (client_secrets.json by default) exists, and says how to get one.
func checkClientSecrets() error {
	_, set := os.LookupEnv("CLIENT_SECRETS")
	clientSecrets := envDefault("CLIENT_SECRETS", "client_secrets.json")
	// A Secret Manager reference is read by the function; only a file
	// can be checked here. A path the operator set is not quoted: it
	// may be a pasted secret that merely looks like one.
	if _, err := os.Stat(clientSecrets); errors.Is(err, fs.ErrNotExist) && !strings.HasPrefix(clientSecrets, "projects/") {
		if set && clientSecrets != "client_secrets.json" {
			return fmt.Errorf("CLIENT_SECRETS: no file at the path it holds (the value is not shown, in case it is a pasted secret); set it to the path of the OAuth client JSON, or try it offline first: go run ./cmd/local -demo")
		}
		return fmt.Errorf("%s not found.\n"+
			"  To use Google: create an OAuth client (type \"Web application\") with the redirect URI\n"+
			"  %s in the Google Cloud console, download its JSON to %s, and run again.\n"+
			"  To try it offline first: go run ./cmd/local -demo",
			clientSecrets, os.Getenv("REDIRECT_URL"), clientSecrets)
	}
	return nil
}

// generateSecrets creates, once, in dataDir, the webhook secret and the
// token keyset the environment does not name, and names them there.
func generateSecrets(dataDir string) error {
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
	return nil
}

// checkSecretFiles checks that every secret reference that is not a
// Secret Manager name names an existing file, before the hints printed
// next quote it: a value that names none may be a pasted secret that
// looks like a path.
func checkSecretFiles() error {
	for _, name := range []string{"CLIENT_SECRETS", "WEBHOOK_SECRETS", "TOKEN_KEYSET", "DELEGATION_KEY"} {
		ref := strings.TrimSpace(os.Getenv(name))
		if ref == "" || strings.HasPrefix(ref, "projects/") {
			continue
		}
		if fi, err := os.Stat(ref); err != nil || fi.IsDir() {
			return fmt.Errorf("%s: no file at the path it holds (the value is not shown, in case it is a pasted secret); set it to the path of a file that holds the secret, or to a Secret Manager version name, projects/P/secrets/S/versions/V", name)
		}
	}
	return nil
}

// printSteps prints how to use the running runner.
func printSteps(base, dataDir string, demo bool) {
	fmt.Printf("\nchatauth is serving on %s (store: %s in %s).\n", base, os.Getenv("STORE"), dataDir)
	fmt.Printf("  1. Open %s/OAuthStart in your browser.\n", base)
	if demo {
		fmt.Printf("  2. On the fake Google consent page, click Allow.\n")
	} else {
		fmt.Printf("  2. Sign in with your Google Workspace account and allow access.\n")
	}
	fmt.Printf("  3. You land on %s and see \"Google Chat is connected\".\n", os.Getenv("REDIRECT_URL"))
	if secretFile := os.Getenv("WEBHOOK_SECRETS"); !strings.HasPrefix(secretFile, "projects/") {
		user := "you@example.com"
		if demo {
			user = fakegoogleUser
		}
		// Only the secret's path is printed; the command reads the file.
		fmt.Printf("  4. Create a space as that user, signed with the webhook secret:\n"+
			"       BODY='{\"user\":\"%s\",\"displayName\":\"Hello from chatauth\"}'\n"+
			"       T=$(date +%%s); SIG=$(printf '%%s.%%s' \"$T\" \"$BODY\" | openssl dgst -sha256 -hmac \"$(head -n1 %s)\" | sed 's/^.* //')\n"+
			"       curl -sS -X POST %s/CreateSpace -H 'Content-Type: application/json' -H \"X-Signature: t=$T,v1=$SIG\" -d \"$BODY\"\n",
			user, secretFile, base)
	}
}

// timeouts bound what one connection may take of the runner.
type timeouts struct {
	readHeader, read, write, idle time.Duration
}

// serveTimeouts are the runner's bounds. Headers come in one go from any
// real client; a body is at most 64 KiB. An answer may take as long as a
// CreateSpace whose Chat calls use their whole 30 s deadline, retries
// included, or an OAuthCallback whose token exchange takes the HTTP
// client's 30 s, plus the store: WriteTimeout leaves twice that. A
// browser's consent redirect is a plain GET and needs none of it.
var serveTimeouts = timeouts{
	readHeader: 10 * time.Second,
	read:       30 * time.Second,
	write:      60 * time.Second,
	idle:       120 * time.Second,
}

// newHTTPServer serves h with the bounds t, so that slow or stalled
// clients cannot hold connections (and their memory) open: a client that
// has not sent its whole header within t.readHeader is disconnected, and
// so is one whose request or answer outlasts t.read or t.write, or that
// keeps an idle connection beyond t.idle.
func newHTTPServer(h http.Handler, t timeouts) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.readHeader,
		ReadTimeout:       t.read,
		WriteTimeout:      t.write,
		IdleTimeout:       t.idle,
		MaxHeaderBytes:    64 << 10,
	}
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
