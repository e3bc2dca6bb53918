package chatauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	gax "github.com/googleapis/gax-go/v2"
	"google.golang.org/api/chat/v1"
	"google.golang.org/api/googleapi"
)

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
	// lastAnswer is Chat's last retryable failure. When the deadline ends
	// the try after it, that failure is the answer: Chat did answer, and a
	// 504 would blame a slowness nobody saw.
	var lastAnswer error
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
		if !errors.As(err, &ge) {
			if lastAnswer != nil && ctx.Err() != nil {
				return nil, lastAnswer
			}
			return nil, err
		}
		if !retryable(ge.Code) {
			return nil, err
		}
		lastAnswer = err
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

// chatError maps a failed Chat call to the statuses of README.md, "Errors". A 403 is a
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
		return s.consents.notAuthorized("users/"+p.Sub, p.Email, cause)
	case ge.Code == http.StatusForbidden && hasReason(ge, "ACCESS_TOKEN_SCOPE_INSUFFICIENT"):
		return s.consents.notAuthorized("users/"+p.Sub, p.Email, cause)
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
