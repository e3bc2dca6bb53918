package chatauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/chat/v1"
	"google.golang.org/api/googleapi"
)

// maxBody bounds every webhook body (DESIGN.md: 64 KiB).
const maxBody = 64 << 10

// Space types of the Chat API.
const (
	spaceTypeSpace     = "SPACE"
	spaceTypeGroupChat = "GROUP_CHAT"
	spaceTypeDM        = "DIRECT_MESSAGE"
)

// createSpaceRequest is CreateSpace's body (DESIGN.md).
type createSpaceRequest struct {
	User        string   `json:"user"`
	DisplayName string   `json:"displayName"`
	SpaceType   string   `json:"spaceType"`
	Description string   `json:"description"`
	Members     []string `json:"members"`
	RequestID   string   `json:"requestId"`
}

// requestIDPattern bounds no length: a counted repetition ({1,128}) costs
// 1.5 ms of regexp compilation at every cold start (BENCHMARKS.md), so
// validate checks the length itself.
var requestIDPattern = lazyRegexp(`^[A-Za-z0-9._:~-]+$`)

// lazyRegexp compiles expr on its first use. A package-level
// regexp.MustCompile runs at every cold start, before the first request,
// whether any request needs the pattern or not; chatauth's patterns were
// most of its own package initialisation (BENCHMARKS.md). Tests use every
// pattern, so a broken one still fails them.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// isUserID reports whether u is a Chat user name, "users/" and 1 to 64
// digits.
func isUserID(u string) bool {
	id, ok := strings.CutPrefix(u, "users/")
	return ok && isDigits(id, 64)
}

// isDigits reports whether s is 1 to max ASCII digits. It replaces the
// patterns [0-9]{1,max}, whose counted repetition is compiled into max
// states at every cold start.
func isDigits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
// the method's output a second time. The JSON means the same, for about
// 30 % less time (BenchmarkSpaceJSON: 10.5 µs → 7.3 µs for a full Space).
type plainSpace chat.Space

// webhookRequest is the common start of the webhook functions: POST,
// JSON, size bound, then the caller's authentication over the raw body,
// and only then the strict decoding of the body into v.
func (s *server) webhookRequest(w http.ResponseWriter, r *http.Request, v any) (*caller, error) {
	body, err := readJSONBody(w, r)
	if err != nil {
		return nil, err
	}
	c, err := s.callers.authenticate(r, body)
	if err != nil {
		return nil, err
	}
	if err := decodeStrict(body, v); err != nil {
		return nil, err
	}
	return c, nil
}

// readJSONBody enforces POST, application/json and the size bound, in
// that order and before anything that costs, and returns the raw body
// (signatures are over its exact bytes).
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, errorf(statusMethodNotAllowed, "use POST with a JSON body")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, errorf(statusUnsupportedMediaType, "send the body as Content-Type: application/json")
	}
	if r.ContentLength > maxBody {
		return nil, errorf(statusPayloadTooLarge, "the body is larger than %d KiB", maxBody>>10)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, errorf(statusPayloadTooLarge, "the body is larger than %d KiB", maxBody>>10)
	}
	if err != nil {
		return nil, errorf(statusInvalidArgument, "the body could not be read")
	}
	return body, nil
}

// decodeStrict decodes a JSON object into v, a pointer to a struct,
// refusing what encoding/json lets pass: unknown fields, keys that name a
// field only in another case, duplicate keys (which parsers disagree on),
// invalid UTF-8 (silently replaced otherwise) and trailing data.
//
// A well-formed body takes the fast path: one scan of the top-level keys
// and one json.Unmarshal. Anything else — and any body the fast path
// refuses — goes through the full checks below, which name the problem.
// The fast path accepts only what the full checks accept, decoded the same
// way (checkStrictPaths, run by FuzzCreateSpaceRequest).
func decodeStrict(body []byte, v any) error {
	if !utf8.Valid(body) {
		return errorf(statusInvalidArgument, "the body is not valid UTF-8")
	}
	names := jsonNames(v)
	if scanKeys(body, names) && json.Unmarshal(body, v) == nil {
		return nil
	}
	return decodeStrictSlow(body, v, names)
}

// decodeStrictSlow is decodeStrict with the full checks, for a body the
// fast path refused: it finds and names the problem.
func decodeStrictSlow(body []byte, v any, names map[string]bool) error {
	reflect.ValueOf(v).Elem().SetZero() // json.Unmarshal may have filled part of it
	if err := checkKeys(body, names); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(statusInvalidArgument, "the body is not a valid request: %s", jsonProblem(err))
	}
	// dec.More would miss a stray '}' or ']': it reports only whether
	// another element follows inside an array or object.
	if _, err := dec.Token(); err != io.EOF {
		return errorf(statusInvalidArgument, "the body has data after the JSON object")
	}
	return nil
}

// jsonProblem describes a decoding error without quoting the input.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return fmt.Sprintf("the field %q must be %s", te.Field, jsonTypeName(te.Type.Kind().String()))
	case errors.As(err, &se):
		return fmt.Sprintf("JSON syntax error at byte %d", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	case errors.Is(err, io.EOF):
		return "the body is empty"
	default:
		return "malformed JSON"
	}
}

func jsonTypeName(kind string) string {
	switch kind {
	case "slice":
		return "an array of strings"
	case "string":
		return "a string"
	}
	return "of another type"
}

// checkKeys walks the top-level object of body and refuses a key that
// appears twice or is not exactly one of names. encoding/json fills a
// field from a key that matches its name in any case, Unicode folding
// included ("USER" and "uſer" fill User), so without the exact match a
// body one parser reads as alice's would be read here as bob's.
func checkKeys(body []byte, names map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return errorf(statusInvalidArgument, "the body is not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errorf(statusInvalidArgument, "the body is not a JSON object")
		}
		key, _ := tok.(string)
		if !names[key] {
			return errorf(statusInvalidArgument, "the body is not a valid request: unknown field %q", key)
		}
		if seen[key] {
			return errorf(statusInvalidArgument, "the field %q appears more than once", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return errorf(statusInvalidArgument, "the body is not a valid request: %s", jsonProblem(err))
		}
	}
	return nil
}

// scanKeys reports whether body is one JSON object, with nothing but
// white space after it, whose top-level keys are each exactly one of
// names and appear once. It is checkKeys without the allocations of
// json.Decoder's token stream, which were a tenth of CreateSpace's
// request handling (BENCHMARKS.md). It checks only the structure it
// walks: json.Unmarshal validates the rest, and any false answer sends the
// body to checkKeys, which explains what is wrong.
func scanKeys(body []byte, names map[string]bool) bool {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return skipSpace(body, i+1) == len(body)
	}
	var seen [8][]byte // CreateSpace has 6 fields, Disconnect 1
	n := 0
	for {
		if i >= len(body) || body[i] != '"' {
			return false
		}
		end := skipString(body, i)
		if end < 0 {
			return false
		}
		raw := body[i+1 : end-1]
		if bytes.IndexByte(raw, '\\') >= 0 {
			return false // an escaped key: rare, left to checkKeys
		}
		if !names[string(raw)] || n == len(seen) {
			return false
		}
		for _, k := range seen[:n] {
			if bytes.Equal(k, raw) {
				return false
			}
		}
		seen[n] = raw
		n++
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		if i = skipValue(body, i+1); i < 0 {
			return false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			return skipSpace(body, i+1) == len(body)
		default:
			return false
		}
	}
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just after the string that starts with the
// quote at b[i], or -1 if it does not end.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index of the ',' or '}' that ends the value
// starting at b[i], or -1. Strings are skipped whole, so brackets and
// commas inside them do not count; what lies between the delimiters is
// left to json.Unmarshal to check.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			end := skipString(b, i)
			if end < 0 {
				return -1
			}
			i = end - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// jsonNames returns the JSON names of the fields of the struct v points to.
// They are found once per type: reflection cost 0.6 µs per request
// (BENCHMARKS.md). The map returned is shared: read it only.
func jsonNames(v any) map[string]bool {
	t := reflect.TypeOf(v).Elem()
	if names, ok := jsonNamesByType.Load(t); ok {
		return names.(map[string]bool)
	}
	names := make(map[string]bool, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names[name] = true
		}
	}
	jsonNamesByType.Store(t, names)
	return names
}

var jsonNamesByType sync.Map // reflect.Type → map[string]bool

// validate checks every field, naming the one that is wrong.
func (q *createSpaceRequest) validate() error {
	bad := func(format string, args ...any) error { return errorf(statusInvalidArgument, format, args...) }
	if q.User == "" {
		return bad(`"user" is required: "users/{id}" or the email of a user who has connected Google Chat`)
	}
	if !validUser(q.User) {
		return bad(`"user" must be "users/{numeric id}" or an email address`)
	}
	if q.SpaceType == "" {
		q.SpaceType = spaceTypeSpace
	}
	n := utf8.RuneCountInString(q.DisplayName)
	switch q.SpaceType {
	case spaceTypeSpace:
		if n == 0 {
			return bad(`"displayName" is required for a SPACE (1 to 128 characters)`)
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
	if n > 128 {
		return bad(`"displayName" is longer than 128 characters`)
	}
	if err := checkVisible("displayName", q.DisplayName, false); err != nil {
		return err
	}
	if utf8.RuneCountInString(q.Description) > 4096 {
		return bad(`"description" is longer than 4096 characters`)
	}
	if err := checkVisible("description", q.Description, true); err != nil {
		return err
	}
	if q.Description != "" && q.SpaceType != spaceTypeSpace {
		return bad(`"description" is only for a SPACE`)
	}
	if len(q.Members) > 49 {
		return bad(`"members" lists %d users; Chat allows at most 49 besides the user`, len(q.Members))
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
	if q.RequestID != "" && (len(q.RequestID) > 128 || !requestIDPattern().MatchString(q.RequestID)) {
		return bad(`"requestId" must be 1 to 128 characters of letters, digits and . _ : ~ -`)
	}
	return nil
}

func validUser(u string) bool { return isUserID(u) || validEmail(u) }

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

// callChat makes the Chat call, retrying 429 and 5xx with capped, jittered
// exponential backoff that honours Retry-After, for as long as the
// request's deadline allows. Every try carries the same requestId.
func (s *server) callChat(ctx context.Context, token string, q *createSpaceRequest) (*chat.Space, error) {
	space := &chat.Space{DisplayName: q.DisplayName, SpaceType: q.SpaceType}
	if q.Description != "" {
		space.SpaceDetails = &chat.SpaceDetails{Description: q.Description}
	}
	ctx = withBearer(ctx, token)
	bo := gax.Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2}
	for {
		var (
			got *chat.Space
			err error
		)
		if len(q.Members) == 0 {
			got, err = s.chat.Spaces.Create(space).RequestId(q.RequestID).Context(ctx).Do()
		} else {
			setup := &chat.SetUpSpaceRequest{Space: space, RequestId: q.RequestID}
			for _, m := range q.Members {
				setup.Memberships = append(setup.Memberships, &chat.Membership{Member: &chat.User{Name: memberName(m), Type: "HUMAN"}})
			}
			got, err = s.chat.Spaces.Setup(setup).Context(ctx).Do()
		}
		if err == nil {
			return got, nil
		}
		var ge *googleapi.Error
		if !errors.As(err, &ge) || !retryable(ge.Code) {
			return nil, err
		}
		wait := bo.Pause()
		if ra := retryAfter(ge.Header); ra > 0 {
			wait = ra
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, err // no time left for another try
		}
		loggerFrom(ctx).Info("Chat API busy; retrying", "code", ge.Code, "wait", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

func retryable(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

// retryAfter reads a Retry-After of whole seconds; dates are not used by
// Google's APIs.
func retryAfter(h http.Header) time.Duration {
	if h == nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After")))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 60)) * time.Second
}

// memberName is the Chat member name: "users/{id}", or "users/{email}",
// which Chat accepts as an alias.
func memberName(m string) string {
	if strings.HasPrefix(m, "users/") {
		return m
	}
	return "users/" + strings.ToLower(m)
}

// chatError maps a failed Chat call to DESIGN.md's statuses. A 403 is a
// permission problem, not a revocation: the token is kept.
func (s *server) chatError(p *principal, err error) error {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		if errors.Is(err, context.DeadlineExceeded) {
			return wrapError(statusDeadlineExceeded, err, "the Chat API did not answer in time; try again with the same requestId")
		}
		return wrapError(statusUpstreamError, err, "the Chat API could not be reached; try again with the same requestId")
	}
	cause := fmt.Errorf("chat API %d: %s", ge.Code, ge.Message)
	msg := strings.TrimSpace(ge.Message)
	switch {
	case requestIDTaken(ge):
		return wrapError(statusAlreadyExists, cause, "this requestId was already used by another user: Chat binds a requestId to the user who first sent it, and returns that user's space only to them; send a requestId of your own (or none)")
	case ge.Code == http.StatusBadRequest:
		return wrapError(statusInvalidArgument, cause, "the Chat API refused the request: %s", msg)
	case p.via == credentialDelegation && (ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden && hasReason(ge, "ACCESS_TOKEN_SCOPE_INSUFFICIENT")):
		// A new consent would not help a delegated user.
		return wrapError(statusUpstreamError, cause, "the Chat API refused the delegated access token for %s; try again", p.Email)
	case ge.Code == http.StatusUnauthorized:
		return s.notAuthorized("users/"+p.Sub, p.Email, cause)
	case ge.Code == http.StatusForbidden && hasReason(ge, "ACCESS_TOKEN_SCOPE_INSUFFICIENT"):
		return s.notAuthorized("users/"+p.Sub, p.Email, cause)
	case ge.Code == http.StatusForbidden:
		return wrapError(statusPermissionDenied, cause, "the Chat API refused %s permission: %s", p.Email, msg)
	case ge.Code == http.StatusNotFound && strings.Contains(strings.ToLower(msg), "chat app not found"):
		return wrapError(statusUpstreamError, cause, "the Chat API answered \"Chat app not found\": enable the Google Chat API and configure a Chat app (APIs & Services → Google Chat API → Configuration) in the function's Google Cloud project")
	case ge.Code == http.StatusNotFound:
		return wrapError(statusNotFound, cause, "the Chat API answered not found: %s", msg)
	case ge.Code == http.StatusConflict:
		return wrapError(statusAlreadyExists, cause, "a space with this name already exists; choose another displayName")
	case ge.Code == http.StatusTooManyRequests:
		e := wrapError(statusResourceExhausted, cause, "the Chat API is rate limiting; try again later with the same requestId")
		e.RetryAfter = max(int(retryAfter(ge.Header)/time.Second), 10)
		return e
	default:
		return wrapError(statusUpstreamError, cause, "the Chat API failed (HTTP %d); try again with the same requestId", ge.Code)
	}
}

// requestIDTaken reports Chat's refusal of a requestId that another user
// already sent. Chat's reference says only that this "returns an error";
// the fake answers 409 ALREADY_EXISTS, as for a taken display name, and
// its message names the request ID, which is what tells the two apart.
// A 400 naming it is read the same way, should Chat answer so.
func requestIDTaken(ge *googleapi.Error) bool {
	if ge.Code != http.StatusConflict && ge.Code != http.StatusBadRequest {
		return false
	}
	m := strings.ToLower(ge.Message)
	names := strings.Contains(m, "request id") || strings.Contains(m, "requestid") || strings.Contains(m, "request_id")
	return names && (strings.Contains(m, "already") || strings.Contains(m, "different user") || strings.Contains(m, "another user"))
}

func hasReason(ge *googleapi.Error, reason string) bool {
	if strings.Contains(string(ge.Body), reason) {
		return true
	}
	for _, it := range ge.Errors {
		if it.Reason == reason {
			return true
		}
	}
	return false
}

// bearerKey carries a request's access token to the shared Chat client's
// transport: one chat.Service serves every user, and per request only the
// token differs.
type bearerKey struct{}

func withBearer(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, bearerKey{}, token)
}

// bearerTransport sets Authorization from the request's context.
type bearerTransport struct{ base http.RoundTripper }

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	token, _ := r.Context().Value(bearerKey{}).(string)
	if token == "" {
		return nil, errors.New("chat: no access token in the request context")
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+token)
	return t.base.RoundTrip(r)
}
