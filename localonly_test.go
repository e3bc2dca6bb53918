//go:build localonly

package chatauth

import (
	"time"

	"cloud.google.com/go/firestore"
)

// firestoreStore stands in for the Firestore store, which a build with
// -tags localonly leaves out (localonly.go), so that the tests that look
// for one under a store's wrappers still compile and `go vet -tags
// localonly` checks the package with its tests. No store is ever one.
// The tests themselves run in the full build, against both stores.
type firestoreStore struct {
	tokenStore
	client  *firestore.Client
	timeout time.Duration
}
