package chatauth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Users' statuses (README.md, "Users"): a person reads "connected" where
// the record says tokenActive.
const (
	userConnected   = "connected"
	userNeedsReauth = "needs_reauth"
)

// Users' page sizes.
const (
	defaultUsersPageSize = 100
	maxUsersPageSize     = 500
)

// usersPageAAD binds a page token to Users and to the status filter it was
// issued for: a token from another listing, or edited, does not open.
const usersPageAAD = "chatauth/users-page/v1"

// usersRequest is Users' body.
type usersRequest struct {
	User      string `json:"user"`
	Status    string `json:"status"`
	PageSize  int    `json:"pageSize"`
	PageToken string `json:"pageToken"`
}

// userEntry is one consent as Users shows it: never a token, a ciphertext
// or Google's error text.
type userEntry struct {
	User        string    `json:"user"`
	Email       string    `json:"email"`
	Status      string    `json:"status"`
	Scopes      []string  `json:"scopes"`
	ConnectedAt time.Time `json:"connectedAt"`
	RefreshedAt time.Time `json:"refreshedAt,omitzero"`
}

// usersResponse is Users' answer.
type usersResponse struct {
	Users         []userEntry `json:"users"`
	NextPageToken string      `json:"nextPageToken,omitempty"`
}

// usersPage is what a page token holds, sealed: where the next page
// starts.
type usersPage struct {
	After string `json:"a"`
}

// handleUsers serves POST /Users: the stored consents, a page at a time,
// in the order of their account ids. The caller is authenticated exactly
// as for CreateSpace. An HMAC caller and a TRUSTED_CALLERS ID token see
// everyone; any other ID-token caller sees only its own account (matched
// by sub), with or without "user". It only reads, so a replay inside the
// signature window learns nothing its signer could not.
func (s *server) handleUsers(w http.ResponseWriter, r *http.Request) error {
	var req usersRequest
	c, err := s.webhookRequest(w, r, &req)
	if err != nil {
		return err
	}
	status, err := usersStatusFilter(req.Status)
	if err != nil {
		return err
	}
	switch {
	case req.PageSize < 0 || req.PageSize > maxUsersPageSize:
		return errorf(statusInvalidArgument, `"pageSize" must be between 1 and %d (default %d)`, maxUsersPageSize, defaultUsersPageSize)
	case req.PageSize == 0:
		req.PageSize = defaultUsersPageSize
	}
	user := req.User
	if user == "" && !c.trusted {
		// An untrusted ID-token caller lists itself.
		if _, _, err := c.actAs("users/" + c.sub); err != nil {
			return err
		}
		user = "users/" + c.sub
	}
	if user != "" || !c.trusted {
		if req.PageToken != "" {
			return errorf(statusInvalidArgument, `"pageToken" continues a listing of every user; send it without "user"`)
		}
		return s.oneUser(w, r, c, user, status)
	}

	q := tokenQuery{status: status, limit: req.PageSize + 1}
	if req.PageToken != "" {
		if q.after, err = s.openUsersPage(req.PageToken, req.Status); err != nil {
			return err
		}
	}
	recs, err := s.store.listTokens(r.Context(), q)
	if err != nil {
		return err
	}
	resp := usersResponse{Users: make([]userEntry, 0, min(len(recs), req.PageSize))}
	if len(recs) > req.PageSize {
		recs = recs[:req.PageSize]
		if resp.NextPageToken, err = s.sealUsersPage(recs[len(recs)-1].Sub, req.Status); err != nil {
			return err
		}
	}
	for _, rec := range recs {
		resp.Users = append(resp.Users, toUserEntry(rec))
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// oneUser answers Users for one user, as c may see it: a list of that
// consent, or an empty list when none is stored or it has another status.
func (s *server) oneUser(w http.ResponseWriter, r *http.Request, c *caller, user, status string) error {
	if !validUser(user) {
		return errorf(statusInvalidArgument, `"user" must be "users/{numeric id}" or an email address`)
	}
	name, _, err := c.actAs(user)
	if err != nil {
		return err
	}
	resp := usersResponse{Users: []userEntry{}}
	rec, err := s.consents.findRecord(r.Context(), name)
	switch {
	case errors.Is(err, errNotFound):
	case err != nil:
		return err
	case !c.trusted && rec.Sub != c.sub:
		// An email that now names another account is not the caller's.
	case status == "" || rec.Status == status:
		resp.Users = append(resp.Users, toUserEntry(rec))
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// usersStatusFilter turns Users' "status" into a token record status, ""
// for every status.
func usersStatusFilter(status string) (string, error) {
	switch status {
	case "":
		return "", nil
	case userConnected:
		return tokenActive, nil
	case userNeedsReauth:
		return tokenNeedsReauth, nil
	}
	return "", errorf(statusInvalidArgument, `"status" must be %q or %q`, userConnected, userNeedsReauth)
}

// toUserEntry shows a record: only its names, status, scopes and times.
func toUserEntry(rec *tokenRecord) userEntry {
	e := userEntry{User: "users/" + rec.Sub, Email: rec.Email, Status: userConnected, Scopes: rec.Scopes,
		ConnectedAt: rec.ConsentedAt, RefreshedAt: rec.LastRefreshAt}
	if rec.Status == tokenNeedsReauth {
		e.Status = userNeedsReauth
	}
	if e.ConnectedAt.IsZero() {
		e.ConnectedAt = rec.CreatedAt // a record from before consentedAt
	}
	if e.Scopes == nil {
		e.Scopes = []string{}
	}
	e.ConnectedAt, e.RefreshedAt = e.ConnectedAt.UTC(), e.RefreshedAt.UTC()
	return e
}

// sealUsersPage makes the page token that continues a listing after sub,
// sealed with the token keyset so that a caller can neither read nor edit
// it, and bound to the listing's status filter.
func (s *server) sealUsersPage(after, status string) (string, error) {
	pt, err := json.Marshal(usersPage{After: after})
	if err != nil {
		return "", err
	}
	ct, err := s.tickets.Encrypt(pt, []byte(usersPageAAD+"\x00"+status))
	if err != nil {
		return "", wrapError(statusInternal, err, "internal error")
	}
	return base64.RawURLEncoding.EncodeToString(ct), nil
}

// openUsersPage reads a page token sealUsersPage made for the same status
// filter, and returns the sub the page starts after.
func (s *server) openUsersPage(token, status string) (string, error) {
	bad := errorf(statusInvalidArgument, `"pageToken" is not one Users issued for this "status" (or the keyset that sealed it was rotated out); send the request again without it to start from the first page`)
	ct, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(token) > 1024 {
		return "", bad
	}
	pt, err := s.tickets.Decrypt(ct, []byte(usersPageAAD+"\x00"+status))
	if err != nil {
		return "", bad
	}
	var p usersPage
	if err := json.Unmarshal(pt, &p); err != nil || p.After == "" || strings.ContainsAny(p.After, "/\x00") {
		return "", bad
	}
	return p.After, nil
}
