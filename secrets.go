package chatauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"regexp"
	"slices"
	"strings"
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

// secretVersionName matches a Secret Manager version name. Anything else
// in a secret reference is a local file path.
var secretVersionName = regexp.MustCompile(`^projects/[^/]+/secrets/[^/]+/versions/[^/]+$`)

// secretReader reads secret references. The Secret Manager client is made
// on first use only, so a local run with file secrets never dials Google.
type secretReader struct {
	opts []option.ClientOption
	// wait bounds one read, retries included; zero means 10 seconds.
	wait time.Duration

	mu     sync.Mutex
	client *secretmanager.Client
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// read returns the secret a reference names. Errors name the reference
// (a resource name or path, never the secret) and keep the cause.
func (r *secretReader) read(ctx context.Context, ref string) ([]byte, error) {
	if !secretVersionName.MatchString(ref) {
		b, err := os.ReadFile(ref)
		if err != nil {
			return nil, fmt.Errorf("secrets: read file %s: %w", ref, err)
		}
		return b, nil
	}
	c, err := r.smClient(ctx)
	if err != nil {
		return nil, err
	}
	// The client retries Unavailable until its context ends; a cold start
	// gives up sooner and lets the next request try again.
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	resp, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: ref})
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

func (r *secretReader) timeout() time.Duration {
	if r.wait > 0 {
		return r.wait
	}
	return 10 * time.Second
}

// errSecretsUnavailable marks a failure to read a secret that may pass.
var errSecretsUnavailable = errors.New("secret manager unavailable")

func (r *secretReader) smClient(ctx context.Context) (*secretmanager.Client, error) {
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
func (r *secretReader) clientOptions() []option.ClientOption {
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

func (r *secretReader) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}

// clientSecrets is the part of Google's OAuth client JSON the function uses.
type clientSecrets struct {
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret"`
	AuthURI      string   `json:"auth_uri"`
	TokenURI     string   `json:"token_uri"`
	RedirectURIs []string `json:"redirect_uris"`
}

const clientJSONHint = `expected a JSON object with a single "web" or "installed" property: download the client JSON again from the Google Cloud console`

// parseClientSecrets parses the client JSON downloaded from the Google Cloud
// console. Its errors describe the shape that was wrong and never quote the
// input, which holds the client secret.
func parseClientSecrets(data []byte) (*clientSecrets, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(data), &top); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("client secrets: not valid JSON (syntax error at byte %d): %s", se.Offset, clientJSONHint)
		}
		return nil, fmt.Errorf("client secrets: not a JSON object: %s", clientJSONHint)
	}
	var keys []string
	for k := range top {
		keys = append(keys, k)
	}
	raw, ok := top["web"]
	if !ok {
		raw, ok = top["installed"]
	}
	if !ok || len(top) != 1 {
		return nil, fmt.Errorf("client secrets: found properties %q: %s", keys, clientJSONHint)
	}
	var cs clientSecrets
	if err := json.Unmarshal(raw, &cs); err != nil {
		return nil, fmt.Errorf("client secrets: %q is not an object of strings: %s", keys[0], clientJSONHint)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"client_id", cs.ClientID}, {"client_secret", cs.ClientSecret},
		{"auth_uri", cs.AuthURI}, {"token_uri", cs.TokenURI},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("client secrets: %q lacks %s: download the client JSON again from the Google Cloud console", keys[0], strings.Join(missing, ", "))
	}
	return &cs, nil
}

// parseWebhookSecrets splits the WEBHOOK_SECRETS payload: one secret per
// line, blank lines and surrounding space ignored, so that two lines are
// two secrets during a rotation.
func parseWebhookSecrets(data []byte) ([][]byte, error) {
	var out [][]byte
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if len(line) < 16 {
			return nil, errors.New("webhook secrets: a secret is shorter than 16 characters; generate one with `openssl rand -hex 32`")
		}
		out = append(out, []byte(line))
	}
	if len(out) == 0 {
		return nil, errors.New("webhook secrets: the secret holds no secret; put one per line (`openssl rand -hex 32`)")
	}
	return out, nil
}
