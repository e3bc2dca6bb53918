package fakegoogle

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// claimsOf decodes a JWT's claims and checks its signature against key.
func claimsOf(t *testing.T, tok string, key *rsa.PublicKey) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token of %d parts", len(parts))
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("the token does not verify against the key: %v", err)
	}
	var claims map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// TestChatTokenAddOnAndEndpoint: ChatTokenPath mints, besides the "Project number"
// token, the "HTTP endpoint URL" token and an add-on's, each signed by
// Google's OAuth key (published at /oauth2/v3/certs) with its signer's
// email.
func TestChatTokenAddOnAndEndpoint(t *testing.T) {
	g := newTestServer(t, Options{})
	if _, err := NewChatApp(g); err != nil {
		t.Fatal(err)
	}
	const endpoint = "https://example.test/ChatEvents"
	for _, tc := range []struct{ body, email string }{
		{`{"audience":"` + endpoint + `"}`, ChatServiceAccount},
		{`{"audience":"` + endpoint + `","addOnProject":"42"}`, "service-42@" + AddOnAgentDomain},
	} {
		resp, err := http.Post(g.ChatTokenURL(), "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ Token string }
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: got %d", tc.body, resp.StatusCode)
		}
		c := claimsOf(t, out.Token, g.PublicKey())
		if c["iss"] != GoogleIssuer || c["aud"] != endpoint || c["email"] != tc.email || c["email_verified"] != true {
			t.Errorf("%s: claims %v, want Google's issuer, aud %s, email %s verified", tc.body, c, endpoint, tc.email)
		}
	}
	if AddOnServiceAgent("42") != "service-42@gcp-sa-gsuiteaddons.iam.gserviceaccount.com" {
		t.Errorf("AddOnServiceAgent: %s", AddOnServiceAgent("42"))
	}
}

// TestAddOnEventMapping: every interaction event type becomes its add-on
// payload, with the fields Google's mapping moves.
func TestAddOnEventMapping(t *testing.T) {
	user := `"user":{"name":"users/1","type":"HUMAN"},"space":{"name":"spaces/S"},"eventTime":"2026-01-01T00:00:00Z"`
	msg := `"message":{"name":"spaces/S/messages/M","text":"hi"}`
	for _, tc := range []struct {
		classic, payload string
		want             []string // in the payload
	}{
		{`{"type":"MESSAGE",` + user + `,` + msg + `,"configCompleteRedirectUrl":"R"}`, "messagePayload", []string{`"message"`, `"configCompleteRedirectUri":"R"`, `"space"`}},
		{`{"type":"MESSAGE",` + user + `,"message":{"text":"/x","slashCommand":{"commandId":"3"}},"configCompleteRedirectUrl":"R"}`, "appCommandPayload", []string{`"appCommandMetadata":{"appCommandId":"3","appCommandType":"SLASH_COMMAND"}`, `"configCompleteRedirectUri":"R"`}},
		{`{"type":"APP_COMMAND",` + user + `,` + msg + `,"appCommandMetadata":{"appCommandId":2,"appCommandType":"QUICK_COMMAND"}}`, "appCommandPayload", []string{`"appCommandType":"QUICK_COMMAND"`, `"message"`}},
		{`{"type":"ADDED_TO_SPACE",` + user + `,"configCompleteRedirectUrl":"R"}`, "addedToSpacePayload", []string{`"configCompleteRedirectUri":"R"`}},
		{`{"type":"REMOVED_FROM_SPACE",` + user + `}`, "removedFromSpacePayload", []string{`"space"`}},
		{`{"type":"CARD_CLICKED",` + user + `,` + msg + `}`, "buttonClickedPayload", []string{`"message"`}},
		{`{"type":"WIDGET_UPDATED",` + user + `}`, "widgetUpdatedPayload", []string{`"space"`}},
	} {
		b, err := AddOnEvent([]byte(tc.classic), "SYS")
		if err != nil {
			t.Fatalf("%s: %v", tc.classic, err)
		}
		var ev struct {
			Common map[string]any             `json:"commonEventObject"`
			Auth   map[string]string          `json:"authorizationEventObject"`
			Chat   map[string]json.RawMessage `json:"chat"`
		}
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		p, ok := ev.Chat[tc.payload]
		var top map[string]any
		json.Unmarshal(b, &top)
		if !ok || len(ev.Chat) != 3 || len(top) != 3 || ev.Common["hostApp"] != "CHAT" || ev.Auth["systemIdToken"] != "SYS" {
			t.Errorf("%s: got %s, want chat.%s beside user and eventTime, hostApp CHAT and the system token", tc.classic, b, tc.payload)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(p), w) {
				t.Errorf("%s: payload %s lacks %s", tc.payload, p, w)
			}
		}
		if strings.Contains(string(p), "slashCommand") {
			t.Errorf("%s: the slash command stayed in the message: %s", tc.payload, p)
		}
	}
	if _, err := AddOnEvent([]byte(`{"type":"SOMETHING_NEW"}`), ""); err == nil {
		t.Error("an unknown type converted")
	}
}

// TestSendAddOnAndConfigComplete: Send posts each format signed as its signer;
// opening an event's configCompleteRedirectUrl on chat.google.com (through
// Transport) sends that event again, once.
func TestSendAddOnAndConfigComplete(t *testing.T) {
	g := newTestServer(t, Options{})
	app, err := NewChatApp(g)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []*http.Request
	var bodies []string
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, bodies = append(got, r), append(bodies, string(b))
		n := len(got)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n == 1 {
			io.WriteString(w, `{"basic_authorization_prompt":{"authorization_url":"https://x","resource":"r"}}`)
			return
		}
		io.WriteString(w, `{"hostAppDataAction":{"chatDataAction":{"createMessageAction":{"message":{"text":"done"}}}}}`)
	}))
	defer endpoint.Close()
	redirect := NewConfigCompleteURL()
	ev := `{"type":"MESSAGE","user":{"name":"users/1"},"message":{"text":"hi"},"configCompleteRedirectUrl":"` + redirect + `"}`
	ep := Endpoint{URL: endpoint.URL, AddOnProject: "42"}
	a, err := app.Send(context.Background(), ep, []byte(ev))
	if err != nil || a.Status != 200 {
		t.Fatalf("Send: %v %d", err, a.Status)
	}
	c := claimsOf(t, strings.TrimPrefix(got[0].Header.Get("Authorization"), "Bearer "), g.PublicKey())
	if c["email"] != AddOnServiceAgent("42") || c["aud"] != endpoint.URL || !strings.Contains(bodies[0], `"messagePayload"`) || !strings.Contains(bodies[0], `"systemIdToken":"`) {
		t.Errorf("the add-on event: claims %v, body %s", c, bodies[0])
	}

	client := app.HTTPClient()
	resp, err := client.Get(redirect)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The same event, with a token of its own: a delivery in a later second
	// carries a token issued then.
	sameEvent := func(a, b string) bool {
		token := regexp.MustCompile(`"systemIdToken":"[^"]*"`)
		return token.ReplaceAllString(a, "") == token.ReplaceAllString(b, "")
	}
	if resp.StatusCode != 200 || !strings.Contains(string(page), "done") || len(got) != 2 || !sameEvent(bodies[1], bodies[0]) {
		t.Errorf("config complete: %d %s, %d deliveries", resp.StatusCode, page, len(got))
	}
	if resp, err := client.Get(redirect); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("a spent configCompleteRedirectUrl: %v %v, want 404", resp, err)
	}
	if n := len(app.Answers()); n != 2 || AnswerText(app.Answers()[1].Body) != "done" {
		t.Errorf("answers: %d", n)
	}

	// The classic format, with the "HTTP endpoint URL" token.
	if _, err := app.Send(context.Background(), Endpoint{URL: endpoint.URL}, []byte(ev)); err != nil {
		t.Fatal(err)
	}
	c = claimsOf(t, strings.TrimPrefix(got[2].Header.Get("Authorization"), "Bearer "), g.PublicKey())
	if c["email"] != ChatServiceAccount || bodies[2] != ev {
		t.Errorf("the classic event: claims %v, body %s", c, bodies[2])
	}
}
