package fakegoogle

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The domain-wide delegation part of the fake: Google Cloud service
// accounts, the two ways they sign a JWT-bearer assertion, and the grant
// that turns an assertion into a user's access token.
//
//   - Keyless: the IAM Service Account Credentials API signs a payload with
//     a key Google keeps for the account,
//     POST /v1/projects/-/serviceAccounts/{email}:signJwt
//     {"payload": "<JSON claims>"} → {"keyId", "signedJwt"}.
//     generateIdToken is served too; its sub is the account's unique id.
//   - With a key: CreateServiceAccountKey returns the JSON key file the
//     Cloud console downloads, its token_uri pointing at the fake.
//
// POST /token then takes grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
// (or the legacy grant_type=assertion with assertion_type
// http://oauth.net/grant_type/jwt/1.0/bearer, which
// google.golang.org/api/impersonate sends) and checks the assertion as
// Google does: RS256 signed by a live key of the issuing service account,
// aud Google's token URL, at most an hour long and not expired, a scope, and
// a subject who is a user of a domain whose administrator granted the
// account's client id those scopes (GrantDomainWideDelegation). The error
// codes and texts are Google's: unauthorized_client when delegation is not
// granted, invalid_grant "Invalid email or User ID" for an unknown user.
//
// Like the KMS part, IAM credentials are not checked on signJwt; a missing
// roles/iam.serviceAccountTokenCreator is simulated with DenySignJwt.

// JWT-bearer grant parameters (RFC 7523, and Google's legacy form).
const (
	GrantTypeJWTBearer   = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	legacyGrantAssertion = "assertion"
	legacyAssertionType  = "http://oauth.net/grant_type/jwt/1.0/bearer"

	// GoogleTokenAudience is the aud a JWT-bearer assertion must carry,
	// whatever URL it is posted to.
	GoogleTokenAudience = "https://oauth2.googleapis.com/token"

	// maxAssertionLife is Google's limit on exp - iat.
	maxAssertionLife = time.Hour
	// assertionSkew is how far in the future an iat may be.
	assertionSkew = 5 * time.Minute
	// maxSignJwtExp is how far in the future signJwt accepts an exp.
	maxSignJwtExp = 12 * time.Hour
)

// Google's error texts for the JWT-bearer grant.
const (
	msgUnauthorizedClient = "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."
	msgUnknownUser        = "Invalid email or User ID"
	msgBadSignature       = "Invalid JWT Signature."
	msgAccountNotFound    = "Invalid grant: account not found"
	msgShortLived         = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
	msgAudience           = "Invalid JWT: Failed audience check. The right audience is " + GoogleTokenAudience
)

// googleTokenAudiences are the aud values Google's token endpoint accepts.
var googleTokenAudiences = []string{GoogleTokenAudience, "https://accounts.google.com/o/oauth2/token", "https://www.googleapis.com/oauth2/v4/token"}

// ServiceAccount is a Google Cloud service account.
type ServiceAccount struct {
	// Email is the account's address, such as
	// chatauth@project.iam.gserviceaccount.com; the iss of its assertions.
	Email string
	// UniqueID is the account's 21-digit numeric id, which is also its
	// OAuth 2 client id: the one a Workspace administrator enters for
	// domain-wide delegation. Derived from Email when empty.
	UniqueID string
}

// serviceAccount is a ServiceAccount and its keys.
type serviceAccount struct {
	ServiceAccount
	managed    *rsa.PrivateKey // Google-managed key that signJwt uses
	managedKid string
	keys       map[string]*rsa.PublicKey // user-managed keys, by private_key_id
	denySign   bool
}

// dwdState is the Server's service accounts and delegation grants,
// guarded by Server.mu.
type dwdState struct {
	accounts map[string]*serviceAccount // by lowercase email
	// grants maps a Workspace domain to the client ids its administrator
	// authorized, each with its scopes.
	grants map[string]map[string][]string

	signJwtCalls   int
	delegatedCalls map[string]int // JWT-bearer grants by lowercase subject, failed ones too
}

func newDWDState() dwdState {
	return dwdState{
		accounts:       map[string]*serviceAccount{},
		grants:         map[string]map[string][]string{},
		delegatedCalls: map[string]int{},
	}
}

// AddServiceAccount creates a service account, or returns the existing one
// with the same email. Its Google-managed signing key is made here.
func (s *Server) AddServiceAccount(sa ServiceAccount) (ServiceAccount, error) {
	sa.Email = strings.ToLower(sa.Email)
	if sa.Email == "" {
		return ServiceAccount{}, errors.New("fakegoogle: a service account needs an email")
	}
	if sa.UniqueID == "" {
		sa.UniqueID = subFor("service-account:" + sa.Email)
	}
	key, err := newRSAKey()
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("fakegoogle: service account key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.accounts[sa.Email]; cur != nil {
		releaseRSAKeys([]*rsa.PrivateKey{key})
		return cur.ServiceAccount, nil
	}
	s.accounts[sa.Email] = &serviceAccount{ServiceAccount: sa, managed: key, managedKid: keyID(&key.PublicKey), keys: map[string]*rsa.PublicKey{}}
	return sa, nil
}

// keyID is a 40-hex-digit key id derived from the public key, the shape of
// Google's.
func keyID(pub *rsa.PublicKey) string {
	sum := sha256.Sum256(pub.N.Bytes())
	return hex.EncodeToString(sum[:20])
}

// CreateServiceAccountKey makes a new key for the account, as "Keys → Add
// key → Create new key → JSON" in the Cloud console does, and returns the
// key file, its token_uri pointing at the fake. The fake keeps only the
// public half.
func (s *Server) CreateServiceAccountKey(email string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("fakegoogle: service account key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("fakegoogle: service account key: %w", err)
	}
	kid := keyID(&key.PublicKey)
	s.mu.Lock()
	sa := s.accounts[strings.ToLower(email)]
	if sa != nil {
		sa.keys[kid] = &key.PublicKey
	}
	s.mu.Unlock()
	if sa == nil {
		return nil, fmt.Errorf("fakegoogle: no service account %s", email)
	}
	return json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  "fake-project",
		"private_key_id":              kid,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                sa.Email,
		"client_id":                   sa.UniqueID,
		"auth_uri":                    s.baseURL + "/o/oauth2/auth",
		"token_uri":                   s.TokenURL(),
		"auth_provider_x509_cert_url": s.baseURL + "/oauth2/v1/certs",
		"client_x509_cert_url":        s.baseURL + "/robot/v1/metadata/x509/" + url.PathEscape(sa.Email),
		"universe_domain":             "googleapis.com",
	}, "", "  ")
}

// DeleteServiceAccountKey deletes a user-managed key; assertions it signed
// are refused from then on, as at Google.
func (s *Server) DeleteServiceAccountKey(email, keyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sa := s.accounts[strings.ToLower(email)]; sa != nil {
		delete(sa.keys, keyID)
	}
}

// GrantDomainWideDelegation records what a super administrator of domain
// enters under Security → Access and data control → API controls → Manage
// Domain Wide Delegation: a client id and the scopes it may be granted for
// the domain's users. A second grant for the same client replaces the
// first; no scopes removes it.
func (s *Server) GrantDomainWideDelegation(domain, clientID string, scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	domain = strings.ToLower(domain)
	if len(scopes) == 0 {
		delete(s.grants[domain], clientID)
		return
	}
	if s.grants[domain] == nil {
		s.grants[domain] = map[string][]string{}
	}
	s.grants[domain][clientID] = slices.Clone(scopes)
}

// DenySignJwt makes signJwt and generateIdToken for the account answer
// 403, as when the caller lacks roles/iam.serviceAccountTokenCreator on
// it; false allows them again.
func (s *Server) DenySignJwt(email string, deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sa := s.accounts[strings.ToLower(email)]; sa != nil {
		sa.denySign = deny
	}
}

// SignJwtCalls counts signJwt requests, failed ones too.
func (s *Server) SignJwtCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.signJwtCalls
}

// DelegatedTokenCalls counts JWT-bearer grants whose assertion names
// subject (case-insensitive), failed ones too.
func (s *Server) DelegatedTokenCalls(subject string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delegatedCalls[strings.ToLower(subject)]
}

// TotalDelegatedTokenCalls counts every JWT-bearer grant.
func (s *Server) TotalDelegatedTokenCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.delegatedCalls {
		n += c
	}
	return n
}

// isJWTBearer reports whether a token request is a JWT-bearer grant in
// either of the forms Google accepts.
func isJWTBearer(form url.Values) bool {
	gt := form.Get("grant_type")
	return gt == GrantTypeJWTBearer || (gt == legacyGrantAssertion && form.Get("assertion_type") == legacyAssertionType)
}

// assertionClaims are the claims of a JWT-bearer assertion.
type assertionClaims struct {
	Iss   string          `json:"iss"`
	Sub   string          `json:"sub"`
	Scope string          `json:"scope"`
	Aud   json.RawMessage `json:"aud"`
	Iat   int64           `json:"iat"`
	Exp   int64           `json:"exp"`
}

// jwtBearerGrant serves the JWT-bearer grant. No client authentication:
// the assertion's signature is the credential.
func (s *Server) jwtBearerGrant(w http.ResponseWriter, form url.Values) {
	res, err := s.checkAssertion(form.Get("assertion"))
	if err != nil {
		err.write(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": res.access,
		"expires_in":   int64(res.ttl / time.Second),
		"token_type":   "Bearer",
	})
}

// checkAssertion checks an assertion and mints the access token it asks
// for, in the order Google checks: form, issuer, signature, audience,
// times, scope, subject, delegation.
func (s *Server) checkAssertion(assertion string) (*tokenResult, *oauthError) {
	if assertion == "" {
		return nil, &oauthError{http.StatusBadRequest, "invalid_request", "Missing required parameter: assertion"}
	}
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return nil, &oauthError{http.StatusBadRequest, "invalid_grant", "Invalid JWT: not a compact JWS"}
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var c assertionClaims
	if decodeJWTSegment(parts[0], &hdr) != nil || decodeJWTSegment(parts[1], &c) != nil {
		return nil, &oauthError{http.StatusBadRequest, "invalid_grant", "Invalid JWT: malformed header or claims"}
	}
	sig, serr := base64.RawURLEncoding.DecodeString(parts[2])

	s.mu.Lock()
	defer s.mu.Unlock()
	subject := strings.ToLower(c.Sub)
	s.delegatedCalls[subject]++
	sa := s.accounts[strings.ToLower(c.Iss)]
	if sa == nil {
		return nil, invalidGrant(msgAccountNotFound)
	}
	if hdr.Alg != "RS256" || serr != nil || !sa.verify(hdr.Kid, parts[0]+"."+parts[1], sig) {
		return nil, invalidGrant(msgBadSignature)
	}
	var aud string
	if json.Unmarshal(c.Aud, &aud) != nil || !slices.Contains(googleTokenAudiences, aud) {
		return nil, invalidGrant(msgAudience)
	}
	now := s.now()
	iat, exp := time.Unix(c.Iat, 0), time.Unix(c.Exp, 0)
	if c.Iat == 0 || c.Exp == 0 || !exp.After(iat) || exp.Sub(iat) > maxAssertionLife || iat.After(now.Add(assertionSkew)) || !now.Before(exp) {
		return nil, invalidGrant(msgShortLived)
	}
	scopes := strings.Fields(c.Scope)
	if len(scopes) == 0 {
		return nil, &oauthError{http.StatusBadRequest, "invalid_scope", "Empty or missing scope not allowed."}
	}
	for _, sc := range scopes {
		if !knownScope(sc) {
			return nil, &oauthError{http.StatusBadRequest, "invalid_scope", "Invalid OAuth scope or ID token audience provided."}
		}
	}
	scopes = canonicalScopes(scopes)

	if subject == "" {
		// The account's own token (two-legged OAuth), no delegation.
		res := s.mintLocked(sa.UniqueID, sa.UniqueID, scopes, false, "")
		return &res.tokenResult, nil
	}
	var user *User
	for i := range s.users {
		if strings.EqualFold(s.users[i].Email, subject) || s.users[i].Sub == subject {
			user = &s.users[i]
			break
		}
	}
	if user == nil {
		return nil, invalidGrant(msgUnknownUser)
	}
	_, domain, _ := strings.Cut(strings.ToLower(user.Email), "@")
	granted := s.grants[domain][sa.UniqueID]
	for _, sc := range scopes {
		if !slices.Contains(granted, sc) {
			return nil, &oauthError{http.StatusUnauthorized, "unauthorized_client", msgUnauthorizedClient}
		}
	}
	res := s.mintLocked(user.Sub, sa.UniqueID, scopes, false, "")
	return &res.tokenResult, nil
}

// verify checks an RS256 signature against the account's key kid: the
// Google-managed key or a live user-managed one. Without a kid every live
// key is tried.
func (sa *serviceAccount) verify(kid, input string, sig []byte) bool {
	keys := map[string]*rsa.PublicKey{sa.managedKid: &sa.managed.PublicKey}
	maps.Copy(keys, sa.keys)
	digest := sha256.Sum256([]byte(input))
	for id, k := range keys {
		if (kid == "" || kid == id) && rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil {
			return true
		}
	}
	return false
}

func decodeJWTSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// handleIAMCredentials serves the IAM Service Account Credentials API's
// POST /v1/projects/-/serviceAccounts/{email}:signJwt and
// :generateIdToken.
func (s *Server) handleIAMCredentials(w http.ResponseWriter, r *http.Request) {
	account, method, ok := strings.Cut(r.PathValue("account"), ":")
	if !ok || (method != "signJwt" && method != "generateIdToken") {
		(&apiError{code: http.StatusNotFound, message: "Method not found."}).write(w)
		return
	}
	if r.PathValue("project") != "-" {
		invalidArgument("The project in the resource name must be the - wildcard: projects/-/serviceAccounts/%s.", account).write(w)
		return
	}
	var in struct {
		Payload      *string  `json:"payload"`
		Audience     string   `json:"audience"`
		IncludeEmail bool     `json:"includeEmail"`
		Delegates    []string `json:"delegates"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxFormBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		invalidArgument("Invalid JSON payload received. %v", err).write(w)
		return
	}

	s.mu.Lock()
	if method == "signJwt" {
		s.signJwtCalls++
	}
	sa := s.accounts[strings.ToLower(account)]
	var denied bool
	var acct serviceAccount
	if sa != nil {
		denied, acct = sa.denySign, *sa
	}
	s.mu.Unlock()
	if sa == nil || denied {
		// With the - wildcard Google answers 403, not 404, for an account
		// that does not exist.
		(&apiError{code: http.StatusForbidden, message: fmt.Sprintf("Permission 'iam.serviceAccounts.%s' denied on resource (or it may not exist).", strings.Replace(method, "generateIdToken", "getOpenIdToken", 1))}).write(w)
		return
	}
	if len(in.Delegates) > 0 {
		invalidArgument("Delegation chains are not supported by this fake.").write(w)
		return
	}
	if method == "generateIdToken" {
		s.generateIDToken(w, &acct, in.Audience, in.IncludeEmail)
		return
	}
	if in.Payload == nil || *in.Payload == "" {
		invalidArgument("payload is required.").write(w)
		return
	}
	s.signJwt(w, &acct, *in.Payload)
}

// signJwt signs payload with the account's Google-managed key. Like
// Google it requires a JSON object, refuses an exp in the past or more
// than 12 hours ahead, and adds an exp an hour ahead when there is none.
func (s *Server) signJwt(w http.ResponseWriter, sa *serviceAccount, payload string) {
	var claims map[string]any
	dec := json.NewDecoder(strings.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil || claims == nil {
		invalidArgument("Invalid JWT payload: not a JSON object.").write(w)
		return
	}
	now := s.now()
	body := []byte(payload)
	if raw, ok := claims["exp"]; ok {
		n, ok := raw.(json.Number)
		exp, err := n.Int64()
		if !ok || err != nil {
			invalidArgument("Invalid JWT payload: exp must be an integer timestamp.").write(w)
			return
		}
		if t := time.Unix(exp, 0); t.Before(now) || t.After(now.Add(maxSignJwtExp)) {
			invalidArgument("Invalid JWT payload: exp must not be in the past or more than 12 hours in the future.").write(w)
			return
		}
	} else {
		claims["exp"] = now.Add(time.Hour).Unix()
		var err error
		if body, err = json.Marshal(claims); err != nil {
			(&apiError{code: http.StatusInternalServerError}).write(w)
			return
		}
	}
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": sa.managedKid, "typ": "JWT"})
	input := b64(header) + "." + b64(bytes.TrimSpace(body))
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, sa.managed, crypto.SHA256, digest[:])
	if err != nil {
		(&apiError{code: http.StatusInternalServerError}).write(w)
		return
	}
	signed := input + "." + b64(sig)
	s.mu.Lock()
	// A signed assertion is a credential for an hour: leak checks look
	// for it like for tokens.
	s.issued = append(s.issued, signed)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"keyId": sa.managedKid, "signedJwt": signed})
}

// generateIDToken issues a Google-signed ID token for the account; its sub
// and azp are the account's unique id.
func (s *Server) generateIDToken(w http.ResponseWriter, sa *serviceAccount, audience string, includeEmail bool) {
	if audience == "" {
		invalidArgument("audience is required.").write(w)
		return
	}
	now := s.now()
	claims := map[string]any{
		"iss": GoogleIssuer, "aud": audience, "azp": sa.UniqueID, "sub": sa.UniqueID,
		"iat": now.Unix(), "exp": now.Add(idTokenTTL).Unix(),
	}
	if includeEmail {
		claims["email"], claims["email_verified"] = sa.Email, true
	}
	tok, err := s.sign(claims)
	if err != nil {
		(&apiError{code: http.StatusInternalServerError}).write(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}
