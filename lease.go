package chatauth

import (
	"context"
	"crypto/rand"
	"errors"
	"time"

	"github.com/googleapis/gax-go/v2"
)

// A refresh is taken under a lease on the user's token record, so that
// one refresh serves every instance (README.md, "How it works"): the
// instance that claims the lease calls the token endpoint and saves, and
// the others re-read the record until the saved token appears, instead of
// calling Google themselves. Within an instance, the refreshes singleflight
// group already makes one caller per user; the lease does the same across
// instances.
//
// Clocks: a claim lapses at RefreshLeaseUntil by the claimant's clock,
// and other instances judge it by theirs. Instances are assumed to agree
// to well within the lease's length (Google's servers keep their clocks in
// step to milliseconds; the default lease is ten seconds). Skew can only
// cost a refresh, never a consent: an instance whose clock runs ahead
// takes over early and refreshes a second time, one that runs behind
// waits longer (at most for its request's deadline), and every save checks
// that the consent it refreshed is still the stored one, whatever the
// lease says.

// leaseTiming is how long a claim lasts and how often a waiter looks
// again. Tests set it through serverOptions.
type leaseTiming struct {
	// length is how long a claim lasts. It also bounds the holder's token
	// call, so a holder that is still working has not lost its lease to
	// its own slowness.
	length time.Duration
	// firstWait and maxWait are a waiter's backoff between re-reads:
	// jittered, doubling from firstWait up to maxWait.
	firstWait, maxWait time.Duration
}

// The default lease: long enough for any answer of Google's token endpoint
// (typically 0.1–0.3 s), short enough that a user whose refreshing
// instance died is served again within seconds. A waiter's first re-read
// comes after at most 25 ms, and the pause grows to at most 100 ms, so a
// waiter learns of a saved token soon after it is saved (BENCHMARKS.md)
// while its instance reads the record about ten times a second at most.
const (
	defaultLeaseLength    = 10 * time.Second
	defaultLeaseFirstWait = 25 * time.Millisecond
	defaultLeaseMaxWait   = 100 * time.Millisecond
)

// withDefaults fills in what is not set.
func (l leaseTiming) withDefaults() leaseTiming {
	if l.length <= 0 {
		l.length = defaultLeaseLength
	}
	if l.firstWait <= 0 {
		l.firstWait = defaultLeaseFirstWait
	}
	if l.maxWait < l.firstWait {
		l.maxWait = max(defaultLeaseMaxWait, l.firstWait)
	}
	return l
}

// backoff is a waiter's pause schedule.
func (l leaseTiming) backoff() gax.Backoff {
	return gax.Backoff{Initial: l.firstWait, Max: l.maxWait, Multiplier: 2}
}

// leaseHeld reports whether another refresh holds rec's lease at now.
func leaseHeld(rec *tokenRecord, now time.Time) bool {
	return rec.RefreshLease != "" && now.Before(rec.RefreshLeaseUntil)
}

// clearLease removes the claim from a record about to be written.
func clearLease(rec *tokenRecord) {
	rec.RefreshLease, rec.RefreshLeaseUntil = "", time.Time{}
}

// sameConsent reports whether cur is still the consent that rec was read
// from: the same refresh token, written by the same write. A claim does not
// change updatedAt; a re-consent, a saved refresh and needs_reauth do. The
// times are compared for equality, not order, so that a writer whose clock
// runs behind is not mistaken for an older one.
func sameConsent(cur, rec *tokenRecord) bool {
	return cur.RefreshToken == rec.RefreshToken && cur.UpdatedAt.Equal(rec.UpdatedAt)
}

// claimLease claims the lease on sub's record for one refresh, in a
// transaction, unless the record no longer needs one by then (want
// reports a token the caller can use) or another claim holds it. It
// returns the record as claimed, or nil and the record as it found it (nil
// when there is none) for the caller to look at again.
func (c *consents) claimLease(ctx context.Context, sub string, want func(*tokenRecord) bool) (claimed, found *tokenRecord, err error) {
	id := rand.Text()
	err = c.store.updateToken(ctx, sub, func(cur *tokenRecord) (*tokenRecord, error) {
		claimed, found = nil, cur
		now := c.now()
		if cur == nil || cur.Status == tokenNeedsReauth || want(cur) || leaseHeld(cur, now) {
			return nil, nil
		}
		next := *cur
		next.RefreshLease, next.RefreshLeaseUntil = id, now.Add(c.lease.length)
		claimed = &next
		return &next, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return claimed, found, nil
}

// releaseLease gives up the lease of rec, the record as claimed, after a
// refresh that saved nothing, so that the next caller refreshes at once
// instead of waiting for the lease to lapse. A lease another refresh has
// taken over since is left alone. Failing to release only delays the next
// refresh until the lease lapses, so it is logged, not returned.
func (c *consents) releaseLease(ctx context.Context, rec *tokenRecord) {
	err := c.store.updateToken(ctx, rec.Sub, func(cur *tokenRecord) (*tokenRecord, error) {
		if cur == nil || cur.RefreshLease != rec.RefreshLease {
			return nil, nil
		}
		next := *cur
		clearLease(&next)
		return &next, nil
	})
	if err != nil {
		loggerFrom(ctx).Warn("could not release the refresh lease; it lapses on its own", "sub", rec.Sub, "error", err.Error())
	}
}

// errRefreshFailedElsewhere is the cause given to the requests that waited
// for another instance's refresh when it ended without a token.
var errRefreshFailedElsewhere = errors.New("the refresh this request waited for released its lease without saving a token")

// refreshFailedElsewhere answers the requests that waited for a refresh
// whose token call failed: the same status the refreshing request got for
// a failure that is worth retrying, without a token call of their own.
func refreshFailedElsewhere() *Error {
	return wrapError(statusUpstreamError, errRefreshFailedElsewhere, "Google's token endpoint failed while this user's access token was being refreshed; try again")
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
