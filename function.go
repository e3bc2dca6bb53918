// Package chatauth is a Google Cloud Function that holds Google Chat user
// consent and acts on it: OAuthStart and OAuthCallback run Google's OAuth
// 2.0 web-server flow and keep the user's refresh token in Firestore, and
// the webhook functions act as that user through the Chat API.
//
// init only registers the functions; everything that dials (Secret
// Manager, Firestore) is built on the first request and kept for the life
// of the instance, and a failed build is retried by the next request.
package chatauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/oauth2"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/chat/v1"
	"google.golang.org/api/option"
)

// function is one registered HTTP function.
type function struct {
	name string
	// handle serves the request; a returned error is answered by the one
	// error mapping (asError).
	handle func(s *server, w http.ResponseWriter, r *http.Request) error
	// browser marks functions a person opens in a browser: their errors are
	// HTML pages unless the client asks for JSON.
	browser bool
}

// registered lists every function this package serves, in one place, so
// that deployment files and tests can be checked against it.
var registered = []function{
	{"OAuthStart", (*server).handleStart, true},
	{"OAuthCallback", (*server).handleCallback, true},
	{"CreateSpace", (*server).handleCreateSpace, false},
	{"Disconnect", (*server).handleDisconnect, false},
	{"ChatEvents", (*server).handleChatEvents, false},
	{"Users", (*server).handleUsers, false},
}

// defaultInstance is the per-instance server, built on first use from the
// environment.
var defaultInstance = &instance{build: buildFromEnv, log: newLogger(os.Stderr)}

func init() {
	for _, f := range registered {
		functions.HTTP(f.name, defaultInstance.handler(f))
	}
}

// tokenStore keeps consents and the markers of used consent states.
// Implementations: firestoreStore (deployed) and localStore (cmd/local).
//
// Its rules: markStateUsed creates the marker under key for exactly one
// caller, however many race, and answers every other caller, racing or
// later (at least until expireAt), with an error that satisfies
// errors.Is(err, errAlreadyExists); updateToken applies fn
// atomically against concurrent writers (fn may run more than once and
// must not call out of the process, and a nil result writes nothing);
// missing records are reported as errors that satisfy
// errors.Is(err, errNotFound); an unreachable store as
// errStoreUnavailable.
//
// Identity (README.md, "Identity"): a record is an account, keyed by its
// sub; an email only names one. putConsent is updateToken for a consent:
// in the same transaction it makes the written record's email name sub,
// so the email names the last account that consented with it. updateToken
// (a refresh, needs_reauth) never changes what an email names.
// tokenByEmail returns the record the email names, and only while that
// record still carries the email, with EmailSince set (emailRecord.Since);
// an email that names nobody is errNotFound. (An email that no consent
// has named since email records exist names the one record that carries
// it and has no consentedAt, if exactly one does: records kept from
// before.) deleteToken removes sub's record, after check (when not nil)
// accepts it, and in the same transaction leaves its email naming nobody
// if it still named sub; check sees the record without its tokens, and its
// error is returned with nothing deleted. A missing record is not an
// error for deleteToken, and check is not called. listTokens returns up
// to q.limit records in ascending byte order of sub (the same in every
// store), only those after q.after when it is not empty and only those
// whose status is q.status when it is not empty, each without its tokens
// (a listing is for people and never needs one); fewer than q.limit
// records means there are no more.
type tokenStore interface {
	markStateUsed(ctx context.Context, key string, expireAt time.Time) error
	getToken(ctx context.Context, sub string) (*tokenRecord, error)
	tokenByEmail(ctx context.Context, email string) (*tokenRecord, error)
	updateToken(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error
	putConsent(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error
	deleteToken(ctx context.Context, sub string, check func(cur *tokenRecord) error) error
	listTokens(ctx context.Context, q tokenQuery) ([]*tokenRecord, error)
	close() error
}

// server holds every dependency of the handlers. Tests build it with
// newServer and fakes; production builds it once per instance.
type server struct {
	cfg            Config
	store          tokenStore
	oauth          *oauth2.Config
	client         *clientSecrets
	webhookSecrets [][]byte
	http           *http.Client // one keep-alive transport for Google's endpoints
	now            func() time.Time
	log            *slog.Logger
	secrets        *secretReader
	callers        *callerAuth
	chat           *chat.Service // shared by all users; the token rides in the context
	chatDeadline   time.Duration // bound on a CreateSpace's upstream work, retries included
	consents       *consents     // stored consents: lookup, refresh under the lease, save (consents.go)
	chatAuth       *chatAuth     // verifies Google Chat's requests; nil: ChatEvents is off
	tickets        tink.AEAD     // seals consent-flow cookies and the tickets of Chat's consent prompts (the token keyset)
	delegation     *delegator    // domain-wide delegation; nil: CREDENTIAL_SOURCE=consent
}

// serverOptions are the dependencies a test (or cmd/local) may replace.
type serverOptions struct {
	secretManager []option.ClientOption // Secret Manager client options
	secretWait    time.Duration         // bound on one secret read; zero: 10 s
	firestore     []option.ClientOption // Firestore client options
	storeTimeout  time.Duration         // bound on one Firestore operation; zero: storeOpTimeout
	kms           []option.ClientOption // Cloud KMS client options, for a wrapped TOKEN_KEYSET
	httpClient    *http.Client
	certsClient   *http.Client  // fetches Google's ID-token keys; default httpClient
	iamClient     *http.Client  // calls the IAM Credentials API for keyless delegation; default: Application Default Credentials
	chatDeadline  time.Duration // default 30 s
	tokenCacheTTL time.Duration // default tokenCacheTTL; negative: no cache
	lease         leaseTiming   // unset parts: lease.go's defaults
	now           func() time.Time
	logger        *slog.Logger
}

// newServer builds a server from cfg: it reads the secrets (concurrently),
// parses them and opens the store. Any failure is returned, never kept.
func newServer(ctx context.Context, cfg Config, o serverOptions) (*server, error) {
	o = o.withDefaults()
	s := &server{cfg: cfg, http: o.httpClient, now: o.now, log: o.logger, chatDeadline: o.chatDeadline,
		secrets: &secretReader{opts: o.secretManager, wait: o.secretWait}}
	built := false
	defer func() {
		if !built {
			if s.store != nil {
				s.store.close()
			}
			s.secrets.close()
		}
	}()
	delegationKey, cipher, err := s.readSecretsOpenStore(ctx, o)
	if err != nil {
		return nil, err
	}
	s.tickets = cipher.aead
	s.oauth = newOAuthConfig(s.client, cfg.RedirectURL)
	if s.delegation, err = newDelegator(ctx, cfg, delegationKey, s.client.TokenURI, o); err != nil {
		return nil, err
	}
	if err := s.buildVerifiers(ctx, o); err != nil {
		return nil, err
	}
	if s.chat, err = newChatService(ctx, cfg.ChatEndpoint, o.httpClient.Transport); err != nil {
		return nil, err
	}
	cache := newTokenCache(o.tokenCacheTTL)
	s.store = newForgettingStore(newEncryptedStore(s.store, cipher), cache)
	s.consents = &consents{store: s.store, cache: cache, oauth: s.oauth, http: s.http,
		lease: o.lease.withDefaults(), publicURL: cfg.PublicURL, now: s.now}
	built = true
	return s, nil
}

// withDefaults fills the options a caller left unset.
func (o serverOptions) withDefaults() serverOptions {
	if o.now == nil {
		o.now = time.Now
	}
	if o.logger == nil {
		o.logger = newLogger(os.Stderr)
	}
	if o.httpClient == nil {
		o.httpClient = newHTTPClient()
	}
	if o.certsClient == nil {
		o.certsClient = o.httpClient
	}
	if o.chatDeadline == 0 {
		o.chatDeadline = 30 * time.Second
	}
	if o.tokenCacheTTL == 0 {
		o.tokenCacheTTL = tokenCacheTTL
	}
	return o
}

// readSecretsOpenStore reads the secrets and parses each as soon as it is
// read (the token keyset, when wrapped, unwrapped by Cloud KMS), while the
// store opens: on a cold start these are the longest steps, and none
// needs another's result. It sets s.client, s.webhookSecrets and s.store
// (closed by newServer's clean-up if the build fails), and returns the
// delegation key and the token cipher.
func (s *server) readSecretsOpenStore(ctx context.Context, o serverOptions) (delegationKey []byte, cipher *tokenCipher, err error) {
	cfg := s.cfg
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		clientJSON, err := s.secrets.read(gctx, "CLIENT_SECRETS", cfg.ClientSecrets)
		if err != nil {
			return err
		}
		if s.client, err = parseClientSecrets(clientJSON); err != nil {
			return err
		}
		if cfg.Deployed {
			return checkClientEndpoints(s.client)
		}
		return nil
	})
	g.Go(func() error {
		keyset, err := s.secrets.read(gctx, "TOKEN_KEYSET", cfg.TokenKeyset)
		if err != nil {
			return err
		}
		cipher, err = loadTokenCipher(gctx, keyset, cfg.TokenKeysetKMSKey, o.kms...)
		return err
	})
	if cfg.WebhookSecrets != "" {
		g.Go(func() error {
			webhookSecrets, err := s.secrets.read(gctx, "WEBHOOK_SECRETS", cfg.WebhookSecrets)
			if err != nil {
				return err
			}
			s.webhookSecrets, err = parseWebhookSecrets(webhookSecrets)
			return err
		})
	}
	if cfg.DelegationKey != "" {
		g.Go(func() (err error) {
			delegationKey, err = s.secrets.read(gctx, "DELEGATION_KEY", cfg.DelegationKey)
			return err
		})
	}
	g.Go(func() error { return s.openStore(ctx, o) })
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return delegationKey, cipher, nil
}

// openStore opens the configured store as s.store.
func (s *server) openStore(ctx context.Context, o serverOptions) (err error) {
	var st tokenStore
	switch s.cfg.Store {
	case storeLocal:
		st, err = newLocalStore(s.cfg.DataDir, o.now)
	default:
		// The client lives as long as the instance, so it must not
		// inherit the cancellation of the request that happened to build
		// it.
		st, err = openFirestore(context.WithoutCancel(ctx), s.cfg.Project, s.cfg.FirestoreDatabase, o.storeTimeout, o.firestore...)
	}
	if err == nil {
		s.store = st
	}
	return err
}

// newOAuthConfig is the consent flow's OAuth client, from the client JSON.
func newOAuthConfig(c *clientSecrets, redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   c.AuthURI,
			TokenURL:  c.TokenURI,
			AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: redirectURL,
		Scopes:      consentScopes,
	}
}

// buildVerifiers builds the bearer-token verifiers: the webhook callers'
// and, when the Chat app is configured, Google Chat's, each fetching its
// signing keys from Google or from the configured stand-ins.
func (s *server) buildVerifiers(ctx context.Context, o serverOptions) error {
	cfg := s.cfg
	certs := o.certsClient
	if cfg.GoogleCertsURL != "" {
		var err error
		if certs, err = withGoogleCertsURL(certs, cfg.GoogleCertsURL); err != nil {
			return fmt.Errorf("GOOGLE_CERTS_URL: %w", err)
		}
	}
	chatCerts := chatCertsURL
	if cfg.ChatCertsURL != "" {
		chatCerts = cfg.ChatCertsURL
	}
	var err error
	if s.callers, err = newCallerAuth(ctx, s.webhookSecrets, cfg.AllowedAudiences, cfg.TrustedCallers, certs, o.now); err != nil {
		return err
	}
	if cfg.ChatAudienceType != "" {
		if s.chatAuth, err = newChatAuth(ctx, cfg.ChatAudienceType, cfg.ChatAudience, cfg.ChatProjectNumber, certs, chatCerts, o.now); err != nil {
			return err
		}
	}
	return nil
}

// newChatService is the Chat API client shared by all users: the access
// token rides in each call's context (bearerTransport, chatapi.go).
// endpoint, when set, replaces Google's (CHAT_API_ENDPOINT).
func newChatService(ctx context.Context, endpoint string, base http.RoundTripper) (*chat.Service, error) {
	opts := []option.ClientOption{
		option.WithHTTPClient(&http.Client{Transport: bearerTransport{base: base}}),
		noClientLogs,
	}
	if endpoint != "" {
		opts = append(opts, option.WithEndpoint(endpoint))
	}
	svc, err := chat.NewService(context.WithoutCancel(ctx), opts...)
	if err != nil {
		return nil, fmt.Errorf("chat: new service: %w", err)
	}
	return svc, nil
}

// noClientLogs silences a Google client library's own logger. Under
// GOOGLE_SDK_GO_LOGGING_LEVEL=debug the libraries log whole requests and
// responses, which here carry bearer tokens, token ciphertexts and secrets;
// the function logs what it needs itself.
var noClientLogs = option.WithLogger(slog.New(slog.DiscardHandler))

// close releases the server's clients.
func (s *server) close() error {
	return errors.Join(s.store.close(), s.secrets.close())
}

// newHTTPClient is the one client for the token endpoint, revocation and
// the Chat API: it keeps connections alive between requests of an
// instance, and bounds every call.
func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

func buildFromEnv(ctx context.Context) (*server, error) {
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		return nil, err
	}
	return newServer(ctx, cfg, serverOptions{})
}

// instance builds the server once per instance. A failed build is not
// kept: the next request tries again, so a Secret Manager blip at cold
// start does not poison the instance for its whole life.
type instance struct {
	srv   atomic.Pointer[server]
	mu    sync.Mutex // one build at a time
	build func(ctx context.Context) (*server, error)
	log   *slog.Logger
	// checked logs the configuration checks once, at the first request a
	// deployed instance serves (doctor.go).
	checked sync.Once
}

func (i *instance) get(ctx context.Context) (*server, error) {
	if s := i.srv.Load(); s != nil {
		return s, nil
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if s := i.srv.Load(); s != nil {
		return s, nil
	}
	s, err := i.build(ctx)
	if err != nil {
		return nil, err
	}
	i.srv.Store(s)
	return s, nil
}

// handler adapts f to the Functions Framework: it finds the server,
// serves, and answers any error through the one mapping.
func (i *instance) handler(f function) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// The instance's logger is made only when there is no server's to
		// use: a request logger costs allocations on every request
		// (BENCHMARKS.md).
		var log *slog.Logger
		defer func() {
			if v := recover(); v != nil {
				if log == nil {
					log = requestLogger(i.log, r, f.name, "")
				}
				// The panic value is not logged: it could quote request data.
				log.Error("panic while serving request", "panicType", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
				writeErrorJSON(w, errorf(statusInternal, "internal error"))
			}
		}()
		s, err := i.get(r.Context())
		if err != nil {
			respondError(w, r, requestLogger(i.log, r, f.name, ""), startupError(err), f.browser)
			return
		}
		log = requestLogger(s.log, r, f.name, s.cfg.Project)
		if s.cfg.Deployed {
			i.checked.Do(func() { s.logFindings(log) })
		}
		r = r.WithContext(withLogger(r.Context(), log))
		if err := f.handle(s, w, r); err != nil {
			respondError(w, r, log, asError(err), f.browser)
		}
	}
}

// startupError answers a failed build: a passing outage is 503 with
// Retry-After; a configuration mistake is 500 with its detail in the logs
// only, since it names the deployment's internals.
func startupError(err error) *Error {
	if errors.Is(err, errSecretsUnavailable) || errors.Is(err, errStoreUnavailable) {
		return &Error{Status: statusUnavailable, Message: "chatauth is starting and a dependency is unavailable; try again shortly", RetryAfter: 5, Err: err}
	}
	return wrapError(statusInternal, err, "chatauth is not configured correctly; its operator can find the cause in the function's logs")
}

// respondError logs e (5xx at Error with the cause, 4xx at Info) and
// answers it as JSON, or as an HTML page to a browser.
func respondError(w http.ResponseWriter, r *http.Request, log *slog.Logger, e *Error, browser bool) {
	code := e.HTTPCode()
	logError(log, e, "request")
	if browser && !wantsJSON(r) {
		setErrorHeaders(w, e)
		renderPage(w, code, errorPage(e))
		return
	}
	writeErrorJSON(w, e)
}
