package chatauth

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/mac"
	bolt "go.etcd.io/bbolt"
)

// newTestCipher builds a cipher on a fresh keyset.
func newTestCipher(t testing.TB) *tokenCipher {
	t.Helper()
	ks, err := generateKeyset()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newTokenCipher(ks)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handleOf parses a cleartext JSON keyset.
func handleOf(t *testing.T, ks []byte) *keyset.Handle {
	t.Helper()
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(ks)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// keysetJSON writes h as a cleartext JSON keyset.
func keysetJSON(t *testing.T, h *keyset.Handle) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustCipher(t *testing.T, ks []byte) *tokenCipher {
	t.Helper()
	c, err := newTokenCipher(ks)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// keyIDOf returns the id of the key that made a stored ciphertext, from
// the Tink output prefix (0x01, then the key id, big-endian).
func keyIDOf(t *testing.T, stored string) uint32 {
	t.Helper()
	enc, ok := strings.CutPrefix(stored, ciphertextPrefix)
	if !ok {
		t.Fatalf("stored value is not a ciphertext (no %q prefix)", ciphertextPrefix)
	}
	ct, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) < 5 || ct[0] != 0x01 {
		t.Fatalf("ciphertext has no Tink output prefix")
	}
	return binary.BigEndian.Uint32(ct[1:5])
}

// checkNoLeak fails if text contains any of the secrets.
func checkNoLeak(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains the secret %q:\n%s", what, s, text)
		}
	}
}

func TestTokenCipher(t *testing.T) {
	t.Parallel()
	c := newTestCipher(t)
	const token = "1//0gLongRefreshTokenValue-abc_DEF"

	t.Run("round trip", func(t *testing.T) {
		stored, err := c.encrypt("111", fieldRefreshToken, token)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(stored, ciphertextPrefix) {
			t.Errorf("encrypt: got %q, want the %q prefix", stored, ciphertextPrefix)
		}
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(stored, ciphertextPrefix)); err != nil {
			t.Errorf("encrypt: the ciphertext is not unpadded base64url: %v", err)
		}
		checkNoLeak(t, "stored value", stored, token)
		got, err := c.decrypt("111", fieldRefreshToken, stored)
		if err != nil || got != token {
			t.Errorf("decrypt: got %q, %v; want the token", got, err)
		}
		again, _ := c.encrypt("111", fieldRefreshToken, token)
		if again == stored {
			t.Error("two encryptions of one token are equal; want a fresh nonce each time")
		}
	})

	t.Run("empty stays empty", func(t *testing.T) {
		if got, err := c.encrypt("111", fieldAccessToken, ""); got != "" || err != nil {
			t.Errorf(`encrypt(""): got %q, %v; want "", nil`, got, err)
		}
		if got, err := c.decrypt("111", fieldAccessToken, ""); got != "" || err != nil {
			t.Errorf(`decrypt(""): got %q, %v; want "", nil`, got, err)
		}
	})

	t.Run("legacy plaintext passes", func(t *testing.T) {
		for _, v := range []string{token, "ya29.a0AfB_legacy", "tink1", "TINK1:x"} {
			if got, err := c.decrypt("111", fieldRefreshToken, v); got != v || err != nil {
				t.Errorf("decrypt(%q): got %q, %v; want it back unchanged", v, got, err)
			}
		}
	})

	stored, err := c.encrypt("111", fieldRefreshToken, token)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(stored, ciphertextPrefix))
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-1] ^= 1
	tampered := ciphertextPrefix + base64.RawURLEncoding.EncodeToString(flipped)
	otherKey, _ := newTestCipher(t).encrypt("111", fieldRefreshToken, token)

	for _, tc := range []struct {
		name, sub, field, stored string
	}{
		{"another record", "222", fieldRefreshToken, stored},
		{"another field", "111", fieldAccessToken, stored},
		{"a sub that shares a prefix", "1111", fieldRefreshToken, stored},
		{"tampered", "111", fieldRefreshToken, tampered},
		{"truncated", "111", fieldRefreshToken, stored[:len(stored)-4]},
		{"not base64", "111", fieldRefreshToken, ciphertextPrefix + "%%%not base64%%%"},
		{"empty ciphertext", "111", fieldRefreshToken, ciphertextPrefix},
		{"unknown key", "111", fieldRefreshToken, otherKey},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			got, err := c.decrypt(tc.sub, tc.field, tc.stored)
			if err == nil {
				t.Fatalf("decrypt: got %q, nil; want an error", got)
			}
			if got != "" {
				t.Errorf("decrypt returned %q with its error, want \"\"", got)
			}
			var de *tokenDecryptError
			if !errors.As(err, &de) || de.Sub != tc.sub || de.Field != tc.field {
				t.Errorf("decrypt: got %#v, want a *tokenDecryptError for %s %s", err, tc.sub, tc.field)
			}
			want := "store: token for " + tc.sub + " cannot be decrypted: "
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			checkNoLeak(t, "error", err.Error(), token, strings.TrimPrefix(tc.stored, ciphertextPrefix), strings.TrimPrefix(stored, ciphertextPrefix))
		})
	}
}

func TestGenerateKeyset(t *testing.T) {
	t.Parallel()
	k1, err := generateKeyset()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := generateKeyset()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(k1, k2) {
		t.Fatal("two generated keysets are equal")
	}
	info := handleOf(t, k1).KeysetInfo()
	if n := len(info.GetKeyInfo()); n != 1 {
		t.Fatalf("generated keyset has %d keys, want 1", n)
	}
	if got, want := info.GetKeyInfo()[0].GetTypeUrl(), "type.googleapis.com/google.crypto.tink.AesGcmKey"; got != want {
		t.Errorf("generated key type: got %s, want %s", got, want)
	}
	// A cipher on one keyset cannot read the other's ciphertexts.
	stored, _ := mustCipher(t, k1).encrypt("111", fieldRefreshToken, "secret")
	if _, err := mustCipher(t, k2).decrypt("111", fieldRefreshToken, stored); err == nil {
		t.Error("a cipher on another keyset decrypted the token")
	}
}

func TestNewTokenCipherBadKeyset(t *testing.T) {
	t.Parallel()
	good, err := generateKeyset()
	if err != nil {
		t.Fatal(err)
	}
	// The key material of good, which no error may quote.
	var parsed struct {
		PrimaryKeyID uint32 `json:"primaryKeyId"`
		Key          []struct {
			KeyData struct {
				Value string `json:"value"`
			} `json:"keyData"`
		} `json:"key"`
	}
	if err := json.Unmarshal(good, &parsed); err != nil || len(parsed.Key) != 1 || parsed.Key[0].KeyData.Value == "" {
		t.Fatalf("generated keyset is not the expected JSON (%v): %d keys", err, len(parsed.Key))
	}
	material := parsed.Key[0].KeyData.Value

	macHandle, err := keyset.NewHandle(mac.HMACSHA256Tag256KeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	// edit returns good changed by fn, as JSON (protojson's spacing varies
	// from run to run, so the text is not edited directly).
	edit := func(fn func(ks map[string]any)) []byte {
		var ks map[string]any
		if err := json.Unmarshal(good, &ks); err != nil {
			t.Fatal(err)
		}
		fn(ks)
		b, err := json.Marshal(ks)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	firstKey := func(ks map[string]any) map[string]any { return ks["key"].([]any)[0].(map[string]any) }
	noPrimary := edit(func(ks map[string]any) { ks["primaryKeyId"] = parsed.PrimaryKeyID + 1 })
	disabled := edit(func(ks map[string]any) { firstKey(ks)["status"] = "DISABLED" })
	shortKey := edit(func(ks map[string]any) {
		firstKey(ks)["keyData"].(map[string]any)["value"] = base64.StdEncoding.EncodeToString([]byte("\x1a\x03abc"))
	})

	for _, tc := range []struct {
		name     string
		input    []byte
		wantText string
	}{
		{"empty", nil, "empty"},
		{"blank", []byte(" \n"), "empty"},
		{"garbage", []byte("hunter2-not-a-keyset-at-all"), "not a JSON object"},
		{"truncated", good[:len(good)/2], "not a JSON object"},
		{"JSON, not a keyset", []byte(`{"secretSauce":"s3cr3t-value-42"}`), "read token keyset"},
		{"no keys", []byte(`{"primaryKeyId":1,"key":[]}`), "read token keyset"},
		{"primary key missing", noPrimary, "read token keyset"},
		{"primary key disabled", disabled, "read token keyset"},
		{"key too short", shortKey, "read token keyset"},
		{"encrypted keyset", []byte(`{"encryptedKeyset":"c2VjcmV0LWNpcGhlcnRleHQ=","keysetInfo":{"primaryKeyId":1}}`), "encrypted (KMS-wrapped)"},
		{"MAC keyset", keysetJSON(t, macHandle), "not an AEAD keyset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newTokenCipher(tc.input)
			if err == nil {
				t.Fatalf("newTokenCipher: got %v, nil; want an error", c)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("newTokenCipher: got %q, want it to say %q", err, tc.wantText)
			}
			checkNoLeak(t, "error", err.Error(), material, "hunter2", "s3cr3t", "c2VjcmV0")
			if len(tc.input) > 8 {
				checkNoLeak(t, "error", err.Error(), string(tc.input))
			}
		})
	}
}

// TestEncryptedStore runs the shared store test through the encrypting
// decorator, and checks what reaches the inner store.
func TestEncryptedStore(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			wrap := func(t *testing.T) tokenStore {
				return newEncryptedStore(newTestStore(t, kind), newTestCipher(t))
			}
			t.Run("shared: token round trip", func(t *testing.T) { t.Parallel(); testTokenRoundTrip(t, wrap(t)) })
			t.Run("shared: update merges", func(t *testing.T) { t.Parallel(); testUpdateMerges(t, wrap(t)) })
			t.Run("shared: lookup by email", func(t *testing.T) { t.Parallel(); testLookupByEmail(t, wrap(t)) })
			t.Run("shared: state used once", func(t *testing.T) { t.Parallel(); testStateUsedOnce(t, wrap(t)) })
			t.Run("shared: records from before email records", func(t *testing.T) { t.Parallel(); testLegacyRecords(t, wrap(t)) })
			t.Run("shared: delete checked", func(t *testing.T) { t.Parallel(); testDeleteChecked(t, wrap(t)) })
			t.Run("shared: concurrent consents", func(t *testing.T) { t.Parallel(); testConcurrentConsents(t, wrap(t)) })
			t.Run("shared: concurrent updates", func(t *testing.T) { t.Parallel(); testConcurrentUpdates(t, wrap(t)) })
			t.Run("shared: list tokens", func(t *testing.T) { t.Parallel(); testListTokens(t, wrap(t)) })
			t.Run("at rest", func(t *testing.T) { testEncryptedAtRest(t, kind) })
			t.Run("copied ciphertext", func(t *testing.T) { testCopiedCiphertext(t, kind) })
		})
	}
}

// rawRecord is what the backing storage holds for sub, as text: the
// Firestore document's fields, or the bbolt value.
func rawRecord(t *testing.T, s tokenStore, sub string) string {
	t.Helper()
	switch s := s.(type) {
	case *firestoreStore:
		snap, err := s.client.Collection(tokensCollection).Doc(sub).Get(t.Context())
		if err != nil {
			t.Fatalf("read document %s: %v", sub, err)
		}
		return fmt.Sprintf("%v", snap.Data())
	case *localStore:
		var v []byte
		err := s.db.View(func(tx *bolt.Tx) error {
			v = bytes.Clone(tx.Bucket([]byte(tokensCollection)).Get([]byte(sub)))
			return nil
		})
		if err != nil || v == nil {
			t.Fatalf("read bbolt value %s: %v (found: %t)", sub, err, v != nil)
		}
		return string(v)
	}
	t.Fatalf("no raw reader for %T", s)
	return ""
}

func testEncryptedAtRest(t *testing.T, kind string) {
	ctx := t.Context()
	inner := newTestStore(t, kind)
	s := newEncryptedStore(inner, newTestCipher(t))
	want := sampleToken("111", "a@example.com")
	wantCopy := *want
	put(t, s, want)
	if diff := cmp.Diff(&wantCopy, want); diff != "" {
		t.Errorf("updateToken changed the record fn returned (-before +after):\n%s", diff)
	}

	got, err := s.getToken(ctx, "111")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, timeEqual); diff != "" {
		t.Errorf("getToken mismatch (-want +got):\n%s", diff)
	}
	got, err = s.tokenByEmail(ctx, "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, timeEqual); diff != "" {
		t.Errorf("tokenByEmail mismatch (-want +got):\n%s", diff)
	}
	var seen *tokenRecord
	err = s.updateToken(ctx, "111", func(cur *tokenRecord) (*tokenRecord, error) {
		seen = cur
		next := *cur
		next.AccessToken = "ya29.rotated-access"
		return &next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, seen, timeEqual); diff != "" {
		t.Errorf("updateToken's cur mismatch (-want +got):\n%s", diff)
	}
	if got, _ := s.getToken(ctx, "111"); got == nil || got.AccessToken != "ya29.rotated-access" || got.RefreshToken != want.RefreshToken {
		t.Errorf("after update: got %+v, want the new access token and the old refresh token", got)
	}

	// The inner store holds ciphertexts, and the rest of the record as it was.
	stored, err := inner.getToken(ctx, "111")
	if err != nil {
		t.Fatal(err)
	}
	for field, v := range map[string]string{fieldRefreshToken: stored.RefreshToken, fieldAccessToken: stored.AccessToken} {
		if !strings.HasPrefix(v, ciphertextPrefix) {
			t.Errorf("inner store's %s: got %q, want a %q ciphertext", field, v, ciphertextPrefix)
		}
	}
	if stored.Email != want.Email || stored.Status != want.Status || !cmp.Equal(stored.Scopes, want.Scopes) {
		t.Errorf("inner store's record: got %+v; want email, status and scopes in the clear", stored)
	}
	checkNoLeak(t, "inner store's record", fmt.Sprintf("%+v", stored), want.RefreshToken, "ya29.rotated-access", "refresh-111", "rotated-access")
	raw := rawRecord(t, inner, "111")
	t.Logf("raw %s record: %s", kind, raw)
	checkNoLeak(t, "raw "+kind+" record", raw, want.RefreshToken, "ya29.rotated-access", "refresh-111", "rotated-access")
	if !strings.Contains(raw, ciphertextPrefix) || !strings.Contains(raw, "a@example.com") {
		t.Errorf("raw %s record: want ciphertexts and the email in the clear, got %s", kind, raw)
	}
}

func testCopiedCiphertext(t *testing.T, kind string) {
	ctx := t.Context()
	inner := newTestStore(t, kind)
	s := newEncryptedStore(inner, newTestCipher(t))
	alice, bob := sampleToken("111", "a@example.com"), sampleToken("222", "b@example.com")
	put(t, s, alice)
	put(t, s, bob)

	// Someone with write access to the store pastes Alice's refresh token
	// into Bob's record, hoping Bob's requests will act as Alice.
	aliceStored, err := inner.getToken(ctx, "111")
	if err != nil {
		t.Fatal(err)
	}
	err = inner.updateToken(ctx, "222", func(cur *tokenRecord) (*tokenRecord, error) {
		next := *cur
		next.RefreshToken = aliceStored.RefreshToken
		return &next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{alice.RefreshToken, bob.RefreshToken, alice.AccessToken, bob.AccessToken,
		strings.TrimPrefix(aliceStored.RefreshToken, ciphertextPrefix), strings.TrimPrefix(aliceStored.AccessToken, ciphertextPrefix)}
	checkRefused := func(op string, err error) {
		t.Helper()
		var de *tokenDecryptError
		if !errors.As(err, &de) || de.Sub != "222" || de.Field != fieldRefreshToken {
			t.Errorf("%s: got %v, want a *tokenDecryptError for 222 refreshToken", op, err)
			return
		}
		if !strings.Contains(err.Error(), "store: token for 222 cannot be decrypted: ") {
			t.Errorf("%s: error %q does not say which record cannot be decrypted", op, err)
		}
		checkNoLeak(t, op+" error", err.Error(), secrets...)
	}
	got, err := s.getToken(ctx, "222")
	checkRefused("getToken", err)
	if got != nil {
		t.Errorf("getToken returned a record with its error: %+v", got)
	}
	_, err = s.tokenByEmail(ctx, "b@example.com")
	checkRefused("tokenByEmail", err)
	called := false
	err = s.updateToken(ctx, "222", func(cur *tokenRecord) (*tokenRecord, error) { called = true; return cur, nil })
	checkRefused("updateToken", err)
	if called {
		t.Error("updateToken called fn with a record that cannot be decrypted")
	}
	// Alice's record is untouched, and Bob's can still be deleted.
	if got, err := s.getToken(ctx, "111"); err != nil || got.RefreshToken != alice.RefreshToken {
		t.Errorf("getToken(111): got %v, %v; want Alice's token", got, err)
	}
	if err := s.deleteToken(ctx, "222", nil); err != nil {
		t.Errorf("deleteToken of an undecryptable record: %v", err)
	}

	// Within one record, the access token's ciphertext is no refresh token.
	err = inner.updateToken(ctx, "111", func(cur *tokenRecord) (*tokenRecord, error) {
		next := *cur
		next.RefreshToken = cur.AccessToken
		return &next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var de *tokenDecryptError
	if _, err := s.getToken(ctx, "111"); !errors.As(err, &de) || de.Field != fieldRefreshToken {
		t.Errorf("access token ciphertext as refresh token: got %v, want a *tokenDecryptError for refreshToken", err)
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			ctx := t.Context()
			inner := newTestStore(t, kind)

			// K1 alone writes the record.
			k1, err := generateKeyset()
			if err != nil {
				t.Fatal(err)
			}
			id1 := handleOf(t, k1).KeysetInfo().GetPrimaryKeyId()
			want := sampleToken("111", "a@example.com")
			put(t, newEncryptedStore(inner, mustCipher(t, k1)), want)

			// The operator adds K2 and makes it primary, keeping K1 enabled.
			m := keyset.NewManagerFromHandle(handleOf(t, k1))
			id2, err := m.Add(aead.AES256GCMKeyTemplate())
			if err != nil {
				t.Fatal(err)
			}
			if err := m.SetPrimary(id2); err != nil {
				t.Fatal(err)
			}
			h12, err := m.Handle()
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Delete(id1); err != nil {
				t.Fatal(err)
			}
			h2, err := m.Handle()
			if err != nil {
				t.Fatal(err)
			}
			c12, c2, c1 := mustCipher(t, keysetJSON(t, h12)), mustCipher(t, keysetJSON(t, h2)), mustCipher(t, k1)
			s := newEncryptedStore(inner, c12)

			before, _ := inner.getToken(ctx, "111")
			if got := keyIDOf(t, before.RefreshToken); got != id1 {
				t.Fatalf("before rotation the record is under key %d, want K1 %d", got, id1)
			}
			got, err := s.getToken(ctx, "111")
			if err != nil {
				t.Fatalf("the rotated keyset cannot read a K1 record: %v", err)
			}
			if diff := cmp.Diff(want, got, timeEqual); diff != "" {
				t.Errorf("getToken after rotation mismatch (-want +got):\n%s", diff)
			}

			// The next write re-encrypts under K2, even when fn changes nothing.
			if err := s.updateToken(ctx, "111", func(cur *tokenRecord) (*tokenRecord, error) { return cur, nil }); err != nil {
				t.Fatal(err)
			}
			after, _ := inner.getToken(ctx, "111")
			for field, v := range map[string]string{fieldRefreshToken: after.RefreshToken, fieldAccessToken: after.AccessToken} {
				if got := keyIDOf(t, v); got != id2 {
					t.Errorf("after the write %s is under key %d, want K2 %d", field, got, id2)
				}
				plain := map[string]string{fieldRefreshToken: want.RefreshToken, fieldAccessToken: want.AccessToken}[field]
				if got, err := c2.decrypt("111", field, v); err != nil || got != plain {
					t.Errorf("a K2-only cipher: decrypt %s got %q, %v; want the token", field, got, err)
				}
				if _, err := c1.decrypt("111", field, v); err == nil {
					t.Errorf("a K1-only cipher decrypted %s written after rotation", field)
				}
			}
			if got, err := s.getToken(ctx, "111"); err != nil || got.RefreshToken != want.RefreshToken {
				t.Errorf("getToken after re-encryption: got %v, %v", got, err)
			}
		})
	}
}

func TestPlaintextRecords(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			ctx := t.Context()
			inner := newTestStore(t, kind)
			want := sampleToken("111", "a@example.com")
			put(t, inner, want) // written before encryption was turned on
			s := newEncryptedStore(inner, newTestCipher(t))

			got, err := s.getToken(ctx, "111")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, timeEqual); diff != "" {
				t.Errorf("getToken of a plaintext record mismatch (-want +got):\n%s", diff)
			}
			if got, err := s.tokenByEmail(ctx, "a@example.com"); err != nil || got.RefreshToken != want.RefreshToken {
				t.Errorf("tokenByEmail of a plaintext record: got %v, %v", got, err)
			}

			// Its next write encrypts it.
			err = s.updateToken(ctx, "111", func(cur *tokenRecord) (*tokenRecord, error) {
				if cur == nil || cur.RefreshToken != want.RefreshToken || cur.AccessToken != want.AccessToken {
					t.Errorf("fn got %+v, want the plaintext record", cur)
				}
				next := *cur
				next.LastRefreshAt = sampleTime.Add(time.Minute)
				return &next, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			stored, _ := inner.getToken(ctx, "111")
			if !strings.HasPrefix(stored.RefreshToken, ciphertextPrefix) || !strings.HasPrefix(stored.AccessToken, ciphertextPrefix) {
				t.Errorf("after its next write the record is still in plaintext: %+v", stored)
			}
			checkNoLeak(t, "raw "+kind+" record", rawRecord(t, inner, "111"), want.RefreshToken, want.AccessToken)
			if got, err := s.getToken(ctx, "111"); err != nil || got.RefreshToken != want.RefreshToken || got.AccessToken != want.AccessToken {
				t.Errorf("getToken after encryption: got %v, %v; want the tokens", got, err)
			}
		})
	}
}

func BenchmarkTokenEncryptDecrypt(b *testing.B) {
	c := newTestCipher(b)
	const token = "1//0gdY6Z3mK8nQ-L9ArgAGBASNwF-L9IrqXb2Qv1s8TjJ0yH3kP5dZtX7eWcR4uA6oB2nM9fV0gS1hK3jL5qW8eR7tY6uI4oP2aS"
	b.ReportAllocs()
	for b.Loop() {
		stored, err := c.encrypt("112233445566778899000", fieldRefreshToken, token)
		if err != nil {
			b.Fatal(err)
		}
		if got, err := c.decrypt("112233445566778899000", fieldRefreshToken, stored); err != nil || got != token {
			b.Fatalf("decrypt: %q, %v", got, err)
		}
	}
}
