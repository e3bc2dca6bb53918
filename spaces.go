package chatauth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"google.golang.org/api/chat/v1"
	"google.golang.org/api/googleapi"
)

// Space types of the Chat API.
const (
	spaceTypeSpace     = "SPACE"
	spaceTypeGroupChat = "GROUP_CHAT"
	spaceTypeDM        = "DIRECT_MESSAGE"
)

// createSpaceRequest is CreateSpace's body (openapi.yaml, CreateSpaceRequest).
type createSpaceRequest struct {
	User        string   `json:"user"`
	DisplayName string   `json:"displayName"`
	SpaceType   string   `json:"spaceType"`
	Description string   `json:"description"`
	Members     []string `json:"members"`
	RequestID   string   `json:"requestId"`
}

// handleCreateSpace serves POST /CreateSpace: it authenticates the caller,
// validates the request, and creates the space as the consenting user.
func (s *server) handleCreateSpace(w http.ResponseWriter, r *http.Request) error {
	var req createSpaceRequest
	c, err := s.webhookRequest(w, r, &req)
	if err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	user, email, err := c.actAs(req.User)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.chatDeadline)
	defer cancel()
	p, err := s.lookupUser(ctx, user, email)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(user, "users/") {
		if err := c.emailNamedBefore(strings.ToLower(user), p.emailSince); err != nil {
			return err
		}
	}
	if req.RequestID == "" {
		// Derived from the signed request, so that the same signed bytes
		// mean the same space: Chat answers a requestId it has seen from
		// the same user with the space it made then.
		req.RequestID = c.requestID()
	}
	space, err := s.createSpace(ctx, p, &req)
	if err != nil {
		return err
	}
	loggerFrom(ctx).Info("space created", "sub", p.Sub, "via", p.via, "space", space.Name, "caller", c.method)
	writeJSON(w, http.StatusOK, (*plainSpace)(space))
	return nil
}

// plainSpace is chat.Space without its MarshalJSON method. That method
// serves ForceSendFields and NullFields, which a Space decoded from Chat's
// answer never has; through it, encoding/json also checks and compacts
// the method's output a second time. The JSON means the same, for less
// time (BenchmarkSpaceJSON; BENCHMARKS.md).
type plainSpace chat.Space

// validate checks every field, naming the one that is wrong.
func (q *createSpaceRequest) validate() error {
	bad := func(format string, args ...any) error { return errorf(statusInvalidArgument, format, args...) }
	if q.User == "" {
		return bad(`"user" is required: "users/{id}" or the email of a user who has connected Google Chat`)
	}
	if !validUser(q.User) {
		return bad(`"user" must be "users/{numeric id}" or an email address`)
	}
	if err := q.checkKind(); err != nil {
		return err
	}
	if err := checkVisible("displayName", q.DisplayName, false); err != nil {
		return err
	}
	if utf8.RuneCountInString(q.Description) > maxDescription {
		return bad(`"description" is longer than %d characters`, maxDescription)
	}
	if err := checkVisible("description", q.Description, true); err != nil {
		return err
	}
	if q.Description != "" && q.SpaceType != spaceTypeSpace {
		return bad(`"description" is only for a SPACE`)
	}
	if err := q.checkMembers(); err != nil {
		return err
	}
	if q.RequestID != "" && (len(q.RequestID) > maxRequestID || !requestIDPattern().MatchString(q.RequestID)) {
		return bad(`"requestId" must be 1 to %d characters of letters, digits and . _ : ~ -`, maxRequestID)
	}
	return nil
}

// checkKind checks spaceType (SPACE when absent) against displayName and
// the number of members, as Chat would, without the round trip.
func (q *createSpaceRequest) checkKind() error {
	bad := func(format string, args ...any) error { return errorf(statusInvalidArgument, format, args...) }
	if q.SpaceType == "" {
		q.SpaceType = spaceTypeSpace
	}
	n := utf8.RuneCountInString(q.DisplayName)
	switch q.SpaceType {
	case spaceTypeSpace:
		if n == 0 {
			return bad(`"displayName" is required for a SPACE (1 to %d characters)`, maxDisplayName)
		}
	case spaceTypeGroupChat:
		// Chat names a group chat after its members and refuses a
		// displayName for one (as for a direct message), after a round
		// trip; saying so here spares the caller the trip.
		if n > 0 {
			return bad(`a GROUP_CHAT has no "displayName": Chat names it after its members; leave "displayName" out`)
		}
		if len(q.Members) < 2 {
			return bad(`a GROUP_CHAT needs at least 2 "members" besides the user`)
		}
	case spaceTypeDM:
		if n > 0 {
			return bad(`a DIRECT_MESSAGE has no "displayName": Chat names it after the other person; leave "displayName" out`)
		}
		if len(q.Members) != 1 {
			return bad(`a DIRECT_MESSAGE needs exactly 1 member in "members"`)
		}
	default:
		return bad(`"spaceType" must be SPACE, GROUP_CHAT or DIRECT_MESSAGE`)
	}
	if n > maxDisplayName {
		return bad(`"displayName" is longer than %d characters`, maxDisplayName)
	}
	return nil
}

// checkMembers checks that members are at most maxMembers distinct users.
func (q *createSpaceRequest) checkMembers() error {
	bad := func(format string, args ...any) error { return errorf(statusInvalidArgument, format, args...) }
	if len(q.Members) > maxMembers {
		return bad(`"members" lists %d users; Chat allows at most %d besides the user`, len(q.Members), maxMembers)
	}
	seen := make(map[string]bool, len(q.Members))
	for i, m := range q.Members {
		if !validUser(m) {
			return bad(`"members"[%d] must be "users/{numeric id}" or an email address`, i)
		}
		if key := strings.ToLower(m); seen[key] {
			return bad(`"members"[%d] repeats %s`, i, m)
		} else {
			seen[key] = true
		}
	}
	return nil
}

// createSpace calls spaces.create, or spaces.setup when there are
// members, as the user, with the access token p's credentials give. A 401
// from Chat (a token revoked or expired early) forces one new token and one
// more try.
func (s *server) createSpace(ctx context.Context, p *principal, q *createSpaceRequest) (*chat.Space, error) {
	token, err := p.creds.accessToken(ctx, false)
	if err != nil {
		return nil, err
	}
	space, err := s.callChat(ctx, token, q)
	var ge *googleapi.Error
	if errors.As(err, &ge) && ge.Code == http.StatusUnauthorized {
		if token, err = p.creds.accessToken(ctx, true); err != nil {
			return nil, err
		}
		space, err = s.callChat(ctx, token, q)
	}
	if err != nil {
		return nil, s.chatError(p, err)
	}
	return space, nil
}
