package chatauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

// The crypto keys of the KMS tests, as an operator would create them.
const (
	kmsTestKey  = "projects/chatauth-test/locations/global/keyRings/chatauth/cryptoKeys/token-keyset"
	kmsOtherKey = "projects/chatauth-test/locations/global/keyRings/chatauth/cryptoKeys/other"
)

// kmsFake starts a fake Google whose Cloud KMS the tests use, and returns
// it with the client options that point Cloud KMS clients at it.
func kmsFake(t *testing.T) (*fakegoogle.Server, []option.ClientOption) {
	t.Helper()
	g, err := fakegoogle.New(fakegoogle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, []option.ClientOption{
		option.WithEndpoint(g.URL() + "/"),
		option.WithHTTPClient(g.HTTPClient()),
		option.WithoutAuthentication(),
	}
}

// kmsKEK returns Tink's Cloud KMS AEAD for uri, as tinkey builds it.
func kmsKEK(t *testing.T, uri string, opts []option.ClientOption) tink.AEAD {
	t.Helper()
	c, err := gcpkms.NewClient(t.Context(), uri, gcpkms.WithTransport(gcpkms.TransportREST), gcpkms.WithGoogleAPIClientOptions(opts...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	kek, err := c.GetAEAD(uri)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

// wrappedKeyset makes a keyset the way an operator does with
// `tinkey create-keyset --key-template AES256_GCM --out-format json
// --master-key-uri <uri>`: a new keyset written encrypted by the KMS key.
// It returns the encrypted JSON and, for comparisons only, the cleartext.
func wrappedKeyset(t *testing.T, uri string, opts []option.ClientOption) (wrapped, cleartext []byte) {
	t.Helper()
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := h.Write(keyset.NewJSONWriter(&buf), kmsKEK(t, uri, opts)); err != nil {
		t.Fatalf("wrap keyset: %v", err)
	}
	return buf.Bytes(), keysetJSON(t, h)
}

// keysetSecrets lists what no error may contain: the cleartext keyset,
// each key's serialized material, and the encrypted keyset's ciphertext.
func keysetSecrets(t *testing.T, wrapped, cleartext []byte) []string {
	t.Helper()
	secrets := []string{string(cleartext)}
	var clear struct {
		Key []struct {
			KeyData struct {
				Value string `json:"value"`
			} `json:"keyData"`
		} `json:"key"`
	}
	if err := json.Unmarshal(cleartext, &clear); err != nil || len(clear.Key) == 0 {
		t.Fatalf("cleartext keyset has no keys: %v", err)
	}
	for _, k := range clear.Key {
		secrets = append(secrets, k.KeyData.Value)
	}
	var enc struct {
		EncryptedKeyset string `json:"encryptedKeyset"`
	}
	if err := json.Unmarshal(wrapped, &enc); err != nil || enc.EncryptedKeyset == "" {
		t.Fatalf("wrapped keyset has no encryptedKeyset: %v", err)
	}
	return append(secrets, enc.EncryptedKeyset)
}

func TestLoadTokenCipherKMS(t *testing.T) {
	t.Parallel()
	g, opts := kmsFake(t)
	uri := g.AddKMSKey(kmsTestKey)
	wrapped, cleartext := wrappedKeyset(t, uri, opts)
	// The wrapped keyset holds no key in the clear (it does hold the
	// encrypted keyset, the last of the secrets).
	secrets := keysetSecrets(t, wrapped, cleartext)
	checkNoLeak(t, "wrapped keyset", string(wrapped), secrets[:len(secrets)-1]...)

	before := g.KMSCalls()
	c, err := loadTokenCipher(t.Context(), wrapped, uri, opts...)
	if err != nil {
		t.Fatalf("loadTokenCipher: %v", err)
	}
	if got := g.KMSCalls() - before; got != 1 {
		t.Errorf("loading made %d KMS calls, want 1", got)
	}

	// Many concurrent requests' worth of work makes no KMS call at all.
	fromCleartext := mustCipher(t, cleartext)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			sub, token := fmt.Sprint(1000+i), fmt.Sprintf("1//refresh-token-%d", i)
			for range 10 {
				stored, err := c.encrypt(sub, fieldRefreshToken, token)
				if err != nil {
					t.Errorf("encrypt: %v", err)
					return
				}
				if got, err := c.decrypt(sub, fieldRefreshToken, stored); err != nil || got != token {
					t.Errorf("decrypt: got %q, %v; want %q", got, err, token)
				}
				// The unwrapped keyset is the operator's keyset: the same
				// keys, so a cipher on its cleartext reads the ciphertext.
				if got, err := fromCleartext.decrypt(sub, fieldRefreshToken, stored); err != nil || got != token {
					t.Errorf("the cleartext keyset's cipher: got %q, %v; want %q", got, err, token)
				}
			}
		})
	}
	wg.Wait()
	if got := g.KMSCalls() - before; got != 1 {
		t.Errorf("after 500 encryptions and decryptions: %d KMS calls in all, want the 1 of loading", got)
	}

	// An encrypted store on the cipher, as newServer builds it, still
	// makes no KMS call.
	local, err := newLocalStore(t.TempDir(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.close() })
	s := newEncryptedStore(local, c)
	if err := s.updateToken(t.Context(), "42", func(*tokenRecord) (*tokenRecord, error) {
		return &tokenRecord{Sub: "42", RefreshToken: "1//stored"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.getToken(t.Context(), "42"); err != nil || rec.RefreshToken != "1//stored" {
		t.Errorf("getToken: got %+v, %v", rec, err)
	}
	if got := g.KMSCalls() - before; got != 1 {
		t.Errorf("after store use: %d KMS calls, want 1", got)
	}
}

func TestLoadTokenCipherWithoutKMS(t *testing.T) {
	t.Parallel()
	ks, err := generateKeyset()
	if err != nil {
		t.Fatal(err)
	}
	c, err := loadTokenCipher(t.Context(), ks, "")
	if err != nil {
		t.Fatalf("loadTokenCipher without a KMS key: %v", err)
	}
	stored, _ := c.encrypt("1", fieldAccessToken, "ya29.token")
	if got, err := mustCipher(t, ks).decrypt("1", fieldAccessToken, stored); err != nil || got != "ya29.token" {
		t.Errorf("got %q, %v; want the cleartext keyset's cipher to read it", got, err)
	}
}

func TestLoadTokenCipherKMSErrors(t *testing.T) {
	t.Parallel()
	g, opts := kmsFake(t)
	uri := g.AddKMSKey(kmsTestKey)
	otherURI := g.AddKMSKey(kmsOtherKey)
	wrapped, cleartext := wrappedKeyset(t, uri, opts)
	secrets := keysetSecrets(t, wrapped, cleartext)

	// A KMS ciphertext that is not a keyset: the right key, wrong content.
	junk, err := kmsKEK(t, uri, opts).Encrypt([]byte("not a serialized keyset"), []byte{})
	if err != nil {
		t.Fatal(err)
	}
	notAKeyset := fmt.Appendf(nil, `{"encryptedKeyset": %q}`, base64.StdEncoding.EncodeToString(junk))

	for _, tc := range []struct {
		name        string
		keyset      []byte
		uri         string
		fault       int // the KMS answers this status once
		want        []string
		unavailable bool
		kmsCalls    int
	}{
		{name: "wrong key", keyset: wrapped, uri: otherURI, kmsCalls: 1,
			want: []string{otherURI, "wrapped with another key", "TOKEN_KEYSET_KMS_KEY", "Decryption failed: the ciphertext is invalid."}},
		{name: "permission denied", keyset: wrapped, uri: uri, fault: http.StatusForbidden, kmsCalls: 1,
			want: []string{uri, "roles/cloudkms.cryptoKeyDecrypter", "service account",
				"gcloud kms keys add-iam-policy-binding token-keyset --project chatauth-test --location global --keyring chatauth",
				"Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied"}},
		{name: "key not found", keyset: wrapped, uri: uri, fault: http.StatusNotFound, kmsCalls: 1,
			want: []string{uri, "does not exist", "TOKEN_KEYSET_KMS_KEY"}},
		{name: "KMS unavailable", keyset: wrapped, uri: uri, fault: http.StatusServiceUnavailable, kmsCalls: 1, unavailable: true,
			want: []string{uri, "Cloud KMS unavailable"}},
		{name: "KMS throttled", keyset: wrapped, uri: uri, fault: http.StatusTooManyRequests, kmsCalls: 1, unavailable: true,
			want: []string{uri, "Cloud KMS unavailable"}},
		{name: "KMS internal error", keyset: wrapped, uri: uri, fault: http.StatusInternalServerError, kmsCalls: 1, unavailable: true,
			want: []string{uri, "Cloud KMS unavailable"}},
		{name: "not a keyset inside", keyset: notAKeyset, uri: uri, kmsCalls: 1,
			want: []string{uri, "is not a valid keyset"}},
		{name: "cleartext keyset with a KMS key", keyset: cleartext, uri: uri,
			want: []string{"cleartext keyset", "TOKEN_KEYSET_KMS_KEY is set", "tinkey convert-keyset", uri}},
		{name: "encrypted keyset without a KMS key", keyset: wrapped, uri: "",
			want: []string{"encrypted (KMS-wrapped)", "set TOKEN_KEYSET_KMS_KEY"}},
		{name: "not JSON", keyset: []byte("not json " + secrets[1]), uri: uri,
			want: []string{"not a JSON object", uri}},
		{name: "empty", keyset: nil, uri: uri,
			want: []string{"not a JSON object"}},
		{name: "malformed encrypted keyset", keyset: fmt.Appendf(nil, `{"encryptedKeyset": 7, "keysetInfo": %q}`, secrets[1]), uri: uri,
			want: []string{"not a valid encrypted Tink keyset"}},
		{name: "empty encrypted keyset", keyset: []byte(`{"encryptedKeyset": ""}`), uri: uri,
			want: []string{"not a valid encrypted Tink keyset"}},
		{name: "key version URI", keyset: wrapped, uri: uri + "/cryptoKeyVersions/1",
			want: []string{"is not a Cloud KMS key URI", "not a key version"}},
		{name: "URI without scheme", keyset: wrapped, uri: kmsTestKey,
			want: []string{"is not a Cloud KMS key URI", "gcp-kms://projects/PROJECT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fault != 0 {
				g.FailKMS(tc.fault, 1)
			}
			before := g.KMSCalls()
			c, err := loadTokenCipher(t.Context(), tc.keyset, tc.uri, opts...)
			if err == nil {
				t.Fatalf("got a cipher %v, want an error", c)
			}
			if got := g.KMSCalls() - before; got != tc.kmsCalls {
				t.Errorf("KMS calls: got %d, want %d", got, tc.kmsCalls)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if got := errors.Is(err, errSecretsUnavailable); got != tc.unavailable {
				t.Errorf("errors.Is(err, errSecretsUnavailable): got %v, want %v (error %q)", got, tc.unavailable, err)
			}
			wantCode := http.StatusInternalServerError
			if tc.unavailable {
				wantCode = http.StatusServiceUnavailable
			}
			if got := startupError(err).HTTPCode(); got != wantCode {
				t.Errorf("a request at this cold start answers %d, want %d", got, wantCode)
			}
			checkNoLeak(t, "error", err.Error(), secrets...)
		})
	}
}

// TestLoadTokenCipherKMSOutage checks that an outage at cold start is a
// 503 that the next attempt recovers from, whether KMS answers with an
// error, does not answer in time, or cannot be reached.
func TestLoadTokenCipherKMSOutage(t *testing.T) {
	t.Parallel()
	g, opts := kmsFake(t)
	uri := g.AddKMSKey(kmsTestKey)
	wrapped, cleartext := wrappedKeyset(t, uri, opts)
	secrets := keysetSecrets(t, wrapped, cleartext)

	check := func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, errSecretsUnavailable) {
			t.Fatalf("got %v, want an error wrapping errSecretsUnavailable", err)
		}
		if strings.Contains(err.Error(), "secret manager") {
			t.Errorf("error %q blames Secret Manager for a KMS outage", err)
		}
		if !strings.Contains(err.Error(), uri) {
			t.Errorf("error %q does not name the key", err)
		}
		checkNoLeak(t, "error", err.Error(), secrets...)
	}

	t.Run("down, then up", func(t *testing.T) {
		g.FailKMS(http.StatusServiceUnavailable, 1)
		_, err := loadTokenCipher(t.Context(), wrapped, uri, opts...)
		check(t, err)
		if _, err := loadTokenCipher(t.Context(), wrapped, uri, opts...); err != nil {
			t.Fatalf("the next attempt: %v", err)
		}
	})

	t.Run("too slow", func(t *testing.T) {
		g.SetKMSLatency(time.Minute)
		defer g.SetKMSLatency(0)
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		// KMS answers after a minute, so an error that wraps the
		// deadline is the deadline answering: no stopwatch needed.
		_, err := loadTokenCipher(ctx, wrapped, uri, opts...)
		check(t, err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want it to wrap context.DeadlineExceeded", err)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		down, downOpts := kmsFake(t)
		down.Close()
		_, err := loadTokenCipher(t.Context(), wrapped, uri, downOpts...)
		check(t, err)
	})
}

// TestLoadTokenCipherKMSNeverLogsTheKeyset turns on the Google client
// libraries' debug logging, which writes whole request and response bodies
// to stderr, and checks that the unwrap call's response, the keyset in the
// clear, does not reach it.
func TestLoadTokenCipherKMSNeverLogsTheKeyset(t *testing.T) {
	g, opts := kmsFake(t)
	uri := g.AddKMSKey(kmsTestKey)
	wrapped, cleartext := wrappedKeyset(t, uri, opts)
	t.Setenv("GOOGLE_SDK_GO_LOGGING_LEVEL", "debug")

	// What Cloud KMS returns is the serialized keyset, in base64.
	var serialized bytes.Buffer
	if err := insecurecleartextkeyset.Write(handleOf(t, cleartext), keyset.NewBinaryWriter(&serialized)); err != nil {
		t.Fatal(err)
	}
	unwrapped := base64.StdEncoding.EncodeToString(serialized.Bytes())
	secrets := append(keysetSecrets(t, wrapped, cleartext), unwrapped, base64.URLEncoding.EncodeToString(serialized.Bytes()))

	// The control: a KMS client left to its defaults does log the keyset.
	// Were it not to (the variable renamed, bodies no longer logged), the
	// check below would pass without checking anything.
	var enc struct {
		EncryptedKeyset []byte `json:"encryptedKeyset"`
	}
	if err := json.Unmarshal(wrapped, &enc); err != nil {
		t.Fatal(err)
	}
	control := captureStderr(t, func() {
		if _, err := kmsKEK(t, uri, opts).Decrypt(enc.EncryptedKeyset, []byte{}); err != nil {
			t.Errorf("control decrypt: %v", err)
		}
	})
	if !strings.Contains(control, unwrapped) {
		t.Fatalf("control: the Cloud KMS client's debug log does not show the unwrapped keyset, so this test checks nothing; its stderr:\n%s", control)
	}

	stderr := captureStderr(t, func() {
		if _, err := loadTokenCipher(t.Context(), wrapped, uri, opts...); err != nil {
			t.Errorf("loadTokenCipher: %v", err)
		}
	})
	checkNoLeak(t, "stderr", stderr, secrets...)
}

// captureStderr returns what fn writes to os.Stderr.
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		out <- b
	}()
	orig := os.Stderr
	os.Stderr = w
	defer func() { os.Stderr = orig }()
	fn()
	os.Stderr = orig
	w.Close()
	return string(<-out)
}

// TestKMSUnwrapErrorKinds covers the answers the fake does not give: Cloud
// KMS tells some causes apart only by the status in its JSON envelope.
func TestKMSUnwrapErrorKinds(t *testing.T) {
	t.Parallel()
	const uri = "gcp-kms://" + kmsTestKey
	key := kmsKeyURIPattern().FindStringSubmatch(uri)[1:]
	envelope := func(code int, status, msg string) error {
		return &googleapi.Error{Code: code, Message: msg,
			Body: fmt.Sprintf(`{"error": {"code": %d, "message": %q, "status": %q}}`, code, msg, status)}
	}
	for _, tc := range []struct {
		name        string
		err         error
		want        string
		unavailable bool
	}{
		{"key version disabled", envelope(400, "FAILED_PRECONDITION", kmsTestKey+"/cryptoKeyVersions/1 is not enabled, current state is: DISABLED."),
			"key version that wrapped it is disabled or destroyed", false},
		{"ciphertext invalid", envelope(400, "INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid."),
			"wrapped with another key", false},
		{"bad credentials", envelope(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
			"refused the function's credentials", false},
		{"a 400 without a JSON body", &googleapi.Error{Code: 400, Body: "Bad Request"},
			"wrapped with another key", false},
		{"deadline exceeded", envelope(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
			"Cloud KMS unavailable", true},
		{"aborted", envelope(409, "ABORTED", "Aborted."),
			"Cloud KMS unavailable", true},
		{"something else", &googleapi.Error{Code: 405, Body: "Method Not Allowed"},
			"unwrap token keyset with " + uri, false},
		{"connection reset", fmt.Errorf("Post %q: %w", "https://cloudkms.googleapis.com/v1/...", errors.New("connection reset by peer")),
			"Cloud KMS unavailable", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := kmsUnwrapError(uri, key, tc.err)
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), uri) {
				t.Errorf("got %q, want it to name %s and contain %q", err, uri, tc.want)
			}
			if got := errors.Is(err, errSecretsUnavailable); got != tc.unavailable {
				t.Errorf("errors.Is(err, errSecretsUnavailable): got %v, want %v", got, tc.unavailable)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("the error does not wrap the KMS error")
			}
		})
	}
}

// TestServerWithKMSWrappedKeyset: a deployment whose TOKEN_KEYSET is wrapped
// by Cloud KMS unwraps it once at cold start and then serves the whole flow
// without calling KMS again.
func TestServerWithKMSWrappedKeyset(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	g := e.google
	uri := g.AddKMSKey("projects/p/locations/global/keyRings/chatauth/cryptoKeys/token-keyset")
	opts := []option.ClientOption{option.WithEndpoint(g.URL() + "/"), option.WithHTTPClient(g.HTTPClient()), option.WithoutAuthentication()}
	wrapped, _ := wrappedKeyset(t, uri, opts)
	writeFile(t, e.cfg.TokenKeyset, wrapped)
	e.cfg.TokenKeysetKMSKey = uri
	before := g.KMSCalls()
	e.restart(func(o *serverOptions) { o.kms = opts })
	if got := g.KMSCalls() - before; got != 1 {
		t.Errorf("KMS calls at cold start: got %d, want 1", got)
	}
	e.connect()
	if code, body := e.signed("CreateSpace", `{"user":"alice@example.com","displayName":"Wrapped keyset"}`); code != 200 {
		t.Fatalf("CreateSpace: got %d: %s", code, body)
	}
	if got := g.KMSCalls() - before; got != 1 {
		t.Errorf("KMS calls after serving: got %d, want still 1", got)
	}
}
