package chatauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
	"golang.org/x/sync/singleflight"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/impersonate"
	"google.golang.org/api/option"
)

// Domain-wide delegation is the second source of user credentials, beside
// stored consent: a Google Workspace super administrator authorizes the
// function's service account, once, to act as any user of the domain with
// the chat.spaces.create scope, and nobody consents one by one.
//
// The service account signs a JWT-bearer assertion (iss the account, sub
// the user, scope, aud Google's token URL, at most an hour long) and
// Google's token endpoint answers with the user's access token. Keyless,
// the default and the recommendation, the account signs through the IAM
// Credentials API's signJwt, which needs the function's service account to
// hold roles/iam.serviceAccountTokenCreator on itself and no key to exist;
// google.golang.org/api/impersonate with a Subject does exactly that. A
// JSON key from a secret (DELEGATION_KEY) is the fallback; the
// golang.org/x/oauth2/jwt package signs with it.
//
// Which source serves a request is configuration (CREDENTIAL_SOURCE), never
// a fallback taken when one fails:
//
//	consent                  stored consent only (the default; delegation off)
//	delegation               delegation only, for users of DELEGATED_DOMAINS
//	consent_then_delegation  a user with a stored consent record uses it, in
//	                         whatever state it is; a user without one, in
//	                         DELEGATED_DOMAINS, is delegated
//	delegation_then_consent  users of DELEGATED_DOMAINS are delegated, even
//	                         with consent stored; everyone else uses consent
//
// Delegation acts on email addresses only: a request that names its user
// "users/{id}" is served by consent, or refused when the source is
// delegation alone. (ChatEvents knows both: Chat sends the sender's email.)
//
// Delegated access tokens are kept in memory, per instance, until shortly
// before they expire; concurrent requests for one user mint one token.

// CREDENTIAL_SOURCE values.
const (
	credentialConsent         = "consent"
	credentialDelegation      = "delegation"
	credentialConsentFirst    = "consent_then_delegation"
	credentialDelegationFirst = "delegation_then_consent"
)

const (
	// delegationScope is the one scope a delegated token carries.
	delegationScope = "https://www.googleapis.com/auth/chat.spaces.create"
	// googleTokenURL is Google's token endpoint and the aud of every
	// JWT-bearer assertion, wherever the assertion is posted.
	googleTokenURL = "https://oauth2.googleapis.com/token"
	// iamCredentialsHost is the IAM Service Account Credentials API, which
	// the impersonate package calls at a fixed URL.
	iamCredentialsHost = "iamcredentials.googleapis.com"
	// cloudPlatformScope is what the function's own credentials need to
	// call the IAM Credentials API.
	cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

	// delegationTimeout bounds one mint: signJwt, then the token endpoint.
	delegationTimeout = 30 * time.Second
	// maxDelegatedTokens bounds the per-instance token cache.
	maxDelegatedTokens = 10000
	// maxErrorBody bounds how much of a refusal is read to learn its kind.
	maxErrorBody = 64 << 10
)

// domainPattern matches a DNS domain name as Workspace domains are named.
var domainPattern = lazyRegexp(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$`)

// checkDelegation validates the delegation settings for loadConfig.
func checkDelegation(c *Config) []string {
	var problems []string
	switch c.CredentialSource {
	case credentialConsent:
		var set []string
		for _, v := range []struct {
			name string
			set  bool
		}{{"DELEGATED_DOMAINS", len(c.DelegatedDomains) > 0}, {"DELEGATION_SERVICE_ACCOUNT", c.DelegationAccount != ""}, {"DELEGATION_KEY", c.DelegationKey != ""}} {
			if v.set {
				set = append(set, v.name)
			}
		}
		if len(set) > 0 {
			return []string{fmt.Sprintf("CREDENTIAL_SOURCE is %q, so domain-wide delegation is off, yet %s is set; set CREDENTIAL_SOURCE to %s, %s or %s to use delegation",
				credentialConsent, strings.Join(set, " and "), credentialDelegation, credentialConsentFirst, credentialDelegationFirst)}
		}
		return nil
	case credentialDelegation, credentialConsentFirst, credentialDelegationFirst:
	default:
		return []string{fmt.Sprintf("CREDENTIAL_SOURCE: %q is not a credential source; use %s, %s, %s or %s",
			c.CredentialSource, credentialConsent, credentialDelegation, credentialConsentFirst, credentialDelegationFirst)}
	}
	if len(c.DelegatedDomains) == 0 {
		problems = append(problems, "DELEGATED_DOMAINS: required with CREDENTIAL_SOURCE="+c.CredentialSource+": the Google Workspace domains (comma-separated) whose users chatauth may act for")
	}
	for _, d := range c.DelegatedDomains {
		if !domainPattern().MatchString(d) {
			problems = append(problems, fmt.Sprintf("DELEGATED_DOMAINS: %q is not a domain name (write example.com, without @ or wildcards)", d))
		}
	}
	switch {
	case c.DelegationAccount == "" && c.DelegationKey == "":
		problems = append(problems, "DELEGATION_SERVICE_ACCOUNT: required with CREDENTIAL_SOURCE="+c.CredentialSource+": the email of the service account delegation signs as (keyless; see README.md), or set DELEGATION_KEY instead")
	case c.DelegationAccount != "" && c.DelegationKey != "":
		problems = append(problems, "set DELEGATION_SERVICE_ACCOUNT (keyless) or DELEGATION_KEY, not both: a key names its own service account")
	case c.DelegationAccount != "" && !validEmail(c.DelegationAccount):
		problems = append(problems, "DELEGATION_SERVICE_ACCOUNT: must be a service account's email, such as chatauth@PROJECT.iam.gserviceaccount.com")
	}
	if c.IAMCredentialsEndpoint != "" {
		if err := checkBaseURL(c.IAMCredentialsEndpoint, false); err != nil {
			problems = append(problems, "IAM_CREDENTIALS_ENDPOINT: "+err.Error())
		}
	}
	return problems
}

// principal is the user a Chat call acts as, and the credentials it acts
// with.
type principal struct {
	Sub   string // the Google account id: known with stored consent, "" when delegated
	Email string
	via   string // credentialConsent or credentialDelegation
	creds credentials
	// emailSince is, for a consent found by email, when the email came to
	// name this account (emailRecord.Since); zero otherwise.
	emailSince time.Time
}

// credentials give a Chat call its access token. Their rule: accessToken
// returns a token valid for at least expiryMargin, and with force a new
// one, because the Chat API refused the last.
type credentials interface {
	accessToken(ctx context.Context, force bool) (string, error)
}

// delegatedUser is a user acted for through domain-wide delegation.
type delegatedUser struct {
	d     *delegator
	email string
}

func (u delegatedUser) accessToken(ctx context.Context, force bool) (string, error) {
	return u.d.accessToken(ctx, u.email, force)
}

// lookupUser decides whose credentials act for user — "users/{id}" or an
// email, as the request named them — by CREDENTIAL_SOURCE. email is the
// user's address when a verified source (Google Chat) gave one beside a
// "users/{id}"; delegation, which acts on addresses, can then serve it.
func (s *server) lookupUser(ctx context.Context, user, email string) (*principal, error) {
	subject := delegationSubject(user, email)
	switch s.cfg.CredentialSource {
	case credentialDelegation:
		return s.delegated(user, subject)
	case credentialDelegationFirst:
		if s.delegation.allows(subject) {
			return s.delegated(user, subject)
		}
	case credentialConsentFirst:
		p, err := s.consents.find(ctx, user, email)
		// Only a user with no record at all is delegated: a record that
		// needs a new consent still answers for its user.
		if errors.Is(err, errUserUnknown) && s.delegation.allows(subject) {
			return s.delegated(user, subject)
		}
		return p, err
	}
	return s.consents.find(ctx, user, email)
}

// delegated is subject acted for through delegation, if the allow-list
// lets it.
func (s *server) delegated(user, subject string) (*principal, error) {
	if subject == "" {
		return nil, errorf(statusInvalidArgument, `%s cannot be acted for through domain-wide delegation, which names users by email address: send "user" as the user's email`, user)
	}
	if !s.delegation.allows(subject) {
		_, domain, _ := strings.Cut(subject, "@")
		return nil, errorf(statusPermissionDenied, "chatauth does not act for users of %s: the domain is not one its operator allowed for domain-wide delegation", domain)
	}
	return &principal{Email: subject, via: credentialDelegation, creds: delegatedUser{s.delegation, subject}}, nil
}

// delegationSubject is the address delegation would act as: the user's
// email, lowercase, or "" when the request gave none.
func delegationSubject(user, email string) string {
	if !strings.HasPrefix(user, "users/") {
		return strings.ToLower(user)
	}
	if validEmail(email) {
		return strings.ToLower(email)
	}
	return ""
}

// delegator mints, caches and hands out delegated access tokens. It is
// built once per instance and is safe for concurrent use.
type delegator struct {
	domains  map[string]bool
	account  string      // the service account: the assertions' iss
	key      *jwt.Config // from DELEGATION_KEY; nil: keyless
	iam      http.RoundTripper
	plain    http.RoundTripper // to the token endpoint: no credentials of ours
	iamURL   string            // IAM Credentials base URL
	tokenURL string
	now      func() time.Time

	mints singleflight.Group // one mint per subject at a time

	mu       sync.Mutex
	tokens   map[string]delegatedToken // by lowercase email
	clientID string                    // the account's OAuth 2 client id: from the key, or learnt once
}

type delegatedToken struct {
	value  string
	expiry time.Time // by the server's clock
}

// newDelegator builds the delegator cfg asks for, or nil when
// CREDENTIAL_SOURCE is consent. key is DELEGATION_KEY's content (nil:
// keyless); tokenURL is the OAuth client's token_uri, which keyless
// assertions are posted to.
func newDelegator(ctx context.Context, cfg Config, key []byte, tokenURL string, o serverOptions) (*delegator, error) {
	if cfg.CredentialSource == credentialConsent || cfg.CredentialSource == "" {
		return nil, nil
	}
	plain := o.httpClient.Transport
	if plain == nil {
		plain = http.DefaultTransport
	}
	d := &delegator{domains: map[string]bool{}, plain: plain, now: o.now, tokens: map[string]delegatedToken{}}
	for _, dom := range cfg.DelegatedDomains {
		d.domains[dom] = true
	}
	if key != nil {
		// Errors name the key's shape, never its content.
		var kf struct {
			ClientEmail string `json:"client_email"`
			ClientID    string `json:"client_id"`
		}
		jc, err := google.JWTConfigFromJSON(key, delegationScope)
		if err != nil || json.Unmarshal(key, &kf) != nil || kf.ClientEmail == "" || jc.PrivateKey == nil {
			return nil, errors.New(`delegation: DELEGATION_KEY is not a service account's JSON key (type "service_account" with client_email and private_key)`)
		}
		if jc.TokenURL == "" {
			jc.TokenURL = googleTokenURL
		}
		if err := checkBaseURL(jc.TokenURL, false); err != nil {
			return nil, fmt.Errorf("delegation: DELEGATION_KEY's token_uri: %w", err)
		}
		if p := notGoogle("DELEGATION_KEY's token_uri", jc.TokenURL, googleTokenURLs); cfg.Deployed && p != "" {
			return nil, errors.New("delegation: " + p)
		}
		jc.Audience = googleTokenURL
		d.key, d.account, d.clientID, d.tokenURL = jc, strings.ToLower(kf.ClientEmail), kf.ClientID, jc.TokenURL
		return d, nil
	}
	d.account, d.tokenURL, d.iamURL = cfg.DelegationAccount, tokenURL, cfg.IAMCredentialsEndpoint
	if d.iamURL == "" {
		d.iamURL = "https://" + iamCredentialsHost
	}
	if o.iamClient != nil {
		if d.iam = o.iamClient.Transport; d.iam == nil {
			d.iam = http.DefaultTransport
		}
		return d, nil
	}
	// The function's own identity (on Cloud Functions, its runtime service
	// account) calls signJwt; the source lives as long as the instance.
	ts, err := google.DefaultTokenSource(context.WithoutCancel(ctx), cloudPlatformScope)
	if err != nil {
		return nil, fmt.Errorf("delegation: Application Default Credentials for the IAM Credentials API: %w", err)
	}
	d.iam = &oauth2.Transport{Source: ts, Base: plain}
	return d, nil
}

// allows reports whether subject's domain is allow-listed. A nil
// delegator (delegation off) allows nobody.
func (d *delegator) allows(subject string) bool {
	if d == nil || subject == "" {
		return false
	}
	_, domain, ok := strings.Cut(subject, "@")
	return ok && d.domains[domain]
}

// accessToken returns subject's delegated access token, minting one when
// none is cached or force asks for a new one.
func (d *delegator) accessToken(ctx context.Context, subject string, force bool) (string, error) {
	if force {
		d.forget(subject)
	} else if tok, ok := d.cached(subject); ok {
		return tok, nil
	}
	// The mint outlives a caller that gives up, so that the others waiting
	// for it, and the cache, get its result.
	return sharedFetch(ctx, &d.mints, subject, delegationTimeout, func(ctx context.Context) (string, error) {
		if tok, ok := d.cached(subject); ok && !force {
			return tok, nil // minted between our look and this flight
		}
		return d.mint(ctx, subject)
	})
}

func (d *delegator) cached(subject string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.tokens[subject]
	if !ok || !d.now().Add(expiryMargin).Before(t.expiry) {
		return "", false
	}
	return t.value, true
}

func (d *delegator) forget(subject string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.tokens, subject)
}

func (d *delegator) keep(subject string, t delegatedToken) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.tokens) >= maxDelegatedTokens {
		soon := d.now().Add(expiryMargin)
		for k, v := range d.tokens {
			if !soon.Before(v.expiry) {
				delete(d.tokens, k)
			}
		}
		for k := range d.tokens {
			if len(d.tokens) < maxDelegatedTokens {
				break
			}
			delete(d.tokens, k)
		}
	}
	d.tokens[subject] = t
}

// mint gets a new access token for subject from Google and caches it.
func (d *delegator) mint(ctx context.Context, subject string) (string, error) {
	rt := &mintTransport{ctx: ctx, d: d}
	client := &http.Client{Transport: rt}
	var tok *oauth2.Token
	var err error
	if d.key != nil {
		c := *d.key
		c.Subject = subject
		tok, err = c.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, client)).Token()
	} else {
		var ts oauth2.TokenSource
		ts, err = impersonate.CredentialsTokenSource(ctx, impersonate.CredentialsConfig{
			TargetPrincipal: d.account,
			Scopes:          []string{delegationScope},
			Subject:         subject,
		}, option.WithHTTPClient(client))
		if err == nil {
			tok, err = ts.Token()
		}
	}
	if err != nil {
		return "", d.mintError(ctx, subject, rt.failure, err)
	}
	if tok.AccessToken == "" {
		return "", wrapError(statusUpstreamError, errors.New("delegation: token response without access_token"), "Google's token endpoint answered without a token; try again")
	}
	// Both libraries date the expiry by the wall clock; the cache keeps it
	// by the server's, as every other expiry decision is made.
	d.keep(subject, delegatedToken{value: tok.AccessToken, expiry: d.now().Add(time.Until(tok.Expiry))})
	loggerFrom(ctx).Info("delegated access token minted", "subject", subject, "keyless", d.key == nil)
	return tok.AccessToken, nil
}

// mintFailure is the first refusal a mint met.
type mintFailure struct {
	call        string // "signJwt" or "token"
	status      int
	code        string // the OAuth error code, or the google.rpc status
	description string
}

// mintTransport carries one mint's requests. Neither library gives them a
// context, and impersonate calls Google's fixed URLs, so it sets the mint's
// context and sends those URLs to the configured endpoints. It keeps the
// function's own credentials away from the token endpoint, which the
// assertion alone authenticates, and notes the first refusal, so that it is
// answered by its kind rather than by parsing a library's error text.
type mintTransport struct {
	ctx     context.Context
	d       *delegator
	failure *mintFailure
}

func (t *mintTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var (
		base   http.RoundTripper
		target string
		call   string
	)
	u := r.URL.Scheme + "://" + r.URL.Host + r.URL.Path
	switch {
	case u == googleTokenURL || u == t.d.tokenURL:
		base, target, call = t.d.plain, t.d.tokenURL, "token"
	case r.URL.Scheme == "https" && r.URL.Host == iamCredentialsHost && t.d.iam != nil:
		base, target, call = t.d.iam, t.d.iamURL+r.URL.EscapedPath(), "signJwt"
	default:
		return nil, fmt.Errorf("delegation: refusing a request to %s", r.URL.Host)
	}
	to, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("delegation: endpoint: %w", err)
	}
	r2 := r.Clone(t.ctx)
	r2.URL, r2.Host = to, ""
	if call == "token" {
		r2.Header.Del("Authorization")
	}
	resp, err := base.RoundTrip(r2)
	if err != nil || resp.StatusCode < 300 {
		return resp, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if t.failure == nil {
		t.failure = parseFailure(call, resp.StatusCode, body)
	}
	return resp, nil
}

// parseFailure reads an error answer: the token endpoint's
// {"error": code, "error_description": text} or a Google API's
// {"error": {"status", "message"}}.
func parseFailure(call string, status int, body []byte) *mintFailure {
	f := &mintFailure{call: call, status: status}
	var e struct {
		Error       json.RawMessage `json:"error"`
		Description string          `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil {
		return f
	}
	var api struct{ Status, Message string }
	if json.Unmarshal(e.Error, &f.code) == nil {
		f.description = e.Description
	} else if json.Unmarshal(e.Error, &api) == nil {
		f.code, f.description = api.Status, api.Message
	}
	return f
}

// mintError answers a failed mint. Google's unauthorized_client means the
// administrator has not authorized this client for this scope; its answer
// says exactly what to enter in the Admin console. invalid_grant "Invalid
// email or User ID" means there is no such user. Anything else about the
// assertion is the deployment's mistake, shown to its operator in the logs.
func (d *delegator) mintError(ctx context.Context, subject string, f *mintFailure, err error) error {
	_, domain, _ := strings.Cut(subject, "@")
	if f == nil {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return wrapError(statusDeadlineExceeded, err, "Google did not answer in time while chatauth got a delegated token for %s; try again", subject)
		}
		return wrapError(statusUpstreamError, err, "Google could not be reached to get a delegated token for %s; try again", subject)
	}
	cause := fmt.Errorf("delegation: %s for %s: HTTP %d %s: %s", f.call, subject, f.status, f.code, f.description)
	switch {
	case f.call == "token" && f.code == "unauthorized_client":
		return wrapError(statusPermissionDenied, cause,
			"domain-wide delegation is not authorized for chatauth in %s. A super administrator must open the Google Admin console → Security → Access and data control → API controls → Manage Domain Wide Delegation → Add new, and enter Client ID %s and OAuth scope %s",
			domain, d.clientRef(ctx), delegationScope)
	case f.call == "token" && f.code == "invalid_grant" && strings.Contains(f.description, "Invalid email or User ID"):
		return wrapError(statusNotFound, cause, "%s is not a user of the Google Workspace domain %s", subject, domain)
	case f.status == http.StatusTooManyRequests || f.status >= 500:
		return wrapError(statusUpstreamError, cause, "Google failed (HTTP %d) while chatauth got a delegated token for %s; try again", f.status, subject)
	case f.call == "signJwt" && f.status == http.StatusForbidden:
		cause = fmt.Errorf("%w (grant %s roles/iam.serviceAccountTokenCreator on itself, and enable the IAM Service Account Credentials API)", cause, d.account)
	}
	return wrapError(statusInternal, cause, "domain-wide delegation is misconfigured; the operator can find the cause in the function's logs")
}

// clientRef names the service account's OAuth 2 client id, which is what
// the Admin console asks for: from the key file, or, keyless, the sub of an
// ID token the IAM Credentials API issues for the account (its unique id;
// the same role that allows signJwt allows it). A lookup that fails names
// where to find it instead, and is tried again next time.
func (d *delegator) clientRef(ctx context.Context) string {
	d.mu.Lock()
	id := d.clientID
	d.mu.Unlock()
	if id != "" {
		return id
	}
	id, err := d.lookupClientID(ctx)
	if err != nil {
		loggerFrom(ctx).Warn("could not look up the service account's client id", "account", d.account, "error", err.Error())
		return "(the Unique ID of the service account " + d.account + ", shown in the Cloud console under IAM & Admin → Service Accounts)"
	}
	d.mu.Lock()
	d.clientID = id
	d.mu.Unlock()
	return id
}

func (d *delegator) lookupClientID(ctx context.Context) (string, error) {
	if d.iam == nil {
		return "", errors.New("no IAM Credentials client")
	}
	svc, err := iamcredentials.NewService(ctx, option.WithHTTPClient(&http.Client{Transport: d.iam}), option.WithEndpoint(d.iamURL+"/"))
	if err != nil {
		return "", fmt.Errorf("iamcredentials: new service: %w", err)
	}
	resp, err := svc.Projects.ServiceAccounts.GenerateIdToken("projects/-/serviceAccounts/"+d.account,
		&iamcredentials.GenerateIdTokenRequest{Audience: "chatauth"}).Context(ctx).Do()
	if err != nil {
		return "", fmt.Errorf("iamcredentials: generateIdToken: %w", err)
	}
	// The token came straight from Google over TLS and names only who the
	// account is; its signature need not be checked for that.
	parts := strings.Split(resp.Token, ".")
	var c struct {
		Sub string `json:"sub"`
	}
	if len(parts) != 3 || decodeJWTPart(parts[1], &c) != nil || !isDigits(c.Sub, 32) {
		return "", errors.New("iamcredentials: generateIdToken: no numeric sub in the ID token")
	}
	return c.Sub, nil
}
