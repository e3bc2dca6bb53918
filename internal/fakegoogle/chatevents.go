package fakegoogle

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Endpoint is a Chat app's connection settings on the Chat API's
// configuration page: where Chat sends events, in which format, signed
// by whom.
type Endpoint struct {
	// URL is the HTTP endpoint URL events are posted to.
	URL string
	// AddOnProject, when set, makes the app a Google Workspace add-on of
	// the project with that number: events go in the add-on format,
	// signed by the project's add-on service agent for URL.
	AddOnProject string
	// ProjectNumber, when set (and AddOnProject is not), is the classic
	// app's "Project number" authentication audience; empty means the
	// "HTTP endpoint URL" audience.
	ProjectNumber string
	// Client posts the events; nil means http.DefaultClient.
	Client *http.Client
}

// Answer is one answer of a Chat app's endpoint to an event Send
// delivered.
type Answer struct {
	Status int
	Body   []byte
}

type sentEvent struct {
	ep    Endpoint
	event []byte // the classic event as given to Send
}

// NewConfigCompleteURL returns a fresh configCompleteRedirectUrl, as Chat
// puts in every message event: https://chat.google.com plus
// ConfigCompletePath with an unguessable token.
func NewConfigCompleteURL() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "https://chat.google.com" + ConfigCompletePath + "?token=" + hex.EncodeToString(b)
}

// Send delivers a Chat interaction event, given in the classic format, to
// ep as Google Chat would: converted to the add-on format for an add-on
// (AddOnEvent), with the bearer token ep's settings call for. It returns
// the endpoint's answer, which Answers records too. An event whose
// configCompleteRedirectUrl is on chat.google.com's ConfigCompletePath is
// remembered, so that opening that URL (ServeHTTP) sends it again.
func (c *ChatApp) Send(ctx context.Context, ep Endpoint, event []byte) (Answer, error) {
	return c.send(ctx, ep, event, true)
}

// send delivers event; remember says whether its configCompleteRedirectUrl
// may send it again (not when it is that re-sending: one redirect, one
// re-send).
func (c *ChatApp) send(ctx context.Context, ep Endpoint, event []byte, remember bool) (Answer, error) {
	var tok string
	body := event
	switch {
	case ep.AddOnProject != "":
		tok = c.AddOnToken(ep.URL, ep.AddOnProject, nil)
		var err error
		if body, err = AddOnEvent(event, tok); err != nil {
			return Answer{}, err
		}
	case ep.ProjectNumber != "":
		tok = c.ProjectToken(ep.ProjectNumber, nil)
	default:
		tok = c.EndpointToken(ep.URL, nil)
	}
	var head struct {
		Redirect string `json:"configCompleteRedirectUrl"`
	}
	_ = json.Unmarshal(event, &head)
	if remember && strings.HasPrefix(head.Redirect, "https://chat.google.com"+ConfigCompletePath+"?") {
		c.mu.Lock()
		if c.sent == nil {
			c.sent = map[string]sentEvent{}
		}
		c.sent[head.Redirect] = sentEvent{ep: ep, event: event}
		c.mu.Unlock()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return Answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", "Google-Dynamite")
	client := ep.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return Answer{}, fmt.Errorf("fakegoogle: send a Chat event to %s: %w", ep.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Answer{}, err
	}
	a := Answer{Status: resp.StatusCode, Body: b}
	c.mu.Lock()
	c.answers = append(c.answers, a)
	c.mu.Unlock()
	return a, nil
}

// Answers returns the endpoint's answers to every event Send delivered,
// in order.
func (c *ChatApp) Answers() []Answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Answer(nil), c.answers...)
}

// serveConfigComplete serves GET ConfigCompletePath as chat.google.com
// does once a user has configured an app: the event whose
// configCompleteRedirectUrl this is goes to the app again, and the page
// says what the app answered. An unknown URL is a 404, as a forged or
// spent one is at Google.
func (c *ChatApp) serveConfigComplete(w http.ResponseWriter, r *http.Request) {
	key := "https://chat.google.com" + ConfigCompletePath + "?" + r.URL.RawQuery
	c.mu.Lock()
	sent, ok := c.sent[key]
	delete(c.sent, key) // one redirect re-sends one event, once
	c.mu.Unlock()
	if !ok {
		http.Error(w, "This configuration link is not valid.", http.StatusNotFound)
		return
	}
	a, err := c.send(r.Context(), sent.ep, sent.event, false)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintf(w, "<!doctype html><title>Google Chat</title><p id=answer>The app could not be reached: %s</p>", html.EscapeString(err.Error()))
		return
	}
	fmt.Fprintf(w, "<!doctype html><title>Google Chat</title><h1>Configuration complete</h1><p id=status>%d</p><p id=answer>%s</p>",
		a.Status, html.EscapeString(AnswerText(a.Body)))
}

// AnswerText is the text of a Chat app's message answer in either format,
// or the raw answer when it is not a message.
func AnswerText(body []byte) string {
	var a struct {
		Text              string `json:"text"`
		HostAppDataAction struct {
			ChatDataAction struct {
				CreateMessageAction struct {
					Message struct {
						Text string `json:"text"`
					} `json:"message"`
				} `json:"createMessageAction"`
			} `json:"chatDataAction"`
		} `json:"hostAppDataAction"`
	}
	if json.Unmarshal(body, &a) != nil {
		return string(body)
	}
	if t := a.HostAppDataAction.ChatDataAction.CreateMessageAction.Message.Text; t != "" {
		return t
	}
	if a.Text != "" {
		return a.Text
	}
	return string(body)
}

// AddOnEvent converts a Chat interaction event into the Google Workspace
// add-on event object Chat sends an app built as an add-on, following
// Google's mapping: the type becomes the payload's kind under "chat"
// (messagePayload, appCommandPayload, addedToSpacePayload,
// removedFromSpacePayload, buttonClickedPayload, widgetUpdatedPayload),
// configCompleteRedirectUrl becomes the payload's
// configCompleteRedirectUri, a slash command becomes an appCommandPayload
// with appCommandMetadata, "common" becomes commonEventObject with hostApp
// CHAT, and systemIDToken goes in authorizationEventObject.
func AddOnEvent(classic []byte, systemIDToken string) ([]byte, error) {
	var ev map[string]any
	if err := json.Unmarshal(classic, &ev); err != nil {
		return nil, fmt.Errorf("fakegoogle: AddOnEvent: %w", err)
	}
	typ, _ := ev["type"].(string)
	redirect, _ := ev["configCompleteRedirectUrl"].(string)
	msg, _ := ev["message"].(map[string]any)
	payload := map[string]any{}
	if sp, ok := ev["space"]; ok {
		payload["space"] = sp
	}
	withMessage := func() {
		if msg != nil {
			payload["message"] = msg
		}
		if redirect != "" {
			payload["configCompleteRedirectUri"] = redirect
		}
	}
	var kind string
	switch typ {
	case "MESSAGE":
		kind = "messagePayload"
		if sc, ok := msg["slashCommand"].(map[string]any); ok {
			kind = "appCommandPayload"
			payload["appCommandMetadata"] = map[string]any{"appCommandId": sc["commandId"], "appCommandType": "SLASH_COMMAND"}
			msg = clone(msg)
			delete(msg, "slashCommand")
		}
		withMessage()
	case "APP_COMMAND":
		kind = "appCommandPayload"
		payload["appCommandMetadata"] = ev["appCommandMetadata"]
		withMessage()
	case "ADDED_TO_SPACE":
		kind = "addedToSpacePayload"
		if redirect != "" {
			payload["configCompleteRedirectUri"] = redirect
		}
	case "REMOVED_FROM_SPACE":
		kind = "removedFromSpacePayload"
	case "CARD_CLICKED", "SUBMIT_FORM":
		kind = "buttonClickedPayload"
		withMessage()
	case "WIDGET_UPDATED":
		kind = "widgetUpdatedPayload"
	default:
		return nil, errors.New("fakegoogle: AddOnEvent: no add-on payload for type " + url.QueryEscape(typ))
	}
	chat := map[string]any{kind: payload}
	for _, k := range []string{"user", "eventTime"} {
		if v, ok := ev[k]; ok {
			chat[k] = v
		}
	}
	common, _ := ev["common"].(map[string]any)
	common = clone(common)
	common["hostApp"] = "CHAT"
	return json.Marshal(map[string]any{
		"commonEventObject":        common,
		"authorizationEventObject": map[string]any{"systemIdToken": systemIDToken},
		"chat":                     chat,
	})
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
