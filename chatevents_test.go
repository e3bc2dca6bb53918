package chatauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

const (
	// chatEndpointURL is the ChatEvents URL entered as the Chat app's HTTP
	// endpoint URL (the ENDPOINT_URL audience).
	chatEndpointURL = "https://europe-west1-chatauth-test.cloudfunctions.net/ChatEvents"
	// chatProjectNumber is the PROJECT_NUMBER audience.
	chatProjectNumber = "123456789012"
	// chatRedirect is a configCompleteRedirectUrl as Chat sends it.
	chatRedirect = "https://chat.google.com/api/bot_config_complete?token=AHAr1x-test-redirect-token"
)

var chatModes = []string{chatAudienceEndpoint, chatAudienceProject}

// chatEnv is a testEnv whose ChatEvents is on, with a fake Google Chat
// that signs its requests.
type chatEnv struct {
	*testEnv
	app  *fakegoogle.ChatApp
	mode string
	// userTokens are the user's tokens sent in add-on events
	// (authorizationEventObject), which must be found nowhere.
	userTokens []string
}

func newChatEnv(t *testing.T, storeKind, mode string, opts ...func(*serverOptions)) *chatEnv {
	t.Helper()
	typ, aud, project := mode, chatEndpointURL, ""
	switch mode {
	case chatAudienceProject:
		aud = chatProjectNumber
	case chatModeAddOn:
		typ, project = chatAudienceEndpoint, addOnProject
	}
	e := newTestEnv(t, storeKind, func(c *Config) {
		c.ChatAudienceType, c.ChatAudience, c.ChatProjectNumber = typ, aud, project
	})
	app, err := fakegoogle.NewChatApp(e.google)
	if err != nil {
		t.Fatal(err)
	}
	sensitive.add(chatRedirect)
	// The server fetches Google's OAuth keys and the Chat service
	// account's certificates through the fake Chat app.
	e.restart(append([]func(*serverOptions){func(o *serverOptions) { o.certsClient = app.HTTPClient() }}, opts...)...)
	return &chatEnv{testEnv: e, app: app, mode: mode}
}

// token is the bearer token Google Chat sends in the env's mode; edit may
// change its claims.
func (c *chatEnv) token(edit func(map[string]any)) string {
	var tok string
	switch c.mode {
	case chatAudienceEndpoint:
		tok = c.app.EndpointToken(chatEndpointURL, edit)
	case chatModeAddOn:
		tok = c.app.AddOnToken(chatEndpointURL, addOnProject, edit)
	default:
		tok = c.app.ProjectToken(chatProjectNumber, edit)
	}
	sensitive.add(tok)
	return tok
}

// mention is a user mentioned in a test message.
type mention struct {
	name, display string
	bot           bool
}

var (
	bob   = mention{name: "users/201", display: "Bob"}
	carol = mention{name: "users/202", display: "Carol Ng"}
)

// chatMsg describes an interaction event the way Chat builds one.
type chatMsg struct {
	typ      string // MESSAGE by default
	user     string // users/{id}; alice by default
	email    string // the user's email; alice's by default, "-" for none
	userType string // HUMAN by default
	text     string // as typed, "/createspace Launch @Bob" or "create space Launch"
	slash    any    // the slash command id (a number, or a string as proto JSON sends int64)
	appCmd   int    // APP_COMMAND's appCommandId
	mentions []mention
	redirect string // configCompleteRedirectUrl; chatRedirect by default, "-" for none
	name     string // the message's resource name; derived from text by default
}

// json renders the event: argumentText without the slash command, an
// annotation for the command and for every mention, with UTF-16 indices.
func (m chatMsg) json() string {
	if m.typ == "" {
		m.typ = "MESSAGE"
	}
	if m.user == "" {
		m.user = "users/" + aliceSub
	}
	switch m.email {
	case "":
		m.email = aliceEmail
	case "-":
		m.email = ""
	}
	if m.userType == "" {
		m.userType = "HUMAN"
	}
	switch m.redirect {
	case "":
		m.redirect = chatRedirect
	case "-":
		m.redirect = ""
	}
	if m.name == "" {
		m.name = "spaces/AAAAdm/messages/" + fmt.Sprintf("%x", []byte(m.text+m.user))
	}
	user := map[string]any{"name": m.user, "displayName": "Someone", "email": m.email, "type": m.userType}
	ev := map[string]any{
		"type":                      m.typ,
		"eventTime":                 "2026-11-26T05:00:00.000Z",
		"user":                      user,
		"space":                     map[string]any{"name": "spaces/AAAAdm", "type": "DM", "spaceType": "DIRECT_MESSAGE", "singleUserBotDm": true},
		"configCompleteRedirectUrl": m.redirect,
		"common":                    map[string]any{"userLocale": "en", "hostApp": "CHAT"},
	}
	if m.typ == "ADDED_TO_SPACE" || m.typ == "REMOVED_FROM_SPACE" {
		return mustJSON(ev)
	}
	var anns []any
	arg := m.text
	if m.slash != nil {
		cmd, rest, _ := strings.Cut(m.text, " ")
		arg = " " + rest
		anns = append(anns, map[string]any{"type": "SLASH_COMMAND", "startIndex": 0, "length": len(cmd),
			"slashCommand": map[string]any{"bot": map[string]any{"name": "users/app", "type": "BOT"}, "type": "INVOKE", "commandName": cmd, "commandId": m.slash}})
	}
	from := map[string]int{} // where to look for the next mention of a name
	for _, u := range m.mentions {
		i := strings.Index(m.text[from[u.display]:], "@"+u.display)
		if i < 0 {
			panic("mention not in the text: " + u.display)
		}
		at := from[u.display] + i
		from[u.display] = at + 1
		typ := "HUMAN"
		if u.bot {
			typ = "BOT"
		}
		anns = append(anns, map[string]any{"type": "USER_MENTION",
			"startIndex": len(utf16.Encode([]rune(m.text[:at]))), "length": len(utf16.Encode([]rune("@" + u.display))),
			"userMention": map[string]any{"user": map[string]any{"name": u.name, "displayName": u.display, "type": typ}, "type": "MENTION"}})
	}
	msg := map[string]any{
		"name": m.name, "sender": user, "text": m.text, "argumentText": arg, "annotations": anns,
		"space": map[string]any{"name": "spaces/AAAAdm"}, "thread": map[string]any{"name": "spaces/AAAAdm/threads/t"},
	}
	if m.slash != nil {
		msg["slashCommand"] = map[string]any{"commandId": m.slash}
	}
	ev["message"] = msg
	if m.appCmd != 0 {
		ev["type"] = "APP_COMMAND"
		ev["appCommandMetadata"] = map[string]any{"appCommandId": m.appCmd, "appCommandType": "SLASH_COMMAND"}
	}
	return mustJSON(ev)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// chatAnswer is ChatEvents' answer.
type chatAnswer struct {
	Text           string `json:"text"`
	ActionResponse *struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	} `json:"actionResponse"`
	raw string
}

// send posts an event signed as Chat signs it and returns the answer,
// failing unless it is 200.
func (c *chatEnv) send(m chatMsg) chatAnswer {
	c.t.Helper()
	tok := c.token(nil)
	body := m.json()
	if c.mode == chatModeAddOn {
		body = c.addOnBody(body, tok)
	}
	code, answer, _ := c.post("ChatEvents", body, map[string]string{"Authorization": "Bearer " + tok})
	if code != http.StatusOK {
		c.t.Fatalf("ChatEvents: got %d, want 200: %s", code, answer)
	}
	a := chatAnswer{raw: strings.TrimSpace(answer)}
	if c.mode == chatModeAddOn {
		return addOnAnswer(c.t, a.raw)
	}
	if err := json.Unmarshal([]byte(answer), &a); err != nil {
		c.t.Fatalf("ChatEvents answer is not JSON: %v: %s", err, answer)
	}
	return a
}

// configURL returns the Configure link of a REQUEST_CONFIG answer.
func (a chatAnswer) configURL(t *testing.T) string {
	t.Helper()
	if a.ActionResponse == nil || a.ActionResponse.Type != "REQUEST_CONFIG" || a.ActionResponse.URL == "" {
		t.Fatalf("got %s, want a REQUEST_CONFIG action response with a url", a.raw)
	}
	if u, err := url.Parse(a.ActionResponse.URL); err == nil {
		sensitive.add(u.Query().Get("ticket"))
	}
	return a.ActionResponse.URL
}

// consentAt opens a Configure link in b, lets the fake Google consent and
// returns the callback's answer.
func (c *chatEnv) consentAt(b *browser, startURL string) (*http.Response, string) {
	c.t.Helper()
	resp, body := b.get(startURL)
	if resp.StatusCode != http.StatusFound {
		c.t.Fatalf("OAuthStart: got %d, want 302: %s", resp.StatusCode, body)
	}
	resp, body = b.get(location(c.t, resp).String())
	if resp.StatusCode != http.StatusFound {
		c.t.Fatalf("fake Google answered %d: %s", resp.StatusCode, body)
	}
	return b.get(location(c.t, resp).String())
}

// TestChatEventsConsentLoop drives the whole loop through the Functions
// Framework: a message from a user who has not consented gets Chat's
// Configure prompt; the link goes through OAuthStart and Google's consent
// back to Chat's redirect URL; Chat's re-sent message creates the space,
// as the user, with the people mentioned; a redelivery creates nothing
// more.
func TestChatEventsConsentLoop(t *testing.T) {
	t.Parallel()
	for i, kind := range storeKinds {
		mode := chatModes[i%len(chatModes)]
		t.Run(kind+"/"+mode, func(t *testing.T) {
			t.Parallel()
			c := newChatEnv(t, kind, mode)
			runConsentLoop(t, c)
		})
	}
}

// runConsentLoop drives the consent loop both event formats share: a
// slash command from alice, who has not consented, gets the prompt, whose
// link is OAuthStart with a sealed ticket, and nothing calls Chat; the
// consent ends at Chat's redirect URL with alice's consent stored; the
// re-sent command creates one space as alice, with the people mentioned,
// named in the answer; a redelivery creates nothing more. It returns the
// prompt, the answer and the stored record.
func runConsentLoop(t *testing.T, c *chatEnv) (prompt, got chatAnswer, rec *tokenRecord) {
	t.Helper()
	msg := chatMsg{text: "/createspace Launch review @Bob @Carol Ng", slash: createCommandID, mentions: []mention{bob, carol}}
	prompt = c.send(msg)
	start := prompt.configURL(t)
	if !strings.HasPrefix(start, c.base+"/OAuthStart?ticket=") {
		t.Errorf("the prompt's link %q is not OAuthStart with a ticket", start)
	}
	if strings.Contains(start, aliceSub) || strings.Contains(start, "AHAr1x") {
		t.Error("the prompt's link shows the Chat user id or Chat's redirect token; the ticket should be sealed")
	}
	if n := c.google.TotalChatCalls(); n != 0 {
		t.Errorf("the Chat API was called %d times before consent", n)
	}

	resp, body := c.consentAt(newBrowser(t), start)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != chatRedirect {
		t.Fatalf("callback: got %d to %q, want 302 to Chat's redirect URL: %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	rec = c.storedToken(aliceSub)
	if rec == nil || rec.Status != tokenActive {
		t.Fatalf("no active token stored for alice: %+v", rec)
	}

	// Chat re-sends the message that asked for the configuration.
	got = c.send(msg)
	spaces := c.google.Spaces()
	if len(spaces) != 1 {
		t.Fatalf("%d spaces exist, want 1; answer %s", len(spaces), got.raw)
	}
	sp := spaces[0]
	if sp.DisplayName != "Launch review" || sp.Creator != aliceSub || sp.Route != "spaces.setup" || strings.Join(sp.Members, ",") != "users/201,users/202" {
		t.Errorf("space: got %q by %s via %s with %q; want \"Launch review\" by alice via spaces.setup with users/201,users/202", sp.DisplayName, sp.Creator, sp.Route, sp.Members)
	}
	if !strings.Contains(got.Text, "Launch review") || !strings.Contains(got.Text, sp.SpaceURI) {
		t.Errorf("answer %q does not name the space and link %s", got.Text, sp.SpaceURI)
	}
	// A redelivery of the same message creates nothing new.
	if again := c.send(msg); !strings.Contains(again.Text, sp.SpaceURI) || len(c.google.Spaces()) != 1 {
		t.Errorf("redelivery: answer %q, %d spaces; want the same space and 1", again.Text, len(c.google.Spaces()))
	}
	return prompt, got, rec
}

// TestChatEventsConsentByAnotherAccount: whoever opens a Configure link
// must sign in as the Chat user it was made for; another account is
// refused and nothing is stored, for either account.
func TestChatEventsConsentByAnotherAccount(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatAudienceEndpoint)
	bobUser := c.google.AddUser(fakegoogle.User{Email: "bob@example.com", EmailVerified: true})

	for _, tc := range []struct {
		name  string
		email string // in the event
		extra string // appended to the Configure link
	}{
		// Google's account chooser picks alice, the first account.
		{"account chooser", "-", ""},
		// Someone adds a login_hint for another account to the link.
		{"login_hint added", bobUser.Email, "&login_hint=" + url.QueryEscape(aliceEmail)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := c.send(chatMsg{user: "users/" + bobUser.Sub, email: tc.email, text: "create space Bob's", mentions: nil}).configURL(t)
			resp, body := c.consentAt(newBrowser(t), start+tc.extra)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another Google Chat user") {
				t.Errorf("callback: got %d, want 403 naming the mismatch: %s", resp.StatusCode, body)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("a refused consent redirected to %q", loc)
			}
			if c.storedToken(aliceSub) != nil || c.storedToken(bobUser.Sub) != nil {
				t.Error("a token was stored for a refused consent")
			}
		})
	}
	// Bob signing in as himself is accepted.
	start := c.send(chatMsg{user: "users/" + bobUser.Sub, email: bobUser.Email, text: "create space Bob's"}).configURL(t)
	if resp, body := c.consentAt(newBrowser(t), start); resp.StatusCode != http.StatusFound {
		t.Fatalf("bob as himself: got %d: %s", resp.StatusCode, body)
	}
	if c.storedToken(bobUser.Sub) == nil || c.storedToken(aliceSub) != nil {
		t.Error("bob's consent was not stored as bob's")
	}
}

// TestChatRedirectAllowList: after a consent from Chat the browser goes
// back only to https://chat.google.com/…; any other configCompleteRedirectUrl
// gets the ordinary success page, and the consent itself still counts.
func TestChatRedirectAllowList(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatAudienceProject)
	for _, tc := range []struct {
		redirect string
		ok       bool
	}{
		{chatRedirect, true},
		{"https://chat.google.com/u/0/api/bot_config_complete?token=x", true},
		{"//evil.com", false},
		{"//evil.com/https://chat.google.com/", false},
		{"https://chat.google.com.evil.com/api/bot_config_complete", false},
		{"https://evil.com/?chat.google.com", false},
		{"https://evil.com/https://chat.google.com/", false},
		{"http://chat.google.com/api/bot_config_complete", false},
		{"javascript:alert(document.domain)//https://chat.google.com/", false},
		{"https://chat.google.com@evil.com/", false},
		{"https://chat.google.com:443@evil.com/", false},
		{"https://chat.google.com\\@evil.com/", false},
		{"https://chat.google.com:8443/api", false},
		{"https://CHAT.GOOGLE.COM/api", false},
		{"https://chat.google.com/\nLocation: https://evil.com/", false},
		{"/relative/path", false},
	} {
		t.Run(tc.redirect, func(t *testing.T) {
			if got := chatRedirectAllowed(tc.redirect); got != tc.ok {
				t.Fatalf("chatRedirectAllowed: got %v, want %v", got, tc.ok)
			}
			defer c.srv.store.deleteToken(context.Background(), aliceSub, nil)
			start := c.send(chatMsg{text: "create space Redirects", redirect: tc.redirect}).configURL(t)
			resp, body := c.consentAt(newBrowser(t), start)
			if tc.ok {
				if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != tc.redirect {
					t.Errorf("got %d to %q, want 302 to %q", resp.StatusCode, resp.Header.Get("Location"), tc.redirect)
				}
			} else if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || !strings.Contains(body, "Google Chat is connected") {
				t.Errorf("got %d to %q, want 200 with the success page", resp.StatusCode, resp.Header.Get("Location"))
			}
			if c.storedToken(aliceSub) == nil {
				t.Error("the consent was not stored")
			}
		})
	}
}

// TestChatTicketRefused: OAuthStart refuses a Configure link whose ticket
// was altered, forged, made by another deployment, or has expired, before
// anything is stored or any cookie set.
func TestChatTicketRefused(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatAudienceEndpoint)
	start := c.send(chatMsg{text: "create space Tickets"}).configURL(t)
	ticket := strings.TrimPrefix(start, c.base+"/OAuthStart?ticket=")
	raw, _ := url.QueryUnescape(ticket)

	// A ticket sealed by another deployment (another keyset).
	other := newChatEnv(t, storeLocal, chatAudienceEndpoint)
	foreign := other.send(chatMsg{text: "create space Tickets"}).configURL(t)
	c.use(c.srv) // the other env took over the Functions Framework

	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	for _, tc := range []struct {
		name, url string
		code      int
	}{
		{"altered near the end", c.base + "/OAuthStart?ticket=" + url.QueryEscape(flip(raw, len(raw)-5)), 403},
		{"altered in the middle", c.base + "/OAuthStart?ticket=" + url.QueryEscape(flip(raw, len(raw)/2)), 403},
		{"truncated", c.base + "/OAuthStart?ticket=" + url.QueryEscape(raw[:len(raw)-10]), 403},
		{"no prefix", c.base + "/OAuthStart?ticket=" + url.QueryEscape(strings.TrimPrefix(raw, ticketPrefix)), 403},
		{"forged", c.base + "/OAuthStart?ticket=" + url.QueryEscape(ticketPrefix+"eyJ1IjoidXNlcnMvMTIzIiwieCI6OTk5OTk5OTk5OX0"), 403},
		{"another deployment", strings.Replace(foreign, other.base, c.base, 1), 403},
		{"empty", c.base + "/OAuthStart?ticket=", 400},
		{"twice", start + "&ticket=" + ticket, 400},
		{"too long", c.base + "/OAuthStart?ticket=" + strings.Repeat("A", maxTicket+1), 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBrowser(t)
			resp, body := b.get(tc.url)
			if resp.StatusCode != tc.code || len(b.cookies) != 0 || resp.Header.Get("Location") != "" {
				t.Errorf("got %d (cookies %d, Location %q), want %d and nothing set: %s", resp.StatusCode, len(b.cookies), resp.Header.Get("Location"), tc.code, body)
			}
		})
	}

	// The genuine ticket works until it expires, 10 minutes after the
	// prompt.
	if resp, _ := newBrowser(t).get(start); resp.StatusCode != http.StatusFound {
		t.Fatalf("the genuine ticket: got %d, want 302", resp.StatusCode)
	}
	c.clock.Advance(ticketTTL + time.Second)
	b := newBrowser(t)
	resp, body := b.get(start)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "expired") || len(b.cookies) != 0 {
		t.Errorf("expired ticket: got %d, want 403 saying it expired: %s", resp.StatusCode, body)
	}
}

// TestChatEventsUnauthenticated: every request that does not carry Chat's
// token for the configured audience is 401, and nothing else happens: no
// Chat call, no space, no prompt.
func TestChatEventsUnauthenticated(t *testing.T) {
	t.Parallel()
	for _, mode := range chatModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			c := newChatEnv(t, storeLocal, mode)
			c.connect()
			otherMode := &chatEnv{testEnv: c.testEnv, app: c.app, mode: chatAudienceProject}
			if mode == chatAudienceProject {
				otherMode.mode = chatAudienceEndpoint
			}
			stranger, err := fakegoogle.NewChatApp(c.google) // a key Chat does not publish
			if err != nil {
				t.Fatal(err)
			}
			now := c.clock.Now()
			body := chatMsg{text: "/createspace Not allowed", slash: createCommandID}.json()
			bearer := func(edit func(map[string]any)) string { return "Bearer " + c.token(edit) }
			// tamper adds a claim to a valid token, keeping its signature:
			// every check but the signature's passes.
			tamper := func(tok string) string {
				parts := strings.Split(tok, ".")
				b, _ := base64.RawURLEncoding.DecodeString(parts[1])
				var claims map[string]any
				json.Unmarshal(b, &claims)
				claims["admin"] = true
				parts[1] = jwtPart(claims)
				return strings.Join(parts, ".")
			}
			cases := []unauthCase{
				{"unsigned request", "", "0 Authorization headers"},
				{"not bearer", "Basic " + c.token(nil), "not Bearer"},
				{"empty bearer", "Bearer ", "empty bearer token"},
				{"garbage", "Bearer not-a-jwt", "not a signed JWT"},
				{"alg none", "Bearer " + jwtPart(map[string]any{"alg": "none", "typ": "JWT"}) + "." + jwtPart(map[string]any{
					"iss": fakegoogle.ChatServiceAccount, "aud": chatProjectNumber, "exp": now.Add(time.Hour).Unix()}) + ".", `alg "none"`},
				{"HS256", "Bearer " + jwtPart(map[string]any{"alg": "HS256", "kid": c.app.KeyID()}) + "." + jwtPart(map[string]any{
					"iss": fakegoogle.ChatServiceAccount, "aud": chatProjectNumber, "exp": now.Add(time.Hour).Unix()}) + ".c2lnbmF0dXJl", `alg "HS256"`},
				{"wrong audience", bearer(func(m map[string]any) { m["aud"] = "https://other.example/ChatEvents" }), "audience"},
				{"other project", bearer(func(m map[string]any) { m["aud"] = "999999999999" }), "audience"},
				{"wrong issuer", bearer(func(m map[string]any) { m["iss"] = "https://evil.example" }), "issuer"},
				{"expired", bearer(func(m map[string]any) { m["exp"] = now.Add(-time.Minute).Unix() }), "expired"},
				{"no expiry", bearer(func(m map[string]any) { delete(m, "exp") }), "no expiry"},
				{"the other audience setting's token", "Bearer " + otherMode.token(nil), "audience"},
				{"tampered claims", "Bearer " + tamper(c.token(nil)), "verification error"},
				{"two Authorization headers", "two", "2 Authorization headers"},
			}
			if mode == chatAudienceEndpoint {
				cases = append(cases,
					// Any service account can get a Google ID token for
					// this URL; only Chat's is accepted.
					unauthCase{"another service account", bearer(func(m map[string]any) { m["email"] = "mallory@evil-project.iam.gserviceaccount.com" }), "email"},
					unauthCase{"email not verified", bearer(func(m map[string]any) { m["email_verified"] = false }), "email not verified"},
					unauthCase{"signed by the Chat account's key", "Bearer " + stranger.MintJWT(map[string]any{
						"iss": googleIssuer, "aud": chatEndpointURL, "email": fakegoogle.ChatServiceAccount, "email_verified": true, "exp": now.Add(time.Hour).Unix()}), "could not find matching cert"},
				)
			} else {
				cases = append(cases,
					unauthCase{"unpublished key", "Bearer " + stranger.ProjectToken(chatProjectNumber, nil), "does not publish"},
					unauthCase{"signed by Google's OAuth key", "Bearer " + c.google.MintIDToken(map[string]any{
						"iss": fakegoogle.ChatServiceAccount, "aud": chatProjectNumber, "exp": now.Add(time.Hour).Unix()}), "does not publish"},
				)
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					req, _ := http.NewRequest(http.MethodPost, c.base+"/ChatEvents", strings.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					switch tc.authz {
					case "":
					case "two":
						req.Header.Add("Authorization", bearer(nil))
						req.Header.Add("Authorization", bearer(nil))
					default:
						req.Header.Set("Authorization", tc.authz)
					}
					resp, err := noRedirects.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					if resp.StatusCode != http.StatusUnauthorized {
						t.Fatalf("got %d, want 401: %s", resp.StatusCode, b)
					}
					checkJSONBody(t, string(b), 401, statusUnauthenticated)
					if why := lastRefusal(c.logs.String()); !strings.Contains(why, tc.why) {
						t.Errorf("refused because %q, want a reason containing %q", why, tc.why)
					}
					if n := c.google.TotalChatCalls(); n != 0 {
						t.Errorf("the Chat API was called %d times", n)
					}
				})
			}
			// The same request, signed by Chat, goes through.
			if got := c.send(chatMsg{text: "/createspace Allowed", slash: createCommandID}); len(c.google.Spaces()) != 1 {
				t.Errorf("a signed request did not create the space: %s", got.raw)
			}
		})
	}
}

type unauthCase struct{ name, authz, why string }

// lastRefusal returns the reason of the last refused ChatEvents request
// in logs.
func lastRefusal(logs string) string {
	why := ""
	for _, l := range logEntries(logs) {
		if l.Message == "request not from Google Chat refused" {
			why = l.Reason
		}
	}
	return why
}

func jwtPart(v map[string]any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestChatCertsCache: in the PROJECT_NUMBER mode the Chat service
// account's certificates are fetched once and cached; a failed fetch is
// answered 503 and not kept; a rotated key is fetched again; a key id Chat
// does not publish makes at most one fetch a minute.
func TestChatCertsCache(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatAudienceProject)
	c.app.FailCerts(http.StatusServiceUnavailable, 1)
	msg := chatMsg{typ: "ADDED_TO_SPACE"}.json()
	post := func(tok string) int {
		code, _, _ := c.post("ChatEvents", msg, map[string]string{"Authorization": "Bearer " + tok})
		return code
	}
	if code := post(c.token(nil)); code != http.StatusServiceUnavailable {
		t.Errorf("keys unavailable: got %d, want 503", code)
	}
	for i := range 3 {
		if code := post(c.token(nil)); code != http.StatusOK {
			t.Fatalf("request %d: got %d, want 200", i, code)
		}
	}
	if n := c.app.CertFetches(); n != 2 {
		t.Errorf("certificate fetches: got %d, want 2 (the failed one, then one for all)", n)
	}
	// A rotated key is fetched once the refetch window since the last
	// fetch has passed, although the cached set is still fresh.
	if err := c.app.RotateKey(); err != nil {
		t.Fatal(err)
	}
	c.clock.Advance(chatCertsRefetch + time.Second)
	if code := post(c.token(nil)); code != http.StatusOK || c.app.CertFetches() != 3 {
		t.Errorf("after a rotation: got %d with %d fetches, want 200 with 3", code, c.app.CertFetches())
	}
	// Key ids Chat does not publish: no fetch within the window, then one.
	stranger, _ := fakegoogle.NewChatApp(c.google)
	for range 3 {
		if code := post(stranger.ProjectToken(chatProjectNumber, nil)); code != http.StatusUnauthorized {
			t.Errorf("unpublished key: got %d, want 401", code)
		}
	}
	if n := c.app.CertFetches(); n != 3 {
		t.Errorf("fetches after unknown key ids within the window: got %d, want 3", n)
	}
	c.clock.Advance(chatCertsRefetch + time.Second)
	for range 3 {
		post(stranger.ProjectToken(chatProjectNumber, nil))
	}
	if n := c.app.CertFetches(); n != 4 {
		t.Errorf("fetches after unknown key ids past the window: got %d, want 4", n)
	}
	c.clock.Advance(2 * time.Hour) // past max-age
	if code := post(c.token(nil)); code != http.StatusOK || c.app.CertFetches() != 5 {
		t.Errorf("after max-age: got %d with %d fetches, want 200 with 5", code, c.app.CertFetches())
	}
}

// TestChatEventsCommands: every event and command gets 200 with a Chat
// answer, and every failure a user can cause is explained in Chat.
func TestChatEventsCommands(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatAudienceEndpoint, func(o *serverOptions) { o.chatDeadline = 2 * time.Second })
	c.connect()
	created := func(t *testing.T, a chatAnswer, name string) fakegoogle.Space {
		t.Helper()
		for _, sp := range c.google.Spaces() {
			if sp.DisplayName == name {
				if !strings.Contains(a.Text, sp.SpaceURI) {
					t.Errorf("answer %q does not link %s", a.Text, sp.SpaceURI)
				}
				return sp
			}
		}
		t.Fatalf("no space %q; answer %s", name, a.raw)
		return fakegoogle.Space{}
	}
	says := func(t *testing.T, a chatAnswer, want string) {
		t.Helper()
		if !strings.Contains(a.Text, want) {
			t.Errorf("answer %s does not say %q", a.raw, want)
		}
	}

	t.Run("added to space", func(t *testing.T) {
		says(t, c.send(chatMsg{typ: "ADDED_TO_SPACE"}), "/createspace")
	})
	for _, typ := range []string{"REMOVED_FROM_SPACE", "CARD_CLICKED", "SOMETHING_NEW"} {
		t.Run(typ, func(t *testing.T) {
			if a := c.send(chatMsg{typ: typ, text: "x"}); a.raw != "{}" {
				t.Errorf("got %s, want {}", a.raw)
			}
		})
	}
	t.Run("from an app", func(t *testing.T) {
		if a := c.send(chatMsg{userType: "BOT", text: "create space Bots"}); a.raw != "{}" {
			t.Errorf("got %s, want {}", a.raw)
		}
	})
	t.Run("help", func(t *testing.T) {
		says(t, c.send(chatMsg{text: "hello"}), "/createspace")
		says(t, c.send(chatMsg{text: "/unknown x", slash: 9}), "/createspace")
	})
	t.Run("no name", func(t *testing.T) {
		says(t, c.send(chatMsg{text: "/createspace @Bob", slash: createCommandID, mentions: []mention{bob}}), "Tell me the new space's name")
	})
	t.Run("name too long", func(t *testing.T) {
		says(t, c.send(chatMsg{text: "/createspace " + strings.Repeat("x", 129), slash: createCommandID}), "at most 128")
	})
	t.Run("plain form", func(t *testing.T) {
		a := c.send(chatMsg{text: "Create Space  Weekly   sync @Bob", mentions: []mention{bob}})
		if sp := created(t, a, "Weekly sync"); strings.Join(sp.Members, ",") != "users/201" {
			t.Errorf("members: got %q, want users/201", sp.Members)
		}
	})
	t.Run("command id as a string, APP_COMMAND", func(t *testing.T) {
		created(t, c.send(chatMsg{text: "/createspace Proto JSON", slash: "1"}), "Proto JSON")
		created(t, c.send(chatMsg{text: "/createspace App command", slash: 1, appCmd: 1}), "App command")
	})
	t.Run("mentions", func(t *testing.T) {
		app := mention{name: "users/app", display: "chatauth", bot: true}
		self := mention{name: "users/" + aliceSub, display: "Alice"}
		emoji := mention{name: "users/203", display: "Dana 🚀"}
		a := c.send(chatMsg{text: "/createspace 🚀 Rocket @chatauth @Bob @Alice @Dana 🚀 review @Bob", slash: createCommandID,
			mentions: []mention{app, bob, self, emoji, bob}})
		sp := created(t, a, "🚀 Rocket review")
		if strings.Join(sp.Members, ",") != "users/201,users/203" {
			t.Errorf("members: got %q, want users/201,users/203 (no app, no self, no repeat)", sp.Members)
		}
		says(t, a, "with 2 people")
	})
	t.Run("name echoed safely", func(t *testing.T) {
		a := c.send(chatMsg{text: "/createspace Hi <users/all>", slash: createCommandID})
		if strings.Contains(a.Text, "<users/all>") {
			t.Errorf("answer %q echoes a mention of everyone", a.Text)
		}
	})
	t.Run("too many members", func(t *testing.T) {
		text := "/createspace Crowd"
		var ms []mention
		for i := range 50 {
			m := mention{name: fmt.Sprintf("users/%d", 300+i), display: fmt.Sprintf("P%d", 300+i)}
			ms = append(ms, m)
			text += " @" + m.display
		}
		says(t, c.send(chatMsg{text: text, slash: createCommandID, mentions: ms}), "at most 49")
	})
	t.Run("name that hides characters", func(t *testing.T) {
		before := c.google.ChatCalls("spaces.create")
		says(t, c.send(chatMsg{text: "/createspace ad\u200bmin", slash: createCommandID}), "U+200B (ZERO WIDTH SPACE)")
		says(t, c.send(chatMsg{text: "/createspace invoice\u202egpj.exe", slash: createCommandID}), "U+202E (RIGHT-TO-LEFT OVERRIDE)")
		if got := c.google.ChatCalls("spaces.create"); got != before {
			t.Errorf("Chat was called %d times for names that hide characters", got-before)
		}
	})
	t.Run("name taken", func(t *testing.T) {
		created(t, c.send(chatMsg{text: "/createspace Taken", slash: createCommandID, name: "spaces/A/messages/1"}), "Taken")
		says(t, c.send(chatMsg{text: "/createspace Taken", slash: createCommandID, name: "spaces/A/messages/2"}), "already exists")
	})
	t.Run("Chat API refuses", func(t *testing.T) {
		c.google.InjectChatFaults(fakegoogle.ChatFault{Status: http.StatusForbidden, Message: "The caller does not have permission"})
		says(t, c.send(chatMsg{text: "/createspace Forbidden", slash: createCommandID}), "did not create the space")
	})
	t.Run("Chat API down", func(t *testing.T) {
		// Retry-After beyond the deadline: one try, no retry.
		c.google.InjectChatFaults(fakegoogle.ChatFault{Status: http.StatusServiceUnavailable, RetryAfter: "30"})
		says(t, c.send(chatMsg{text: "/createspace Outage", slash: createCommandID}), "not answering right now")
		// No answer within the deadline.
		c.google.InjectChatFaults(fakegoogle.ChatFault{Latency: 10 * time.Second})
		says(t, c.send(chatMsg{text: "/createspace Slow", slash: createCommandID}), "not answering right now")
	})
	t.Run("rate limited", func(t *testing.T) {
		c.google.InjectChatFaults(fakegoogle.ChatFault{Status: http.StatusTooManyRequests, RetryAfter: "30"})
		says(t, c.send(chatMsg{text: "/createspace Busy", slash: createCommandID}), "busy")
	})
	t.Run("revoked at Google", func(t *testing.T) {
		c.google.RevokeUser(aliceSub)
		c.google.ExpireAccessTokens(aliceSub)
		c.send(chatMsg{text: "/createspace After revocation", slash: createCommandID}).configURL(t)
	})
	t.Run("disconnect", func(t *testing.T) {
		c.connect()
		says(t, c.send(chatMsg{text: "/disconnect", slash: disconnectCommandID}), "Disconnected")
		if c.storedToken(aliceSub) != nil {
			t.Error("the token is still stored")
		}
		if n := c.google.RevokeCalls(); n == 0 {
			t.Error("the token was not revoked at Google")
		}
		says(t, c.send(chatMsg{text: "disconnect"}), "not connected")
		c.send(chatMsg{text: "/createspace After disconnect", slash: createCommandID}).configURL(t)
	})
	t.Run("disconnect fails at Google", func(t *testing.T) {
		c.connect()
		c.google.FailRevoke(http.StatusInternalServerError, 1)
		says(t, c.send(chatMsg{text: "/disconnect", slash: disconnectCommandID}), "nothing was deleted")
		if c.storedToken(aliceSub) == nil {
			t.Error("the token was deleted although Google did not revoke it")
		}
	})
}

// TestChatEventsNotConfigured: without CHAT_AUDIENCE_TYPE ChatEvents is
// 404 with a message naming the variables, even for a signed event.
func TestChatEventsNotConfigured(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	app, _ := fakegoogle.NewChatApp(e.google)
	tok := app.EndpointToken(chatEndpointURL, nil)
	sensitive.add(tok)
	code, body, _ := e.post("ChatEvents", chatMsg{text: "create space X"}.json(), map[string]string{"Authorization": "Bearer " + tok})
	checkJSONBody(t, body, 404, statusNotFound)
	if code != 404 || !strings.Contains(body, "CHAT_AUDIENCE_TYPE") {
		t.Errorf("got %d %s, want 404 naming CHAT_AUDIENCE_TYPE", code, body)
	}
	if !strings.Contains(e.logs.String(), "CHAT_AUDIENCE_TYPE") {
		t.Error("the operator is not told in the logs")
	}
}

// TestChatEventsRequest: the method and body are checked, after the token.
func TestChatEventsRequest(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatAudienceEndpoint)
	auth := map[string]string{"Authorization": "Bearer " + c.token(nil)}
	req, _ := http.NewRequest(http.MethodGet, c.base+"/ChatEvents", nil)
	if resp, err := noRedirects.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: got %v %v, want 405", resp, err)
	}
	if code, body, _ := c.post("ChatEvents", `{"type":`, auth); code != 400 {
		t.Errorf("malformed body: got %d %s, want 400", code, body)
	}
	if code, body, _ := c.post("ChatEvents", `{"type":"MESSAGE"}`, map[string]string{"Authorization": auth["Authorization"], "Content-Type": "text/plain"}); code != 415 {
		t.Errorf("text/plain: got %d %s, want 415", code, body)
	}
	// Unsigned garbage is refused as unauthenticated, not parsed.
	if code, _, _ := c.post("ChatEvents", `{"type":`, nil); code != 401 {
		t.Errorf("unsigned malformed body: got %d, want 401", code)
	}
}

// TestChatConfig: the audience variables are validated together.
func TestChatConfig(t *testing.T) {
	t.Parallel()
	base := map[string]string{
		"GOOGLE_CLOUD_PROJECT": "p", "CLIENT_SECRETS": "c.json", "WEBHOOK_SECRETS": "w", "TOKEN_KEYSET": "k.json",
		"REDIRECT_URL": "https://r-p.cloudfunctions.net/OAuthCallback", "PUBLIC_URL": "https://r-p.cloudfunctions.net",
	}
	for _, tc := range []struct {
		typ, aud string
		ok       bool
		want     string
	}{
		{"", "", true, ""},
		{"ENDPOINT_URL", "https://r-p.cloudfunctions.net/ChatEvents", true, ""},
		{"endpoint_url", "https://r-p.cloudfunctions.net/ChatEvents", true, ""},
		{"PROJECT_NUMBER", "123456789012", true, ""},
		{"ENDPOINT_URL", "", false, "CHAT_AUDIENCE"},
		{"ENDPOINT_URL", "http://example.com/ChatEvents", false, "https"},
		{"PROJECT_NUMBER", "my-project", false, "project number"},
		{"", "123456789012", false, "CHAT_AUDIENCE_TYPE"},
		{"APP_URL", "https://x.example", false, "CHAT_AUDIENCE_TYPE"},
	} {
		t.Run(tc.typ+"="+tc.aud, func(t *testing.T) {
			env := map[string]string{"CHAT_AUDIENCE_TYPE": tc.typ, "CHAT_AUDIENCE": tc.aud}
			for k, v := range base {
				env[k] = v
			}
			_, err := loadConfig(envMap(env))
			var ce *ConfigError
			switch {
			case tc.ok && err != nil:
				t.Errorf("got %v, want no error", err)
			case !tc.ok && (!errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want a *ConfigError mentioning %q", err, tc.want)
			}
		})
	}
}

// TestMentionText: mention indices are read as UTF-16 units, as
// characters, or fall back to the display name.
func TestMentionText(t *testing.T) {
	t.Parallel()
	ann := func(start, n int, display string) chatAnnotation {
		a := chatAnnotation{Type: "USER_MENTION", StartIndex: flexInt(start), Length: flexInt(n)}
		a.UserMention = &struct {
			User chatUser `json:"user"`
		}{User: chatUser{DisplayName: display}}
		return a
	}
	const text = "🚀 go @Bob Li now"
	for _, tc := range []struct {
		name string
		a    chatAnnotation
		want string
	}{
		{"UTF-16", ann(6, 7, "Bob Li"), "@Bob Li"},
		{"characters", ann(5, 7, "Bob Li"), "@Bob Li"},
		{"display name", ann(0, 2, "Bob Li"), "@Bob Li"},
		{"out of range", ann(40, 3, "Bob"), "@Bob"},
	} {
		if got := mentionText(text, tc.a); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
