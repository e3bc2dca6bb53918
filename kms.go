package chatauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

// tokenKeysetKMSKeyVar is the setting that names the Cloud KMS key
// wrapping TOKEN_KEYSET. Error messages name it so an operator knows what
// to change.
const tokenKeysetKMSKeyVar = "TOKEN_KEYSET_KMS_KEY"

// kmsKeyURIPattern matches the Tink URI of a Cloud KMS crypto key and
// captures its project, location, key ring and key. A key version is not
// accepted: Cloud KMS decrypts with the crypto key and finds the version
// itself, so the keyset keeps opening after the key is rotated.
var kmsKeyURIPattern = lazyRegexp(`^gcp-kms://projects/([^/]+)/locations/([^/]+)/keyRings/([^/]+)/cryptoKeys/([^/:]+)$`)

// kmsUnwrapTimeout bounds the one Cloud KMS call of a cold start, so that a
// stalled call fails the request (503, retried by the next one) instead of
// holding the instance until the function's own timeout.
const kmsUnwrapTimeout = 10 * time.Second

// loadTokenCipher builds the cipher from TOKEN_KEYSET's bytes.
//
// With kmsKeyURI empty the keyset is cleartext JSON (newTokenCipher).
//
// With kmsKeyURI "gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K"
// the bytes are a Tink encrypted keyset (JSON, as written by
// `tinkey create-keyset --master-key-uri gcp-kms://…` or keyset.Handle.Write
// with a KMS AEAD). It is unwrapped once, here, by one Cloud KMS decrypt
// call (kmsAEAD: tink-go-gcpkms over REST, the client built with kmsOpts;
// a build with -tags localonly refuses it), and the cipher keeps the
// unwrapped keyset in memory: it never calls KMS again, so
// requests neither wait on KMS nor fail with it, and the KMS bill is one
// call per instance. The trade-off is the usual one of envelope encryption
// at start-up: disabling the KMS key stops new instances, not running ones.
//
// A failure that may pass (KMS unreachable, overloaded or too slow) is an
// errSecretsUnavailable (errors.Is), so the request answers 503 and the
// next one tries again; nothing is cached. The other errors say what to fix. No error
// quotes the keyset, wrapped or not.
func loadTokenCipher(ctx context.Context, keysetJSON []byte, kmsKeyURI string, kmsOpts ...option.ClientOption) (*tokenCipher, error) {
	keysetJSON = bytes.TrimSpace(keysetJSON)
	object, encrypted := keysetShape(keysetJSON)
	if kmsKeyURI == "" {
		if encrypted {
			return nil, fmt.Errorf("crypto: token keyset is encrypted (KMS-wrapped) but no KMS key is configured: set %s to the gcp-kms:// URI of the key that wrapped it", tokenKeysetKMSKeyVar)
		}
		return newTokenCipher(keysetJSON)
	}

	m := kmsKeyURIPattern().FindStringSubmatch(kmsKeyURI)
	if m == nil {
		return nil, fmt.Errorf("crypto: %s %q is not a Cloud KMS key URI; want gcp-kms://projects/PROJECT/locations/LOCATION/keyRings/KEY_RING/cryptoKeys/KEY (the key, not a key version)", tokenKeysetKMSKeyVar, kmsKeyURI)
	}
	if !encrypted {
		if object {
			return nil, fmt.Errorf("crypto: token keyset is a cleartext keyset but %s is set: wrap it with that key (tinkey convert-keyset --in keyset.json --in-format json --out wrapped.json --out-format json --new-master-key-uri %s) and store the result instead, or unset %s", tokenKeysetKMSKeyVar, kmsKeyURI, tokenKeysetKMSKeyVar)
		}
		return nil, fmt.Errorf("crypto: token keyset is not a JSON object; want a Tink keyset in JSON format encrypted with %s", kmsKeyURI)
	}
	// keyset.Read's own parse errors (protojson's) can quote the input;
	// this reads it first and reports the fault without quoting.
	enc, err := keyset.NewJSONReader(bytes.NewReader(keysetJSON)).ReadEncrypted()
	if err != nil || len(enc.GetEncryptedKeyset()) == 0 {
		return nil, errors.New(`crypto: token keyset is not a valid encrypted Tink keyset: want the JSON tinkey writes, {"encryptedKeyset": "…", "keysetInfo": {…}}`)
	}

	kek, closeKMS, err := kmsAEAD(ctx, kmsKeyURI, kmsOpts)
	if err != nil {
		return nil, err
	}
	defer closeKMS()
	ctx, cancel := context.WithTimeout(ctx, kmsUnwrapTimeout)
	defer cancel()
	unwrap := &kmsUnwrapper{ctx: ctx, kek: kek}
	h, err := keyset.Read(keyset.NewJSONReader(bytes.NewReader(keysetJSON)), unwrap)
	if unwrap.err != nil {
		return nil, kmsUnwrapError(kmsKeyURI, m[1:], unwrap.err)
	}
	if err != nil {
		// KMS decrypted it, so the key is right and the keyset inside is
		// not: Tink's error names structural faults, never key material.
		return nil, fmt.Errorf("crypto: token keyset unwrapped by %s is not a valid keyset: %w", kmsKeyURI, err)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("crypto: token keyset unwrapped by %s is not an AEAD keyset: %w", kmsKeyURI, err)
	}
	return &tokenCipher{aead: a}, nil
}

// keysetShape reports whether b is a JSON object and whether it has an
// encryptedKeyset member, the mark of a Tink encrypted keyset.
func keysetShape(b []byte) (object, encrypted bool) {
	var probe map[string]json.RawMessage
	if json.Unmarshal(b, &probe) != nil || probe == nil { // JSON null leaves probe nil
		return false, false
	}
	_, encrypted = probe["encryptedKeyset"]
	return true, encrypted
}

// kmsUnwrapper is the key-encryption AEAD as keyset.Read sees it. It does
// two things the REST AEAD of tink-go-gcpkms does not:
//
//   - It bounds the KMS call by ctx. That AEAD takes no context, so the
//     call runs in a goroutine; when ctx ends first, its late result is
//     dropped.
//   - It keeps the KMS error, which keyset.Read flattens into text (%v),
//     so that loadTokenCipher can tell an outage from a denial.
//
// It serves one Decrypt; keyset.Read makes exactly one.
type kmsUnwrapper struct {
	ctx context.Context
	kek tink.AEAD
	err error
}

func (u *kmsUnwrapper) Encrypt(_, _ []byte) ([]byte, error) {
	return nil, errors.New("crypto: kmsUnwrapper only decrypts")
}

func (u *kmsUnwrapper) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	type result struct {
		pt  []byte
		err error
	}
	done := make(chan result, 1) // buffered: a late call never blocks
	go func() {
		pt, err := u.kek.Decrypt(ciphertext, associatedData)
		done <- result{pt, err}
	}()
	select {
	case r := <-done:
		u.err = r.err
		return r.pt, r.err
	case <-u.ctx.Done():
		u.err = u.ctx.Err()
		return nil, u.err
	}
}

// errKMSUnavailable marks a Cloud KMS failure that may pass. It matches
// errSecretsUnavailable, whose handling it shares (startupError answers
// 503 and the next request tries again), without that error's text, which
// would send an operator to Secret Manager.
var errKMSUnavailable error = kmsUnavailableError{}

type kmsUnavailableError struct{}

func (kmsUnavailableError) Error() string        { return "Cloud KMS unavailable" }
func (kmsUnavailableError) Is(target error) bool { return target == errSecretsUnavailable }

// kmsUnwrapError turns the error of the unwrap call into one that says
// what to do. key is the URI's project, location, key ring and key.
func kmsUnwrapError(uri string, key []string, err error) error {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		// No answer from KMS: the connection failed, ctx ended, or the
		// answer was corrupted in transit (gcpkms's checksum errors).
		return fmt.Errorf("crypto: unwrap token keyset with %s: %w (%w)", uri, err, errKMSUnavailable)
	}
	switch status := rpcStatusOf(ge); {
	case status == "PERMISSION_DENIED" || ge.Code == http.StatusForbidden:
		project, location, ring, name := key[0], key[1], key[2], key[3]
		return fmt.Errorf("crypto: Cloud KMS denied decrypting the token keyset with %s (or the key does not exist): grant the function's service account roles/cloudkms.cryptoKeyDecrypter on that key, "+
			"with `gcloud kms keys add-iam-policy-binding %s --project %s --location %s --keyring %s --member serviceAccount:SERVICE_ACCOUNT_EMAIL --role roles/cloudkms.cryptoKeyDecrypter`, and check %s: %w",
			uri, name, project, location, ring, tokenKeysetKMSKeyVar, err)
	case status == "NOT_FOUND" || ge.Code == http.StatusNotFound:
		return fmt.Errorf("crypto: Cloud KMS key %s does not exist: check the project, location, key ring and key in %s: %w", uri, tokenKeysetKMSKeyVar, err)
	case status == "FAILED_PRECONDITION":
		return fmt.Errorf("crypto: Cloud KMS cannot use %s to decrypt the token keyset, most likely because the key version that wrapped it is disabled or destroyed: enable it, or wrap the keyset again: %w", uri, err)
	case status == "INVALID_ARGUMENT" || ge.Code == http.StatusBadRequest:
		return fmt.Errorf("crypto: Cloud KMS could not decrypt the token keyset with %s: it was wrapped with another key, or altered: set %s to the key that wrapped it, or wrap it again with this one: %w", uri, tokenKeysetKMSKeyVar, err)
	case status == "UNAUTHENTICATED" || ge.Code == http.StatusUnauthorized:
		return fmt.Errorf("crypto: Cloud KMS refused the function's credentials for %s: %w", uri, err)
	case ge.Code == http.StatusTooManyRequests || ge.Code >= 500 || status == "ABORTED":
		// The codes secretReader also retries: overload, outage, a lost
		// race inside the service.
		return fmt.Errorf("crypto: unwrap token keyset with %s: %w (%w)", uri, err, errKMSUnavailable)
	}
	return fmt.Errorf("crypto: unwrap token keyset with %s: %w", uri, err)
}

// rpcStatusOf returns the google.rpc.Code name of a REST error's JSON
// envelope ({"error": {"status": "PERMISSION_DENIED", …}}), or "" when the
// body has none. Cloud KMS answers several causes with HTTP 400 that only
// the status tells apart.
func rpcStatusOf(ge *googleapi.Error) string {
	var body struct {
		Error struct {
			Status string `json:"status"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(ge.Body), &body) != nil {
		return ""
	}
	return body.Error.Status
}
