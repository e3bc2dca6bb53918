package chatauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// TestBrowserAddOnConsentLoop runs the consent loop of a Chat app built as
// a Google Workspace add-on in a real headless Chromium: the fake Chat
// sends a slash command in the add-on format, signed by the add-on
// service agent, to ChatEvents and gets the basic authorization prompt;
// the browser opens its link (OAuthStart with the sealed ticket), the
// user allows on the fake Google's consent page, OAuthCallback sends the
// browser to the event's configCompleteRedirectUri on chat.google.com,
// whose fake sends the command again, and ChatEvents answers it by
// creating the space as the user. chat.google.com is served to Chromium
// by the fake Chat app through the DevTools Fetch domain.
func TestBrowserAddOnConsentLoop(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newBrowserEnv(t, kind)
			app, err := fakegoogle.NewChatApp(e.google)
			if err != nil {
				t.Fatal(err)
			}
			endpoint := e.base + "/ChatEvents"
			e.cfg.ChatAudienceType, e.cfg.ChatAudience, e.cfg.ChatProjectNumber = chatAudienceEndpoint, endpoint, addOnProject
			e.restart(func(o *serverOptions) { o.certsClient = app.HTTPClient() })

			ctx := newChromium(t)
			serveChatInBrowser(t, ctx, app)
			ep := fakegoogle.Endpoint{URL: endpoint, AddOnProject: addOnProject}
			msg := chatMsg{text: "/createspace Launch review @Bob", slash: createCommandID, mentions: []mention{bob}, redirect: fakegoogle.NewConfigCompleteURL()}
			sensitive.add(msg.redirect)

			a, err := app.Send(ctx, ep, []byte(msg.json()))
			if err != nil || a.Status != http.StatusOK {
				t.Fatalf("the add-on event: %v, %d %s", err, a.Status, a.Body)
			}
			start := addOnAnswer(t, string(a.Body)).configURL(t)
			if !strings.HasPrefix(start, e.base+"/OAuthStart?ticket=") {
				t.Fatalf("authorization_url %q is not OAuthStart with a ticket", start)
			}

			resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(start))
			if err != nil || resp.Status != http.StatusOK || !strings.HasPrefix(resp.URL, e.google.URL()+"/") {
				t.Fatalf("the authorization link led to %v at %v (%v), want the consent page", resp, err, e.google.URL())
			}
			if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("allow"))); err != nil {
				t.Fatalf("the consent page has no Allow button: %v", err)
			}
			screenshot(t, ctx, kind, "addon-consent-page")

			resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("allow")))
			if err != nil {
				t.Fatalf("click Allow: %v", err)
			}
			text := pageText(t, ctx)
			if resp.URL != msg.redirect || resp.Status != http.StatusOK {
				t.Fatalf("after Allow: got %d at %s, want Chat's configCompleteRedirectUri; page: %s", resp.Status, resp.URL, text)
			}
			screenshot(t, ctx, kind, "addon-config-complete")
			if !strings.Contains(text, "Configuration complete") || !strings.Contains(text, "Created the space “Launch review” with 1 person") {
				t.Errorf("Chat's page does not show the re-sent command's answer: %s", text)
			}
			spaces := e.google.Spaces()
			if len(spaces) != 1 || spaces[0].Creator != aliceSub || spaces[0].DisplayName != "Launch review" || strings.Join(spaces[0].Members, ",") != bob.name {
				t.Fatalf("spaces after the loop: %+v; want Launch review by alice with bob", spaces)
			}
			answers := app.Answers()
			if len(answers) != 2 || !strings.Contains(string(answers[1].Body), `"createMessageAction"`) {
				t.Errorf("the endpoint's answers: %d, the last %s; want the prompt, then a createMessageAction", len(answers), answers[len(answers)-1].Body)
			}
			if rec := e.storedToken(aliceSub); rec == nil || rec.Status != tokenActive {
				t.Errorf("no active consent stored for alice: %+v", rec)
			}
		})
	}
}

// serveChatInBrowser makes Chromium get https://chat.google.com from app,
// as the real Chat is reached in production: every request there is
// paused and fulfilled with app's answer.
func serveChatInBrowser(t *testing.T, ctx context.Context, app *fakegoogle.ChatApp) {
	t.Helper()
	lctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	events := chromedp.Events(lctx, fetch.RequestPaused)
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "https://chat.google.com/*"}}}); err != nil {
		t.Fatalf("intercept chat.google.com: %v", err)
	}
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			req := httptest.NewRequest(ev.Request.Method, ev.Request.URL, nil).WithContext(lctx)
			rec := httptest.NewRecorder()
			app.ServeHTTP(rec, req)
			_, _ = chromedp.Call(lctx, fetch.FulfillRequest, fetch.FulfillRequestParams{
				RequestID:       ev.RequestID,
				ResponseCode:    int64(rec.Code),
				ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: rec.Header().Get("Content-Type")}},
				Body:            rec.Body.Bytes(),
			})
		}
	}()
}
