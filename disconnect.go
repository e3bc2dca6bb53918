package chatauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// disconnectRequest is Disconnect's body.
type disconnectRequest struct {
	User string `json:"user"`
}

// handleDisconnect serves POST /Disconnect: it revokes the user's consent
// at Google, then deletes the record. The caller is authenticated exactly
// as for CreateSpace. A consent given after the request was signed is not
// ended (signedBefore): a replayed Disconnect answers 409 and does
// nothing. An email ends exactly the account it names when the request
// arrives.
func (s *server) handleDisconnect(w http.ResponseWriter, r *http.Request) error {
	var req disconnectRequest
	c, err := s.webhookRequest(w, r, &req)
	if err != nil {
		return err
	}
	if !validUser(req.User) {
		return errorf(statusInvalidArgument, `"user" must be "users/{numeric id}" or an email address`)
	}
	user, _, err := c.actAs(req.User)
	if err != nil {
		return err
	}
	ctx := r.Context()
	rec, err := s.consents.findRecord(ctx, user)
	if errors.Is(err, errNotFound) {
		return wrapError(statusNotFound, err, "no consent is stored for %s", req.User)
	}
	if err != nil {
		return err
	}
	const what = "end that consent"
	if err := c.signedBefore(rec, what); err != nil {
		return err
	}
	// The record is deleted only if it is still the consent just revoked:
	// one given meanwhile (after the request was signed) is kept.
	err = s.disconnect(ctx, rec, "webhook", func(cur *tokenRecord) error {
		if !cur.ConsentedAt.Equal(rec.ConsentedAt) {
			return c.signedBefore(cur, what)
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": "users/" + rec.Sub, "email": rec.Email, "disconnected": true})
	return nil
}

// disconnect ends rec's consent: it revokes the refresh token at Google,
// then deletes the record, subject to check as deleteToken applies it
// (nil: whatever the record holds then). It serves Disconnect and Chat's
// /disconnect; caller names which in the log line.
func (s *server) disconnect(ctx context.Context, rec *tokenRecord, caller string, check func(cur *tokenRecord) error) error {
	if err := s.revoke(ctx, rec.RefreshToken); err != nil {
		return err
	}
	if err := s.store.deleteToken(ctx, rec.Sub, check); err != nil {
		return err
	}
	loggerFrom(ctx).Info("consent revoked and deleted", "sub", rec.Sub, "caller", caller)
	return nil
}

// revoke revokes a token at Google. A token Google already considers
// invalid counts as revoked; any other failure keeps the record, so that a
// consent is never forgotten while still live at Google.
func (s *server) revoke(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.RevokeURL, strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.http.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return wrapError(statusDeadlineExceeded, err, "Google's revocation endpoint did not answer in time; nothing was deleted, try again")
		}
		return wrapError(statusUpstreamError, err, "Google's revocation endpoint could not be reached; nothing was deleted, try again")
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error string `json:"error"`
	}
	json.Unmarshal(b, &e)
	if resp.StatusCode == http.StatusBadRequest && e.Error == "invalid_token" {
		return nil // already revoked or expired
	}
	return wrapError(statusUpstreamError, fmt.Errorf("revoke: HTTP %d %q", resp.StatusCode, e.Error),
		"Google's revocation endpoint failed (HTTP %d); nothing was deleted, try again", resp.StatusCode)
}
