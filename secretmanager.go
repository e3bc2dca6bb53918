//go:build !localonly

package chatauth

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
	"sync"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// secretManager reads Secret Manager versions for secretReader; its
// client is made on first use.
type secretManager struct {
	opts []option.ClientOption
	wait time.Duration // bound on one read, retries included; zero: 10 s

	mu     sync.Mutex
	client *secretmanager.Client
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// access reads a Secret Manager version.
func (r *secretManager) access(ctx context.Context, ref string) ([]byte, error) {
	c, err := r.smClient(ctx)
	if err != nil {
		return nil, err
	}
	// The client retries Unavailable until its context ends; a cold start
	// gives up sooner and lets the next request try again.
	ctx, cancel := context.WithTimeoutCause(ctx, r.timeout(), errSecretTimeout)
	defer cancel()
	resp, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: ref})
	if err != nil && errors.Is(context.Cause(ctx), errSecretTimeout) {
		// The read's own bound, not the caller's deadline: say so.
		return nil, fmt.Errorf("secrets: access %s: %w after %v (%v) (%w)", ref, errSecretTimeout, r.timeout(), err, errSecretsUnavailable)
	}
	if err != nil {
		err = fmt.Errorf("secrets: access %s: %w", ref, err)
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown, codes.Canceled:
			// A transient failure: the next request tries again.
			return nil, fmt.Errorf("%w (%w)", err, errSecretsUnavailable)
		}
		return nil, err
	}
	data := resp.GetPayload().GetData()
	if sum := resp.GetPayload().DataCrc32C; sum != nil && int64(crc32.Checksum(data, castagnoli)) != *sum {
		return nil, fmt.Errorf("secrets: access %s: payload checksum mismatch (corrupted in transit): %w", ref, errSecretsUnavailable)
	}
	return data, nil
}

func (r *secretManager) timeout() time.Duration {
	if r.wait > 0 {
		return r.wait
	}
	return 10 * time.Second
}

func (r *secretManager) smClient(ctx context.Context) (*secretmanager.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, nil
	}
	// With GOOGLE_SDK_GO_LOGGING_LEVEL=debug the client would log whole
	// responses, secrets included: its logger discards everything.
	opts := append(slices.Clip(r.clientOptions()), noClientLogs)
	c, err := secretmanager.NewClient(context.WithoutCancel(ctx), opts...)
	if err != nil {
		return nil, fmt.Errorf("secrets: new Secret Manager client: %w (%w)", err, errSecretsUnavailable)
	}
	r.client = c
	return c, nil
}

// secretManagerEmulatorEnv names a Secret Manager emulator (host:port) to
// read secrets from instead of Google's service, over plaintext gRPC and
// without credentials: the counterpart of FIRESTORE_EMULATOR_HOST, which
// the Firestore client honours, for tests and offline runs (cmd/coldstart
// points it at internal/fakesecretmanager). Never set it when deployed.
const secretManagerEmulatorEnv = "SECRETMANAGER_EMULATOR_HOST"

// clientOptions are the options given to the reader, or, when there are
// none, those that point the client at SECRETMANAGER_EMULATOR_HOST if it is
// set. It is read here, like the Firestore client reads its variable, so
// that the choice is made with the client, once per instance.
func (r *secretManager) clientOptions() []option.ClientOption {
	if len(r.opts) > 0 {
		return r.opts
	}
	host := os.Getenv(secretManagerEmulatorEnv)
	if host == "" {
		return nil
	}
	return []option.ClientOption{
		option.WithEndpoint(host),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}
}

func (r *secretManager) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}
