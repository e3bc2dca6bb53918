package chatauth

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

const (
	// chatModeAddOn is the test mode of a Chat app built as a Google
	// Workspace add-on: CHAT_AUDIENCE_TYPE=ENDPOINT_URL, CHAT_AUDIENCE the
	// endpoint URL and CHAT_PROJECT_NUMBER=addOnProject.
	chatModeAddOn = "ADD_ON"
	// addOnProject is the add-on's Google Cloud project number.
	addOnProject = "987654321098"
	// addOnUserIDToken stands for the user's ID token an add-on event
	// carries when the add-on has OAuth scopes.
	addOnUserIDToken = "eyJhbGciOiJSUzI1NiJ9.addon-user-id-token.c2ln"
)

// addOnBody converts a classic event into the add-on event Chat sends,
// the way the fake Chat app does, with systemIDToken and the user's
// tokens in authorizationEventObject. The user's access token is a real
// one of the fake Google's, for alice with the scope that creates
// spaces: chatauth must not use it, so a space created before consent
// would show that it did.
func (c *chatEnv) addOnBody(classic, systemIDToken string) string {
	c.t.Helper()
	b, err := fakegoogle.AddOnEvent([]byte(classic), systemIDToken)
	if err != nil {
		c.t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(b, &ev); err != nil {
		c.t.Fatal(err)
	}
	access, _ := c.google.IssueTokens(aliceSub, scopeChatCreate)
	sensitive.add(access, addOnUserIDToken, systemIDToken)
	c.userTokens = append(c.userTokens, access, addOnUserIDToken)
	ev["authorizationEventObject"] = map[string]any{"systemIdToken": systemIDToken, "userIdToken": addOnUserIDToken, "userOAuthToken": access}
	return mustJSON(ev)
}

// addOnAnswer decodes an answer in the add-on envelope as a chatAnswer:
// a createMessageAction's text, or the basic authorization prompt as a
// REQUEST_CONFIG. It fails on any classic field, or anything else.
func addOnAnswer(t *testing.T, raw string) chatAnswer {
	t.Helper()
	var a struct {
		HostAppDataAction *struct {
			ChatDataAction struct {
				CreateMessageAction struct {
					Message struct {
						Text string `json:"text"`
					} `json:"message"`
				} `json:"createMessageAction"`
			} `json:"chatDataAction"`
		} `json:"hostAppDataAction"`
		Prompt *struct {
			URL      string `json:"authorization_url"`
			Resource string `json:"resource"`
		} `json:"basic_authorization_prompt"`
	}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("the answer is not in the add-on envelope: %v: %s", err, raw)
	}
	out := chatAnswer{raw: raw}
	switch {
	case a.HostAppDataAction != nil && a.Prompt != nil:
		t.Fatalf("the answer is both a message and a prompt: %s", raw)
	case a.Prompt != nil:
		if a.Prompt.Resource == "" {
			t.Errorf("the authorization prompt names no resource: %s", raw)
		}
		out.ActionResponse = &struct {
			Type string `json:"type"`
			URL  string `json:"url"`
		}{"REQUEST_CONFIG", a.Prompt.URL}
	case a.HostAppDataAction != nil:
		out.Text = a.HostAppDataAction.ChatDataAction.CreateMessageAction.Message.Text
		if out.Text == "" {
			t.Errorf("a createMessageAction without text: %s", raw)
		}
	}
	return out
}

// TestChatEventsAddOnConsentLoop drives an add-on Chat app's loop through
// the Functions Framework: a slash command (an appCommandPayload) from a
// user who has not consented gets the basic authorization prompt, whose
// link goes through OAuthStart and Google's consent back to Chat's
// configCompleteRedirectUri; Chat's re-sent command creates the space as
// the user; a redelivery creates nothing more. The user's OAuth token in
// the event is never used: the answer before consent is the prompt.
func TestChatEventsAddOnConsentLoop(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			c := newChatEnv(t, kind, chatModeAddOn)
			prompt, got, rec := runConsentLoop(t, c)
			if strings.Contains(prompt.raw, "actionResponse") || !strings.Contains(prompt.raw, `"basic_authorization_prompt"`) {
				t.Errorf("the prompt is not the add-on's basic authorization prompt: %s", prompt.raw)
			}
			// The user's tokens from the events are in no answer, and
			// neither in the stored record nor, for the embedded store,
			// anywhere in its files (the log audit checks the logs).
			stored := rec.AccessToken + rec.RefreshToken
			for _, tok := range c.userTokens {
				if strings.Contains(prompt.raw+got.raw, tok) || strings.Contains(stored, tok) {
					t.Error("a user token from an add-on event was echoed or stored")
				}
			}
			if kind == storeLocal {
				checkFilesLack(t, c.cfg.DataDir, c.userTokens)
			}
		})
	}
}

// TestChatEventsAddOnCommands: every command and event kind of the
// classic app behaves the same in the add-on format.
func TestChatEventsAddOnCommands(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatModeAddOn)
	c.connect()
	for _, tc := range []struct {
		name string
		msg  chatMsg
		want string // in the answer's text; "" for {}
	}{
		{"help", chatMsg{text: "what can you do?"}, "I did not understand that"},
		{"added to a space", chatMsg{typ: "ADDED_TO_SPACE"}, "Hi! I create Google Chat spaces"},
		{"removed from a space", chatMsg{typ: "REMOVED_FROM_SPACE"}, ""},
		{"a bot", chatMsg{text: "create space Bots", userType: "BOT"}, ""},
		{"not a user id", chatMsg{user: "users/app", text: "create space X"}, "I can only act for a person"},
		{"no name", chatMsg{text: "/createspace", slash: createCommandID}, "Tell me the new space's name"},
		{"plain text create", chatMsg{text: "create space Plain words"}, "Created the space “Plain words”"},
		{"an APP_COMMAND slash command", chatMsg{text: "Quick one", appCmd: createCommandID}, "Created the space “Quick one”"},
		{"unknown command", chatMsg{text: "/other x", slash: 7}, "I did not understand that"},
		{"name with <users/all>", chatMsg{text: "create space <users/all> party"}, "‹users/all› party"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := c.send(tc.msg)
			if tc.want == "" {
				if got.raw != "{}" {
					t.Errorf("got %s, want {}", got.raw)
				}
				return
			}
			if !strings.Contains(got.Text, tc.want) {
				t.Errorf("got %q, want it to contain %q", got.Text, tc.want)
			}
		})
	}
	// /disconnect, as an appCommandPayload, ends the stored consent.
	if got := c.send(chatMsg{text: "/disconnect", slash: disconnectCommandID}); !strings.Contains(got.Text, "Disconnected") {
		t.Fatalf("disconnect: got %q", got.Text)
	}
	if c.storedToken(aliceSub) != nil {
		t.Error("the consent is still stored after /disconnect")
	}
	// The next command asks for consent again, in the add-on envelope.
	c.send(chatMsg{text: "create space Again"}).configURL(t)
}

// TestChatEventsAddOnConsentByAnotherAccount: the add-on prompt's link,
// like the classic one, must be consented by the Chat user it was made
// for.
func TestChatEventsAddOnConsentByAnotherAccount(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatModeAddOn)
	bobUser := c.google.AddUser(fakegoogle.User{Email: "bob@example.com", EmailVerified: true})
	// Google's account chooser picks alice, the first account.
	start := c.send(chatMsg{user: "users/" + bobUser.Sub, email: "-", text: "create space Bob's"}).configURL(t)
	resp, body := c.consentAt(newBrowser(t), start)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another Google Chat user") || resp.Header.Get("Location") != "" {
		t.Errorf("callback: got %d to %q, want 403 naming the mismatch: %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if c.storedToken(aliceSub) != nil || c.storedToken(bobUser.Sub) != nil {
		t.Error("a token was stored for a refused consent")
	}
}

// TestChatEventsAddOnRefused: every request an add-on deployment must not
// act on is refused with the JSON error envelope and a message a person
// can act on, the operator learns why in the log, and nothing else
// happens: no Chat call, no prompt.
func TestChatEventsAddOnRefused(t *testing.T) {
	t.Parallel()
	c := newChatEnv(t, storeLocal, chatModeAddOn)
	c.connect()
	classicApp := &chatEnv{testEnv: c.testEnv, app: c.app, mode: chatAudienceEndpoint}
	stranger, err := fakegoogle.New(fakegoogle.Options{}) // a Google whose keys are not Google's
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	strangerChat, err := fakegoogle.NewChatApp(stranger)
	if err != nil {
		t.Fatal(err)
	}
	msg := chatMsg{text: "/createspace Not allowed", slash: createCommandID}
	addOn := func(edit func(map[string]any)) string { return "Bearer " + c.token(edit) }
	addOnEvent := func(tok string) string { return c.addOnBody(msg.json(), tok) }
	good := c.token(nil)
	now := c.clock.Now()

	for _, tc := range []struct {
		name, authz, body string
		code              int
		status, message   string // in the answer
		why               string // in the logged reason, for 401s
	}{
		{"another project's add-on agent", addOn(func(m map[string]any) { m["email"] = fakegoogle.AddOnServiceAgent("111111111111") }), "", 401, statusUnauthenticated, "Google Chat bearer token", "project 111111111111, not of project " + addOnProject},
		{"add-on agent lookalike domain", addOn(func(m map[string]any) {
			m["email"] = "service-" + addOnProject + "@" + fakegoogle.AddOnAgentDomain + ".evil.example"
		}), "", 401, statusUnauthenticated, "Google Chat bearer token", "not an allowed signer"},
		{"add-on agent of a non-numeric project", addOn(func(m map[string]any) { m["email"] = "service-evil@" + fakegoogle.AddOnAgentDomain }), "", 401, statusUnauthenticated, "Google Chat bearer token", "not an allowed signer"},
		{"any service account", addOn(func(m map[string]any) { m["email"] = "mallory@evil-project.iam.gserviceaccount.com" }), "", 401, statusUnauthenticated, "Google Chat bearer token", "Google Chat signs as " + chatServiceAccount + " or " + addOnAgent(addOnProject)},
		{"wrong audience", addOn(func(m map[string]any) { m["aud"] = "https://other.example/ChatEvents" }), "", 401, statusUnauthenticated, "Google Chat bearer token", `the token is for "https://other.example/ChatEvents", CHAT_AUDIENCE is "` + chatEndpointURL + `"`},
		{"project number as audience", addOn(func(m map[string]any) { m["aud"] = addOnProject }), "", 401, statusUnauthenticated, "Google Chat bearer token", "set the Chat app's HTTP endpoint URL and CHAT_AUDIENCE to the same URL"},
		{"email not verified", addOn(func(m map[string]any) { m["email_verified"] = false }), "", 401, statusUnauthenticated, "Google Chat bearer token", "email not verified"},
		{"expired", addOn(func(m map[string]any) { m["exp"] = now.Add(-60 * 1e9).Unix() }), "", 401, statusUnauthenticated, "Google Chat bearer token", "expired"},
		{"wrong issuer", addOn(func(m map[string]any) { m["iss"] = "https://evil.example" }), "", 401, statusUnauthenticated, "Google Chat bearer token", "issuer"},
		{"signed by another key", "Bearer " + strangerChat.AddOnToken(chatEndpointURL, addOnProject, nil), "", 401, statusUnauthenticated, "Google Chat bearer token", "could not find matching cert"},
		{"the system ID token only in the body", "", addOnEvent(good), 401, statusUnauthenticated, "Google Chat bearer token", "0 Authorization headers"},
		{"classic body under the add-on agent", "Bearer " + good, msg.json(), 401, statusUnauthenticated, "a Google Chat interaction event, which its bearer token's signer does not send", "bearer token is the signer of a Google Workspace add-on event"},
		{"add-on body under chat@system", "Bearer " + classicApp.token(nil), addOnEvent(good), 401, statusUnauthenticated, "a Google Workspace add-on event, which its bearer token's signer does not send", "bearer token is the signer of a Google Chat interaction event"},
		{"neither format", "Bearer " + good, `{"hello":"world"}`, 400, statusInvalidArgument, `neither an interaction event's "type" nor a Google Workspace add-on event's "chat"`, ""},
		{"empty object", "Bearer " + good, `{}`, 400, statusInvalidArgument, "neither", ""},
		{"both formats", "Bearer " + good, strings.Replace(addOnEvent(good), `{`, `{"type":"MESSAGE",`, 1), 400, statusInvalidArgument, "mixes both", ""},
		{"no payload", "Bearer " + good, `{"commonEventObject":{"hostApp":"CHAT"},"chat":{"user":{"name":"users/` + aliceSub + `","type":"HUMAN"}}}`, 400, statusInvalidArgument, "carries no payload", ""},
		{"two payloads", "Bearer " + good, `{"commonEventObject":{"hostApp":"CHAT"},"chat":{"user":{"name":"users/` + aliceSub + `","type":"HUMAN"},"messagePayload":{"message":{"text":"create space A"}},"appCommandPayload":{"appCommandMetadata":{"appCommandId":1,"appCommandType":"SLASH_COMMAND"},"message":{"argumentText":"B"}}}}`, 400, statusInvalidArgument, "carries 2 payloads", ""},
		{"no chat object", "Bearer " + good, `{"commonEventObject":{"hostApp":"CHAT"}}`, 400, statusInvalidArgument, `no "chat" object`, ""},
		{"another host app", "Bearer " + good, strings.Replace(addOnEvent(good), `"hostApp":"CHAT"`, `"hostApp":"GMAIL"`, 1), 400, statusInvalidArgument, `from "GMAIL", not Google Chat`, ""},
		{"chat is not an object", "Bearer " + good, `{"chat":"messagePayload"}`, 400, statusInvalidArgument, "not a Google Chat event", ""},
		{"payload is not an object", "Bearer " + good, `{"chat":{"messagePayload":[1]}}`, 400, statusInvalidArgument, "not a Google Chat event", ""},
		{"not JSON", "Bearer " + good, `{"chat":`, 400, statusInvalidArgument, "not a Google Chat event", ""},
		{"oversized", "Bearer " + good, `{"chat":{"messagePayload":{"message":{"text":"` + strings.Repeat("a", maxBody) + `"}}}}`, 413, statusPayloadTooLarge, "larger than 64 KiB", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if body == "" {
				body = addOnEvent(strings.TrimPrefix(tc.authz, "Bearer "))
			}
			header := map[string]string{"Authorization": tc.authz}
			code, answer, _ := c.post("ChatEvents", body, header)
			if code != tc.code {
				t.Fatalf("got %d, want %d: %s", code, tc.code, answer)
			}
			checkJSONBody(t, answer, tc.code, tc.status)
			var env struct{ Error struct{ Message string } }
			if json.Unmarshal([]byte(answer), &env); !strings.Contains(env.Error.Message, tc.message) {
				t.Errorf("answer %s does not say %q", answer, tc.message)
			}
			if tc.why != "" {
				if why := lastRefusal(c.logs.String()); !strings.Contains(why, tc.why) {
					t.Errorf("logged reason %q, want it to contain %q", why, tc.why)
				}
			}
			if n := c.google.TotalChatCalls(); n != 0 {
				t.Errorf("the Chat API was called %d times", n)
			}
		})
	}
	// The same command, sent as the add-on sends it, goes through.
	if got := c.send(chatMsg{text: "/createspace Allowed", slash: createCommandID}); len(c.google.Spaces()) != 1 {
		t.Errorf("a signed add-on event did not create the space: %s", got.raw)
	}
}

// TestChatEventsAddOnNotConfigured: an add-on's token is refused where
// the deployment is not an add-on's, and the log says which setting to
// change.
func TestChatEventsAddOnNotConfigured(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ mode, why string }{
		{chatAudienceEndpoint, "CHAT_PROJECT_NUMBER is not set: if this deployment's Chat app is that project's add-on, set CHAT_PROJECT_NUMBER=" + addOnProject},
		{chatAudienceProject, "an add-on Chat app needs CHAT_AUDIENCE_TYPE=ENDPOINT_URL"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			c := newChatEnv(t, storeLocal, tc.mode)
			addOn := &chatEnv{testEnv: c.testEnv, app: c.app, mode: chatModeAddOn}
			tok := addOn.token(nil)
			code, answer, _ := c.post("ChatEvents", addOn.addOnBody(chatMsg{text: "create space X"}.json(), tok), map[string]string{"Authorization": "Bearer " + tok})
			checkJSONBody(t, answer, 401, statusUnauthenticated)
			if code != 401 {
				t.Fatalf("got %d, want 401", code)
			}
			if why := lastRefusal(c.logs.String()); !strings.Contains(why, tc.why) {
				t.Errorf("logged reason %q, want it to contain %q", why, tc.why)
			}
		})
	}
}

// TestChatAddOnConfig: CHAT_PROJECT_NUMBER is digits, and only beside
// the ENDPOINT_URL audience, each refusal naming the variable.
func TestChatAddOnConfig(t *testing.T) {
	t.Parallel()
	base := map[string]string{
		"GOOGLE_CLOUD_PROJECT": "p", "CLIENT_SECRETS": "c.json", "WEBHOOK_SECRETS": "w", "TOKEN_KEYSET": "k.json",
		"REDIRECT_URL": "https://r-p.cloudfunctions.net/OAuthCallback", "PUBLIC_URL": "https://r-p.cloudfunctions.net",
	}
	for _, tc := range []struct {
		typ, aud, number string
		want             string // in the error; "" for valid
	}{
		{chatAudienceEndpoint, "https://r-p.cloudfunctions.net/ChatEvents", "123456789012", ""},
		{chatAudienceEndpoint, "https://r-p.cloudfunctions.net/ChatEvents", "", ""},
		{chatAudienceEndpoint, "https://r-p.cloudfunctions.net/ChatEvents", "my-project", "CHAT_PROJECT_NUMBER: must be the Chat app's Google Cloud project number"},
		{chatAudienceEndpoint, "https://r-p.cloudfunctions.net/ChatEvents", "service-123@" + addOnAgentDomain, "CHAT_PROJECT_NUMBER: must be"},
		{chatAudienceEndpoint, "https://r-p.cloudfunctions.net/ChatEvents", "-123", "CHAT_PROJECT_NUMBER: must be"},
		{chatAudienceEndpoint, "https://r-p.cloudfunctions.net/ChatEvents", strings.Repeat("1", 21), "CHAT_PROJECT_NUMBER: must be"},
		{"", "", "123456789012", "CHAT_PROJECT_NUMBER is set but CHAT_AUDIENCE_TYPE is not"},
		{chatAudienceProject, "123456789012", "123456789012", "CHAT_PROJECT_NUMBER: a Google Workspace add-on signs Chat events for its HTTP endpoint URL only"},
	} {
		env := map[string]string{"CHAT_AUDIENCE_TYPE": tc.typ, "CHAT_AUDIENCE": tc.aud, "CHAT_PROJECT_NUMBER": tc.number}
		for k, v := range base {
			env[k] = v
		}
		_, err := loadConfig(func(k string) string { return env[k] })
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q/%q: %v", tc.typ, tc.number, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q/%q: got %v, want an error containing %q", tc.typ, tc.number, err, tc.want)
		}
	}
}

// TestAddOnEventFormat pins the fake's add-on event to Google's mapping,
// so that the tests above send what Chat sends.
func TestAddOnEventFormat(t *testing.T) {
	t.Parallel()
	b, err := fakegoogle.AddOnEvent([]byte(chatMsg{text: "/createspace X", slash: createCommandID}.json()), "tok")
	if err != nil {
		t.Fatal(err)
	}
	var ev struct {
		Common map[string]any    `json:"commonEventObject"`
		Auth   map[string]string `json:"authorizationEventObject"`
		Chat   struct {
			User    map[string]any `json:"user"`
			Payload struct {
				Metadata map[string]any `json:"appCommandMetadata"`
				Message  map[string]any `json:"message"`
				Redirect string         `json:"configCompleteRedirectUri"`
			} `json:"appCommandPayload"`
		} `json:"chat"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "" || ev.Common["hostApp"] != "CHAT" || ev.Auth["systemIdToken"] != "tok" || ev.Chat.User["name"] != "users/"+aliceSub ||
		ev.Chat.Payload.Metadata["appCommandType"] != "SLASH_COMMAND" || ev.Chat.Payload.Redirect != chatRedirect || ev.Chat.Payload.Message["slashCommand"] != nil {
		t.Errorf("add-on event: %s", b)
	}
	if u, _ := url.Parse(chatRedirect); !chatRedirectAllowed(u.String()) {
		t.Error("the test redirect is not on the allow-list")
	}
}

// checkFilesLack fails the test if a file under dir contains one of vals.
func checkFilesLack(t *testing.T, dir string, vals []string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		for _, v := range vals {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds a user token from an add-on event", path)
			}
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("read the store's files under %s: %v (%d files)", dir, err, n)
	}
}
