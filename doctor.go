package chatauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
)

// Severities of a Finding.
const (
	SeverityError   = "error"   // the configuration does not work: the runner refuses to start
	SeverityWarning = "warning" // it works, but probably not as meant
)

// Finding is one problem a configuration check found, and how to fix it.
// It names settings and files, never a secret's value.
type Finding struct {
	Severity string // SeverityError or SeverityWarning
	Setting  string // the variable concerned, such as REDIRECT_URL
	Problem  string
	Fix      string
}

func (f Finding) String() string {
	s := fmt.Sprintf("%s: %s: %s", strings.ToUpper(f.Severity), f.Setting, f.Problem)
	if f.Fix != "" {
		s += "\n  fix: " + f.Fix
	}
	return s
}

// HasErrors reports whether any finding is an error.
func HasErrors(findings []Finding) bool {
	return slices.ContainsFunc(findings, func(f Finding) bool { return f.Severity == SeverityError })
}

// doctorOptions are what a test may replace in Doctor's checks.
type doctorOptions struct {
	secretManager []option.ClientOption
	firestore     []option.ClientOption
	kms           []option.ClientOption
	storeWait     time.Duration // bound on the store's answer; zero: 10 s
}

// Doctor checks the configuration the environment getenv reads, as the
// functions read it (README.md, "Configuration"), and returns what is
// wrong with it, each with its fix: the variables themselves; the client
// JSON (type web, REDIRECT_URL among its redirect_uris); PUBLIC_URL and
// REDIRECT_URL on one host; every secret reference readable and of its
// kind; the token keyset (unwrapped by Cloud KMS when set); the store
// answering; the Chat app's audience. No finding quotes a secret. The
// chatauth CLI's doctor and cmd/local before it serves call it; a deployed
// instance logs the checks that need no call (logFindings).
func Doctor(ctx context.Context, getenv func(string) string) []Finding {
	return diagnose(ctx, getenv, doctorOptions{})
}

func diagnose(ctx context.Context, getenv func(string) string, o doctorOptions) []Finding {
	var out []Finding
	add := func(sev, setting, problem, fix string) {
		out = append(out, Finding{Severity: sev, Setting: setting, Problem: problem, Fix: fix})
	}
	cfg, err := loadConfig(getenv)
	var ce *ConfigError
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			setting, problem, ok := strings.Cut(p, ": ")
			if !ok || strings.ContainsAny(setting, " ,") || strings.ToUpper(setting) != setting {
				setting, problem = "configuration", p
			}
			add(SeverityError, setting, problem, "set it as README.md's Configuration table says")
		}
	} else if err != nil {
		add(SeverityError, "configuration", err.Error(), "")
	}

	secrets := &secretReader{opts: o.secretManager}
	defer secrets.close()
	read := func(name, ref string) []byte {
		if ref == "" || secretRefProblem(name, ref) != "" {
			return nil // missing or pasted: reported with the variables
		}
		b, err := secrets.read(ctx, name, ref)
		if err != nil {
			add(SeverityError, name, "cannot be read: "+err.Error(), "point it at a readable file, or at a Secret Manager version the function's account may access (roles/secretmanager.secretAccessor)")
			return nil
		}
		return b
	}

	var client *clientSecrets
	if b := read("CLIENT_SECRETS", cfg.ClientSecrets); b != nil {
		if client, err = parseClientSecrets(b); err != nil {
			add(SeverityError, "CLIENT_SECRETS", err.Error(), "download the OAuth client's JSON again from the Google Cloud console (APIs & Services, Credentials)")
		}
	}
	out = append(out, staticFindings(cfg, client)...)

	if b := read("WEBHOOK_SECRETS", cfg.WebhookSecrets); b != nil {
		if _, err := parseWebhookSecrets(b); err != nil {
			add(SeverityError, "WEBHOOK_SECRETS", err.Error(), "put one secret per line, each from `openssl rand -hex 32`")
		}
	}
	if b := read("TOKEN_KEYSET", cfg.TokenKeyset); b != nil {
		if _, err := loadTokenCipher(ctx, b, cfg.TokenKeysetKMSKey, o.kms...); err != nil {
			fix := "give the Tink keyset JSON that sealed the stored tokens (cmd/local generates one; tinkey create-keyset --key-template AES256_GCM)"
			if cfg.TokenKeysetKMSKey != "" {
				fix = "check that " + tokenKeysetKMSKeyVar + " is the key that wrapped the keyset and the function's account may decrypt with it (roles/cloudkms.cryptoKeyDecrypter)"
			}
			add(SeverityError, "TOKEN_KEYSET", err.Error(), fix)
		}
	}
	if b := read("DELEGATION_KEY", cfg.DelegationKey); b != nil {
		var kf struct {
			Type        string `json:"type"`
			ClientEmail string `json:"client_email"`
		}
		if jc, err := google.JWTConfigFromJSON(b, delegationScope); err != nil || json.Unmarshal(b, &kf) != nil || kf.Type != "service_account" || kf.ClientEmail == "" || jc.PrivateKey == nil {
			add(SeverityError, "DELEGATION_KEY", `is not a service account's JSON key (type "service_account" with client_email and private_key)`,
				"create a key for the delegating service account (gcloud iam service-accounts keys create), or unset DELEGATION_KEY and use keyless delegation with DELEGATION_SERVICE_ACCOUNT")
		}
	}
	if f := checkStore(ctx, cfg, o); f != nil {
		out = append(out, *f)
	}
	return out
}

// staticFindings are the checks that need no call out of the process:
// what a deployed instance logs at its first request (logFindings).
// client may be nil when the client JSON could not be read.
func staticFindings(cfg Config, client *clientSecrets) []Finding {
	var out []Finding
	add := func(sev, setting, problem, fix string) {
		out = append(out, Finding{Severity: sev, Setting: setting, Problem: problem, Fix: fix})
	}
	redirect, rerr := url.Parse(cfg.RedirectURL)
	public, perr := url.Parse(cfg.PublicURL)
	if cfg.RedirectURL != "" && cfg.PublicURL != "" && rerr == nil && perr == nil && redirect.Host != "" && public.Host != "" {
		switch {
		case !strings.EqualFold(redirect.Host, public.Host) || redirect.Scheme != public.Scheme:
			add(SeverityError, "REDIRECT_URL", fmt.Sprintf("is on %s://%s, PUBLIC_URL on %s://%s: the flow cookie OAuthStart sets does not reach OAuthCallback on another host, so every consent fails", redirect.Scheme, redirect.Host, public.Scheme, public.Host),
				"deploy the functions to one host and set REDIRECT_URL to PUBLIC_URL + /OAuthCallback")
		case strings.TrimRight(cfg.RedirectURL, "/") != cfg.PublicURL+"/OAuthCallback":
			add(SeverityWarning, "REDIRECT_URL", fmt.Sprintf("is %s, not PUBLIC_URL + /OAuthCallback (%s/OAuthCallback)", cfg.RedirectURL, cfg.PublicURL),
				"set it to the OAuthCallback function's URL, unless a proxy maps that path")
		}
	}
	if client != nil {
		if client.Type == "installed" {
			add(SeverityWarning, "CLIENT_SECRETS", `is a "Desktop app" client (installed): Google lets it redirect only to loopback addresses, so a deployed OAuthCallback cannot receive consents`,
				`create an OAuth client of type "Web application" and download its JSON`)
		}
		if cfg.RedirectURL != "" && !slices.Contains(client.RedirectURIs, cfg.RedirectURL) {
			uris := "none"
			if len(client.RedirectURIs) > 0 {
				uris = strings.Join(client.RedirectURIs, ", ")
			}
			add(SeverityError, "REDIRECT_URL", fmt.Sprintf("%s is not among the client's redirect_uris (%s): Google answers every consent with redirect_uri_mismatch", cfg.RedirectURL, uris),
				"add it to the OAuth client's Authorized redirect URIs in the Google Cloud console and download the JSON again, or set REDIRECT_URL to one of them")
		}
	}
	if cfg.ChatAudienceType == chatAudienceEndpoint && cfg.ChatAudience != "" && cfg.PublicURL != "" && cfg.ChatAudience != cfg.PublicURL+"/ChatEvents" {
		add(SeverityWarning, "CHAT_AUDIENCE", fmt.Sprintf("is %s, not the ChatEvents URL %s/ChatEvents", cfg.ChatAudience, cfg.PublicURL),
			"set it, and the Chat app's HTTP endpoint URL, to the ChatEvents function's URL")
	}
	return out
}

// checkStore opens the configured store and reads a record that does not
// exist: a store that answers "not found" works.
func checkStore(ctx context.Context, cfg Config, o doctorOptions) *Finding {
	if cfg.Store != storeFirestore && cfg.Store != storeLocal || cfg.Store == storeFirestore && cfg.Project == "" {
		return nil // reported with the variables
	}
	wait := o.storeWait
	if wait == 0 {
		wait = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var (
		st  tokenStore
		err error
	)
	if cfg.Store == storeLocal {
		st, err = newLocalStore(cfg.DataDir, time.Now)
	} else {
		st, err = openFirestore(ctx, cfg.Project, cfg.FirestoreDatabase, wait, o.firestore...)
	}
	if err == nil {
		defer st.close()
		if _, err = st.getToken(ctx, "chatauth-doctor-probe"); errors.Is(err, errNotFound) {
			return nil
		}
	}
	fix := "check GOOGLE_CLOUD_PROJECT and FIRESTORE_DATABASE, that the database exists in Native mode, and that the account has roles/datastore.user"
	setting := "STORE"
	if cfg.Store == storeLocal {
		fix, setting = "set DATA_DIR to a directory this user may write, used by no other running chatauth", "DATA_DIR"
	}
	return &Finding{Severity: SeverityError, Setting: setting, Problem: "the " + cfg.Store + " store does not answer: " + err.Error(), Fix: fix}
}

// logFindings logs, once per deployed instance, the checks that need no
// call out of the process, on the server just built: each finding at
// Error or Warning, or one line saying they passed.
func (s *server) logFindings(log *slog.Logger) {
	findings := staticFindings(s.cfg, s.client)
	for _, f := range findings {
		level := slog.LevelWarn
		if f.Severity == SeverityError {
			level = slog.LevelError
		}
		log.Log(context.Background(), level, "configuration check: "+f.Setting+": "+f.Problem, "fix", f.Fix)
	}
	if len(findings) == 0 {
		log.Info("configuration checks passed")
	}
}
