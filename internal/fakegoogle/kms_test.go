package fakegoogle

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

const (
	testKMSKey  = "projects/p/locations/global/keyRings/chatauth/cryptoKeys/token-keyset"
	otherKMSKey = "projects/p/locations/global/keyRings/chatauth/cryptoKeys/other"
)

// kmsAEAD returns Tink's Cloud KMS AEAD for keyURI, its REST client
// pointed at s.
func kmsAEAD(t *testing.T, s *Server, keyURI string) tink.AEAD {
	t.Helper()
	c, err := gcpkms.NewClient(t.Context(), keyURI,
		gcpkms.WithTransport(gcpkms.TransportREST),
		gcpkms.WithGoogleAPIClientOptions(
			option.WithEndpoint(s.URL()+"/"),
			option.WithHTTPClient(s.HTTPClient()),
			option.WithoutAuthentication(),
		))
	if err != nil {
		t.Fatalf("gcpkms.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	a, err := c.GetAEAD(keyURI)
	if err != nil {
		t.Fatalf("GetAEAD: %v", err)
	}
	return a
}

// wantKMSError checks that err is Google's error with code and a message
// containing msg.
func wantKMSError(t *testing.T, err error, code int, msg string) {
	t.Helper()
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		t.Fatalf("got error %v, want a *googleapi.Error %d", err, code)
	}
	if ge.Code != code || !strings.Contains(ge.Message, msg) {
		t.Errorf("got %d %q, want %d with %q", ge.Code, ge.Message, code, msg)
	}
}

func TestKMSThroughTheRealClient(t *testing.T) {
	s := newTestServer(t, Options{})
	uri := s.AddKMSKey(testKMSKey)
	if want := "gcp-kms://" + testKMSKey; uri != want {
		t.Fatalf("AddKMSKey: got %q, want %q", uri, want)
	}
	a := kmsAEAD(t, s, uri)
	pt, aad := []byte("a keyset, say"), []byte("context")

	ct, err := a.Encrypt(pt, aad)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if bytes.Contains(ct, pt) {
		t.Error("the ciphertext contains the plaintext")
	}
	got, err := a.Decrypt(ct, aad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Decrypt: got %q, %v; want %q", got, err, pt)
	}
	// Empty additional data, as keyset.Handle.Write sends, works too.
	ct2, err := a.Encrypt(pt, nil)
	if err != nil {
		t.Fatalf("Encrypt without AAD: %v", err)
	}
	if got, err := a.Decrypt(ct2, nil); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Decrypt without AAD: got %q, %v; want %q", got, err, pt)
	}

	t.Run("refuses other additional data", func(t *testing.T) {
		_, err := a.Decrypt(ct, []byte("other"))
		wantKMSError(t, err, http.StatusBadRequest, "Decryption failed: the ciphertext is invalid.")
	})
	t.Run("refuses another key's ciphertext", func(t *testing.T) {
		// The other key does not exist yet: it is made on first use.
		_, err := kmsAEAD(t, s, "gcp-kms://"+otherKMSKey).Decrypt(ct, aad)
		wantKMSError(t, err, http.StatusBadRequest, "Decryption failed: the ciphertext is invalid.")
	})
	t.Run("refuses altered ciphertext", func(t *testing.T) {
		bad := bytes.Clone(ct)
		bad[len(bad)-1] ^= 1
		_, err := a.Decrypt(bad, aad)
		wantKMSError(t, err, http.StatusBadRequest, "Decryption failed: the ciphertext is invalid.")
		_, err = a.Decrypt(ct[:10], aad)
		wantKMSError(t, err, http.StatusBadRequest, "Decryption failed: the ciphertext is invalid.")
	})
	// Two encryptions, one decryption each and four refusals: eight.
	if got := s.KMSCalls(); got != 8 {
		t.Errorf("KMSCalls: got %d, want 8", got)
	}
}

// TestKMSWrapsAKeyset does what an operator does with tinkey create-keyset
// --master-key-uri: write a keyset encrypted by the KMS key, then read it.
func TestKMSWrapsAKeyset(t *testing.T) {
	s := newTestServer(t, Options{})
	kek := kmsAEAD(t, s, "gcp-kms://"+testKMSKey)
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := h.Write(keyset.NewJSONWriter(&buf), kek); err != nil {
		t.Fatalf("Write: %v", err)
	}
	h2, err := keyset.Read(keyset.NewJSONReader(&buf), kek)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if diff := cmp.Diff(h.KeysetInfo().String(), h2.KeysetInfo().String()); diff != "" {
		t.Errorf("read keyset differs (-wrote +read):\n%s", diff)
	}
}

// postKMS sends body to the fake's method ("…:encrypt") and returns the
// status and decoded JSON.
func postKMS(t *testing.T, s *Server, method string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := s.HTTPClient().Post(s.URL()+"/v1/"+method+"?alt=json&prettyPrint=false", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: response is not JSON: %q", method, raw)
	}
	return resp.StatusCode, out
}

func crcString(b []byte) string {
	return strconv.FormatInt(int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))), 10)
}

func errorMessage(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

func TestKMSWireFormat(t *testing.T) {
	s := newTestServer(t, Options{})
	pt := []byte{0xfb, 0xff, 0x01, 'k', 'e', 'y'} // base64 differs between the two alphabets
	enc := testKMSKey + ":encrypt"
	dec := testKMSKey + ":decrypt"

	t.Run("checksums verified and reported", func(t *testing.T) {
		code, out := postKMS(t, s, enc, map[string]any{
			"plaintext":                         base64.URLEncoding.EncodeToString(pt),
			"plaintextCrc32c":                   crcString(pt),
			"additionalAuthenticatedData":       "",
			"additionalAuthenticatedDataCrc32c": "0",
		})
		if code != http.StatusOK {
			t.Fatalf("encrypt: got %d %v, want 200", code, out)
		}
		if out["verifiedPlaintextCrc32c"] != true || out["verifiedAdditionalAuthenticatedDataCrc32c"] != true {
			t.Errorf("encrypt: got %v, want both checksums reported verified", out)
		}
		if got, want := out["name"], testKMSKey+"/cryptoKeyVersions/1"; got != want {
			t.Errorf("encrypt name: got %v, want %s", got, want)
		}
		ct, err := base64.StdEncoding.DecodeString(out["ciphertext"].(string))
		if err != nil {
			t.Fatalf("ciphertext is not standard base64: %v", err)
		}
		if got := out["ciphertextCrc32c"]; got != crcString(ct) {
			t.Errorf("ciphertextCrc32c: got %v, want %s", got, crcString(ct))
		}

		// Decrypt with the ciphertext in the other alphabet, unpadded, and
		// the checksum as a JSON number.
		code, out = postKMS(t, s, dec, map[string]any{
			"ciphertext":       base64.RawURLEncoding.EncodeToString(ct),
			"ciphertextCrc32c": json.Number(crcString(ct)),
		})
		if code != http.StatusOK {
			t.Fatalf("decrypt: got %d %v, want 200", code, out)
		}
		got, _ := base64.StdEncoding.DecodeString(out["plaintext"].(string))
		if !bytes.Equal(got, pt) || out["plaintextCrc32c"] != crcString(pt) {
			t.Errorf("decrypt: got %v, want the plaintext and its checksum", out)
		}
	})

	t.Run("no checksums, none reported", func(t *testing.T) {
		code, out := postKMS(t, s, enc, map[string]any{"plaintext": base64.StdEncoding.EncodeToString(pt)})
		if code != http.StatusOK {
			t.Fatalf("encrypt: got %d %v, want 200", code, out)
		}
		for _, f := range []string{"verifiedPlaintextCrc32c", "verifiedAdditionalAuthenticatedDataCrc32c"} {
			if _, ok := out[f]; ok {
				t.Errorf("encrypt without checksums reports %s", f)
			}
		}
	})

	for _, tc := range []struct {
		name, method string
		body         map[string]any
		code         int
		msg          string
	}{
		{"wrong plaintext checksum", enc, map[string]any{"plaintext": "a2V5", "plaintextCrc32c": "1"},
			400, "The checksum in field plaintext_crc32c did not match the data in field plaintext."},
		{"wrong AAD checksum", enc, map[string]any{"plaintext": "a2V5", "additionalAuthenticatedData": "YQ==", "additionalAuthenticatedDataCrc32c": "1"},
			400, "The checksum in field additional_authenticated_data_crc32c did not match the data in field additional_authenticated_data."},
		{"wrong ciphertext checksum", dec, map[string]any{"ciphertext": "a2V5", "ciphertextCrc32c": "1"},
			400, "The checksum in field ciphertext_crc32c did not match the data in field ciphertext."},
		{"not base64", enc, map[string]any{"plaintext": "%%%"},
			400, "Invalid value at 'plaintext' (TYPE_BYTES), Base64 decoding failed."},
		{"unknown field", enc, map[string]any{"plaintext": "a2V5", "keyName": "x"},
			400, `Unknown name "keyName"`},
		{"too large", enc, map[string]any{"plaintext": base64.StdEncoding.EncodeToString(make([]byte, 64<<10+1))},
			400, "The plaintext must be no larger than 65536 bytes."},
		{"not a crypto key", "projects/p/locations/global/keyRings/r/cryptoKeys/a.b:encrypt", map[string]any{"plaintext": "a2V5"},
			400, "does not match any known type"},
		{"unknown method", testKMSKey + ":macSign", map[string]any{},
			404, "Method not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := postKMS(t, s, tc.method, tc.body)
			if code != tc.code || !strings.Contains(errorMessage(out), tc.msg) {
				t.Errorf("got %d %v, want %d with %q", code, out, tc.code, tc.msg)
			}
		})
	}
}

func TestKMSFaults(t *testing.T) {
	s := newTestServer(t, Options{})
	a := kmsAEAD(t, s, "gcp-kms://"+testKMSKey)
	ct, err := a.Encrypt([]byte("keyset"), nil)
	if err != nil {
		t.Fatal(err)
	}

	s.FailKMS(http.StatusForbidden, 1)
	_, err = a.Decrypt(ct, nil)
	wantKMSError(t, err, http.StatusForbidden, "Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource '"+testKMSKey+"' (or it may not exist).")

	s.FailKMS(http.StatusServiceUnavailable, 2)
	for range 2 {
		_, err = a.Decrypt(ct, nil)
		wantKMSError(t, err, http.StatusServiceUnavailable, "unavailable")
	}
	if _, err := a.Decrypt(ct, nil); err != nil {
		t.Errorf("Decrypt after the faults: %v", err)
	}
	if got := s.KMSCalls(); got != 5 {
		t.Errorf("KMSCalls: got %d, want 5", got)
	}

	t.Run("latency", func(t *testing.T) {
		s.SetKMSLatency(time.Minute)
		defer s.SetKMSLatency(0)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/v1/"+testKMSKey+":decrypt", strings.NewReader("{}"))
		// The fake answers after a minute: only the deadline can end the
		// call with an error before that.
		resp, err := s.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got %d, want the client to give up", resp.StatusCode)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want the deadline to end the call", err)
		}
	})
}

func TestAddKMSKeyRefusesABadName(t *testing.T) {
	s := newTestServer(t, Options{})
	defer func() {
		if recover() == nil {
			t.Error("AddKMSKey accepted a key version name")
		}
	}()
	s.AddKMSKey(testKMSKey + "/cryptoKeyVersions/1")
}

// TestKMSStatePerServer checks that two fakes do not share keys.
func TestKMSStatePerServer(t *testing.T) {
	s1, s2 := newTestServer(t, Options{}), newTestServer(t, Options{})
	ct, err := kmsAEAD(t, s1, "gcp-kms://"+testKMSKey).Encrypt([]byte("keyset"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = kmsAEAD(t, s2, "gcp-kms://"+testKMSKey).Decrypt(ct, nil)
	wantKMSError(t, err, http.StatusBadRequest, "the ciphertext is invalid")
	if s1.KMSCalls() != 1 || s2.KMSCalls() != 1 {
		t.Errorf("KMSCalls: got %d and %d, want 1 and 1", s1.KMSCalls(), s2.KMSCalls())
	}
}
