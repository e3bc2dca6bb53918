package chatauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// consents owns users' stored consents: finding one (through the
// instance's token cache), refreshing its access token under the lease
// shared by instances (tokens.go, lease.go), and saving a new one. It is
// built once per instance with what it needs, and is safe for concurrent
// use.
type consents struct {
	store     tokenStore
	cache     *tokenCache
	oauth     *oauth2.Config
	http      *http.Client // calls the token endpoint
	lease     leaseTiming
	publicURL string // PUBLIC_URL: where a user is sent to consent (again)
	now       func() time.Time

	refreshes singleflight.Group // one refresh per user at a time on this instance
}

// storedConsent is a user's stored consent: the access token it had when
// read (tokens.go refreshes it).
type storedConsent struct {
	c      *consents
	sub    string
	token  string
	expiry time.Time
}

func (sc storedConsent) accessToken(ctx context.Context, force bool) (string, error) {
	return sc.c.accessToken(ctx, sc.sub, sc.token, sc.expiry, force)
}

// find is user's stored consent, from the instance's token cache when it
// has the user. email, when not empty, is the user's verified address,
// for the answer that asks them to consent.
func (c *consents) find(ctx context.Context, user, email string) (*principal, error) {
	key := user
	if !strings.HasPrefix(user, "users/") {
		key = strings.ToLower(user)
	}
	now := c.now()
	if e, ok := c.cache.get(key, now); ok {
		return &principal{Sub: e.sub, Email: e.email, via: credentialConsent, creds: storedConsent{c, e.sub, e.accessToken, e.expiry}, emailSince: e.emailSince}, nil
	}
	gen := c.cache.generation()
	rec, err := c.lookupConsent(ctx, user, email)
	if err != nil {
		return nil, err
	}
	c.cache.put(key, gen, rec, now)
	return &principal{Sub: rec.Sub, Email: rec.Email, via: credentialConsent, creds: storedConsent{c, rec.Sub, rec.AccessToken, rec.Expiry}, emailSince: rec.EmailSince}, nil
}

// save stores a new consent of the account sub, with the tokens of tok,
// as one transaction that also makes email name the account (README.md,
// "Identity"): an account that consented with it before stays reachable
// as users/{its id} only. A refresh token Google omitted (it considers
// the app authorized already) is taken from the stored record while that
// one is good; without one, the user is asked to remove the app and
// consent again.
func (c *consents) save(ctx context.Context, sub, email string, tok *oauth2.Token, scopes []string) error {
	now := c.now()
	merge := func(cur *tokenRecord) (*tokenRecord, error) {
		next := &tokenRecord{
			Sub:          sub,
			Email:        email,
			RefreshToken: tok.RefreshToken,
			AccessToken:  tok.AccessToken,
			Expiry:       c.expiry(tok),
			Scopes:       scopes,
			Status:       tokenActive,
			CreatedAt:    now,
			UpdatedAt:    now,
			ConsentedAt:  now,
		}
		if cur != nil {
			next.CreatedAt, next.LastRefreshAt = cur.CreatedAt, cur.LastRefreshAt
		}
		if next.RefreshToken == "" {
			// A missing or revoked stored token cannot be replaced by
			// nothing.
			if cur == nil || cur.RefreshToken == "" || cur.Status != tokenActive {
				return nil, errNoRefreshToken
			}
			next.RefreshToken = cur.RefreshToken
		}
		return next, nil
	}
	err := c.store.putConsent(ctx, sub, merge)
	var tde *tokenDecryptError
	if errors.As(err, &tde) {
		// The stored record cannot be opened, so nothing in it can be kept:
		// the fresh consent replaces it.
		loggerFrom(ctx).Warn("replacing a stored token that cannot be decrypted", "sub", sub, "error", err.Error())
		if err = c.store.deleteToken(ctx, sub, nil); err == nil {
			err = c.store.putConsent(ctx, sub, merge)
		}
	}
	if errors.Is(err, errNoRefreshToken) {
		return &Error{Status: statusAuthorizationRequired, AuthorizeURL: startURL(c.publicURL, email),
			Message: "Google did not send a lasting authorization for " + email + ". Remove this app at https://myaccount.google.com/connections, then connect again."}
	}
	if err != nil {
		return err
	}
	loggerFrom(ctx).Info("consent stored", "sub", sub, "newRefreshToken", tok.RefreshToken != "")
	return nil
}

// lookupConsent finds the stored consent of a user named as "users/{id}"
// or as an email. It is the one store read of a warm request. (lookupUser,
// in delegation.go, decides whether consent or delegation serves a user.)
// email, when not empty, is the user's verified address, named in the
// answer that asks them to consent.
func (c *consents) lookupConsent(ctx context.Context, user, email string) (*tokenRecord, error) {
	rec, err := c.findRecord(ctx, user)
	var tde *tokenDecryptError
	switch {
	case errors.Is(err, errNotFound):
		return nil, c.notAuthorized(user, email, errUserUnknown)
	case errors.As(err, &tde):
		// A token the keyset cannot open (a key removed too early, or a
		// tampered record) is as good as none: the user consents again,
		// which replaces the record.
		return nil, c.notAuthorized(user, email, err)
	case err != nil:
		return nil, err
	case rec.Status == tokenNeedsReauth || rec.RefreshToken == "":
		return nil, c.notAuthorized(user, rec.Email, fmt.Errorf("record %s: status %s: %s", rec.Sub, rec.Status, rec.LastError))
	}
	return rec, nil
}

// notAuthorized is the AUTHORIZATION_REQUIRED answer for a user, with the
// link that lets them consent (again).
func (c *consents) notAuthorized(user, email string, cause error) *Error {
	who := user
	if email != "" {
		who = email
	} else if !strings.HasPrefix(user, "users/") {
		email = user
	}
	return &Error{
		Status:       statusAuthorizationRequired,
		Message:      who + " has not authorized this app (or revoked it); open authorizeUrl to connect Google Chat",
		AuthorizeURL: startURL(c.publicURL, strings.ToLower(email)),
		Err:          cause,
	}
}

// findRecord reads a user's record by "users/{id}" or email, whatever its
// status.
func (c *consents) findRecord(ctx context.Context, user string) (*tokenRecord, error) {
	if id, ok := strings.CutPrefix(user, "users/"); ok {
		return c.store.getToken(ctx, id)
	}
	return c.store.tokenByEmail(ctx, strings.ToLower(user))
}
