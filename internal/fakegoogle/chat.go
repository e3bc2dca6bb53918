package fakegoogle

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Space is the fake's record of a space created through the Chat API, for
// tests to inspect.
type Space struct {
	// Name is the resource name, "spaces/AAAA…".
	Name        string
	DisplayName string
	// SpaceType is SPACE, GROUP_CHAT or DIRECT_MESSAGE.
	SpaceType   string
	Description string
	Guidelines  string
	SpaceURI    string
	CreateTime  time.Time
	// Creator is the sub of the user whose access token created the space.
	Creator string
	// Members are the member resource names passed to spaces.setup
	// ("users/123", "users/bob@example.com", "groups/…"), without the
	// creator, who is always a member.
	Members []string
	// RequestID is the requestId the space was created with, if any.
	RequestID string
	// AccessToken is the bearer token of the creating call.
	AccessToken string
	// Route is "spaces.create" or "spaces.setup".
	Route string
}

// ChatFault shapes one Chat API call: after Latency, a non-zero Status is
// answered with Google's error JSON carrying Message (a default per status
// when empty) and a Retry-After header when RetryAfter is set. A fault with
// Status 0 only delays the call, which then proceeds normally.
type ChatFault struct {
	Status     int
	RetryAfter string
	Latency    time.Duration
	Message    string
}

// chatState is the Server's Chat API bookkeeping, guarded by Server.mu.
type chatState struct {
	spaces      []*spaceRecord
	spaceByName map[string]*spaceRecord
	requestIDs  map[string]*spaceRecord
	chatFaults  []ChatFault
	chatLatency time.Duration
	// chatAppMissing is the inverse of SetChatAppConfigured so that the
	// zero value means a configured app.
	chatAppMissing bool
	chatCalls      map[string]int

	// spaceByDisplayName indexes the SPACEs by display name, so that the
	// uniqueness check stays O(1) when a load test creates many thousands.
	spaceByDisplayName map[string]*spaceRecord
}

func newChatState() chatState {
	return chatState{
		spaceByName: map[string]*spaceRecord{},
		requestIDs:  map[string]*spaceRecord{},
		chatCalls:   map[string]int{},

		spaceByDisplayName: map[string]*spaceRecord{},
	}
}

type spaceRecord struct {
	Space
	resource spaceJSON
}

// spaceJSON mirrors the Chat API's Space resource field for field, so that
// request bodies with unknown fields can be refused as Google does while
// every real field is accepted.
type spaceJSON struct {
	Name                         string               `json:"name,omitempty"`
	Type                         string               `json:"type,omitempty"`
	DisplayName                  string               `json:"displayName,omitempty"`
	SpaceType                    string               `json:"spaceType,omitempty"`
	SingleUserBotDm              bool                 `json:"singleUserBotDm,omitempty"`
	Threaded                     bool                 `json:"threaded,omitempty"`
	SpaceThreadingState          string               `json:"spaceThreadingState,omitempty"`
	SpaceDetails                 *spaceDetailsJSON    `json:"spaceDetails,omitempty"`
	SpaceHistoryState            string               `json:"spaceHistoryState,omitempty"`
	ImportMode                   bool                 `json:"importMode,omitempty"`
	ImportModeExpireTime         string               `json:"importModeExpireTime,omitempty"`
	CreateTime                   string               `json:"createTime,omitempty"`
	LastActiveTime               string               `json:"lastActiveTime,omitempty"`
	AdminInstalled               bool                 `json:"adminInstalled,omitempty"`
	MembershipCount              *membershipCountJSON `json:"membershipCount,omitempty"`
	AccessSettings               json.RawMessage      `json:"accessSettings,omitempty"`
	SpaceURI                     string               `json:"spaceUri,omitempty"`
	PredefinedPermissionSettings string               `json:"predefinedPermissionSettings,omitempty"`
	PermissionSettings           json.RawMessage      `json:"permissionSettings,omitempty"`
	Customer                     string               `json:"customer,omitempty"`
	ExternalUserAllowed          bool                 `json:"externalUserAllowed,omitempty"`
}

type spaceDetailsJSON struct {
	Description string `json:"description,omitempty"`
	Guidelines  string `json:"guidelines,omitempty"`
}

type membershipCountJSON struct {
	JoinedDirectHumanUserCount int `json:"joinedDirectHumanUserCount,omitempty"`
	JoinedGroupCount           int `json:"joinedGroupCount,omitempty"`
}

// setupRequestJSON is the body of spaces.setup.
type setupRequestJSON struct {
	Space       *spaceJSON       `json:"space"`
	RequestID   string           `json:"requestId,omitempty"`
	Memberships []membershipJSON `json:"memberships,omitempty"`
}

type membershipJSON struct {
	Name        string    `json:"name,omitempty"`
	State       string    `json:"state,omitempty"`
	Role        string    `json:"role,omitempty"`
	Affiliation string    `json:"affiliation,omitempty"`
	Member      *userJSON `json:"member,omitempty"`
	GroupMember *struct {
		Name string `json:"name,omitempty"`
	} `json:"groupMember,omitempty"`
	CreateTime string `json:"createTime,omitempty"`
	DeleteTime string `json:"deleteTime,omitempty"`
}

type userJSON struct {
	Name        string `json:"name,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
	DomainID    string `json:"domainId,omitempty"`
	Type        string `json:"type,omitempty"`
	IsAnonymous bool   `json:"isAnonymous,omitempty"`
	Email       string `json:"email,omitempty"`
	AvatarURL   string `json:"avatarUrl,omitempty"`
}

// apiError is a Google API error in the JSON envelope
// googleapi.CheckResponse decodes into *googleapi.Error.
type apiError struct {
	code       int
	message    string
	details    []any
	retryAfter string
	authHeader string
}

// rpcStatus names the google.rpc.Code Google sends with an HTTP status.
func rpcStatus(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusConflict:
		return "ALREADY_EXISTS"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case http.StatusInternalServerError:
		return "INTERNAL"
	case http.StatusNotImplemented:
		return "UNIMPLEMENTED"
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case http.StatusGatewayTimeout:
		return "DEADLINE_EXCEEDED"
	}
	return "UNKNOWN"
}

// defaultMessage is Google's usual text for an error status.
func defaultMessage(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "Request contains an invalid argument."
	case http.StatusUnauthorized:
		return msgInvalidCredentials
	case http.StatusForbidden:
		return "The caller does not have permission"
	case http.StatusNotFound:
		return "Requested entity was not found."
	case http.StatusConflict:
		return "The resource already exists."
	case http.StatusTooManyRequests:
		return "Resource has been exhausted (e.g. check quota)."
	case http.StatusInternalServerError:
		return "Internal error encountered."
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return "The service is currently unavailable."
	case http.StatusGatewayTimeout:
		return "The request deadline has been exceeded."
	}
	return http.StatusText(code)
}

const (
	msgMissingCredentials = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
	msgInvalidCredentials = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
	msgAppNotFound        = "Google Chat app not found. To create a Chat app, you must turn on the Chat API and configure the app in the Google Cloud console."
)

func (e *apiError) write(w http.ResponseWriter) {
	if e.retryAfter != "" {
		w.Header().Set("Retry-After", e.retryAfter)
	}
	if e.authHeader != "" {
		w.Header().Set("WWW-Authenticate", e.authHeader)
	}
	msg := e.message
	if msg == "" {
		msg = defaultMessage(e.code)
	}
	body := map[string]any{"code": e.code, "message": msg, "status": rpcStatus(e.code)}
	if len(e.details) > 0 {
		body["details"] = e.details
	}
	writeJSON(w, e.code, map[string]any{"error": body})
}

func invalidArgument(format string, args ...any) *apiError {
	return &apiError{code: http.StatusBadRequest, message: fmt.Sprintf(format, args...)}
}

// chatBegin does what every Chat call shares: count it, apply latency and
// the next injected fault, authenticate the bearer token, check that it
// carries one of scopes, and check that the Chat app is configured. It
// writes the error and returns nil when the call must stop.
func (s *Server) chatBegin(w http.ResponseWriter, r *http.Request, route string, scopes ...string) (*accessGrant, string) {
	s.mu.Lock()
	s.chatCalls[route]++
	var fault ChatFault
	if len(s.chatFaults) > 0 {
		fault = s.chatFaults[0]
		s.chatFaults = s.chatFaults[1:]
	}
	latency := s.chatLatency + fault.Latency
	s.mu.Unlock()

	if sleep(r.Context(), latency) != nil {
		return nil, ""
	}
	if fault.Status != 0 {
		(&apiError{code: fault.Status, message: fault.Message, retryAfter: fault.RetryAfter}).write(w)
		return nil, ""
	}

	token := bearerToken(r)
	s.mu.Lock()
	grant := s.liveAccessLocked(token)
	var g accessGrant
	if grant != nil {
		g = *grant
	}
	appMissing := s.chatAppMissing
	s.mu.Unlock()

	switch {
	case token == "":
		(&apiError{code: http.StatusUnauthorized, message: msgMissingCredentials,
			authHeader: `Bearer realm="https://accounts.google.com/"`}).write(w)
		return nil, ""
	case grant == nil:
		(&apiError{code: http.StatusUnauthorized, message: msgInvalidCredentials,
			authHeader: `Bearer realm="https://accounts.google.com/", error="invalid_token"`}).write(w)
		return nil, ""
	case !slices.ContainsFunc(scopes, func(sc string) bool { return slices.Contains(g.scopes, sc) }):
		(&apiError{
			code:       http.StatusForbidden,
			message:    "Request had insufficient authentication scopes.",
			authHeader: `Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="` + strings.Join(scopes, " ") + `"`,
			details: []any{map[string]any{
				"@type":  "type.googleapis.com/google.rpc.ErrorInfo",
				"reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
				"domain": "googleapis.com",
				"metadata": map[string]string{
					"service": "chat.googleapis.com",
					"method":  "google.chat.v1.ChatService." + methodName(route),
				},
			}},
		}).write(w)
		return nil, ""
	case appMissing:
		(&apiError{code: http.StatusNotFound, message: msgAppNotFound}).write(w)
		return nil, ""
	}
	return &g, token
}

func methodName(route string) string {
	switch route {
	case "spaces.create":
		return "CreateSpace"
	case "spaces.setup":
		return "SetUpSpace"
	case "spaces.get":
		return "GetSpace"
	}
	return route
}

// decodeBody reads a JSON request body into v, refusing unknown fields with
// Google's wording; at names the message's position in the request.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, at string) *apiError {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return &apiError{code: http.StatusRequestEntityTooLarge, message: "Request payload size exceeds the limit."}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return invalidArgument("Invalid JSON payload received. Unknown name %s at '%s': Cannot find field.", name, at)
		}
		return invalidArgument("Invalid JSON payload received. %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidArgument("Invalid JSON payload received. Unexpected data after the JSON value.")
	}
	return nil
}

// handleCreateSpace serves POST /v1/spaces (spaces.create), requestId in
// the query string and a Space as the body.
func (s *Server) handleCreateSpace(w http.ResponseWriter, r *http.Request) {
	grant, token := s.chatBegin(w, r, "spaces.create", ScopeChatSpacesCreate, ScopeChatSpaces)
	if grant == nil {
		return
	}
	var in spaceJSON
	if e := decodeBody(w, r, &in, "space"); e != nil {
		e.write(w)
		return
	}
	rec, e := s.createSpace(grant, token, &in, nil, r.URL.Query().Get("requestId"), "spaces.create")
	if e != nil {
		e.write(w)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// handleSetupSpace serves POST /v1/spaces:setup (spaces.setup), whose body
// carries the space, the requestId and the memberships.
func (s *Server) handleSetupSpace(w http.ResponseWriter, r *http.Request) {
	grant, token := s.chatBegin(w, r, "spaces.setup", ScopeChatSpacesCreate, ScopeChatSpaces)
	if grant == nil {
		return
	}
	var in setupRequestJSON
	if e := decodeBody(w, r, &in, ""); e != nil {
		e.write(w)
		return
	}
	if in.Space == nil {
		invalidArgument("Space is required.").write(w)
		return
	}
	members, e := checkMemberships(in.Memberships)
	if e != nil {
		e.write(w)
		return
	}
	rec, e := s.createSpace(grant, token, in.Space, members, in.RequestID, "spaces.setup")
	if e != nil {
		e.write(w)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// handleGetSpace serves GET /v1/spaces/{id} (spaces.get) for members of the
// space.
func (s *Server) handleGetSpace(w http.ResponseWriter, r *http.Request) {
	grant, _ := s.chatBegin(w, r, "spaces.get", ScopeChatSpaces, ScopeChatSpacesReadonly)
	if grant == nil {
		return
	}
	s.mu.Lock()
	rec := s.spaceByName["spaces/"+r.PathValue("id")]
	var out spaceJSON
	ok := rec != nil && s.isMemberLocked(rec, grant.sub)
	if ok {
		out = rec.resource
	}
	s.mu.Unlock()
	if !ok {
		(&apiError{code: http.StatusNotFound, message: "Space not found or the caller is not a member."}).write(w)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) isMemberLocked(rec *spaceRecord, sub string) bool {
	if rec.Creator == sub {
		return true
	}
	u, _ := s.userBySubLocked(sub)
	return slices.Contains(rec.Members, "users/"+sub) || (u.Email != "" && slices.Contains(rec.Members, "users/"+u.Email))
}

// checkMemberships validates spaces.setup memberships the way the Chat API
// documents them and returns the member resource names.
func checkMemberships(ms []membershipJSON) ([]string, *apiError) {
	if len(ms) > 49 {
		return nil, invalidArgument("A space can be set up with at most 49 memberships besides the caller.")
	}
	var names []string
	for i, m := range ms {
		switch {
		case m.Member != nil && m.GroupMember != nil:
			return nil, invalidArgument("memberships[%d]: set either member or groupMember, not both.", i)
		case m.Member != nil:
			id, ok := strings.CutPrefix(m.Member.Name, "users/")
			if !ok || id == "" || strings.Contains(id, "/") {
				return nil, invalidArgument("memberships[%d].member.name must have the form users/{user}, got %q.", i, m.Member.Name)
			}
			if m.Member.Type != "HUMAN" {
				return nil, invalidArgument("memberships[%d].member.type must be HUMAN.", i)
			}
			names = append(names, m.Member.Name)
		case m.GroupMember != nil:
			id, ok := strings.CutPrefix(m.GroupMember.Name, "groups/")
			if !ok || id == "" {
				return nil, invalidArgument("memberships[%d].groupMember.name must have the form groups/{group}, got %q.", i, m.GroupMember.Name)
			}
			names = append(names, m.GroupMember.Name)
		default:
			return nil, invalidArgument("memberships[%d]: member is required.", i)
		}
	}
	return names, nil
}

// createSpace is spaces.create and spaces.setup after the request is
// parsed: requestId replay first (the same user gets the same space back,
// whatever the body says), then validation, then display-name uniqueness.
func (s *Server) createSpace(grant *accessGrant, token string, in *spaceJSON, members []string, requestID, route string) (spaceJSON, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if requestID != "" {
		if prev := s.requestIDs[requestID]; prev != nil {
			// Chat's reference: an existing request ID "from the same Chat
			// app with a different authenticated user returns an error".
			// It documents no status; the fake answers 409 ALREADY_EXISTS
			// with a message that names the request ID, which is how a
			// client tells it from a taken display name.
			if prev.Creator != grant.sub {
				return spaceJSON{}, &apiError{code: http.StatusConflict,
					message: "The request ID " + requestID + " was already used by a different user; request IDs are bound to the authenticated user."}
			}
			return prev.resource, nil
		}
	}
	user, _ := s.userBySubLocked(grant.sub)
	members = slices.DeleteFunc(slices.Clone(members), func(m string) bool {
		return m == "users/"+grant.sub || (user.Email != "" && strings.EqualFold(m, "users/"+user.Email))
	})
	if e := validateSpace(in, members, route); e != nil {
		return spaceJSON{}, e
	}
	spaceType := in.SpaceType
	displayName := strings.TrimSpace(in.DisplayName)
	if spaceType == "DIRECT_MESSAGE" {
		for _, rec := range s.spaces {
			if rec.SpaceType == "DIRECT_MESSAGE" && s.sameDM(rec, grant.sub, members) {
				return rec.resource, nil
			}
		}
	}
	if spaceType == "SPACE" && s.spaceByDisplayName[displayName] != nil {
		return spaceJSON{}, &apiError{code: http.StatusConflict,
			message: "A space with the same display name already exists. Try a different display name."}
	}

	now := s.now().UTC()
	id := newSpaceID()
	out := spaceJSON{
		Name:                "spaces/" + id,
		DisplayName:         displayName,
		SpaceType:           spaceType,
		SpaceThreadingState: "THREADED_MESSAGES",
		SpaceHistoryState:   "HISTORY_ON",
		ExternalUserAllowed: in.ExternalUserAllowed,
		SpaceURI:            "https://chat.google.com/room/" + id + "?cls=11",
	}
	humans, groups := 1, 0
	for _, m := range members {
		if strings.HasPrefix(m, "groups/") {
			groups++
		} else {
			humans++
		}
	}
	out.MembershipCount = &membershipCountJSON{JoinedDirectHumanUserCount: humans, JoinedGroupCount: groups}
	switch spaceType {
	case "SPACE":
		out.Type = "ROOM"
		out.CreateTime = now.Format(time.RFC3339Nano)
		out.AccessSettings = json.RawMessage(`{"accessState":"PRIVATE"}`)
		if in.SpaceDetails != nil && (in.SpaceDetails.Description != "" || in.SpaceDetails.Guidelines != "") {
			d := *in.SpaceDetails
			out.SpaceDetails = &d
		}
	case "GROUP_CHAT":
		out.Type = "ROOM"
		out.CreateTime = now.Format(time.RFC3339Nano)
		out.SpaceThreadingState = "UNTHREADED_MESSAGES"
	case "DIRECT_MESSAGE":
		out.SpaceThreadingState = "UNTHREADED_MESSAGES"
		out.SpaceURI = "https://chat.google.com/dm/" + id + "?cls=11"
	}
	if in.ImportMode {
		out.ImportMode = true
	}

	rec := &spaceRecord{
		Space: Space{
			Name:        out.Name,
			DisplayName: displayName,
			SpaceType:   spaceType,
			SpaceURI:    out.SpaceURI,
			CreateTime:  now,
			Creator:     grant.sub,
			Members:     members,
			RequestID:   requestID,
			AccessToken: token,
			Route:       route,
		},
		resource: out,
	}
	if out.SpaceDetails != nil {
		rec.Description, rec.Guidelines = out.SpaceDetails.Description, out.SpaceDetails.Guidelines
	}
	s.spaces = append(s.spaces, rec)
	s.spaceByName[rec.Name] = rec
	if spaceType == "SPACE" {
		s.spaceByDisplayName[displayName] = rec
	}
	if requestID != "" {
		s.requestIDs[requestID] = rec
	}
	return out, nil
}

// sameDM reports whether rec is the direct message between sub and the one
// member in members.
func (s *Server) sameDM(rec *spaceRecord, sub string, members []string) bool {
	if len(members) != 1 || len(rec.Members) != 1 {
		return false
	}
	return (rec.Creator == sub && rec.Members[0] == members[0]) ||
		(rec.Members[0] == "users/"+sub && members[0] == "users/"+rec.Creator)
}

// validateSpace applies the Chat API's documented rules for the space in a
// create or setup request.
func validateSpace(in *spaceJSON, members []string, route string) *apiError {
	switch in.SpaceType {
	case "SPACE", "GROUP_CHAT", "DIRECT_MESSAGE":
	case "", "SPACE_TYPE_UNSPECIFIED":
		return invalidArgument("Space type is required. Set space.spaceType to SPACE, GROUP_CHAT or DIRECT_MESSAGE.")
	default:
		return invalidArgument("Invalid value at 'space.space_type' (type.googleapis.com/google.chat.v1.Space.SpaceType), %q", in.SpaceType)
	}
	name := strings.TrimSpace(in.DisplayName)
	switch {
	case utf8.RuneCountInString(in.DisplayName) > 128:
		return invalidArgument("Display name must be at most 128 characters.")
	case in.SpaceDetails != nil && utf8.RuneCountInString(in.SpaceDetails.Description) > 4096:
		return invalidArgument("Space description must be at most 4096 characters.")
	case in.SpaceDetails != nil && utf8.RuneCountInString(in.SpaceDetails.Guidelines) > 5000:
		return invalidArgument("Space guidelines must be at most 5000 characters.")
	}
	if route == "spaces.create" && in.SpaceType != "SPACE" && !(in.SpaceType == "GROUP_CHAT" && in.ImportMode) {
		return invalidArgument("spaces.create creates spaces of type SPACE (or GROUP_CHAT in import mode); use spaces.setup for %s.", in.SpaceType)
	}
	switch in.SpaceType {
	case "SPACE":
		if name == "" {
			return invalidArgument("Display name is required when creating a space of type SPACE.")
		}
	case "GROUP_CHAT":
		if name != "" {
			return invalidArgument("Don't set a display name for a space of type GROUP_CHAT.")
		}
		if route == "spaces.setup" && len(members) < 2 {
			return invalidArgument("A GROUP_CHAT needs at least two memberships besides the caller.")
		}
	case "DIRECT_MESSAGE":
		if name != "" || in.SpaceDetails != nil {
			return invalidArgument("Don't set a display name or space details for a DIRECT_MESSAGE.")
		}
		if in.SingleUserBotDm {
			return invalidArgument("A direct message with the calling Chat app requires app authentication.")
		}
		if len(members) != 1 {
			return invalidArgument("A DIRECT_MESSAGE between humans needs exactly one membership besides the caller.")
		}
	}
	for _, m := range members {
		if strings.HasPrefix(m, "groups/") && in.SpaceType != "SPACE" {
			return invalidArgument("Google groups can only be added to spaces of type SPACE.")
		}
	}
	return nil
}

// newSpaceID returns an 11-character id in the shape of Chat's ("AAAA" and
// seven URL-safe characters).
func newSpaceID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, 7)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "AAAA" + string(b)
}

// InjectChatFaults queues faults; each following Chat call consumes one.
func (s *Server) InjectChatFaults(f ...ChatFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chatFaults = append(s.chatFaults, f...)
}

// ClearChatFaults drops the queued faults that no call has consumed.
func (s *Server) ClearChatFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chatFaults = nil
}

// SetChatLatency delays every Chat call by d.
func (s *Server) SetChatLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chatLatency = d
}

// SetChatAppConfigured(false) makes every authenticated Chat call answer 404
// "Google Chat app not found", what Google answers when the Chat API is
// enabled but no Chat app is configured in the Cloud project — the most
// common set-up mistake. It starts out true.
func (s *Server) SetChatAppConfigured(configured bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chatAppMissing = !configured
}

// ChatCalls counts calls to route ("spaces.create", "spaces.setup" or
// "spaces.get"), failed ones too.
func (s *Server) ChatCalls(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chatCalls[route]
}

// TotalChatCalls counts all Chat API calls.
func (s *Server) TotalChatCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.chatCalls {
		n += c
	}
	return n
}

// Spaces returns copies of every space created, oldest first.
func (s *Server) Spaces() []Space {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Space, 0, len(s.spaces))
	for _, rec := range s.spaces {
		out = append(out, rec.copySpace())
	}
	return out
}

// SpaceByName returns a copy of the space named name ("spaces/…").
func (s *Server) SpaceByName(name string) (Space, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.spaceByName[name]
	if rec == nil {
		return Space{}, false
	}
	return rec.copySpace(), true
}

func (rec *spaceRecord) copySpace() Space {
	sp := rec.Space
	sp.Members = slices.Clone(rec.Members)
	return sp
}
