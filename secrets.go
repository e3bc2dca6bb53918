package chatauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/api/option"
)

// secretVersionName matches a Secret Manager version name. Anything else
// in a secret reference is a local file path.
var secretVersionName = lazyRegexp(`^projects/[^/]+/secrets/[^/]+/versions/[^/]+$`)

// secretReader reads secret references. The Secret Manager client is made
// on first use only, so a local run with file secrets never dials Google.
type secretReader struct {
	opts []option.ClientOption
	// wait bounds one read, retries included; zero means 10 seconds.
	wait time.Duration

	// secretManager holds the client (secretmanager.go); a build with
	// -tags localonly has none (localonly.go).
	secretManager
}

// read returns the secret a reference names. Errors name the reference
// (a resource name or path, never the secret) and keep the cause.
func (r *secretReader) read(ctx context.Context, ref string) ([]byte, error) {
	if !secretVersionName().MatchString(ref) {
		b, err := os.ReadFile(ref)
		if err != nil {
			return nil, fmt.Errorf("secrets: read file %s: %w", ref, err)
		}
		return b, nil
	}
	return r.access(ctx, ref)
}

// errSecretsUnavailable marks a failure to read a secret that may pass.
var errSecretsUnavailable = errors.New("secret manager unavailable")

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
