package fakegoogle

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"weak"
)

// The Cloud KMS part of the fake serves the two methods of the REST API
// (cloudkms/v1) that a symmetric key-encryption key needs, the calls
// github.com/tink-crypto/tink-go-gcpkms makes with its REST transport:
//
//	POST /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/*}:encrypt
//	POST /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/*}:decrypt
//
// Point a client at it with option.WithEndpoint(s.URL()+"/") and
// option.WithHTTPClient(s.HTTPClient()) (or option.WithoutAuthentication()).
// Like the real service it takes bytes fields as base64 (standard or
// URL-safe), verifies the optional CRC32C fields of a request, reports the
// checked ones back, and checksums what it returns; ciphertexts are bound to
// their key and their additional authenticated data. It does not check
// credentials: IAM is simulated with FailKMS(http.StatusForbidden, n), which
// answers Google's own "Permission … denied" text.
//
// Every crypto key has one AES-256-GCM key, made on its first use or by
// AddKMSKey, so a ciphertext made under one key name does not decrypt under
// another, as a keyset wrapped with the wrong KMS key does not.

// kmsKeyName matches the resource name of a crypto key, with the character
// sets and lengths Cloud KMS allows for the ids it assigns names from.
var kmsKeyName = regexp.MustCompile(`^projects/[a-z0-9-]{1,30}/locations/[a-z0-9-]{1,63}/keyRings/[a-zA-Z0-9_-]{1,63}/cryptoKeys/[a-zA-Z0-9_-]{1,63}$`)

// kmsMaxInput is Cloud KMS's limit on plaintext and additional
// authenticated data, 64 KiB each.
const kmsMaxInput = 64 << 10

// kmsState is one Server's Cloud KMS: its keys, faults and counters.
type kmsState struct {
	mu      sync.Mutex
	keys    map[string]cipher.AEAD // by crypto key name
	faults  []int                  // HTTP statuses for the next calls
	latency time.Duration
	calls   int
}

// kmsStates holds each Server's kmsState. It would be a field of Server;
// it lives here so that KMS support touches server.go only to register its
// route. The Server is held weakly, and a cleanup drops its entry once the
// Server is collected, so that the registry keeps nothing alive.
var kmsStates struct {
	sync.Mutex
	m map[weak.Pointer[Server]]*kmsState
}

// kms returns s's Cloud KMS state, made on first use.
func (s *Server) kms() *kmsState {
	k := weak.Make(s)
	kmsStates.Lock()
	defer kmsStates.Unlock()
	if st, ok := kmsStates.m[k]; ok {
		return st
	}
	if kmsStates.m == nil {
		kmsStates.m = make(map[weak.Pointer[Server]]*kmsState)
	}
	st := &kmsState{keys: make(map[string]cipher.AEAD)}
	kmsStates.m[k] = st
	runtime.AddCleanup(s, func(k weak.Pointer[Server]) {
		kmsStates.Lock()
		defer kmsStates.Unlock()
		delete(kmsStates.m, k)
	}, k)
	return st
}

// AddKMSKey creates the crypto key name ("projects/P/locations/L/keyRings/
// R/cryptoKeys/K") if it does not exist yet and returns its Tink key URI,
// "gcp-kms://" + name. Keys are also created on their first use; adding
// one first only makes a test's intent plain. It panics if name is not a
// crypto key name, as that is a mistake in the test.
func (s *Server) AddKMSKey(name string) string {
	if !kmsKeyName.MatchString(name) {
		panic(fmt.Sprintf("fakegoogle: AddKMSKey: %q is not a crypto key name (projects/P/locations/L/keyRings/R/cryptoKeys/K)", name))
	}
	st := s.kms()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.keyLocked(name)
	return "gcp-kms://" + name
}

// FailKMS makes the next n Cloud KMS calls answer status in Google's error
// format, as an outage (503), a throttled project (429) or a caller without
// the role on the key (403, with the real service's message naming the
// missing permission) would.
func (s *Server) FailKMS(status, n int) {
	st := s.kms()
	st.mu.Lock()
	defer st.mu.Unlock()
	for range n {
		st.faults = append(st.faults, status)
	}
}

// SetKMSLatency delays every Cloud KMS response by d, for tests of a caller
// that must not wait on KMS for ever.
func (s *Server) SetKMSLatency(d time.Duration) {
	st := s.kms()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.latency = d
}

// KMSCalls returns how many Cloud KMS calls (encrypt and decrypt, failed
// ones included) reached the fake, so tests can check that a keyset is
// unwrapped once and not per request.
func (s *Server) KMSCalls() int {
	st := s.kms()
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.calls
}

// keyLocked returns the AEAD of the crypto key name, creating the key on
// first use.
func (st *kmsState) keyLocked(name string) cipher.AEAD {
	if a, ok := st.keys[name]; ok {
		return a
	}
	block, err := aes.NewCipher(randomBytes(32))
	if err != nil {
		panic("fakegoogle: " + err.Error()) // a 32-byte key is always valid
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic("fakegoogle: " + err.Error())
	}
	st.keys[name] = a
	return a
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return b
}

// kmsChecksum is an optional google.protobuf.Int64Value CRC32C field. Its
// JSON form is a decimal string, though a number is accepted too, as the
// real service's JSON parser does.
type kmsChecksum struct {
	set bool
	v   int64
}

func (c *kmsChecksum) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*c = kmsChecksum{}
		return nil
	}
	s := strings.Trim(string(b), `"`)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("invalid int64 value")
	}
	*c = kmsChecksum{set: true, v: v}
	return nil
}

// kmsEncryptRequest and kmsDecryptRequest are the bodies of the two
// methods, EncryptRequest and DecryptRequest.
type kmsEncryptRequest struct {
	Plaintext                         string      `json:"plaintext"`
	PlaintextCrc32c                   kmsChecksum `json:"plaintextCrc32c"`
	AdditionalAuthenticatedData       string      `json:"additionalAuthenticatedData"`
	AdditionalAuthenticatedDataCrc32c kmsChecksum `json:"additionalAuthenticatedDataCrc32c"`
}

type kmsDecryptRequest struct {
	Ciphertext                        string      `json:"ciphertext"`
	CiphertextCrc32c                  kmsChecksum `json:"ciphertextCrc32c"`
	AdditionalAuthenticatedData       string      `json:"additionalAuthenticatedData"`
	AdditionalAuthenticatedDataCrc32c kmsChecksum `json:"additionalAuthenticatedDataCrc32c"`
}

var crc32c = crc32.MakeTable(crc32.Castagnoli)

func kmsCRC(b []byte) string { return strconv.FormatInt(int64(crc32.Checksum(b, crc32c)), 10) }

// decodeKMSBytes decodes a bytes field as the proto JSON mapping does:
// standard or URL-safe base64, padded or not. Like every message the fake
// writes, its error never quotes the value.
func decodeKMSBytes(field, v string) ([]byte, *apiError) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(v); err == nil {
			return b, nil
		}
	}
	return nil, invalidArgument("Invalid value at '%s' (TYPE_BYTES), Base64 decoding failed.", field)
}

// checkKMSField decodes one bytes field and verifies its checksum when the
// request carries one, with the real service's wording.
func checkKMSField(field, value, crcField string, crc kmsChecksum) ([]byte, *apiError) {
	b, e := decodeKMSBytes(field, value)
	if e != nil {
		return nil, e
	}
	if crc.set && crc.v != int64(crc32.Checksum(b, crc32c)) {
		return nil, invalidArgument("The checksum in field %s did not match the data in field %s.", crcField, field)
	}
	return b, nil
}

// handleKMS serves POST /v1/projects/{project}/locations/{location}/
// keyRings/{keyRing}/cryptoKeys/{key}:encrypt and …:decrypt
// (cloudkms.projects.locations.keyRings.cryptoKeys.encrypt and .decrypt).
func (s *Server) handleKMS(w http.ResponseWriter, r *http.Request) {
	_, verb, _ := strings.Cut(r.PathValue("keyVerb"), ":")
	name := strings.TrimPrefix(r.URL.Path, "/v1/")
	name = strings.TrimSuffix(name, ":"+verb)
	if verb != "encrypt" && verb != "decrypt" {
		(&apiError{code: http.StatusNotFound, message: fmt.Sprintf("Method not found: %s", r.URL.Path)}).write(w)
		return
	}
	if !kmsKeyName.MatchString(name) {
		invalidArgument("Resource name [%s] does not match any known type.", name).write(w)
		return
	}

	st := s.kms()
	st.mu.Lock()
	st.calls++
	status := 0
	if len(st.faults) > 0 {
		status, st.faults = st.faults[0], st.faults[1:]
	}
	latency := st.latency
	st.mu.Unlock()
	if sleep(r.Context(), latency) != nil {
		return
	}
	if status != 0 {
		kmsFault(status, name, verb).write(w)
		return
	}

	if verb == "encrypt" {
		s.kmsEncrypt(w, r, st, name)
	} else {
		s.kmsDecrypt(w, r, st, name)
	}
}

// kmsFault is the error the real service answers for status.
func kmsFault(status int, name, verb string) *apiError {
	e := &apiError{code: status}
	switch status {
	case http.StatusForbidden:
		perm := "cloudkms.cryptoKeyVersions.useToDecrypt"
		if verb == "encrypt" {
			perm = "cloudkms.cryptoKeyVersions.useToEncrypt"
		}
		e.message = fmt.Sprintf("Permission '%s' denied on resource '%s' (or it may not exist).", perm, name)
	case http.StatusNotFound:
		e.message = fmt.Sprintf("CryptoKey %s not found.", name)
	}
	return e
}

func (s *Server) kmsEncrypt(w http.ResponseWriter, r *http.Request, st *kmsState, name string) {
	var req kmsEncryptRequest
	if e := decodeBody(w, r, &req, "encrypt_request"); e != nil {
		e.write(w)
		return
	}
	pt, e := checkKMSField("plaintext", req.Plaintext, "plaintext_crc32c", req.PlaintextCrc32c)
	if e != nil {
		e.write(w)
		return
	}
	aad, e := checkKMSField("additional_authenticated_data", req.AdditionalAuthenticatedData, "additional_authenticated_data_crc32c", req.AdditionalAuthenticatedDataCrc32c)
	if e != nil {
		e.write(w)
		return
	}
	if len(pt) > kmsMaxInput {
		invalidArgument("The plaintext must be no larger than %d bytes.", kmsMaxInput).write(w)
		return
	}
	if len(aad) > kmsMaxInput {
		invalidArgument("The additional authenticated data must be no larger than %d bytes.", kmsMaxInput).write(w)
		return
	}
	st.mu.Lock()
	a := st.keyLocked(name)
	st.mu.Unlock()
	nonce := randomBytes(a.NonceSize())
	ct := a.Seal(nonce, nonce, pt, aad)
	resp := map[string]any{
		"name":             name + "/cryptoKeyVersions/1",
		"ciphertext":       base64.StdEncoding.EncodeToString(ct),
		"ciphertextCrc32c": kmsCRC(ct),
		"protectionLevel":  "SOFTWARE",
	}
	// The real service reports a checksum as verified only when the
	// request carried it, which is how a client learns it was checked; like
	// any proto3 JSON, it leaves false fields out.
	if req.PlaintextCrc32c.set {
		resp["verifiedPlaintextCrc32c"] = true
	}
	if req.AdditionalAuthenticatedDataCrc32c.set {
		resp["verifiedAdditionalAuthenticatedDataCrc32c"] = true
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) kmsDecrypt(w http.ResponseWriter, r *http.Request, st *kmsState, name string) {
	var req kmsDecryptRequest
	if e := decodeBody(w, r, &req, "decrypt_request"); e != nil {
		e.write(w)
		return
	}
	ct, e := checkKMSField("ciphertext", req.Ciphertext, "ciphertext_crc32c", req.CiphertextCrc32c)
	if e != nil {
		e.write(w)
		return
	}
	aad, e := checkKMSField("additional_authenticated_data", req.AdditionalAuthenticatedData, "additional_authenticated_data_crc32c", req.AdditionalAuthenticatedDataCrc32c)
	if e != nil {
		e.write(w)
		return
	}
	st.mu.Lock()
	a := st.keyLocked(name)
	st.mu.Unlock()
	var pt []byte
	var err error
	if n := a.NonceSize(); len(ct) < n+a.Overhead() {
		err = fmt.Errorf("short ciphertext")
	} else {
		pt, err = a.Open(nil, ct[:n], ct[n:], aad)
	}
	if err != nil {
		// The real service's answer to a ciphertext from another key, with
		// other additional authenticated data, or altered.
		invalidArgument("Decryption failed: the ciphertext is invalid.").write(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"plaintext":       base64.StdEncoding.EncodeToString(pt),
		"plaintextCrc32c": kmsCRC(pt),
		"usedPrimary":     true,
		"protectionLevel": "SOFTWARE",
	})
}
