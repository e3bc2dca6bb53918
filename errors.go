package chatauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
)

// Status values of the JSON error envelope, as README.md ("Errors") and
// openapi.yaml list them.
const (
	statusInvalidArgument       = "INVALID_ARGUMENT"
	statusUnauthenticated       = "UNAUTHENTICATED"
	statusPermissionDenied      = "PERMISSION_DENIED"
	statusAuthorizationRequired = "AUTHORIZATION_REQUIRED"
	statusNotFound              = "NOT_FOUND"
	statusMethodNotAllowed      = "METHOD_NOT_ALLOWED"
	statusAlreadyExists         = "ALREADY_EXISTS"
	statusPayloadTooLarge       = "PAYLOAD_TOO_LARGE"
	statusUnsupportedMediaType  = "UNSUPPORTED_MEDIA_TYPE"
	statusResourceExhausted     = "RESOURCE_EXHAUSTED"
	statusInternal              = "INTERNAL"
	statusUpstreamError         = "UPSTREAM_ERROR"
	statusUnavailable           = "UNAVAILABLE"
	statusDeadlineExceeded      = "DEADLINE_EXCEEDED"
)

// httpCodes maps each status to its HTTP status code. It is the single
// place where a status becomes a code, so the two never disagree.
var httpCodes = map[string]int{
	statusInvalidArgument:       http.StatusBadRequest,
	statusUnauthenticated:       http.StatusUnauthorized,
	statusPermissionDenied:      http.StatusForbidden,
	statusAuthorizationRequired: http.StatusForbidden,
	statusNotFound:              http.StatusNotFound,
	statusMethodNotAllowed:      http.StatusMethodNotAllowed,
	statusAlreadyExists:         http.StatusConflict,
	statusPayloadTooLarge:       http.StatusRequestEntityTooLarge,
	statusUnsupportedMediaType:  http.StatusUnsupportedMediaType,
	statusResourceExhausted:     http.StatusTooManyRequests,
	statusInternal:              http.StatusInternalServerError,
	statusUpstreamError:         http.StatusBadGateway,
	statusUnavailable:           http.StatusServiceUnavailable,
	statusDeadlineExceeded:      http.StatusGatewayTimeout,
}

// Error is the application error every handler returns for a request that
// cannot be served. Message is shown to people and must never contain a
// token, code, state or secret; Err is the cause, which is logged (for 5xx)
// but never sent.
type Error struct {
	Status       string // one of the status constants
	Message      string // a short sentence a person can act on
	AuthorizeURL string // set with AUTHORIZATION_REQUIRED: where the user consents again
	RetryAfter   int    // seconds, sent as Retry-After when positive
	Err          error  // the cause, for logs only

	// restartURL is offered on an error page as a fresh start; it is not
	// part of the JSON envelope.
	restartURL string
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Status, e.Message, e.Err)
	}
	return e.Status + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// HTTPCode is the HTTP status code the error is answered with.
func (e *Error) HTTPCode() int {
	if c, ok := httpCodes[e.Status]; ok {
		return c
	}
	return http.StatusInternalServerError
}

// errorf builds an *Error with a formatted message and no cause.
func errorf(status, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// wrapError builds an *Error that keeps err as its cause.
func wrapError(status string, err error, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...), Err: err}
}

// Store failures carry one of these sentinels so that the one mapping below
// can answer them without the handlers knowing which store is in use.
var (
	errNotFound         = errors.New("not found")
	errStoreUnavailable = errors.New("store unavailable")
	// errStoreTimeout is the cause of a Firestore operation's own deadline
	// (firestoreStore.bound), kept in the error's text.
	errStoreTimeout = errors.New("no answer from Firestore in time")
	// errAlreadyExists is a record that may be created once, created
	// already: a consent state's used-marker (markStateUsed).
	errAlreadyExists = errors.New("already exists")
)

// asError turns any error into the *Error that is answered. It is the one
// mapping from error kinds to statuses: application errors pass through,
// store and context failures get their own status, and anything else is an
// internal error whose detail stays in the logs.
func asError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.DeadlineExceeded):
		return wrapError(statusDeadlineExceeded, err, "the request took too long; try again")
	case errors.Is(err, errStoreUnavailable):
		return &Error{Status: statusUnavailable, Message: "the token store is unavailable; try again shortly", RetryAfter: 5, Err: err}
	case errors.Is(err, errNotFound):
		return wrapError(statusNotFound, err, "not found")
	default:
		return wrapError(statusInternal, err, "internal error")
	}
}

// logError logs e, what the failed work is called ("request", "chat
// command"): 5xx at Error with the cause, which may name internals; the
// rest at Info, with the message people see. The cause is never sent.
func logError(log *slog.Logger, e *Error, what string) {
	code := e.HTTPCode()
	attrs := []any{"status", e.Status, "code", code, "reason", e.Message}
	if code >= 500 {
		if e.Err != nil {
			attrs = append(attrs, "error", e.Err.Error())
		}
		log.Error(what+" failed", attrs...)
	} else {
		log.Info(what+" refused", attrs...)
	}
}

// errorBody is the JSON error envelope (openapi.yaml, Error).
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code         int    `json:"code"`
	Status       string `json:"status"`
	Message      string `json:"message"`
	AuthorizeURL string `json:"authorizeUrl,omitempty"`
}

// setErrorHeaders sets the headers every error answer shares.
func setErrorHeaders(w http.ResponseWriter, e *Error) {
	w.Header().Set("Cache-Control", "no-store")
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	if e.Status == statusMethodNotAllowed && w.Header().Get("Allow") == "" {
		w.Header().Set("Allow", http.MethodGet)
	}
}

// writeErrorJSON answers e as the JSON error envelope.
func writeErrorJSON(w http.ResponseWriter, e *Error) {
	setErrorHeaders(w, e)
	writeJSON(w, e.HTTPCode(), errorBody{Error: errorDetail{
		Code:         e.HTTPCode(),
		Status:       e.Status,
		Message:      e.Message,
		AuthorizeURL: e.AuthorizeURL,
	}})
}
