package chatauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/api/option"
)

// secretVersionName matches a Secret Manager version name. Anything else
// in a secret reference is a local file path.
var secretVersionName = lazyRegexp(`^projects/[^/]+/secrets/[^/]+/versions/[^/]+$`)

// secretRefHint says what a secret reference holds; it ends the refusals
// of one, which never quote the value.
const secretRefHint = "set it to the path of a file that holds the secret, or to a Secret Manager version name, projects/P/secrets/S/versions/V"

// maxSecretRef bounds a reference: no file path or version name is
// longer (PATH_MAX is 4096 on Linux).
const maxSecretRef = 4096

// secretRefProblem reports, for loadConfig, a value of the variable name
// that cannot be a secret reference and looks like the secret itself,
// pasted where its reference belongs: several lines, control characters,
// JSON (a client, keyset or service account key file's content), or more
// than any path. The value is never quoted: it may be the secret. A
// pasted secret that looks like a file name (a hex string, say) passes
// here and is refused when read, as a path that names no file, equally
// unquoted (secretReader.read).
func secretRefProblem(name, ref string) string {
	if ref == "" {
		return ""
	}
	pasted := func(what string) string {
		return name + ": holds " + what + ", which looks like the secret itself rather than a reference to it (the value is not shown); " +
			secretRefHint + ". A secret that was pasted into the environment may have been seen: rotate it"
	}
	switch {
	case strings.HasPrefix(ref, "{") || strings.HasPrefix(ref, "["):
		return pasted("JSON")
	case strings.ContainsAny(ref, "\n\r"):
		return pasted("several lines")
	case strings.IndexFunc(ref, unicode.IsControl) >= 0:
		return pasted("control characters")
	case len(ref) > maxSecretRef:
		return pasted(fmt.Sprintf("more than %d bytes", maxSecretRef))
	}
	return ""
}

// CheckSecretReferences reports, as a *ConfigError, the secret-reference
// variables in the environment (CLIENT_SECRETS, WEBHOOK_SECRETS,
// TOKEN_KEYSET, DELEGATION_KEY) that hold what looks like a pasted secret.
// The functions refuse them on their first request too; cmd/local calls
// it before it prints anything about those variables.
func CheckSecretReferences() error {
	var problems []string
	for _, name := range secretRefNames {
		if p := secretRefProblem(name, strings.TrimSpace(os.Getenv(name))); p != "" {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return &ConfigError{Problems: problems}
	}
	return nil
}

// secretRefNames are the variables that hold secret references.
var secretRefNames = []string{"CLIENT_SECRETS", "WEBHOOK_SECRETS", "TOKEN_KEYSET", "DELEGATION_KEY"}

// secretReader reads secret references. The Secret Manager client is made
// on first use only, so a local run with file secrets never dials Google.
type secretReader struct {
	opts []option.ClientOption
	// wait bounds one read, retries included; zero means 10 seconds.
	wait time.Duration

	mu sync.Mutex
	// versions reads Secret Manager references, made on first use by
	// newSecretVersions: the build's (fullbuild.go, localonly.go).
	versions secretVersions
}

// secretVersions reads Secret Manager versions: secretManager in the full
// build, a refusal in a build with -tags localonly.
type secretVersions interface {
	access(ctx context.Context, ref string) ([]byte, error)
	close() error
}

// access reads a Secret Manager version: read calls it for a reference
// that secretVersionName matches.
func (r *secretReader) access(ctx context.Context, ref string) ([]byte, error) {
	r.mu.Lock()
	if r.versions == nil {
		r.versions = newSecretVersions(r.opts, r.wait)
	}
	v := r.versions
	r.mu.Unlock()
	return v.access(ctx, ref)
}

func (r *secretReader) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.versions == nil {
		return nil
	}
	return r.versions.close()
}

// read returns the secret that ref, the value of the variable name,
// refers to. Errors name the variable and, for Secret Manager, the
// version; never a file path, since a secret pasted where a path belongs
// reads as a path that names no file, and its error must not quote it.
func (r *secretReader) read(ctx context.Context, name, ref string) ([]byte, error) {
	if !secretVersionName().MatchString(ref) {
		b, err := os.ReadFile(ref)
		switch {
		case errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(ref, "projects/"):
			// A relative path may start with projects/ too, so this is
			// said only once no such file exists.
			return nil, fmt.Errorf("secrets: %s: no file at the path it holds, and it is not a Secret Manager version name either (the value is not shown); use projects/P/secrets/S/versions/V, with a version number or latest", name)
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("secrets: %s: no file at the path it holds (the path is not shown, in case it is a pasted secret); %s", name, secretRefHint)
		case err != nil:
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path stays out of the message
			}
			return nil, fmt.Errorf("secrets: %s: read the file it names: %w", name, err)
		}
		return b, nil
	}
	return r.access(ctx, ref)
}

// errSecretsUnavailable marks a failure to read a secret that may pass.
var errSecretsUnavailable = errors.New("secret manager unavailable")

// errSecretTimeout is the cause of a Secret Manager read's own deadline,
// kept in the error's text.
var errSecretTimeout = errors.New("no answer from Secret Manager in time")

// clientSecrets is the part of Google's OAuth client JSON the function uses.
type clientSecrets struct {
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret"`
	AuthURI      string   `json:"auth_uri"`
	TokenURI     string   `json:"token_uri"`
	RedirectURIs []string `json:"redirect_uris"`
	Type         string   `json:"-"` // "web" or "installed": the JSON's one property
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
	cs.Type = keys[0]
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
