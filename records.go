package chatauth

import (
	"net/url"
	"time"
)

// Collections of the data layout (README.md, "Data").
const (
	tokensCollection     = "chatauth_tokens"
	usedStatesCollection = "chatauth_used_states"
	emailsCollection     = "chatauth_emails"
)

// Token record statuses.
const (
	tokenActive      = "active"
	tokenNeedsReauth = "needs_reauth"
)

// tokenRecord is one user's stored consent: chatauth_tokens/{sub}. The
// field names are the data layout of README.md, "Data", shared by both
// stores.
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
	// ConsentedAt is when the account last consented: set by every
	// consent, never by a refresh. A signed request is compared with it
	// (signedBefore, callers.go), so a replay cannot act on a consent
	// given after it was signed. Zero on records written before it
	// existed.
	ConsentedAt time.Time `firestore:"consentedAt" json:"consentedAt"`

	// EmailSince is not stored in the record: tokenByEmail sets it to when
	// the email it was found by came to name this account (emailRecord).
	EmailSince time.Time `firestore:"-" json:"-"`

	// RefreshLease and RefreshLeaseUntil are the claim on the refresh
	// under way, if any (lease.go): a random id per claim, and when the
	// claim lapses by the claimant's clock. Both are absent when no refresh
	// holds the record; every token write other than a claim removes them.
	RefreshLease      string    `firestore:"refreshLease,omitempty" json:"refreshLease,omitempty"`
	RefreshLeaseUntil time.Time `firestore:"refreshLeaseUntil,omitempty" json:"refreshLeaseUntil,omitzero"`
}

// emailRecord is chatauth_emails/{lowercase email}: which account the
// email names. An email names at most one consent, the last one given with
// it (README.md, "Identity"); the record is written in the same transaction
// as that consent and only by a consent, so a refresh of another account's
// record never moves it. Sub is empty once the account it named has
// disconnected: the email then names nobody, even if an older account's
// record still carries it; Former keeps who that was.
type emailRecord struct {
	Sub         string    `firestore:"sub" json:"sub"`
	ConsentedAt time.Time `firestore:"consentedAt" json:"consentedAt"`
	// Since is when the email came to name Sub from naming another
	// account (or from naming nobody after another account disconnected);
	// zero when Sub is the first account it named. A consent by the
	// account it already names keeps it.
	Since  time.Time `firestore:"since" json:"since"`
	Former string    `firestore:"former,omitempty" json:"former,omitempty"`
}

// nextEmailRecord is the email record a consent by sub at consentedAt
// writes over prev (nil when the email had none).
func nextEmailRecord(prev *emailRecord, sub string, consentedAt time.Time) *emailRecord {
	next := &emailRecord{Sub: sub, ConsentedAt: consentedAt}
	switch {
	case prev == nil:
		// The first account the email names: no request can have meant
		// another.
	case prev.Sub == sub || prev.Sub == "" && prev.Former == sub:
		next.Since = prev.Since
	default:
		next.Since = consentedAt
	}
	return next
}

// emptiedEmailRecord is the email record that leaves it naming nobody,
// once prev's account has disconnected.
func emptiedEmailRecord(prev *emailRecord) *emailRecord {
	return &emailRecord{ConsentedAt: prev.ConsentedAt, Since: prev.Since, Former: prev.Sub}
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

// checkDelete runs deleteToken's check, if any, on the record without its
// tokens: the check decides by the record's times and names, and need not
// (and, through encryptedStore, could not) read a token.
func checkDelete(check func(*tokenRecord) error, cur *tokenRecord) error {
	if check == nil {
		return nil
	}
	c := *cur
	c.RefreshToken, c.AccessToken = "", ""
	return check(&c)
}

// emailKey is the key of an email's record in chatauth_emails: the
// lowercase email, with any character a Firestore document id cannot hold
// ('/') escaped as in a URL path segment.
func emailKey(email string) string { return url.PathEscape(email) }

// soleLegacyRecord is the record an email without an email record names:
// the only one of recs, if it has no consentedAt. A record with one was
// written by a consent, which wrote an email record too; without that
// email record, the account has since disconnected or moved on.
func soleLegacyRecord(recs []*tokenRecord) *tokenRecord {
	if len(recs) != 1 || !recs[0].ConsentedAt.IsZero() {
		return nil
	}
	return recs[0]
}

// tokenQuery selects a page of records for listTokens.
type tokenQuery struct {
	status string // a token record status, or "" for every record
	after  string // the sub the previous page ended with, or "" for the first page
	limit  int    // at most this many records, > 0
}

// withoutTokens is rec with its token fields emptied, for a listing.
func withoutTokens(rec *tokenRecord) *tokenRecord {
	c := *rec
	c.RefreshToken, c.AccessToken = "", ""
	return &c
}
