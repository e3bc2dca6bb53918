package chatauth

import (
	"encoding/json"
	"fmt"
	"strings"
)

// A Chat app built as a Google Workspace add-on calls the same ChatEvents
// endpoint with another event object, expects another answer envelope,
// and signs its requests as another account: the project's add-on
// service agent (README.md, "Use it as a Google Chat app"; openapi.yaml,
// ChatEvents). This file holds what differs; everything else (commands,
// the consent prompt and its ticket, the Chat-user check) is the classic
// Chat app's.

const (
	// addOnAgentDomain is the domain of every project's Workspace add-on
	// service agent, service-PROJECT_NUMBER@addOnAgentDomain.
	addOnAgentDomain = "gcp-sa-gsuiteaddons.iam.gserviceaccount.com"
	// addOnResource names what the add-on's authorization prompt asks for.
	addOnResource = "chatauth: create Google Chat spaces as you"
)

// addOnAgent is the add-on service agent of the project numbered n: the
// only account whose add-on events ChatEvents accepts.
func addOnAgent(n string) string { return "service-" + n + "@" + addOnAgentDomain }

// addOnAgentProject returns the project number in an add-on service
// agent's email, and whether email is one at all (any project's).
func addOnAgentProject(email string) (string, bool) {
	local, domain, ok := strings.Cut(strings.ToLower(email), "@")
	if !ok || domain != addOnAgentDomain {
		return "", false
	}
	n, ok := strings.CutPrefix(local, "service-")
	return n, ok && isDigits(n, 20)
}

// checkChatProjectNumber validates CHAT_PROJECT_NUMBER for loadConfig. An
// add-on's token is always for the HTTP endpoint URL, so the add-on
// signer is accepted only beside CHAT_AUDIENCE_TYPE=ENDPOINT_URL, whose
// CHAT_AUDIENCE is that URL.
func checkChatProjectNumber(c *Config) []string {
	n := c.ChatProjectNumber
	switch {
	case n == "":
		return nil
	case !isDigits(n, 20):
		return []string{"CHAT_PROJECT_NUMBER: must be the Chat app's Google Cloud project number (digits, not the project id), the number in its add-on service agent service-NUMBER@" + addOnAgentDomain}
	case c.ChatAudienceType == "":
		return []string{"CHAT_PROJECT_NUMBER is set but CHAT_AUDIENCE_TYPE is not, so ChatEvents is off; for a Chat app built as a Google Workspace add-on set CHAT_AUDIENCE_TYPE=" + chatAudienceEndpoint + " and CHAT_AUDIENCE to the ChatEvents URL, its HTTP endpoint URL"}
	case c.ChatAudienceType == chatAudienceProject:
		return []string{"CHAT_PROJECT_NUMBER: a Google Workspace add-on signs Chat events for its HTTP endpoint URL only, never for a project number; set CHAT_AUDIENCE_TYPE=" + chatAudienceEndpoint + " and CHAT_AUDIENCE to the ChatEvents URL, or unset CHAT_PROJECT_NUMBER for a classic Chat app"}
	}
	return nil
}

// chatFormat is the event format a request's verified signer may send.
type chatFormat int

const (
	formatClassic chatFormat = iota + 1 // Chat's interaction events, signed by chat@system
	formatAddOn                         // Workspace add-on events, signed by the add-on service agent
)

func (f chatFormat) String() string {
	if f == formatAddOn {
		return "a Google Workspace add-on event"
	}
	return "a Google Chat interaction event"
}

// chatEventBody is the union of both formats' top levels, enough to tell
// them apart. authorizationEventObject is not decoded at all: the tokens
// it carries (the system ID token and, with OAuth scopes, the user's ID
// and access tokens) are never read, logged or stored, and the command
// acts through the stored consent only (README.md).
type chatEventBody struct {
	chatEvent
	CommonEventObject *struct {
		HostApp string `json:"hostApp"`
	} `json:"commonEventObject"`
	Chat *addOnChat `json:"chat"`
}

// addOnChat is the add-on event's chat object: the user, and exactly one
// payload naming what happened.
type addOnChat struct {
	User                    *chatUser     `json:"user"`
	MessagePayload          *addOnPayload `json:"messagePayload"`
	AppCommandPayload       *addOnPayload `json:"appCommandPayload"`
	AddedToSpacePayload     *addOnPayload `json:"addedToSpacePayload"`
	RemovedFromSpacePayload *addOnPayload `json:"removedFromSpacePayload"`
	ButtonClickedPayload    *addOnPayload `json:"buttonClickedPayload"`
	WidgetUpdatedPayload    *addOnPayload `json:"widgetUpdatedPayload"`
}

// addOnPayload holds the fields of every payload kind that chatauth reads.
type addOnPayload struct {
	Message                   *chatEventMessage   `json:"message"`
	ConfigCompleteRedirectURI string              `json:"configCompleteRedirectUri"`
	AppCommandMetadata        *appCommandMetadata `json:"appCommandMetadata"`
}

// parseChatEvent reads a verified request's body in the format its
// signer sends, as the classic event the commands read. A body in neither
// format, or in the other signer's, is refused.
func parseChatEvent(body []byte, verified chatFormat) (*chatEvent, error) {
	var b chatEventBody
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, errorf(statusInvalidArgument, "the body is not a Google Chat event: %s", jsonProblem(err))
	}
	isAddOn := b.Chat != nil || b.CommonEventObject != nil
	isClassic := b.Type != ""
	var got chatFormat
	switch {
	case isAddOn && isClassic:
		return nil, errorf(statusInvalidArgument, "the body mixes both Google Chat event formats (an interaction event's \"type\" beside an add-on event's \"chat\" or \"commonEventObject\"); send one of them as Google Chat builds it")
	case isAddOn:
		got = formatAddOn
	case isClassic:
		got = formatClassic
	default:
		return nil, errorf(statusInvalidArgument, "the body is not a Google Chat event: it has neither an interaction event's \"type\" nor a Google Workspace add-on event's \"chat\" object; Google Chat sends one of them, see openapi.yaml, ChatEvents")
	}
	if got != verified {
		return nil, wrapError(statusUnauthenticated,
			fmt.Errorf("the body is %s but the bearer token is the signer of %s", got, verified),
			"the body is %s, which its bearer token's signer does not send: Google Chat signs interaction events as %s and add-on events as the project's add-on service agent", got, chatServiceAccount)
	}
	if got == formatClassic {
		return &b.chatEvent, nil
	}
	return b.addOnEvent()
}

// addOnEvent maps an add-on event onto the classic event, as Google's
// conversion guide pairs their fields: the payload's kind becomes the
// type, its message, command metadata and configCompleteRedirectUri the
// classic fields.
func (b *chatEventBody) addOnEvent() (*chatEvent, error) {
	if b.CommonEventObject != nil && b.CommonEventObject.HostApp != "" && b.CommonEventObject.HostApp != "CHAT" {
		return nil, errorf(statusInvalidArgument, "the add-on event is from %s, not Google Chat (commonEventObject.hostApp must be CHAT); ChatEvents answers Google Chat only", quoteShort(b.CommonEventObject.HostApp))
	}
	c := b.Chat
	if c == nil {
		return nil, errorf(statusInvalidArgument, "the add-on event has no \"chat\" object: it is not from Google Chat, which always sends one")
	}
	ev := &chatEvent{User: c.User}
	var payloads []string
	use := func(name, typ string, p *addOnPayload) {
		if p == nil {
			return
		}
		payloads = append(payloads, name)
		ev.Type = typ
		ev.Message = p.Message
		ev.ConfigCompleteRedirectURL = p.ConfigCompleteRedirectURI
		ev.AppCommandMetadata = p.AppCommandMetadata
	}
	use("messagePayload", "MESSAGE", c.MessagePayload)
	use("appCommandPayload", "APP_COMMAND", c.AppCommandPayload)
	use("addedToSpacePayload", "ADDED_TO_SPACE", c.AddedToSpacePayload)
	use("removedFromSpacePayload", "REMOVED_FROM_SPACE", c.RemovedFromSpacePayload)
	use("buttonClickedPayload", "CARD_CLICKED", c.ButtonClickedPayload)
	use("widgetUpdatedPayload", "WIDGET_UPDATED", c.WidgetUpdatedPayload)
	switch len(payloads) {
	case 1:
		return ev, nil
	case 0:
		return nil, errorf(statusInvalidArgument, "the add-on event's \"chat\" object carries no payload (messagePayload, appCommandPayload, addedToSpacePayload, …), so there is nothing to answer")
	default:
		return nil, errorf(statusInvalidArgument, "the add-on event's \"chat\" object carries %d payloads (%s); Google Chat sends exactly one", len(payloads), strings.Join(payloads, ", "))
	}
}

// quoteShort quotes at most 40 bytes of an untrusted value for a message.
func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// addOnReply is the add-on envelope of a chatReply: a message becomes a
// createMessageAction, Chat's configuration prompt the add-on's basic
// authorization prompt, whose authorization_url is the same OAuthStart
// link with the same ticket. Nothing at all is {}, as in the classic
// format.
type addOnReply struct {
	HostAppDataAction   *addOnDataAction `json:"hostAppDataAction,omitempty"`
	AuthorizationPrompt *addOnAuthPrompt `json:"basic_authorization_prompt,omitempty"`
}

type addOnDataAction struct {
	ChatDataAction struct {
		CreateMessageAction struct {
			Message struct {
				Text string `json:"text"`
			} `json:"message"`
		} `json:"createMessageAction"`
	} `json:"chatDataAction"`
}

type addOnAuthPrompt struct {
	AuthorizationURL string `json:"authorization_url"`
	Resource         string `json:"resource"`
}

// answer renders r in format f.
func (r chatReply) answer(f chatFormat) any {
	if f != formatAddOn {
		return r
	}
	var a addOnReply
	switch {
	case r.ActionResponse != nil && r.ActionResponse.Type == "REQUEST_CONFIG":
		a.AuthorizationPrompt = &addOnAuthPrompt{AuthorizationURL: r.ActionResponse.URL, Resource: addOnResource}
	case r.Text != "":
		a.HostAppDataAction = &addOnDataAction{}
		a.HostAppDataAction.ChatDataAction.CreateMessageAction.Message.Text = r.Text
	}
	return a
}
