// Command fakegoogle runs the in-repo fake of Google OAuth 2.0, OpenID
// Connect and the Chat API as a standalone loopback server, so the product's
// local runner can go through the whole consent flow and create spaces
// offline.
//
// Usage:
//
//	go run ./internal/fakegoogle/cmd/fakegoogle \
//	    -redirect-uri http://localhost:8080/OAuthCallback \
//	    -write-client-json client_secrets.json
//
// then start the product with CLIENT_SECRETS=client_secrets.json and the
// overrides it prints: CHAT_API_ENDPOINT, OAUTH_REVOKE_URL, and the keys
// ID tokens and Google Chat's tokens are signed with, GOOGLE_CERTS_URL and
// CHAT_CERTS_URL.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// listFlag collects a flag that may be repeated or given comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fakegoogle:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("fakegoogle", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:9090", "loopback `address` to listen on")
	clientID := fs.String("client-id", fakegoogle.DefaultClientID, "OAuth client id")
	clientSecret := fs.String("client-secret", fakegoogle.DefaultClientSecret, "OAuth client secret")
	writeClientJSON := fs.String("write-client-json", "", "write the web client JSON (client_secrets.json format) to `path`")
	autoConsent := fs.Bool("auto-consent", false, "approve authorization requests without showing the consent page")
	var redirects, users listFlag
	fs.Var(&redirects, "redirect-uri", "registered redirect `URI` (repeatable or comma-separated)")
	fs.Var(&users, "user", "account as `email:sub` (repeatable or comma-separated; sub optional); default alice@example.com")
	if err := fs.Parse(args); err != nil {
		return err
	}

	var accounts []fakegoogle.User
	for _, u := range users {
		email, sub, _ := strings.Cut(u, ":")
		if !strings.Contains(email, "@") {
			return fmt.Errorf("-user %q: want email:sub", u)
		}
		accounts = append(accounts, fakegoogle.User{Sub: sub, Email: email, EmailVerified: true})
	}

	srv, err := fakegoogle.New(fakegoogle.Options{
		ClientID:     *clientID,
		ClientSecret: *clientSecret,
		RedirectURIs: redirects,
		AutoConsent:  *autoConsent,
		Users:        accounts,
		Addr:         *addr,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	if _, err := fakegoogle.NewChatApp(srv); err != nil {
		return err
	}

	if *writeClientJSON != "" {
		if err := os.WriteFile(*writeClientJSON, srv.ClientJSON("web"), 0o600); err != nil {
			return fmt.Errorf("write client JSON: %w", err)
		}
	}

	fmt.Printf("fake Google listening on %s\n\n", srv.URL())
	for _, line := range srv.Endpoints() {
		fmt.Println("  " + line)
	}
	fmt.Printf("\nclient id:      %s\n", srv.ClientID())
	fmt.Printf("redirect URIs:  %s\n", strings.Join(srv.RedirectURIs(), ", "))
	for _, u := range srv.Users() {
		fmt.Printf("account:        %s (sub %s)\n", u.Email, u.Sub)
	}
	if *writeClientJSON != "" {
		fmt.Printf("client JSON:    %s\n", *writeClientJSON)
	}
	fmt.Printf("\nfor the product: CHAT_API_ENDPOINT=%s OAUTH_REVOKE_URL=%s GOOGLE_CERTS_URL=%s CHAT_CERTS_URL=%s\n",
		srv.ChatEndpoint(), srv.RevokeURL(), srv.JWKSURL(), srv.ChatCertsURL())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	fmt.Println("fakegoogle: stopping")
	return nil
}
