package chatauth

import (
	"errors"
	"io"
	"mime"
	"net/http"
)

// maxBody bounds every webhook body (README.md, openapi.yaml: 64 KiB).
const maxBody = 64 << 10

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
