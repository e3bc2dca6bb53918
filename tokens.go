package chatauth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// expiryMargin is how long before its expiry an access token is refreshed,
// so that one handed to the Chat API does not expire on the way.
const expiryMargin = time.Minute

// errUserUnknown marks a user with no stored consent.
var errUserUnknown = errors.New("no stored consent")

// accessToken returns an access token for sub that is valid for at least
// expiryMargin: token, read with its expiry, or a refreshed one. force
// refreshes even a token that looks valid (the Chat API just refused it).
func (c *consents) accessToken(ctx context.Context, sub, token string, expiry time.Time, force bool) (string, error) {
	if !force && token != "" && c.now().Add(expiryMargin).Before(expiry) {
		return token, nil
	}
	// Concurrent requests for one user on this instance share one refresh.
	return sharedFetch(ctx, &c.refreshes, sub, 30*time.Second, func(ctx context.Context) (string, error) {
		return c.refresh(ctx, sub, force)
	})
}

// sharedFetch runs fetch once for all concurrent callers with the same key.
// The fetch runs on a context detached from the first caller's, bounded by
// timeout, so that a caller who gives up does not fail the others, and the
// result is still saved (or cached) for them.
func sharedFetch(ctx context.Context, g *singleflight.Group, key string, timeout time.Duration, fetch func(context.Context) (string, error)) (string, error) {
	ch := g.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		return fetch(ctx)
	})
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	}
}

// refresh gets a new access token for sub and saves it, or waits for the
// one another instance is getting (lease.go). It reads the record first:
// another request or instance may have refreshed already. With force, the
// access token stored when it began counts as refused, and only another
// one will do.
//
// A refresh under way elsewhere is waited for by re-reading the record —
// plain reads, so that waiters never contend with the holder's
// transactions — with jittered backoff until its token is saved, the
// record is marked needs_reauth or removed, the lease is released without
// a token (the holder's token call failed: the waiters answer as it did,
// UPSTREAM_ERROR, and the next request refreshes afresh), or the lease
// lapses (its holder died: this call takes over), for as long as ctx
// allows.
func (c *consents) refresh(ctx context.Context, sub string, force bool) (string, error) {
	var (
		stale    string // with force: the refused access token
		waitedOn string // the claim this call has seen held by another refresh
		bo       = c.lease.backoff()
	)
	rec, err := c.store.getToken(ctx, sub)
	if force && err == nil {
		stale = rec.AccessToken
	}
	usable := func(r *tokenRecord) bool {
		return r.AccessToken != "" && (!force || r.AccessToken != stale) && c.now().Add(expiryMargin).Before(r.Expiry)
	}
	for {
		switch {
		case errors.Is(err, errNotFound):
			return "", c.notAuthorized("users/"+sub, "", errUserUnknown)
		case err != nil:
			return "", err
		case rec.Status == tokenNeedsReauth:
			return "", c.notAuthorized("users/"+sub, rec.Email, errors.New(rec.LastError))
		case usable(rec):
			if waitedOn != "" {
				loggerFrom(ctx).Info("access token refreshed by another instance", "sub", sub)
			}
			return rec.AccessToken, nil
		case leaseHeld(rec, c.now()):
			waitedOn = rec.RefreshLease
			if err := pause(ctx, bo.Pause()); err != nil {
				return "", err
			}
			rec, err = c.store.getToken(ctx, sub)
			continue
		case waitedOn != "" && rec.RefreshLease == "":
			return "", refreshFailedElsewhere()
		}
		// No claim, or a lapsed one: claim it.
		claimed, found, cerr := c.claimLease(ctx, sub, usable)
		if cerr != nil {
			return "", cerr
		}
		if claimed != nil {
			return c.refreshHolding(ctx, claimed)
		}
		if rec, err = found, nil; found == nil {
			err = errNotFound
		}
	}
}

// refreshHolding calls the token endpoint for rec, whose lease this call
// holds, and saves the new token, which also ends the lease. The token
// endpoint is called outside any transaction, bounded by the lease's
// length; the save then checks that the consent is still the one
// refreshed, so a re-consent made meanwhile is never overwritten.
func (c *consents) refreshHolding(ctx context.Context, rec *tokenRecord) (string, error) {
	sub := rec.Sub
	tctx, cancel := context.WithTimeout(ctx, c.lease.length)
	defer cancel()
	src := c.oauth.TokenSource(context.WithValue(tctx, oauth2.HTTPClient, c.http), &oauth2.Token{RefreshToken: rec.RefreshToken})
	tok, err := src.Token()
	if err != nil {
		return "", c.refreshError(ctx, rec, err)
	}

	now := c.now()
	err = c.store.updateToken(ctx, sub, func(cur *tokenRecord) (*tokenRecord, error) {
		if cur == nil {
			// Disconnected while we refreshed: do not bring it back.
			return nil, c.notAuthorized("users/"+sub, rec.Email, errors.New("record deleted during refresh"))
		}
		if !sameConsent(cur, rec) {
			// A re-consent or another instance's refresh is newer: keep it.
			return nil, nil
		}
		next := *cur
		next.AccessToken = tok.AccessToken
		next.Expiry = c.expiry(tok)
		if tok.RefreshToken != "" {
			next.RefreshToken = tok.RefreshToken
		}
		if scope, _ := tok.Extra("scope").(string); scope != "" {
			next.Scopes = strings.Fields(scope)
		}
		next.Status, next.LastError = tokenActive, ""
		next.UpdatedAt, next.LastRefreshAt = now, now
		clearLease(&next)
		return &next, nil
	})
	if err != nil {
		// The new access token is good even if saving it failed; the lease
		// lapses on its own and the next request refreshes again rather
		// than lose anything.
		var e *Error
		if errors.As(err, &e) {
			return "", err
		}
		loggerFrom(ctx).Warn("refreshed token not saved", "sub", sub, "error", err.Error())
	}
	loggerFrom(ctx).Info("access token refreshed", "sub", sub)
	return tok.AccessToken, nil
}

// expiry is when tok expires by the server's clock. The oauth2 package
// computes Token.Expiry from the wall clock; expires_in is used instead
// when present, so that one clock rules every expiry decision.
func (c *consents) expiry(tok *oauth2.Token) time.Time {
	if tok.ExpiresIn > 0 {
		return c.now().Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	return tok.Expiry
}

// refreshError maps a failed refresh of rec, the record as claimed.
// invalid_grant means the consent is gone (revoked, expired, password
// changed): the record is marked needs_reauth — never retried — and the
// user is asked to consent again; the requests waiting on the lease read
// the mark and get the same answer. Any other failure releases the lease
// and keeps the record as it was, so the next request tries again.
func (c *consents) refreshError(ctx context.Context, rec *tokenRecord, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
		now := c.now()
		desc := "invalid_grant"
		if re.ErrorDescription != "" {
			desc += ": " + re.ErrorDescription
		}
		uerr := c.store.updateToken(ctx, rec.Sub, func(cur *tokenRecord) (*tokenRecord, error) {
			if cur == nil || !sameConsent(cur, rec) {
				return nil, nil // deleted, or re-consented meanwhile
			}
			next := *cur
			next.Status, next.LastError, next.UpdatedAt = tokenNeedsReauth, desc, now
			next.AccessToken, next.Expiry = "", time.Time{}
			clearLease(&next)
			return &next, nil
		})
		if uerr != nil {
			// The lease lapses on its own; until then the waiters wait.
			loggerFrom(ctx).Warn("could not mark token needs_reauth", "sub", rec.Sub, "error", uerr.Error())
		}
		return c.notAuthorized("users/"+rec.Sub, rec.Email, errors.New("token endpoint: "+desc))
	}
	c.releaseLease(ctx, rec)
	return exchangeError(err, c.publicURL, rec.Email)
}

// tokenCacheTTL bounds how long an instance serves a user's access token
// from memory instead of reading the store. A write on this
// instance (a refresh, a new consent, Disconnect, needs_reauth) takes
// effect at once; a write on another instance takes effect within the
// bound. In practice a Disconnect elsewhere takes effect at once too: it
// revokes the grant at Google, so the Chat API refuses the cached access
// token, and the forced refresh that follows reads the store.
const tokenCacheTTL = 5 * time.Second

// tokenCacheMax bounds the users kept; when full, the cache starts over.
const tokenCacheMax = 4096

// tokenCache holds, per user as a request named them ("users/{id}" or a
// lowercase email), the part of a usable stored consent that a warm
// CreateSpace needs: never the refresh token. Safe for concurrent use; a
// nil *tokenCache, the cache turned off, keeps nothing.
type tokenCache struct {
	ttl time.Duration

	mu      sync.Mutex
	gen     uint64 // counts token writes on this instance
	entries map[string]cachedToken
}

type cachedToken struct {
	sub, email, accessToken string
	expiry                  time.Time // the access token's
	until                   time.Time // the entry's
	emailSince              time.Time // for an entry by email: tokenRecord.EmailSince
}

// newTokenCache returns a cache with the bound ttl, or nil (off) for a
// bound that is not positive.
func newTokenCache(ttl time.Duration) *tokenCache {
	if ttl <= 0 {
		return nil
	}
	return &tokenCache{ttl: ttl, entries: make(map[string]cachedToken)}
}

// get returns user's entry if it is younger than the bound and its access
// token is good for at least expiryMargin more.
func (c *tokenCache) get(user string, now time.Time) (cachedToken, bool) {
	if c == nil {
		return cachedToken{}, false
	}
	c.mu.Lock()
	e, ok := c.entries[user]
	c.mu.Unlock()
	if !ok || !now.Before(e.until) || !now.Add(expiryMargin).Before(e.expiry) {
		return cachedToken{}, false
	}
	return e, true
}

// generation is the count of token writes so far; put takes it from
// before the store read, so that a read that raced a write is not kept.
func (c *tokenCache) generation() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put keeps rec's access token for user, unless a token write happened
// since gen was taken.
func (c *tokenCache) put(user string, gen uint64, rec *tokenRecord, now time.Time) {
	if c == nil || rec.AccessToken == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.entries) >= tokenCacheMax {
		clear(c.entries)
	}
	c.entries[user] = cachedToken{sub: rec.Sub, email: rec.Email, accessToken: rec.AccessToken, expiry: rec.Expiry, until: now.Add(c.ttl), emailSince: rec.EmailSince}
}

// forget drops every entry of sub, and the entry of the name email (an
// account's email, which may have named another sub until now), and fails
// the puts of reads that started before it.
func (c *tokenCache) forget(sub, email string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for user, e := range c.entries {
		if e.sub == sub || user == email {
			delete(c.entries, user)
		}
	}
}

// forgettingStore is the server's token store: every token write through
// it also drops the writer's user from the instance's cache, before the
// write (so no request starts from the old token after it) and after it
// (so no read that raced it is kept). A consent also drops the entry of
// its email, which until then may have named another account. Every
// tokenStore method is written out, so a new one is a decision here.
type forgettingStore struct {
	inner tokenStore
	cache *tokenCache
}

var _ tokenStore = (*forgettingStore)(nil)

func newForgettingStore(inner tokenStore, cache *tokenCache) *forgettingStore {
	return &forgettingStore{inner: inner, cache: cache}
}

// unwrap is the store forgettingStore wraps.
func (s *forgettingStore) unwrap() tokenStore { return s.inner }

// markStateUsed writes no token.
func (s *forgettingStore) markStateUsed(ctx context.Context, key string, expireAt time.Time) error {
	return s.inner.markStateUsed(ctx, key, expireAt)
}

// getToken reads; the cache is filled by its users, not here.
func (s *forgettingStore) getToken(ctx context.Context, sub string) (*tokenRecord, error) {
	return s.inner.getToken(ctx, sub)
}

// tokenByEmail reads.
func (s *forgettingStore) tokenByEmail(ctx context.Context, email string) (*tokenRecord, error) {
	return s.inner.tokenByEmail(ctx, email)
}

func (s *forgettingStore) updateToken(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	s.cache.forget(sub, "")
	defer s.cache.forget(sub, "")
	return s.inner.updateToken(ctx, sub, fn)
}

func (s *forgettingStore) putConsent(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	var email string
	s.cache.forget(sub, "")
	defer func() { s.cache.forget(sub, email) }()
	return s.inner.putConsent(ctx, sub, func(cur *tokenRecord) (*tokenRecord, error) {
		next, err := fn(cur)
		if next != nil {
			email = next.Email
		}
		return next, err
	})
}

// listTokens only reads, and reads no token: the cache is not involved.
func (s *forgettingStore) listTokens(ctx context.Context, q tokenQuery) ([]*tokenRecord, error) {
	return s.inner.listTokens(ctx, q)
}

func (s *forgettingStore) deleteToken(ctx context.Context, sub string, check func(cur *tokenRecord) error) error {
	s.cache.forget(sub, "")
	defer s.cache.forget(sub, "")
	return s.inner.deleteToken(ctx, sub, check)
}

func (s *forgettingStore) close() error { return s.inner.close() }
