package chatauth

import "time"

// Collections of DESIGN.md's data layout.
const (
	tokensCollection     = "chatauth_tokens"
	usedStatesCollection = "chatauth_used_states"
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
}

// usedStateRecord marks a consent state as used:
// chatauth_used_states/{hash(state)}. It is created by the callback that
// uses the state, and only then: a consent that was started and abandoned
// leaves nothing in the store. The state itself is never stored, only its
// hash. expireAt is when the marker may go (a Firestore TTL policy
// deletes it; the embedded store purges it): by then the state's flow
// cookie is refused as expired anyway.
type usedStateRecord struct {
	ExpireAt time.Time `firestore:"expireAt" json:"expireAt"`
}
