package chatauth

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/api/idtoken"
	"google.golang.org/api/option"
)

// maxIDTokenBytes bounds a bearer token; Google's ID tokens are about
// 1 KiB.
const maxIDTokenBytes = 8 << 10

// idTokenPolicy is what one use of an ID token accepts: webhook callers
// (callerAuth), Google Chat's two audience settings and a Workspace
// add-on's service agent (chatAuth) each have one. Adding a signer is
// adding a policy, not a verifier.
type idTokenPolicy struct {
	// audiences the token may be for; its aud must be one of them.
	audiences []string
	// audienceHint ends the message refusing another audience: what to
	// request the token for.
	audienceHint string
	// issuers the token's iss must be one of; the first is named when
	// another is refused.
	issuers []string
	// signers are the emails the token must carry, verified, when
	// non-empty: the service accounts allowed to call (case folds in
	// ASCII only).
	signers []string
	// account: the token names the account that acts, so it must carry a
	// Google account id (sub), an issue time and a verified email.
	account bool
	// keys checks the signature.
	keys signingKeys
}

// signingKeys checks a token's signature, once its claims have passed.
// A refusal is an *Error: UNAUTHENTICATED for a bad signature or an
// unknown key, UNAVAILABLE when the keys cannot be fetched.
type signingKeys interface {
	// owner names who publishes the keys, for messages.
	owner() string
	verifySignature(ctx context.Context, tok string, t *parsedIDToken) error
}

// idTokenVerifier verifies bearer tokens under one policy. It is built
// once per instance and is safe for concurrent use.
type idTokenVerifier struct {
	policy idTokenPolicy
	now    func() time.Time
}

func newIDTokenVerifier(p idTokenPolicy, now func() time.Time) *idTokenVerifier {
	if now == nil {
		now = time.Now
	}
	return &idTokenVerifier{policy: p, now: now}
}

// idTokenHeader is the part of a JWT header the checks read.
type idTokenHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

// idTokenClaims are the claims the checks read. They are decoded from the
// same payload whose signature is checked, so once it holds they are the
// signer's.
type idTokenClaims struct {
	Iss           string   `json:"iss"`
	Aud           string   `json:"aud"`
	Sub           string   `json:"sub"`
	Iat           int64    `json:"iat"`
	Exp           int64    `json:"exp"`
	Email         string   `json:"email"`
	EmailVerified flexBool `json:"email_verified"`
}

// flexBool is a boolean claim that some issuers send as "true"/"false".
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true", `"true"`:
		*f = true
	case "false", `"false"`, "null":
		*f = false
	default:
		return errors.New("not a boolean")
	}
	return nil
}

// parsedIDToken is a token split into its parts, its header and claims
// decoded but not yet trusted.
type parsedIDToken struct {
	header, payload, signature string // base64url parts
	hdr                        idTokenHeader
	claims                     idTokenClaims
}

// idTokenRefusal is an UNAUTHENTICATED answer: message for people,
// detail (which never quotes the token) for the logs.
func idTokenRefusal(detail, format string, args ...any) *Error {
	return wrapError(statusUnauthenticated, errors.New(detail), format, args...)
}

// verify checks an Authorization header value and returns the token's
// claims. The cheap checks (shape, algorithm, audience, expiry, issuer,
// signer) come first, from the unverified token, so that garbage costs no
// RSA and gets a precise message; the signature is checked last.
func (v *idTokenVerifier) verify(ctx context.Context, authz string) (*idTokenClaims, error) {
	tok, err := bearerToken(authz)
	if err != nil {
		return nil, err
	}
	t, err := splitJWT(tok)
	if err != nil {
		return nil, err
	}
	if err := v.checkClaims(&t.claims); err != nil {
		return nil, err
	}
	if err := v.policy.keys.verifySignature(ctx, tok, t); err != nil {
		return nil, err
	}
	return &t.claims, nil
}

// bearerToken takes the token out of "Bearer <token>".
func bearerToken(authz string) (string, error) {
	scheme, tok, _ := strings.Cut(authz, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", idTokenRefusal("Authorization scheme is not Bearer", "the Authorization header must be \"Bearer <Google ID token>\"; no other scheme is accepted")
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" {
		return "", idTokenRefusal("empty bearer token", "the Authorization header has no token after Bearer; send a Google ID token")
	}
	if len(tok) > maxIDTokenBytes {
		return "", idTokenRefusal(fmt.Sprintf("bearer token of %d bytes", len(tok)), "the bearer token is longer than %d bytes; send a Google ID token", maxIDTokenBytes)
	}
	return tok, nil
}

// splitJWT splits tok and decodes its header and claims, refusing
// every algorithm but RS256 before any key is looked at.
func splitJWT(tok string) (*parsedIDToken, error) {
	notJWT := idTokenRefusal("bearer token is not a signed JWT", "the bearer token is not a Google ID token (a JWT of three base64url parts)")
	t := &parsedIDToken{}
	var rest string
	var ok1, ok2 bool
	t.header, rest, ok1 = strings.Cut(tok, ".")
	t.payload, t.signature, ok2 = strings.Cut(rest, ".")
	// An empty signature is let through to the algorithm check, so that an
	// unsigned token (alg "none") is told why it is refused.
	if !ok1 || !ok2 || t.header == "" || t.payload == "" || !isBase64URL(t.header) || !isBase64URL(t.payload) || !isBase64URL(t.signature) {
		return nil, notJWT
	}
	if err := decodeJWTPart(t.header, &t.hdr); err != nil {
		return nil, notJWT
	}
	// Google's ID tokens and Chat's JWTs are RS256 only (the idtoken
	// validator would also take ES256, against IAP's keys), so nothing
	// else goes further: alg "none" and HS256 confusion included.
	if t.hdr.Alg != "RS256" {
		return nil, idTokenRefusal(fmt.Sprintf("JWT header: alg %q", t.hdr.Alg), "the ID token must be signed with RS256, as Google signs its ID tokens")
	}
	if t.signature == "" {
		return nil, notJWT
	}
	if t.hdr.Kid == "" {
		return nil, idTokenRefusal("JWT header: no kid", "the ID token names no signing key (kid); send a Google ID token")
	}
	if len(t.hdr.Crit) > 0 {
		return nil, idTokenRefusal("JWT header: crit set", "the ID token has critical header extensions, which are not supported")
	}
	if err := decodeJWTPart(t.payload, &t.claims); err != nil {
		return nil, wrapError(statusUnauthenticated, fmt.Errorf("JWT claims: %w", err), "the ID token's claims are malformed; send a Google ID token")
	}
	return t, nil
}

// checkClaims holds the unverified claims to the policy.
func (v *idTokenVerifier) checkClaims(c *idTokenClaims) error {
	p := &v.policy
	now := v.now().Unix()
	switch {
	case !slices.Contains(p.audiences, c.Aud):
		return idTokenRefusal(fmt.Sprintf("audience %q is not accepted", c.Aud), "the ID token's audience is not accepted; request the token for %s", p.audienceHint)
	case c.Exp == 0:
		return idTokenRefusal("no expiry", "the ID token has no expiry; send a Google ID token")
	case now > c.Exp:
		return idTokenRefusal(fmt.Sprintf("expired %d s ago", now-c.Exp), "the ID token has expired; fetch a fresh one")
	case p.account && c.Iat == 0:
		return idTokenRefusal("no iat", "the ID token has no issue time (iat); send a Google ID token")
	case c.Iat > now+signatureWindow:
		return idTokenRefusal(fmt.Sprintf("issued %d s in the future", c.Iat-now), "the ID token was issued more than %d seconds from now; check the caller's clock", signatureWindow)
	case !slices.Contains(p.issuers, c.Iss):
		return idTokenRefusal(fmt.Sprintf("issuer %q is not accepted", c.Iss), "the ID token was not issued by %s (the issuer must be %s)", p.keys.owner(), p.issuers[0])
	case p.account && !isDigits(c.Sub, 64):
		return idTokenRefusal("no account id (sub)", "the ID token names no Google account (sub); send a Google ID token")
	}
	if !p.account && len(p.signers) == 0 {
		return nil
	}
	switch {
	case c.Email == "":
		return idTokenRefusal("no email", "the ID token has no email; request it with the email claim (for a service account, include the email)")
	case len(p.signers) > 0 && !slices.ContainsFunc(p.signers, func(s string) bool { return asciiEqualFold(s, c.Email) }):
		return idTokenRefusal(fmt.Sprintf("email %q is not an allowed signer", c.Email), "the ID token is not from an account allowed to call here")
	case !bool(c.EmailVerified):
		return idTokenRefusal("email not verified", "the ID token's email is not verified")
	case !validEmail(c.Email):
		return idTokenRefusal("email is not an address", "the ID token's email is not an email address")
	}
	return nil
}

// googleKeys checks signatures against the keys Google signs ID tokens
// with, through google.golang.org/api/idtoken, which caches them for as
// long as Google's Cache-Control allows.
type googleKeys struct{ validator *idtoken.Validator }

// newGoogleKeys builds the validator; client fetches Google's keys (tests
// and offline runs point it elsewhere, see withGoogleCertsURL).
func newGoogleKeys(ctx context.Context, client *http.Client) (*googleKeys, error) {
	var opts []idtoken.ClientOption
	if client != nil {
		opts = append(opts, option.WithHTTPClient(client))
	}
	// The validator outlives the request that happens to build it.
	v, err := idtoken.NewValidator(context.WithoutCancel(ctx), opts...)
	if err != nil {
		return nil, fmt.Errorf("new ID token validator: %w", err)
	}
	return &googleKeys{validator: v}, nil
}

func (*googleKeys) owner() string { return "Google" }

// verifySignature also checks audience and expiry again, as the
// validator always does.
func (k *googleKeys) verifySignature(ctx context.Context, tok string, t *parsedIDToken) error {
	if _, err := k.validator.Validate(ctx, tok, t.claims.Aud); err != nil {
		return idTokenError(err)
	}
	return nil
}

// idTokenError turns a validator failure into the answer. By the time the
// validator runs, the token's shape, algorithm, audience and expiry have
// been checked, so what is left is a bad signature, a key Google does not
// publish, expiry in the instant between the checks, or failing to fetch
// Google's keys. The library's errors are plain strings except for the
// first; any it might add later are answered as unavailable, which still
// refuses the token, and tests pin the ones matched here.
func idTokenError(err error) *Error {
	msg := err.Error()
	switch {
	case errors.Is(err, rsa.ErrVerification):
		return wrapError(statusUnauthenticated, err, "the ID token's signature is not valid; send a Google ID token as issued")
	case strings.Contains(msg, "could not find matching cert keyId"):
		return wrapError(statusUnauthenticated, err, "the ID token is signed with a key Google does not publish; send a Google ID token")
	case strings.Contains(msg, "token expired"):
		return wrapError(statusUnauthenticated, err, "the ID token has expired; fetch a fresh one")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return wrapError(statusUnavailable, err, "Google's signing keys could not be fetched in time; try again")
	default:
		return &Error{Status: statusUnavailable, Message: "Google's signing keys could not be fetched to check the ID token; try again shortly", RetryAfter: 5, Err: fmt.Errorf("validate ID token: %w", err)}
	}
}

// serviceAccountKeys checks signatures against a service account's own
// published certificates (chatCerts), for tokens the account issues
// itself rather than through Google's OAuth key.
type serviceAccountKeys struct {
	account string // the service account's email
	what    string // names the keys in the answer when they cannot be fetched
	certs   *chatCerts
}

func (k *serviceAccountKeys) owner() string { return k.account }

func (k *serviceAccountKeys) verifySignature(ctx context.Context, _ string, t *parsedIDToken) error {
	key, err := k.certs.key(ctx, t.hdr.Kid)
	if errors.Is(err, errUnknownChatKey) {
		return idTokenRefusal(fmt.Sprintf("signed with key %q, which %s does not publish", t.hdr.Kid, k.account),
			"the ID token is signed with a key %s does not publish", k.account)
	}
	if err != nil {
		return &Error{Status: statusUnavailable, Message: k.what + " could not be fetched to check the request; try again shortly", RetryAfter: 5, Err: err}
	}
	raw, err := base64.RawURLEncoding.DecodeString(t.signature)
	if err != nil {
		return idTokenRefusal("signature is not base64url", "the ID token's signature is not valid; send the token as issued")
	}
	digest := sha256.Sum256([]byte(t.header + "." + t.payload))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], raw); err != nil {
		return wrapError(statusUnauthenticated, fmt.Errorf("signature: %w", err), "the ID token's signature is not valid; send the token as issued")
	}
	return nil
}

// decodeJWTPart decodes one base64url part of a JWT as JSON into v.
func decodeJWTPart(part string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return errors.New("not base64url")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errors.New("not a JSON object of the expected claims")
	}
	return nil
}

// isBase64URL reports whether s uses only the unpadded base64url alphabet.
func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
