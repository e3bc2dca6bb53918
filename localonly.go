//go:build localonly

package chatauth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/api/option"
)

// A build with -tags localonly links none of the Google Cloud client
// libraries that only the Firestore setup uses: not Firestore's
// (store.go), not Secret Manager's (secretmanager.go), not Cloud KMS's
// (fullbuild.go). A runner on the embedded store with its secrets in
// files uses none of them, and would pay for their package initialisation
// at every cold start (BENCHMARKS.md, "Cold start"). This file holds what
// such a build does instead: it refuses the settings that need them, and
// says which build to use. Every seam here has its twin, with the same
// signature, in fullbuild.go, which Cloud Functions deploys.

var (
	errNoFirestore = errors.New("STORE=firestore needs the full build: this binary was built with -tags localonly, which leaves out the Firestore client; build it without -tags localonly, or set STORE=local")
	errNoKMS       = errors.New(tokenKeysetKMSKeyVar + " needs the full build: this binary was built with -tags localonly, which leaves out the Cloud KMS client; build it without -tags localonly, or unset " + tokenKeysetKMSKeyVar + " and give a cleartext keyset")
)

// noSecretManager is the refusal of a Secret Manager reference. It names
// the reference, a resource name, never a secret.
func noSecretManager(ref string) error {
	return fmt.Errorf("the Secret Manager reference %s needs the full build: this binary was built with -tags localonly, which leaves out the Secret Manager client; build it without -tags localonly, or give the path of a file that holds the secret", ref)
}

// CheckBuild reports, as a *ConfigError, the settings in the environment
// that need a Google client this build leaves out. The functions refuse
// those settings on their first request too; cmd/local calls CheckBuild
// before it serves, so that it stops at once and says why. (In the full
// build, fullbuild.go, it reads nothing and is always nil.)
func CheckBuild() error {
	c, _ := loadConfig(os.Getenv)
	if problems := unbuilt(c); len(problems) > 0 {
		return &ConfigError{Problems: problems}
	}
	return nil
}

// unbuilt lists the settings of c that need a client this build leaves
// out. loadConfig reports them with every other problem, and CheckBuild
// alone, so that cmd/local stops before serving.
func unbuilt(c Config) []string {
	var problems []string
	if c.Store == storeFirestore {
		problems = append(problems, errNoFirestore.Error())
	}
	for _, s := range []struct{ name, ref string }{
		{"CLIENT_SECRETS", c.ClientSecrets},
		{"WEBHOOK_SECRETS", c.WebhookSecrets},
		{"TOKEN_KEYSET", c.TokenKeyset},
		{"DELEGATION_KEY", c.DelegationKey},
	} {
		if secretVersionName().MatchString(s.ref) {
			problems = append(problems, s.name+": "+noSecretManager(s.ref).Error())
		}
	}
	if c.TokenKeysetKMSKey != "" {
		problems = append(problems, errNoKMS.Error())
	}
	return problems
}

// openFirestore refuses: this build has no Firestore client.
func openFirestore(context.Context, string, string, time.Duration, ...option.ClientOption) (tokenStore, error) {
	return nil, fmt.Errorf("store: %w", errNoFirestore)
}

// newSecretVersions returns a reader that refuses every reference: this
// build has no Secret Manager client.
func newSecretVersions([]option.ClientOption, time.Duration) secretVersions {
	return noSecretVersions{}
}

// noSecretVersions refuses Secret Manager references.
type noSecretVersions struct{}

func (noSecretVersions) access(_ context.Context, ref string) ([]byte, error) {
	return nil, fmt.Errorf("secrets: %w", noSecretManager(ref))
}

func (noSecretVersions) close() error { return nil }

// kmsAEAD refuses a KMS-wrapped TOKEN_KEYSET: this build has no Cloud KMS
// client.
func kmsAEAD(context.Context, string, []option.ClientOption) (kek tink.AEAD, closeKMS func() error, err error) {
	return nil, nil, fmt.Errorf("crypto: %w", errNoKMS)
}
