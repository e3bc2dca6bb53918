//go:build !localonly

package chatauth

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/api/option"
)

// The full build, which Cloud Functions deploys: every seam a build with
// -tags localonly fills differently (localonly.go) is here, with the same
// signature, and nowhere else.

// unbuilt lists no setting: this build links every client chatauth may
// use. A build with -tags localonly leaves some out (localonly.go).
func unbuilt(Config) []string { return nil }

// CheckBuild reports the settings in the environment that need a Google
// client this binary was built without. This build has them all, so it
// reads nothing and is always nil; see localonly.go for the other build.
func CheckBuild() error { return nil }

// openFirestore opens the Firestore store (store.go).
func openFirestore(ctx context.Context, project, database string, timeout time.Duration, opts ...option.ClientOption) (tokenStore, error) {
	return newFirestoreStore(ctx, project, database, timeout, opts...)
}

// newSecretVersions returns the Secret Manager reader (secretmanager.go).
func newSecretVersions(opts []option.ClientOption, wait time.Duration) secretVersions {
	return &secretManager{opts: opts, wait: wait}
}

// kmsAEAD is the Cloud KMS key kmsKeyURI as a Tink AEAD (tink-go-gcpkms
// over REST, the client built with kmsOpts); closeKMS releases its client.
func kmsAEAD(ctx context.Context, kmsKeyURI string, kmsOpts []option.ClientOption) (kek tink.AEAD, closeKMS func() error, err error) {
	// The client's logger is always a discarding one: with
	// GOOGLE_SDK_GO_LOGGING_LEVEL=debug the default one writes whole
	// response bodies to stderr, and this response is the keyset in the
	// clear. It comes last so that no option given here can undo it.
	apiOpts := append(slices.Clip(kmsOpts), option.WithLogger(slog.New(slog.DiscardHandler)))
	client, err := gcpkms.NewClient(ctx, kmsKeyURI,
		gcpkms.WithTransport(gcpkms.TransportREST),
		gcpkms.WithGoogleAPIClientOptions(apiOpts...))
	if err != nil {
		// Without credentials (no service account, no ADC) nothing will
		// change on the next request: this is a deployment fault.
		return nil, nil, fmt.Errorf("crypto: new Cloud KMS client for %s: %w", kmsKeyURI, err)
	}
	kek, err = client.GetAEAD(kmsKeyURI)
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("crypto: Cloud KMS AEAD for %s: %w", kmsKeyURI, err)
	}
	return kek, client.Close, nil
}
