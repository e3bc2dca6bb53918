package chatauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// ciphertextPrefix marks a stored token field as a Tink AEAD ciphertext
// (base64url, unpadded, after the prefix). Values without it are legacy
// plaintext written before encryption was turned on. The "1" versions the
// format, including the associated data, so a later scheme can be told
// apart from this one.
const ciphertextPrefix = "tink1:"

// Token fields that are encrypted; the names are the data layout's field
// names and enter the associated data.
const (
	fieldRefreshToken = "refreshToken"
	fieldAccessToken  = "accessToken"
)

// tokenCipher encrypts token fields with a Tink AEAD keyset. It is built
// once per instance, so the keyset is parsed once, and is safe for
// concurrent use.
//
// Every ciphertext is bound to its record and field through the associated
// data (see tokenAAD): a ciphertext copied into another user's record, or
// from one field into another, does not decrypt.
//
// Rotation: encryption always uses the keyset's primary key, and Tink
// finds the decryption key by the key id in the ciphertext's prefix. To
// rotate, add a new key, make it primary and keep the old key enabled; old
// records still load and are re-encrypted under the new primary on their
// next write (an updateToken whose fn returns cur unchanged forces that).
// Only when no record uses the old key may it be disabled and removed.
type tokenCipher struct {
	aead tink.AEAD
}

// newTokenCipher parses a cleartext JSON keyset (the format of
// `tinkey create-keyset --key-template AES256_GCM --out-format json` and of
// generateKeyset) and builds the AEAD primitive. Its errors describe what
// is wrong with the keyset and never quote it.
func newTokenCipher(keysetJSON []byte) (*tokenCipher, error) {
	keysetJSON = bytes.TrimSpace(keysetJSON)
	if len(keysetJSON) == 0 {
		return nil, errors.New("crypto: token keyset is empty")
	}
	// Tink's own error for unparsable input says only "invalid keyset";
	// these two checks give the operator the likely cause instead, without
	// echoing any of the input.
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(keysetJSON, &probe); err != nil {
		return nil, errors.New("crypto: token keyset is not a JSON object; want a cleartext Tink keyset in JSON format")
	}
	if _, ok := probe["encryptedKeyset"]; ok {
		return nil, errors.New("crypto: token keyset is an encrypted (KMS-wrapped) keyset; want a cleartext Tink keyset in JSON format, kept in Secret Manager")
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(keysetJSON)))
	if err != nil {
		// Tink's keyset errors name key ids and structural faults (no
		// primary key, duplicate ids, a disabled primary), never key
		// material.
		return nil, fmt.Errorf("crypto: read token keyset: %w", err)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("crypto: token keyset is not an AEAD keyset: %w", err)
	}
	return &tokenCipher{aead: a}, nil
}

// generateKeyset makes a new keyset with one AES256-GCM key (Tink output
// prefix, so later keys can be added for rotation) and returns it as
// cleartext JSON. The result is a secret: keep it like one.
func generateKeyset() ([]byte, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("crypto: generate token keyset: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("crypto: write token keyset: %w", err)
	}
	return buf.Bytes(), nil
}

// tokenAAD is the associated data of one token field: the record's
// document path and the field name, "chatauth_tokens/<sub>#<field>". The
// field is one of a fixed set none of which contains '#', so the text after
// the last '#' is always the field and the encoding is unambiguous.
func tokenAAD(sub, field string) []byte {
	return []byte(tokensCollection + "/" + sub + "#" + field)
}

// encrypt returns the stored form of one token field of the record sub.
// An empty value stays empty: there is nothing to hide, and "no token" must
// stay recognisable to the code that never overwrites a good token with an
// empty one.
func (c *tokenCipher) encrypt(sub, field, plaintext string) (string, error) {
	if plaintext == "" {
		return "", nil
	}
	ct, err := c.aead.Encrypt([]byte(plaintext), tokenAAD(sub, field))
	if err != nil {
		return "", fmt.Errorf("store: encrypt %s for %s: %w", field, sub, err)
	}
	return ciphertextPrefix + base64.RawURLEncoding.EncodeToString(ct), nil
}

// decrypt returns the plaintext of one stored token field of the record
// sub. A value without the ciphertext prefix is legacy plaintext and is
// returned as it is. A ciphertext that does not open is a
// *tokenDecryptError, which never includes the value.
func (c *tokenCipher) decrypt(sub, field, stored string) (string, error) {
	enc, ok := strings.CutPrefix(stored, ciphertextPrefix)
	if !ok {
		return stored, nil
	}
	ct, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		// base64's error gives an offset, not the data.
		return "", &tokenDecryptError{Sub: sub, Field: field, Err: fmt.Errorf("malformed ciphertext: %w", err)}
	}
	pt, err := c.aead.Decrypt(ct, tokenAAD(sub, field))
	if err != nil {
		return "", &tokenDecryptError{Sub: sub, Field: field, Err: err}
	}
	return string(pt), nil
}

// tokenDecryptError reports a stored token that the keyset cannot open:
// the ciphertext belongs to another record or field, was altered, or was
// made with a key that is no longer in the keyset. The record is unusable
// until it is replaced; deleteToken removes it without decrypting.
type tokenDecryptError struct {
	Sub   string // the record's sub
	Field string // refreshToken or accessToken
	Err   error  // Tink's (or base64's) error; it never holds the value
}

func (e *tokenDecryptError) Error() string {
	return fmt.Sprintf("store: token for %s cannot be decrypted: %s (from another record, altered, or made with a key not in the keyset): %v", e.Sub, e.Field, e.Err)
}

func (e *tokenDecryptError) Unwrap() error { return e.Err }

// encryptRecord returns a copy of rec, stored as record sub, with its
// tokens encrypted. rec itself is not changed: the caller may keep using it.
func (c *tokenCipher) encryptRecord(sub string, rec *tokenRecord) (*tokenRecord, error) {
	out := *rec
	var err error
	if out.RefreshToken, err = c.encrypt(sub, fieldRefreshToken, rec.RefreshToken); err != nil {
		return nil, err
	}
	if out.AccessToken, err = c.encrypt(sub, fieldAccessToken, rec.AccessToken); err != nil {
		return nil, err
	}
	return &out, nil
}

// decryptRecord returns a copy of rec, read from record sub, with its
// tokens in plaintext.
func (c *tokenCipher) decryptRecord(sub string, rec *tokenRecord) (*tokenRecord, error) {
	out := *rec
	var err error
	if out.RefreshToken, err = c.decrypt(sub, fieldRefreshToken, rec.RefreshToken); err != nil {
		return nil, err
	}
	if out.AccessToken, err = c.decrypt(sub, fieldAccessToken, rec.AccessToken); err != nil {
		return nil, err
	}
	return &out, nil
}

// encryptedStore wraps a tokenStore so that the refresh and access tokens
// are encrypted at rest: every write encrypts them (under the keyset's
// primary key) and every read decrypts them. The rest of the record, and
// used-state markers, pass through unchanged. A record whose tokens cannot be
// decrypted is an error for every read, updateToken included (fn is not
// called); deleteToken still removes it.
//
// Every tokenStore method is written out here, so a method added to the
// interface does not compile until it is decided what it does with tokens.
type encryptedStore struct {
	inner tokenStore
	c     *tokenCipher
}

var _ tokenStore = (*encryptedStore)(nil)

func newEncryptedStore(inner tokenStore, c *tokenCipher) *encryptedStore {
	return &encryptedStore{inner: inner, c: c}
}

// unwrap is the store encryptedStore wraps.
func (s *encryptedStore) unwrap() tokenStore { return s.inner }

// markStateUsed carries no token.
func (s *encryptedStore) markStateUsed(ctx context.Context, key string, expireAt time.Time) error {
	return s.inner.markStateUsed(ctx, key, expireAt)
}

func (s *encryptedStore) getToken(ctx context.Context, sub string) (*tokenRecord, error) {
	rec, err := s.inner.getToken(ctx, sub)
	if err != nil {
		return nil, err
	}
	// The key, not rec.Sub, names the record the ciphertext must belong to.
	return s.c.decryptRecord(sub, rec)
}

func (s *encryptedStore) tokenByEmail(ctx context.Context, email string) (*tokenRecord, error) {
	rec, err := s.inner.tokenByEmail(ctx, email)
	if err != nil {
		return nil, err
	}
	return s.c.decryptRecord(rec.Sub, rec)
}

// updateToken hands fn the decrypted record and encrypts what fn returns
// before the inner store writes it, inside the inner store's transaction.
// Encryption is local (no call out of the process), so fn's rules hold.
func (s *encryptedStore) updateToken(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	return s.inner.updateToken(ctx, sub, s.sealing(sub, fn))
}

// putConsent is updateToken for a consent.
func (s *encryptedStore) putConsent(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	return s.inner.putConsent(ctx, sub, s.sealing(sub, fn))
}

// deleteToken needs no decryption: check sees the record without its
// tokens, in every store.
func (s *encryptedStore) deleteToken(ctx context.Context, sub string, check func(cur *tokenRecord) error) error {
	return s.inner.deleteToken(ctx, sub, check)
}

func (s *encryptedStore) close() error { return s.inner.close() }

// listTokens passes the listing through: the stores list records without
// their tokens, so there is nothing to decrypt; any token a store still
// handed out is dropped here rather than passed on sealed.
func (s *encryptedStore) listTokens(ctx context.Context, q tokenQuery) ([]*tokenRecord, error) {
	recs, err := s.inner.listTokens(ctx, q)
	for i, rec := range recs {
		recs[i] = withoutTokens(rec)
	}
	return recs, err
}

// sealing wraps fn to see the decrypted record and return an encrypted one.
func (s *encryptedStore) sealing(sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) func(*tokenRecord) (*tokenRecord, error) {
	return func(stored *tokenRecord) (*tokenRecord, error) {
		var cur *tokenRecord
		if stored != nil {
			var err error
			if cur, err = s.c.decryptRecord(sub, stored); err != nil {
				return nil, err
			}
		}
		next, err := fn(cur)
		if err != nil || next == nil {
			return nil, err
		}
		return s.c.encryptRecord(sub, next)
	}
}

// GenerateKeyset returns a new cleartext Tink keyset (JSON) for
// TOKEN_KEYSET. cmd/local uses it to create its keyset once.
func GenerateKeyset() ([]byte, error) { return generateKeyset() }
