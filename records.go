package chatauth

import "time"

// Collections of DESIGN.md's data layout.
const (
	tokensCollection = "chatauth_tokens"
	statesCollection = "chatauth_states"
)

// Token record statuses.
const (
	tokenActive      = "active"
	tokenNeedsReauth = "needs_reauth"
)

// tokenRecord is one user's stored consent: chatauth_tokens/{sub}. The
// field names are the data layout of DESIGN.md, shared by both stores.
type tokenRecord struct {
	Sub           string    `firestore:"-" json:"-"`
	Email         string    `firestore:"email" json:"email"`
	RefreshToken  string    `firestore:"refreshToken" json:"refreshToken"`
	AccessToken   string    `firestore:"accessToken" json:"accessToken"`
	Expiry        time.Time `firestore:"expiry" json:"expiry"`
	Scopes        []string  `firestore:"scopes" json:"scopes"`
	Status        string    `firestore:"status" json:"status"`
	CreatedAt     time.Time `firestore:"createdAt" json:"createdAt"`
	UpdatedAt     time.Time `firestore:"updatedAt" json:"updatedAt"`
	LastRefreshAt time.Time `firestore:"lastRefreshAt" json:"lastRefreshAt"`
	LastError     string    `firestore:"lastError" json:"lastError"`

	// RefreshLease and RefreshLeaseUntil are the claim on the refresh
	// under way, if any (lease.go): a random id per claim, and when the
	// claim lapses by the claimant's clock. Both are absent when no refresh
	// holds the record; every token write other than a claim removes them.
	RefreshLease      string    `firestore:"refreshLease,omitempty" json:"refreshLease,omitempty"`
	RefreshLeaseUntil time.Time `firestore:"refreshLeaseUntil,omitempty" json:"refreshLeaseUntil,omitzero"`
}

// stateRecord is one pending consent: chatauth_states/{hash(state)}. The
// state itself is never stored, only its hash, so a read of the store does
// not yield a usable state.
type stateRecord struct {
	Verifier   string    `firestore:"verifier" json:"verifier"`
	CookieHash string    `firestore:"cookieHash" json:"cookieHash"`
	LoginHint  string    `firestore:"loginHint" json:"loginHint"`
	CreatedAt  time.Time `firestore:"createdAt" json:"createdAt"`
	ExpireAt   time.Time `firestore:"expireAt" json:"expireAt"`

	// ChatUser and ChatRedirect come from a Chat ticket (ChatEvents): the
	// consenting account must be ChatUser ("users/{id}"), and the browser
	// then goes back to ChatRedirect.
	ChatUser     string `firestore:"chatUser,omitempty" json:"chatUser,omitempty"`
	ChatRedirect string `firestore:"chatRedirect,omitempty" json:"chatRedirect,omitempty"`
}
