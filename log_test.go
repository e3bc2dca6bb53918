package chatauth

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestLogFields: every log line is JSON that Cloud Logging reads as a
// structured entry, with the request's trace (from X-Cloud-Trace-Context or
// W3C traceparent) and the function's execution id.
func TestLogFields(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tc := range []struct{ header, value string }{
		{"X-Cloud-Trace-Context", traceID + "/1;o=1"},
		{"traceparent", "00-" + traceID + "-00f067aa0ba902b7-01"},
	} {
		t.Run(tc.header, func(t *testing.T) {
			e := newTestEnv(t, storeLocal)
			// The execution id is the Functions Framework's to add.
			req, _ := http.NewRequest(http.MethodGet, e.framework()+"/OAuthStart", nil)
			req.Header.Set(tc.header, tc.value)
			req.Header.Set("Function-Execution-Id", "exec-123")
			resp, err := noRedirects.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			var entry map[string]any
			for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatalf("a log line is not JSON: %q", line)
				}
				if entry["message"] == "consent started" {
					break
				}
				entry = nil
			}
			if entry == nil {
				t.Fatalf("no \"consent started\" line in %s", e.logs.String())
			}
			if got, want := entry["logging.googleapis.com/trace"], "projects/"+testProject+"/traces/"+traceID; got != want {
				t.Errorf("trace: got %v, want %q", got, want)
			}
			if entry["severity"] != "INFO" || entry["function"] != "OAuthStart" {
				t.Errorf("severity %v function %v; want INFO and OAuthStart", entry["severity"], entry["function"])
			}
			labels, _ := entry["logging.googleapis.com/labels"].(map[string]any)
			if labels["execution_id"] != "exec-123" {
				t.Errorf("execution_id label: got %v, want exec-123", labels)
			}
			if _, ok := entry["msg"]; ok {
				t.Error(`slog's "msg" key was not renamed to "message"`)
			}
		})
	}
}
