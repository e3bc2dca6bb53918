package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsersEveryPage: users follows nextPageToken to the end, sending the
// same status with each token; -json prints one object holding every page,
// and the table one row per user.
func TestUsersEveryPage(t *testing.T) {
	var seen []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &req)
		seen = append(seen, req)
		if r.URL.Path != "/Users" || r.Header.Get("X-Signature") == "" {
			http.Error(w, "unexpected", 500)
			return
		}
		page := map[string]any{}
		switch req["pageToken"] {
		case nil:
			page = map[string]any{"users": []any{map[string]any{"user": "users/1", "email": "a@example.com", "status": "needs_reauth", "scopes": []string{}, "connectedAt": "2026-01-01T00:00:00Z"}}, "nextPageToken": "p2"}
		case "p2":
			page = map[string]any{"users": []any{map[string]any{"user": "users/2", "email": "b@example.com", "status": "needs_reauth", "scopes": []string{}, "connectedAt": "2026-01-02T00:00:00Z", "refreshedAt": "2026-01-03T00:00:00Z"}}}
		}
		json.NewEncoder(w).Encode(page)
	}))
	defer srv.Close()
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)

	var out, errs bytes.Buffer
	code := run([]string{"-url", srv.URL, "-secret-file", secret, "users", "-status", "needs_reauth", "-json"}, nil, &out, &errs, func(string) string { return "" })
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	var all struct {
		Users []struct{ User string } `json:"users"`
	}
	if err := json.Unmarshal(out.Bytes(), &all); err != nil || len(all.Users) != 2 || all.Users[1].User != "users/2" {
		t.Errorf("-json: got %v %s, want one object with both pages", err, out.String())
	}
	if len(seen) != 2 || seen[1]["status"] != "needs_reauth" || seen[1]["pageToken"] != "p2" || seen[0]["pageSize"] != float64(500) {
		t.Errorf("requests: got %v, want two pages of 500 with the status kept", seen)
	}
	out.Reset()
	seen = nil
	if code := run([]string{"-url", srv.URL, "-secret-file", secret, "users"}, nil, &out, &errs, func(string) string { return "" }); code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "users/2") || !strings.HasSuffix(lines[2], "2026-01-03T00:00:00Z") || !strings.HasSuffix(lines[1], "-") {
		t.Errorf("table: got\n%s", out.String())
	}
}

// TestErrorsPrinted: the product's status, message, authorizeUrl and
// Retry-After are printed, each error kind with its exit code.
func TestErrorsPrinted(t *testing.T) {
	for _, tc := range []struct {
		name, body, retry string
		status, code      int
		want              []string
	}{
		{"consent needed", `{"error":{"code":403,"status":"AUTHORIZATION_REQUIRED","message":"bob@example.com has not authorized this app","authorizeUrl":"https://x/OAuthStart?login_hint=bob%40example.com"}}`, "", 403, exitConsent,
			[]string{"AUTHORIZATION_REQUIRED (403): bob@example.com has not authorized this app", "https://x/OAuthStart?login_hint=bob%40example.com"}},
		{"unavailable", `{"error":{"code":503,"status":"UNAVAILABLE","message":"try again shortly"}}`, "5", 503, exitRefused, []string{"UNAVAILABLE (503)", "Try again in 5 seconds"}},
		{"not chatauth", `<html>404</html>`, "", 404, exitNoAnswer, []string{"not a chatauth error"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retry != "" {
					w.Header().Set("Retry-After", tc.retry)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			var out, errs bytes.Buffer
			getenv := func(k string) string {
				if k == "TOK" {
					return "eyJ.test.token"
				}
				return ""
			}
			c := run([]string{"-url", srv.URL, "-id-token", "env:TOK", "disconnect", "bob@example.com"}, nil, &out, &errs, getenv)
			if c != tc.code {
				t.Errorf("exit %d, want %d", c, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs.String(), w) {
					t.Errorf("stderr %q lacks %q", errs.String(), w)
				}
			}
			if strings.Contains(out.String()+errs.String(), "eyJ.test.token") {
				t.Error("the ID token was printed")
			}
		})
	}
}

// TestSignStdin: sign signs stdin's exact bytes with the first secret.
func TestSignStdin(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("first-secret-0123456789\nsecond-secret-0123456789\n"), 0o600)
	var out, errs bytes.Buffer
	code := run([]string{"-secret-file", secret, "sign"}, strings.NewReader("{}\n"), &out, &errs, func(string) string { return "" })
	if code != 0 || !strings.HasPrefix(out.String(), "t=") {
		t.Fatalf("exit %d %q %q", code, out.String(), errs.String())
	}
	if strings.Contains(out.String()+errs.String(), "first-secret") {
		t.Error("sign printed the secret")
	}
}
