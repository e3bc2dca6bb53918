package chatauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// How webhook callers (CreateSpace, Disconnect) prove who they are; see
// README.md, "Caller authentication".
const (
	// signatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256>".
	signatureHeader = "X-Signature"
	// maxSignatureHeader bounds the header. A valid one is 82 bytes; the
	// rest leaves room for fields a newer signer may add beside v1.
	maxSignatureHeader = 512
	// maxSignatureFields bounds the key=value fields, so that the check
	// for repeated keys stays cheap and needs no map.
	maxSignatureFields = 8
	// signatureWindow is how far, in seconds and either way, a signature's
	// timestamp may be from our clock.
	signatureWindow = 300
	// maxTimestampDigits admits every date until the year 33658 and keeps
	// the parse clear of overflow.
	maxTimestampDigits = 12

	callerHMAC    = "hmac"
	callerIDToken = "idtoken"
)

// signatureFormat ends every message about a malformed X-Signature, so a
// person sees what is expected without the header being echoed.
const signatureFormat = `expected t=<unix seconds>,v1=<64 hex digits of HMAC-SHA256(secret, "<t>.<raw body>")>`

// callerAuth verifies callers of the webhook functions. It is built once
// per instance and is safe for concurrent use.
//
// A request carries exactly one credential:
//
//   - X-Signature, an HMAC-SHA256 of "<t>.<raw body>" under one of the
//     shared webhook secrets, its timestamp within ±300 s of now. Every
//     secret is tried, so several can be active while one is rotated.
//     Fields other than t and v1 are ignored (as Stripe's parsers do), so
//     a signer may add a newer scheme beside v1; any repeated field, and
//     a header without t or v1, is refused.
//   - Authorization: Bearer <Google ID token>, RS256-signed by Google,
//     unexpired, for one of the allowed audiences, issued by
//     accounts.google.com, with a verified email.
//
// A request with both is refused rather than judged by one of them: a
// proxy or a confused client that adds the second must not decide which
// check applies. A signature proves only that the caller holds a secret,
// not that the request is fresh: within the window it can be replayed.
type callerAuth struct {
	secrets   [][]byte            // HMAC keys; empty: signatures are refused
	audiences []string            // ID-token audiences; empty: ID tokens are refused
	trusted   map[string]struct{} // lowercase emails of ID-token callers that may act for anyone
	idTokens  *idTokenVerifier    // nil when audiences is empty
	now       func() time.Time
}

// caller is who called, as authenticate established it.
type caller struct {
	method  string // callerHMAC or callerIDToken
	email   string // ID-token callers: their verified email, lowercase; "" for HMAC
	sub     string // ID-token callers: their Google account id; "" for HMAC
	trusted bool   // HMAC callers hold a shared secret; ID-token callers when listed in TRUSTED_CALLERS

	// signedAt is when the credential was made: the X-Signature's t, or
	// the ID token's iat. Within the window a credential can be replayed,
	// so what it may act on is bounded by this time (signedBefore).
	signedAt time.Time
	// proof names the credential: the HMAC for X-Signature, the account
	// and iat for an ID token. With body it derives requestID.
	proof []byte
	body  []byte
}

// newCallerAuth builds the verifier. httpClient fetches Google's signing
// keys (tests point it at a fake); the validator caches them for as long
// as Google's Cache-Control allows. With no audiences ID tokens are not
// accepted, and with no secrets signatures are not.
func newCallerAuth(ctx context.Context, secrets [][]byte, audiences, trustedCallers []string, httpClient *http.Client, now func() time.Time) (*callerAuth, error) {
	if now == nil {
		now = time.Now
	}
	a := &callerAuth{now: now, trusted: make(map[string]struct{}, len(trustedCallers))}
	for i, s := range secrets {
		// An empty or short key would let anyone who guesses it sign;
		// parseWebhookSecrets already refuses them, and so does this.
		if len(s) < 16 {
			return nil, fmt.Errorf("callers: webhook secret %d is shorter than 16 bytes", i+1)
		}
		a.secrets = append(a.secrets, slices.Clone(s))
	}
	for _, aud := range audiences {
		if aud = strings.TrimSpace(aud); aud != "" && !slices.Contains(a.audiences, aud) {
			a.audiences = append(a.audiences, aud)
		}
	}
	for _, c := range trustedCallers {
		if c = strings.ToLower(strings.TrimSpace(c)); c != "" {
			a.trusted[c] = struct{}{}
		}
	}
	if len(a.audiences) > 0 {
		keys, err := newGoogleKeys(ctx, httpClient)
		if err != nil {
			return nil, fmt.Errorf("callers: %w", err)
		}
		a.idTokens = newIDTokenVerifier(idTokenPolicy{
			audiences:    a.audiences,
			audienceHint: "one of ALLOWED_AUDIENCES (usually this function's URL)",
			issuers:      []string{googleIssuer, "accounts.google.com"},
			account:      true,
			keys:         keys,
		}, now)
	}
	return a, nil
}

// authenticate checks r's credential against the raw body, which the
// handler has already read (at most 64 KiB). A refusal is an *Error with
// status UNAUTHENTICATED whose message says what to fix, never quoting
// the credential; only a failure to fetch Google's keys is UNAVAILABLE,
// since the caller's token may well be good.
func (a *callerAuth) authenticate(r *http.Request, body []byte) (*caller, error) {
	// The header map is indexed directly: both names are canonical.
	sigs, authz := r.Header[signatureHeader], r.Header["Authorization"]
	switch {
	case len(sigs) > 0 && len(authz) > 0:
		return nil, errorf(statusUnauthenticated, "send either X-Signature or Authorization: Bearer <Google ID token>, not both")
	case len(sigs) > 1:
		return nil, errorf(statusUnauthenticated, "send exactly one X-Signature header")
	case len(sigs) == 1:
		t, mac, err := a.verifyHMAC(sigs[0], body)
		if err != nil {
			return nil, err
		}
		return &caller{method: callerHMAC, trusted: true, signedAt: time.Unix(t, 0), proof: mac, body: body}, nil
	case len(authz) > 1:
		return nil, errorf(statusUnauthenticated, "send exactly one Authorization header")
	case len(authz) == 1:
		c, err := a.verifyIDToken(r.Context(), authz[0])
		if err != nil {
			return nil, err
		}
		c.body = body
		return c, nil
	default:
		return nil, errorf(statusUnauthenticated, "no credentials: send X-Signature or Authorization: Bearer <Google ID token>")
	}
}

// malformedSignature is the refusal of an X-Signature that does not parse.
func malformedSignature(problem string) *Error {
	return errorf(statusUnauthenticated, "X-Signature is malformed (%s): %s", problem, signatureFormat)
}

// verifyHMAC checks an X-Signature header value against body and returns
// its time and MAC. It parses without regular expressions, checks the
// window before computing anything, and computes the HMAC under every
// secret, comparing each in constant time, so neither the time taken nor
// the answer tells which secret matched.
func (a *callerAuth) verifyHMAC(header string, body []byte) (int64, []byte, error) {
	if len(a.secrets) == 0 {
		return 0, nil, errorf(statusUnauthenticated, "X-Signature is not accepted here (no webhook secrets are configured); send Authorization: Bearer <Google ID token>")
	}
	ts, t, want, err := parseSignatureHeader(header)
	if err != nil {
		return 0, nil, err
	}
	switch d := a.now().Unix() - t; {
	case d > signatureWindow:
		return 0, nil, errorf(statusUnauthenticated, "the signature timestamp is more than %d seconds old; sign each request when sending it, and check the caller's clock", signatureWindow)
	case d < -signatureWindow:
		return 0, nil, errorf(statusUnauthenticated, "the signature timestamp is more than %d seconds from now; check the caller's clock", signatureWindow)
	}
	if !a.signedByASecret(ts, body, want[:]) {
		return 0, nil, errorf(statusUnauthenticated, "the signature does not match the body; sign the exact bytes sent, as HMAC-SHA256(secret, \"<t>.<raw body>\")")
	}
	return t, want[:], nil
}

// parseSignatureHeader reads t (as sent, and as unix seconds) and v1 from
// an X-Signature value, refusing anything but printable ASCII
// key=value fields, each key at most once.
func parseSignatureHeader(header string) (ts string, t int64, v1mac [sha256.Size]byte, err error) {
	fail := func(problem string) (string, int64, [sha256.Size]byte, error) {
		return "", 0, [sha256.Size]byte{}, malformedSignature(problem)
	}
	if header == "" {
		return fail("empty")
	}
	if len(header) > maxSignatureHeader {
		return fail(fmt.Sprintf("longer than %d bytes", maxSignatureHeader))
	}
	for i := 0; i < len(header); i++ {
		if c := header[i]; c <= ' ' || c >= 0x7f {
			return fail("spaces, control or non-ASCII characters")
		}
	}
	ts, v1, problem := signatureFields(header)
	if problem != "" {
		return fail(problem)
	}
	t, ok := parseUnixSeconds(ts)
	if !ok {
		return fail(fmt.Sprintf("t must be unix seconds, 1 to %d digits", maxTimestampDigits))
	}
	if !decodeHex(v1mac[:], v1) {
		return fail(fmt.Sprintf("v1 must be %d hex digits", 2*sha256.Size))
	}
	return ts, t, v1mac, nil
}

// signatureFields returns the values of t and v1 in an X-Signature value,
// or what is wrong with its fields: each must be key=value, separated by
// commas, each key at most once, at most maxSignatureFields of them.
func signatureFields(header string) (ts, v1, problem string) {
	var (
		keys          [maxSignatureFields]string
		nkeys         int
		haveT, haveV1 bool
	)
	for rest, more := header, true; more; {
		var field string
		field, rest, more = strings.Cut(rest, ",")
		k, v, ok := strings.Cut(field, "=")
		if !ok || !isSignatureKey(k) || v == "" {
			return "", "", "fields must be key=value, separated by commas"
		}
		if slices.Contains(keys[:nkeys], k) {
			switch k {
			case "t", "v1":
				return "", "", k + " appears more than once"
			default:
				return "", "", "a field appears more than once"
			}
		}
		if nkeys == len(keys) {
			return "", "", fmt.Sprintf("more than %d fields", maxSignatureFields)
		}
		keys[nkeys] = k
		nkeys++
		switch k {
		case "t":
			ts, haveT = v, true
		case "v1":
			v1, haveV1 = v, true
		}
	}
	if !haveT {
		return "", "", "no t"
	}
	if !haveV1 {
		return "", "", "no v1"
	}
	return ts, v1, ""
}

// signedByASecret reports whether want is the HMAC of "<ts>.<body>" under
// any secret. Every secret is tried and compared in constant time, so
// neither the time taken nor the answer tells which one matched.
func (a *callerAuth) signedByASecret(ts string, body, want []byte) bool {
	// The message is "<t>.<body>", with t exactly as sent. The prefix is
	// built in a small buffer whose tail receives each sum.
	var buf [maxTimestampDigits + 1 + sha256.Size]byte
	n := copy(buf[:], ts)
	buf[n] = '.'
	prefix := buf[:n+1]
	matched := false
	for _, secret := range a.secrets {
		m := hmac.New(sha256.New, secret)
		m.Write(prefix)
		m.Write(body)
		got := m.Sum(buf[n+1 : n+1])
		if hmac.Equal(got, want) {
			matched = true
		}
	}
	return matched
}

// isSignatureKey reports whether k is a plausible X-Signature field name:
// 1 to 16 lowercase letters and digits.
func isSignatureKey(k string) bool {
	if k == "" || len(k) > 16 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// parseUnixSeconds parses 1 to maxTimestampDigits decimal digits; signs,
// spaces and anything else are refused.
func parseUnixSeconds(s string) (int64, bool) {
	if s == "" || len(s) > maxTimestampDigits {
		return 0, false
	}
	var t int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		t = t*10 + int64(c-'0')
	}
	return t, true
}

// decodeHex decodes s, upper or lower case, into dst, which it must fill
// exactly. Unlike hex.Decode it reads a string without copying it.
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := fromHexDigit(s[2*i])
		lo, ok2 := fromHexDigit(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func fromHexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// verifyIDToken checks an Authorization header value against the callers'
// policy (newCallerAuth) and returns the caller the token names.
func (a *callerAuth) verifyIDToken(ctx context.Context, authz string) (*caller, error) {
	if a.idTokens == nil {
		return nil, errorf(statusUnauthenticated, "Google ID tokens are not accepted here (ALLOWED_AUDIENCES is empty); sign the request with X-Signature")
	}
	c, err := a.idTokens.verify(ctx, authz)
	if err != nil {
		return nil, err
	}
	email := strings.ToLower(c.Email)
	_, trusted := a.trusted[email]
	return &caller{method: callerIDToken, email: email, sub: c.Sub, trusted: trusted,
		signedAt: time.Unix(c.Iat, 0), proof: []byte(c.Sub + "." + strconv.FormatInt(c.Iat, 10))}, nil
}

// actAs checks that c may act for user, a "users/{id}" name or an email,
// and returns the name to look the user up by, and the user's verified
// email when the credential gave one. Trusted callers act for anyone, as
// named. Any other ID-token caller acts only as itself: as its own
// account, users/{its sub}, whether it names itself so or by its email;
// an email names an account only through a consent, and a token for
// alice@ from another account is not the account that consented as
// alice@ (README.md, "Identity"). The email comparison folds ASCII case
// only: Google addresses are ASCII, and Unicode folding would let, say,
// the Kelvin sign stand for a "k".
func (c *caller) actAs(user string) (name, email string, err error) {
	if c.trusted {
		return user, "", nil
	}
	if c.email == "" || c.sub == "" {
		return "", "", errorf(statusPermissionDenied, "this caller may not act for users; add it to TRUSTED_CALLERS")
	}
	if user == "users/"+c.sub || asciiEqualFold(user, c.email) {
		return "users/" + c.sub, c.email, nil
	}
	return "", "", errorf(statusPermissionDenied, "caller %s may act only as itself; add it to TRUSTED_CALLERS to act for others", c.email)
}

// signedBefore refuses to act on a consent given after c's credential was
// made: within its window a credential can be replayed, and its signer
// cannot have meant a consent that did not exist yet. Times compare in
// whole seconds, the signature's precision: a consent in a later second
// than the signature's is refused; one in the same second may have come
// first, and passes. A record from before consentedAt was kept passes.
// what names the act, for the message.
func (c *caller) signedBefore(rec *tokenRecord, what string) error {
	if rec.ConsentedAt.Unix() <= c.signedAt.Unix() {
		return nil
	}
	name := rec.Email
	if name == "" {
		name = "users/" + rec.Sub
	}
	fresh := "sign a new request"
	if c.method == callerIDToken {
		fresh = "send it with an ID token fetched now"
	}
	return errorf(statusAlreadyExists, "%s connected Google Chat at %s, after this request was signed (%s), so the request cannot %s; if that is still wanted, %s (and check the caller's clock)",
		name, rec.ConsentedAt.UTC().Format(time.RFC3339), c.signedAt.UTC().Format(time.RFC3339), what, fresh)
}

// emailNamedBefore refuses to act for an email that came to name its
// account (since, emailRecord.Since) after an X-Signature was made: the
// signer meant the account the email named then, and a replay must not
// act as the account that took the address since. Times compare as in
// signedBefore. An ID token is not bound to a body, so a holder may send
// any request with it, and a caller's library reuses one for up to an
// hour: for it the check would refuse good requests and stop no one.
func (c *caller) emailNamedBefore(email string, since time.Time) error {
	if c.method != callerHMAC || since.Unix() <= c.signedAt.Unix() {
		return nil
	}
	return errorf(statusAlreadyExists, "%s was connected by another Google account at %s, after this request was signed (%s), so the request meant the account it named before; if it is still wanted, sign a new request (and check the caller's clock)",
		email, since.UTC().Format(time.RFC3339), c.signedAt.UTC().Format(time.RFC3339))
}

// requestID is the Chat requestId of a CreateSpace that names none: a
// hash of the credential and the raw body, so that the same signed bytes
// always mean the same space, a retry or a replay of them included, and
// any other request another. It fits Chat's rules and validate's pattern:
// "chatauth-" and 40 hex digits.
func (c *caller) requestID() string {
	h := sha256.New()
	h.Write([]byte("chatauth request id\x00" + c.method + "\x00"))
	h.Write([]byte{byte(len(c.proof) >> 8), byte(len(c.proof))})
	h.Write(c.proof)
	h.Write(c.body)
	return "chatauth-" + hex.EncodeToString(h.Sum(nil)[:20])
}

// asciiEqualFold is strings.EqualFold restricted to ASCII letters.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
