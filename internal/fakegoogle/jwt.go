package fakegoogle

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"sync"
	"time"
)

// keyPool keeps the RSA keys of closed Servers for new ones. Making a
// 2048-bit key costs more CPU than anything else the fake does, and a test
// binary makes hundreds of Servers. A key goes back to the pool only when
// the Server that held it closes, so no two open Servers share one.
var keyPool struct {
	mu   sync.Mutex
	free []*rsa.PrivateKey
}

// newRSAKey returns a key no open Server holds: a closed Server's, or a
// new one.
func newRSAKey() (*rsa.PrivateKey, error) {
	keyPool.mu.Lock()
	if n := len(keyPool.free); n > 0 {
		key := keyPool.free[n-1]
		keyPool.free = keyPool.free[:n-1]
		keyPool.mu.Unlock()
		return key, nil
	}
	keyPool.mu.Unlock()
	return rsa.GenerateKey(rand.Reader, 2048)
}

// releaseRSAKeys gives a closed Server's keys back to the pool.
func releaseRSAKeys(keys []*rsa.PrivateKey) {
	keyPool.mu.Lock()
	defer keyPool.mu.Unlock()
	keyPool.free = append(keyPool.free, keys...)
}

// newSigningKey makes the RSA key that signs every id_token of one Server,
// its key id, and a self-signed certificate for Google's legacy PEM format.
// Each open Server has its own key so a token from one fake never
// verifies against another.
func newSigningKey(now time.Time) (key *rsa.PrivateKey, kid, certPEM string, err error) {
	key, err = newRSAKey()
	if err != nil {
		return nil, "", "", err
	}
	// Google's key ids are 40 hex digits; a digest of the modulus gives the
	// same shape and stays stable for the key's lifetime.
	sum := sha256.Sum256(key.N.Bytes())
	kid = hex.EncodeToString(sum[:20])

	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "fakegoogle"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", "", err
	}
	certPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return key, kid, certPEM, nil
}

// PublicKey returns the key that verifies the fake's id_tokens.
func (s *Server) PublicKey() *rsa.PublicKey { return &s.key.PublicKey }

// KeyID returns the kid the fake puts in id_token headers and its JWKS.
func (s *Server) KeyID() string { return s.kid }

// MintIDToken signs claims exactly as given (RS256, the fake's kid) and
// returns the compact JWT. The caller chooses iss, aud, email,
// email_verified, iat, exp and so on, which is how tests impersonate Apps
// Script, service accounts or Cloud Scheduler calling a webhook with a Google
// ID token. It returns "" only if claims cannot be encoded as JSON.
func (s *Server) MintIDToken(claims map[string]any) string {
	tok, err := s.sign(claims)
	if err != nil {
		return ""
	}
	return tok
}

// sign builds a compact RS256 JWS over claims.
func (s *Server) sign(claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "RS256", "kid": s.kid, "typ": "JWT"})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", err
	}
	return input + "." + b64(sig), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// atHash computes the OpenID at_hash of an access token: the left half of
// its SHA-256, base64url encoded.
func atHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return b64(sum[:len(sum)/2])
}

// JWKS returns the JSON Web Key Set served at /oauth2/v3/certs.
func (s *Server) JWKS() []byte {
	e := big.NewInt(int64(s.key.PublicKey.E)).Bytes()
	b, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA",
		"alg": "RS256",
		"use": "sig",
		"kid": s.kid,
		"n":   b64(s.key.PublicKey.N.Bytes()),
		"e":   b64(e),
	}}})
	if err != nil {
		return nil
	}
	return b
}

// certCacheControl is short, unlike Google's hours, so that clients caching
// the keys (idtoken honours max-age) notice a restarted fake with a new key
// within a minute.
const certCacheControl = "public, max-age=60, must-revalidate, no-transform"

// handleJWKS serves GET /oauth2/v3/certs in Google's JWK Set format.
func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", certCacheControl)
	_, _ = w.Write(s.JWKS())
}

// handlePEMCerts serves GET /oauth2/v1/certs, Google's legacy format: a JSON
// object mapping each kid to a PEM certificate.
func (s *Server) handlePEMCerts(w http.ResponseWriter, r *http.Request) {
	b, err := json.Marshal(map[string]string{s.kid: s.certPEM})
	if err != nil {
		http.Error(w, "fakegoogle: cannot encode certificates", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", certCacheControl)
	_, _ = w.Write(b)
}
