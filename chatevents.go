package chatauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// The Chat app: ChatEvents answers Google Chat's interaction events. A
// user types /createspace Launch review @bob, and the space is created as
// that user through the CreateSpace machinery; a user who has not
// consented is sent through OAuthStart by Chat's own "Configure" prompt.

// How Google Chat signs its requests; see "Verify requests from Google
// Chat" in Chat's developer documentation.
const (
	// chatServiceAccount is the account Chat calls apps as: the email of
	// the "HTTP endpoint URL" ID token, the issuer of the "Project number"
	// JWT.
	chatServiceAccount = "chat@system.gserviceaccount.com"
	// chatCertsURL publishes chatServiceAccount's public keys, a JSON
	// object of key id → PEM certificate.
	chatCertsURL = "https://www.googleapis.com/service_accounts/v1/metadata/x509/" + chatServiceAccount

	// CHAT_AUDIENCE_TYPE values: the "Authentication audience" setting of
	// the Chat app's configuration.
	chatAudienceEndpoint = "ENDPOINT_URL"
	chatAudienceProject  = "PROJECT_NUMBER"
)

// Slash command ids, as entered in the Chat app's configuration (README).
const (
	createCommandID     = 1 // /createspace <name> [@member …]
	disconnectCommandID = 2 // /disconnect
)

const (
	// chatEventDeadline bounds the work for one event: Chat waits about 30
	// seconds for the answer and then tells the user the app is not
	// responding.
	chatEventDeadline = 25 * time.Second
	// ticketTTL bounds how long the "Configure" link of a Chat prompt
	// stays usable, like a consent started at OAuthStart.
	ticketTTL = stateTTL
	// maxTicket bounds the ticket parameter of OAuthStart; a ticket with
	// a redirect URL of maxChatRedirect bytes fits.
	maxTicket = 4096
	// maxChatRedirect bounds the configCompleteRedirectUrl a ticket
	// carries. Chat's are a few hundred bytes.
	maxChatRedirect = 2048
	// chatRedirectPrefix is the only place a consent started from Chat
	// returns the browser to: https on exactly chat.google.com.
	chatRedirectPrefix = "https://chat.google.com/"
)

// checkChatAudience validates CHAT_AUDIENCE_TYPE and CHAT_AUDIENCE for
// loadConfig. Both empty is valid: ChatEvents is then off.
func checkChatAudience(typ, aud string) []string {
	switch typ {
	case "":
		if aud != "" {
			return []string{"CHAT_AUDIENCE is set but CHAT_AUDIENCE_TYPE is not; set it to " + chatAudienceEndpoint + " or " + chatAudienceProject + ", as the Chat app's Authentication audience"}
		}
		return nil
	case chatAudienceEndpoint:
		if aud == "" {
			return []string{"CHAT_AUDIENCE: required with CHAT_AUDIENCE_TYPE=ENDPOINT_URL: the ChatEvents URL entered as the Chat app's HTTP endpoint URL"}
		}
		if err := checkBaseURL(aud, false); err != nil {
			return []string{"CHAT_AUDIENCE: " + err.Error()}
		}
		return nil
	case chatAudienceProject:
		if !isDigits(aud, 20) {
			return []string{"CHAT_AUDIENCE: with CHAT_AUDIENCE_TYPE=PROJECT_NUMBER it must be the Chat app's Google Cloud project number (digits, not the project id)"}
		}
		return nil
	default:
		return []string{fmt.Sprintf("CHAT_AUDIENCE_TYPE: %q is not an audience type; use %s or %s", typ, chatAudienceEndpoint, chatAudienceProject)}
	}
}

// chatAuth verifies that a request comes from Google Chat, for the one
// audience configured. It is built once per instance and is safe for
// concurrent use.
//
// With ENDPOINT_URL, Chat sends a Google-signed OpenID Connect ID token:
// issuer accounts.google.com, audience the endpoint URL, email
// chat@system.gserviceaccount.com, verified. The email check is what
// matters most: anyone with a Google service account can get an ID token
// for any audience, but only Chat's carries Chat's email. A Chat app
// built as a Google Workspace add-on sends the same kind of token with
// its project's add-on service agent as the email; that signer is
// accepted only when CHAT_PROJECT_NUMBER names the project, and then for
// add-on events only.
//
// With PROJECT_NUMBER, Chat sends a JWT issued by
// chat@system.gserviceaccount.com itself, audience the project number,
// signed by one of that service account's published keys.
type chatAuth struct {
	audienceType, audience string
	classic                *idTokenVerifier
	// addOn verifies the add-on service agent's tokens; nil unless
	// CHAT_PROJECT_NUMBER is set.
	addOn         *idTokenVerifier
	projectNumber string
}

// newChatAuth builds the verifiers; client fetches Google's keys (tests
// point it at the fake), and certsURL is where chat@system's certificates
// are published: chatCertsURL, or CHAT_CERTS_URL's stand-in. projectNumber
// is CHAT_PROJECT_NUMBER, empty for no add-on.
func newChatAuth(ctx context.Context, audienceType, audience, projectNumber string, client *http.Client, certsURL string, now func() time.Time) (*chatAuth, error) {
	a := &chatAuth{audienceType: audienceType, audience: audience, projectNumber: projectNumber}
	p := idTokenPolicy{audiences: []string{audience}, audienceHint: "CHAT_AUDIENCE"}
	switch audienceType {
	case chatAudienceEndpoint:
		keys, err := newGoogleKeys(ctx, client)
		if err != nil {
			return nil, fmt.Errorf("chat events: %w", err)
		}
		p.issuers = []string{googleIssuer, "accounts.google.com"}
		p.signers = []string{chatServiceAccount}
		p.keys = keys
		if projectNumber != "" {
			addOn := p
			addOn.signers = []string{addOnAgent(projectNumber)}
			a.addOn = newIDTokenVerifier(addOn, now)
		}
	case chatAudienceProject:
		if projectNumber != "" {
			return nil, errors.New("chat events: CHAT_PROJECT_NUMBER needs CHAT_AUDIENCE_TYPE=" + chatAudienceEndpoint)
		}
		p.issuers = []string{chatServiceAccount}
		p.keys = &serviceAccountKeys{account: chatServiceAccount, what: "Google Chat's signing keys",
			certs: &chatCerts{url: certsURL, client: client, now: now}}
	default:
		return nil, fmt.Errorf("chat events: audience type %q", audienceType)
	}
	a.classic = newIDTokenVerifier(p, now)
	return a, nil
}

// notFromChat is the refusal of a request that does not prove it comes
// from Google Chat; what is wrong stays in the logs.
func notFromChat(format string, args ...any) *Error {
	return wrapError(statusUnauthenticated, fmt.Errorf(format, args...), "the request does not carry a valid Google Chat bearer token")
}

// verify checks r's bearer token and returns the event format its signer
// sends. A refusal is UNAUTHENTICATED and says only that the token is not
// Chat's, the reason kept for the logs with what to change when the
// configuration is what differs; only a failure to fetch the signing keys
// is UNAVAILABLE, since the token may well be good.
//
// The email the token claims only chooses which policy judges it: a token
// naming an add-on service agent is judged by the add-on policy alone,
// any other by the classic one, and each policy checks the signature.
func (a *chatAuth) verify(ctx context.Context, r *http.Request) (chatFormat, error) {
	authz := r.Header["Authorization"]
	if len(authz) != 1 {
		return 0, notFromChat("%d Authorization headers", len(authz))
	}
	claimed := unverifiedClaims(authz[0])
	v, format := a.classic, formatClassic
	if n, ok := addOnAgentProject(claimed.Email); ok {
		switch {
		case a.addOn == nil && a.audienceType == chatAudienceEndpoint:
			return 0, notFromChat("the token is from %s, the Google Workspace add-on service agent of project %s, but CHAT_PROJECT_NUMBER is not set: if this deployment's Chat app is that project's add-on, set CHAT_PROJECT_NUMBER=%s", claimed.Email, n, n)
		case a.addOn == nil:
			return 0, notFromChat("the token is from %s, a Google Workspace add-on service agent, but CHAT_AUDIENCE_TYPE is %s: an add-on Chat app needs CHAT_AUDIENCE_TYPE=%s, CHAT_AUDIENCE set to its HTTP endpoint URL and CHAT_PROJECT_NUMBER", claimed.Email, a.audienceType, chatAudienceEndpoint)
		case n != a.projectNumber:
			return 0, notFromChat("the token is from %s, the add-on service agent of project %s, not of project %s (CHAT_PROJECT_NUMBER): only this deployment's own Chat app may call; if project %s's Chat app is the one configured with this endpoint, set CHAT_PROJECT_NUMBER to its number", claimed.Email, n, a.projectNumber, n)
		}
		v, format = a.addOn, formatAddOn
	}
	if _, err := v.verify(ctx, authz[0]); err != nil {
		if e := asError(err); e.Status != statusUnauthenticated {
			return 0, e
		}
		return 0, notFromChat("%w%s", err, a.hint(claimed, format))
	}
	return format, nil
}

// hint says which setting to compare when a token that claims to be
// Chat's is refused for its audience or signer.
func (a *chatAuth) hint(c idTokenClaims, f chatFormat) string {
	switch {
	case c.Aud != "" && c.Aud != a.audience && a.audienceType == chatAudienceEndpoint:
		return fmt.Sprintf(" (the token is for %q, CHAT_AUDIENCE is %q: set the Chat app's HTTP endpoint URL and CHAT_AUDIENCE to the same URL, the ChatEvents URL)", c.Aud, a.audience)
	case c.Aud != "" && c.Aud != a.audience:
		return fmt.Sprintf(" (the token is for %q, CHAT_AUDIENCE is %q: the Chat app's Authentication audience and CHAT_AUDIENCE must agree)", c.Aud, a.audience)
	case f == formatClassic && c.Email != "" && !asciiEqualFold(c.Email, chatServiceAccount) && a.audienceType == chatAudienceEndpoint:
		want := chatServiceAccount
		if a.addOn != nil {
			want += " or " + addOnAgent(a.projectNumber)
		}
		return fmt.Sprintf(" (Google Chat signs as %s)", want)
	}
	return ""
}

// unverifiedClaims decodes the claims of a bearer token without trusting
// them, to choose a policy and to explain a refusal; zero when the token
// is not a JWT.
func unverifiedClaims(authz string) idTokenClaims {
	tok, err := bearerToken(authz)
	if err != nil {
		return idTokenClaims{}
	}
	t, err := splitJWT(tok)
	if err != nil {
		return idTokenClaims{}
	}
	return t.claims
}

var errUnknownChatKey = errors.New("chat events: unknown signing key")

// chatCerts caches chat@system.gserviceaccount.com's public keys for as
// long as Google's Cache-Control allows. A key id it does not know makes
// it fetch again (Google rotates the keys), at most every 30 seconds, so
// tokens with made-up key ids cannot make it hammer Google. A failed
// fetch is never cached.
type chatCerts struct {
	url    string
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex // held across a fetch: one fetch at a time
	keys    map[string]*rsa.PublicKey
	fresh   time.Time // keys may be used without fetching until then
	fetched time.Time
}

const (
	chatCertsRefetch = 30 * time.Second
	chatCertsMaxAge  = 24 * time.Hour
)

func (c *chatCerts) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.Before(c.fresh) {
		if k, ok := c.keys[kid]; ok {
			return k, nil
		}
		if now.Sub(c.fetched) < chatCertsRefetch {
			return nil, errUnknownChatKey
		}
	}
	keys, maxAge, err := c.fetch(ctx)
	if err != nil {
		return nil, err
	}
	c.keys, c.fetched, c.fresh = keys, now, now.Add(maxAge)
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return nil, errUnknownChatKey
}

// fetch reads the certificates and how long they may be cached.
func (c *chatCerts) fetch(ctx context.Context) (map[string]*rsa.PublicKey, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("chat events: certificates: %w", err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("chat events: fetch certificates: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("chat events: fetch certificates: HTTP %d", resp.StatusCode)
	}
	var certs map[string]string
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&certs); err != nil {
		return nil, 0, fmt.Errorf("chat events: certificates are not a JSON object of PEM certificates: %w", err)
	}
	keys := make(map[string]*rsa.PublicKey, len(certs))
	for kid, p := range certs {
		block, _ := pem.Decode([]byte(p))
		if block == nil || block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		if k, ok := cert.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() >= 2048 {
			keys[kid] = k
		}
	}
	if len(keys) == 0 {
		return nil, 0, errors.New("chat events: the certificates hold no usable RSA key")
	}
	return keys, maxAge(resp.Header.Get("Cache-Control")), nil
}

// maxAge reads max-age from Cache-Control: an hour when absent, at most a
// day.
func maxAge(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return min(time.Duration(n)*time.Second, chatCertsMaxAge)
			}
		}
	}
	return time.Hour
}

// chatTicket binds a consent started from Chat's "Configure" prompt to the
// Chat user who was prompted and to where Chat wants the browser back. It
// travels in OAuthStart's ticket parameter, sealed (see sealTicket).
type chatTicket struct {
	User     string `json:"u"`           // "users/{id}": the consenting account's sub must be id
	Email    string `json:"e,omitempty"` // login_hint, from the event
	Redirect string `json:"r,omitempty"` // the event's configCompleteRedirectUrl (an add-on's configCompleteRedirectUri)
	Exp      int64  `json:"x"`           // unix seconds
}

const ticketPrefix = "t1."

// ticketAAD separates tickets from the token fields sealed with the same
// keyset: a ticket never opens as a token field, nor the reverse.
var ticketAAD = []byte("chatauth/chat-ticket/v1")

// sealTicket encrypts t with the token keyset's AEAD. Sealing, not only
// signing, keeps the Chat user id and Chat's redirect token out of
// browser history and access logs; the keyset is a secret the function
// already holds and rotates, so tickets need no secret of their own.
func (s *server) sealTicket(t chatTicket) (string, error) {
	pt, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("chat events: encode ticket: %w", err)
	}
	ct, err := s.tickets.Encrypt(pt, ticketAAD)
	if err != nil {
		return "", fmt.Errorf("chat events: seal ticket: %w", err)
	}
	return ticketPrefix + base64.RawURLEncoding.EncodeToString(ct), nil
}

// openTicket returns the ticket sealed in raw, refusing a forged, altered
// or expired one.
func (s *server) openTicket(raw string) (*chatTicket, error) {
	invalid := errorf(statusPermissionDenied, "this Google Chat sign-in link is not valid. Send your command to the app in Google Chat again and use the new Configure link")
	enc, ok := strings.CutPrefix(raw, ticketPrefix)
	if !ok {
		return nil, invalid
	}
	ct, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return nil, invalid
	}
	pt, err := s.tickets.Decrypt(ct, ticketAAD)
	if err != nil {
		return nil, invalid
	}
	var t chatTicket
	if err := json.Unmarshal(pt, &t); err != nil || !isUserID(t.User) {
		return nil, invalid
	}
	if s.now().Unix() >= t.Exp {
		return nil, errorf(statusPermissionDenied, "this Google Chat sign-in link expired (they last 10 minutes). Send your command to the app in Google Chat again and use the new Configure link")
	}
	return &t, nil
}

// checkChatUser refuses a consent started from Chat by an account other
// than the Chat user the ticket was made for, so that nobody can link
// their Google account to someone else's Chat identity, or the reverse.
func checkChatUser(ctx context.Context, rec *stateRecord, sub, email string) error {
	if rec.ChatUser == "" || rec.ChatUser == "users/"+sub {
		return nil
	}
	loggerFrom(ctx).Warn("consent refused: the account is not the Chat user the link was made for", "sub", sub, "chatUser", rec.ChatUser)
	return errorf(statusPermissionDenied, "Google Chat was not connected: you signed in as %s, but the link was made for another Google Chat user. Go back to Google Chat, send your command again, and sign in with the account you use there", email)
}

// chatRedirectAllowed reports whether raw may receive the browser after a
// consent: https on exactly chat.google.com, nothing a browser could read
// differently from Go's parser (backslashes, spaces, control characters).
func chatRedirectAllowed(raw string) bool {
	if len(raw) > maxChatRedirect || !strings.HasPrefix(raw, chatRedirectPrefix) {
		return false
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return false
		}
	}
	u, err := url.Parse(raw)
	return err == nil && u.Scheme == "https" && u.Host == "chat.google.com" && u.User == nil && u.Opaque == ""
}

// redirectToChat ends a consent started from Chat by sending the browser
// to Chat's configCompleteRedirectUrl, which tells Chat to send the
// user's message again. It reports whether it did; a URL outside the
// allow-list gets the ordinary success page instead.
func (s *server) redirectToChat(w http.ResponseWriter, r *http.Request, rec *stateRecord) bool {
	if rec.ChatRedirect == "" {
		return false
	}
	if !chatRedirectAllowed(rec.ChatRedirect) {
		loggerFrom(r.Context()).Warn("not redirecting: configCompleteRedirectUrl is not on " + chatRedirectPrefix)
		return false
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Location", rec.ChatRedirect)
	w.WriteHeader(http.StatusFound)
	return true
}

// chatEvent is the part of a Chat interaction event the app reads. Chat
// adds fields over time, so unknown ones are ignored.
type chatEvent struct {
	Type                      string              `json:"type"`
	User                      *chatUser           `json:"user"`
	Message                   *chatEventMessage   `json:"message"`
	ConfigCompleteRedirectURL string              `json:"configCompleteRedirectUrl"`
	AppCommandMetadata        *appCommandMetadata `json:"appCommandMetadata"`
}

// appCommandMetadata names the slash or quick command an APP_COMMAND
// event (an add-on's appCommandPayload) invokes.
type appCommandMetadata struct {
	AppCommandID   flexInt `json:"appCommandId"`
	AppCommandType string  `json:"appCommandType"`
}

type chatUser struct {
	Name        string `json:"name"` // "users/{id}"
	DisplayName string `json:"displayName"`
	Email       string `json:"email"`
	Type        string `json:"type"` // HUMAN or BOT
}

type chatEventMessage struct {
	Name         string    `json:"name"`
	Text         string    `json:"text"`
	ArgumentText string    `json:"argumentText"`
	Sender       *chatUser `json:"sender"`
	SlashCommand *struct {
		CommandID flexInt `json:"commandId"`
	} `json:"slashCommand"`
	Annotations []chatAnnotation `json:"annotations"`
}

type chatAnnotation struct {
	Type        string  `json:"type"`
	StartIndex  flexInt `json:"startIndex"`
	Length      flexInt `json:"length"`
	UserMention *struct {
		User chatUser `json:"user"`
	} `json:"userMention"`
}

// flexInt is an integer Chat may send as a JSON number or, as proto JSON
// does for int64, as a string.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		*f = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("not an integer")
	}
	*f = flexInt(n)
	return nil
}

// chatReply is the synchronous answer to an event: a message, Chat's
// configuration prompt, or {} for no action.
type chatReply struct {
	Text           string          `json:"text,omitempty"`
	ActionResponse *chatActionResp `json:"actionResponse,omitempty"`
}

type chatActionResp struct {
	Type string `json:"type"`
	URL  string `json:"url,omitempty"`
}

const chatUsage = "• `/createspace Launch review @Bob @Carol` (or write `create space Launch review @Bob`) creates the space as you, with the people you mention.\n" +
	"• `/disconnect` takes back the permission you gave me.\n" +
	"The first time, I ask you to connect your Google account: click Configure and allow “Create conversations and spaces”."

// handleChatEvents serves POST /ChatEvents: Google Chat's events for the
// chatauth Chat app, as interaction events or, for an app built as a
// Workspace add-on, as add-on event objects (chataddon.go), each answered
// in its own format. The bearer token is verified before the body is
// even read, and the body must be in the format of the signer verified.
// After that every answer is 200 with a Chat message, so that the user
// always learns what happened: a failure they can act on is explained,
// and a 500 would only show "not responding".
func (s *server) handleChatEvents(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if s.chatAuth == nil {
		loggerFrom(ctx).Warn("ChatEvents was called but the Chat app is not configured: set CHAT_AUDIENCE_TYPE and CHAT_AUDIENCE")
		return errorf(statusNotFound, "ChatEvents is not enabled on this deployment; its operator sets CHAT_AUDIENCE_TYPE and CHAT_AUDIENCE to enable it")
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return errorf(statusMethodNotAllowed, "Google Chat sends events with POST")
	}
	format, err := s.chatAuth.verify(ctx, r)
	if err != nil {
		// The answer says only that the token is not Chat's; the reason
		// (never the token) goes to the operator, who needs it when
		// CHAT_AUDIENCE or CHAT_PROJECT_NUMBER does not match the Chat
		// app's configuration.
		logChatRefusal(ctx, err)
		return err
	}
	body, err := readJSONBody(w, r)
	if err != nil {
		return err
	}
	ev, err := parseChatEvent(body, format)
	if err != nil {
		logChatRefusal(ctx, err)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, min(s.chatDeadline, chatEventDeadline))
	defer cancel()
	writeJSON(w, http.StatusOK, s.chatEvent(ctx, ev).answer(format))
	return nil
}

// logChatRefusal logs why a request was refused as not Chat's, at Warn:
// the operator needs it when a setting does not match the Chat app's.
func logChatRefusal(ctx context.Context, err error) {
	var e *Error
	if errors.As(err, &e) && e.Status == statusUnauthenticated && e.Err != nil {
		loggerFrom(ctx).Warn("request not from Google Chat refused", "reason", e.Err.Error())
	}
}

// chatEvent answers one verified event.
func (s *server) chatEvent(ctx context.Context, ev *chatEvent) chatReply {
	actor := ev.User
	if actor == nil && ev.Message != nil {
		actor = ev.Message.Sender
	}
	switch ev.Type {
	case "MESSAGE", "APP_COMMAND", "ADDED_TO_SPACE":
	default:
		// REMOVED_FROM_SPACE, CARD_CLICKED and types Chat adds later.
		return chatReply{}
	}
	if actor == nil || actor.Type == "BOT" {
		return chatReply{}
	}
	if !isUserID(actor.Name) {
		return chatReply{Text: "I can only act for a person signed in to Google Chat."}
	}
	cmd, arg := ev.command()
	switch {
	case cmd == cmdCreate:
		return s.chatCreate(ctx, ev, actor, arg)
	case cmd == cmdDisconnect:
		return s.chatDisconnect(ctx, actor)
	case ev.Type == "ADDED_TO_SPACE":
		return chatReply{Text: "Hi! I create Google Chat spaces for you, as you, with the people you mention.\n" + chatUsage}
	default:
		return chatReply{Text: "I did not understand that. Here is what I can do:\n" + chatUsage}
	}
}

const (
	cmdHelp = iota
	cmdCreate
	cmdDisconnect
)

// command tells the event's command and its argument text: a slash
// command by its configured id, or the plain forms "create space <name>"
// and "disconnect". In a space the app's own @mention is not part of
// argumentText; other mentions are.
func (ev *chatEvent) command() (int, string) {
	m := ev.Message
	if m == nil {
		return cmdHelp, ""
	}
	var id flexInt
	if m.SlashCommand != nil {
		id = m.SlashCommand.CommandID
	} else if ev.AppCommandMetadata != nil && ev.AppCommandMetadata.AppCommandType == "SLASH_COMMAND" {
		id = ev.AppCommandMetadata.AppCommandID
	}
	switch id {
	case createCommandID:
		return cmdCreate, m.ArgumentText
	case disconnectCommandID:
		return cmdDisconnect, ""
	case 0:
	default:
		return cmdHelp, ""
	}
	text := m.ArgumentText
	if strings.TrimSpace(text) == "" {
		text = m.Text
	}
	words := strings.Fields(text)
	switch {
	case len(words) >= 2 && strings.EqualFold(words[0], "create") && strings.EqualFold(words[1], "space"):
		// The argument is what follows the two words, as typed.
		rest := strings.TrimSpace(text)
		rest = strings.TrimSpace(rest[len(words[0]):])
		return cmdCreate, rest[len(words[1]):]
	case len(words) == 1 && strings.EqualFold(words[0], "disconnect"):
		return cmdDisconnect, ""
	}
	return cmdHelp, ""
}

// mentions returns the people mentioned in the message (not apps, not the
// actor), in order and once each, and the text of every mention, which is
// not part of the space's name.
func (m *chatEventMessage) mentions(actor string) (members, texts []string) {
	seen := map[string]bool{actor: true}
	for _, a := range m.Annotations {
		if a.Type != "USER_MENTION" || a.UserMention == nil {
			continue
		}
		u := a.UserMention.User
		if t := mentionText(m.Text, a); t != "" {
			texts = append(texts, t)
		}
		if u.Type == "BOT" || !isUserID(u.Name) || seen[u.Name] {
			continue
		}
		seen[u.Name] = true
		members = append(members, u.Name)
	}
	return members, texts
}

// mentionText is the text of a mention, "@Bob Smith", as it appears in
// the message. The annotation's indices are read as UTF-16 code units
// and, failing that, as characters (they agree for most text); a mention
// that matches neither falls back to "@" and the display name.
func mentionText(text string, a chatAnnotation) string {
	start, n := int(a.StartIndex), int(a.Length)
	if start >= 0 && n > 0 {
		if u := utf16.Encode([]rune(text)); start+n <= len(u) {
			if t := string(utf16.Decode(u[start : start+n])); strings.HasPrefix(t, "@") {
				return t
			}
		}
		if r := []rune(text); start+n <= len(r) {
			if t := string(r[start : start+n]); strings.HasPrefix(t, "@") {
				return t
			}
		}
	}
	if a.UserMention.User.DisplayName != "" {
		return "@" + a.UserMention.User.DisplayName
	}
	return ""
}

// chatCreate creates a space from a create command, as the actor, with
// the people mentioned as members.
func (s *server) chatCreate(ctx context.Context, ev *chatEvent, actor *chatUser, arg string) chatReply {
	members, texts := ev.Message.mentions(actor.Name)
	for _, t := range texts {
		arg = strings.Replace(arg, t, " ", 1)
	}
	name := strings.Join(strings.Fields(arg), " ")
	switch n := utf8.RuneCountInString(name); {
	case n == 0:
		return chatReply{Text: "Tell me the new space's name, for example: `/createspace Launch review @Bob @Carol`."}
	case n > maxDisplayName:
		return chatReply{Text: fmt.Sprintf("That name is %d characters long; a space's name has at most %d. Try a shorter one.", n, maxDisplayName)}
	}
	if r, hidden := hiddenRune(name, false); hidden {
		return chatReply{Text: fmt.Sprintf("That name contains %s, which does not show as itself; type the name again as plain text.", describeRune(r))}
	}
	if len(members) > maxMembers {
		return chatReply{Text: fmt.Sprintf("You mentioned %d people; a new space can start with at most %d besides you. Create it with fewer and add the others afterwards.", len(members), maxMembers)}
	}
	req := &createSpaceRequest{User: actor.Name, DisplayName: name, SpaceType: spaceTypeSpace, Members: members, RequestID: chatRequestID(ev.Message.Name)}
	if err := req.validate(); err != nil {
		return s.chatFailure(ctx, ev, actor, name, err)
	}
	rec, err := s.lookupUser(ctx, actor.Name, actor.Email)
	if err != nil {
		return s.chatFailure(ctx, ev, actor, name, err)
	}
	space, err := s.createSpace(ctx, rec, req)
	if err != nil {
		return s.chatFailure(ctx, ev, actor, name, err)
	}
	loggerFrom(ctx).Info("space created", "sub", rec.Sub, "space", space.Name, "caller", "chat", "members", len(members))
	link := space.SpaceUri
	if link == "" {
		link = "https://chat.google.com/room/" + strings.TrimPrefix(space.Name, "spaces/")
	}
	with := ""
	if len(members) > 0 {
		with = fmt.Sprintf(" with %d %s", len(members), plural(len(members), "person", "people"))
	}
	return chatReply{Text: fmt.Sprintf("Created the space “%s”%s: %s", chatQuote(space.DisplayName), with, link)}
}

// chatRequestID makes Chat's redelivery of one message, and its re-send
// after a consent, create one space: the requestId is derived from the
// message's name.
func chatRequestID(message string) string {
	if message == "" {
		b := make([]byte, 16)
		rand.Read(b)
		return "chatauth-" + hex.EncodeToString(b)
	}
	sum := sha256.Sum256([]byte(message))
	return "chat-" + hex.EncodeToString(sum[:20])
}

// chatDisconnect revokes the actor's consent at Google and deletes it, as
// Disconnect does.
func (s *server) chatDisconnect(ctx context.Context, actor *chatUser) chatReply {
	rec, err := s.consents.findRecord(ctx, actor.Name)
	if errors.Is(err, errNotFound) {
		return chatReply{Text: "You are not connected, so there is nothing to disconnect."}
	}
	if err == nil {
		// The Chat user acts now, signed in, so whatever consent the
		// record holds when it is deleted is the one they end.
		err = s.disconnect(ctx, rec, "chat", nil)
	}
	if err != nil {
		e := s.logChatFailure(ctx, err)
		return chatReply{Text: "I could not disconnect you: " + e.Message}
	}
	return chatReply{Text: "Disconnected: I revoked the permission " + rec.Email + " gave me and deleted it. To create spaces again, just send a command."}
}

// chatFailure turns a failed create into a Chat answer: the consent
// prompt when the user must (re)connect, otherwise a message saying what
// happened and what to do.
func (s *server) chatFailure(ctx context.Context, ev *chatEvent, actor *chatUser, name string, err error) chatReply {
	e := s.logChatFailure(ctx, err)
	switch e.Status {
	case statusAuthorizationRequired:
		return s.requestConfig(ctx, ev, actor)
	case statusAlreadyExists:
		return chatReply{Text: fmt.Sprintf("A space named “%s” already exists. Choose another name.", chatQuote(name))}
	case statusInvalidArgument, statusPermissionDenied, statusNotFound:
		return chatReply{Text: "Google Chat did not create the space: " + e.Message}
	case statusResourceExhausted:
		return chatReply{Text: "Google Chat is busy right now, so the space was not created. Try again in a minute."}
	default:
		return chatReply{Text: "Google Chat or chatauth's storage is not answering right now, so the space was not created. Try again in a minute."}
	}
}

// logChatFailure logs err through the one mapping, as a request's error
// is logged, and returns it as an *Error for the Chat answer.
func (s *server) logChatFailure(ctx context.Context, err error) *Error {
	e := asError(err)
	logError(loggerFrom(ctx), e, "chat command")
	return e
}

// requestConfig asks Chat to show the user its "Configure" prompt, which
// opens OAuthStart with a ticket for this user and this event.
func (s *server) requestConfig(ctx context.Context, ev *chatEvent, actor *chatUser) chatReply {
	t := chatTicket{User: actor.Name, Exp: s.now().Add(ticketTTL).Unix()}
	if e := strings.ToLower(actor.Email); validEmail(e) {
		t.Email = e
	}
	if r := ev.ConfigCompleteRedirectURL; len(r) <= maxChatRedirect {
		t.Redirect = r
	}
	ticket, err := s.sealTicket(t)
	if err != nil {
		s.logChatFailure(ctx, err)
		return chatReply{Text: "You need to connect your Google account first, but I could not prepare the link. Try again in a minute."}
	}
	return chatReply{ActionResponse: &chatActionResp{Type: "REQUEST_CONFIG", URL: s.cfg.PublicURL + "/OAuthStart?ticket=" + url.QueryEscape(ticket)}}
}

// chatQuote makes user text safe to echo in a Chat message: "<" and ">"
// would let a name like "<users/all>" notify everyone in the space.
func chatQuote(s string) string { return chatQuoter.Replace(s) }

var chatQuoter = strings.NewReplacer("<", "‹", ">", "›")

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
