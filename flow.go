package chatauth

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A pending consent lives in the browser that started it, not in the
// store: OAuthStart seals the flow's state record into a cookie of its
// own, named after a hash of the flow's state, and writes nothing, so an
// open OAuthStart costs the store nothing however often it is called, and
// a second tab (or another site sending the browser to OAuthStart) starts
// a second flow instead of replacing the first. The callback finds the
// cookie by the state it is given, opens it, and only then marks the state
// used in the store (markStateUsed), so that a state serves once across
// instances. README.md ("How it works") describes the cookie for operators.
const (
	// flowCookiePrefix begins the name of every flow cookie; the rest is
	// flowNameHex hex digits of SHA-256(state). The __Host- prefix makes
	// browsers refuse the cookie unless Secure, Path=/ and without Domain,
	// so a sibling host cannot plant one.
	flowCookiePrefix = "__Host-chatauth_flow_"
	flowNameHex      = 16
	// maxFlowCookies is how many pending flows a browser keeps: when a
	// request to OAuthStart carries as many, the oldest are cleared to make
	// room for the new one. A flow cookie is at most about 3.3 KB (one
	// from a Chat prompt with Chat's longest redirect; one from OAuthStart
	// alone is about 200 bytes), so five of them, about 17 KB at most,
	// stay within common limits on a request's headers.
	maxFlowCookies = 5
	// maxFlowCookiesRead bounds the flow cookies OAuthStart looks at in a
	// request. A browser holds at most a few; a client that sends
	// thousands gets no thousands of Set-Cookie lines back.
	maxFlowCookiesRead = 32
	// maxCookieBytes is the size of one cookie (name and value) that every
	// browser keeps (RFC 6265 section 6.1 asks for at least 4096 bytes).
	maxCookieBytes = 4096
	// maxState bounds the state parameter the callback accepts.
	maxState = 512
	// flowValuePrefix versions the cookie's value: "f1.<created>.<sealed>",
	// where created is the flow's start in Unix seconds and sealed the
	// base64url (unpadded) Tink AEAD ciphertext of the record.
	flowValuePrefix = "f1."
)

// flowAAD begins the associated data of a sealed flow, which separates
// flows from token fields and Chat tickets sealed with the same keyset.
const flowAAD = "chatauth/consent-flow/v1"

// stateRecord is one pending consent, as sealed into its flow cookie.
type stateRecord struct {
	Verifier  string    // the PKCE code verifier
	LoginHint string    // the login_hint sent to Google, or ""
	CreatedAt time.Time // when OAuthStart made the state, to the second

	// ChatUser and ChatRedirect come from a Chat ticket (ChatEvents): the
	// consenting account must be ChatUser ("users/{id}"), and the browser
	// then goes back to ChatRedirect.
	ChatUser     string
	ChatRedirect string
}

// flowCookieName is the name of the cookie of state's flow.
func flowCookieName(state string) string {
	return flowCookiePrefix + hashToken(state)[:flowNameHex]
}

// flowAssociatedData binds a sealed flow to its state and its creation
// time: a cookie opens only for the state it was made for, and its
// clear-text creation time cannot be changed. The state comes last, after
// a NUL that the decimal time cannot contain, so the encoding is
// unambiguous.
func flowAssociatedData(state string, created int64) []byte {
	return fmt.Appendf(nil, "%s\x00%d\x00%s", flowAAD, created, state)
}

// sealFlow returns the value of the flow cookie for state: rec's fields,
// each as a uvarint length and its bytes (compact, and no escaping that
// could grow a field past the cookie's size), sealed with the token
// keyset's AEAD. Sealing keeps the verifier and the login hint unreadable
// to whoever reads the browser's cookies.
func (s *server) sealFlow(state string, rec *stateRecord) (string, error) {
	created := rec.CreatedAt.Unix()
	var pt []byte
	for _, f := range []string{rec.Verifier, rec.LoginHint, rec.ChatUser, rec.ChatRedirect} {
		pt = binary.AppendUvarint(pt, uint64(len(f)))
		pt = append(pt, f...)
	}
	ct, err := s.tickets.Encrypt(pt, flowAssociatedData(state, created))
	if err != nil {
		return "", fmt.Errorf("oauth: seal the flow cookie: %w", err)
	}
	return flowValuePrefix + strconv.FormatInt(created, 10) + "." + base64.RawURLEncoding.EncodeToString(ct), nil
}

// errFlowCookie is a cookie that does not open for the state it was sent
// with: made for another flow, altered, or not made by this keyset.
var errFlowCookie = errors.New("the flow cookie does not open for this state")

// openFlow returns the record sealed in a flow cookie's value for state.
// Its errors never quote the value.
func (s *server) openFlow(state, value string) (*stateRecord, error) {
	created, ct, ok := splitFlowValue(value)
	if !ok {
		return nil, errFlowCookie
	}
	pt, err := s.tickets.Decrypt(ct, flowAssociatedData(state, created))
	if err != nil {
		return nil, errFlowCookie
	}
	var fields [4]string
	for i := range fields {
		n, k := binary.Uvarint(pt)
		if k <= 0 || n > uint64(len(pt)-k) {
			return nil, errFlowCookie
		}
		fields[i], pt = string(pt[k:k+int(n)]), pt[k+int(n):]
	}
	if len(pt) != 0 || fields[0] == "" {
		return nil, errFlowCookie
	}
	return &stateRecord{Verifier: fields[0], LoginHint: fields[1], ChatUser: fields[2], ChatRedirect: fields[3],
		CreatedAt: time.Unix(created, 0)}, nil
}

// splitFlowValue reads "f1.<created>.<sealed>" without opening it.
func splitFlowValue(value string) (created int64, ct []byte, ok bool) {
	rest, ok := strings.CutPrefix(value, flowValuePrefix)
	if !ok {
		return 0, nil, false
	}
	num, enc, ok := strings.Cut(rest, ".")
	if !ok || !isDigits(num, 18) {
		return 0, nil, false
	}
	created, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, nil, false
	}
	ct, err = base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return 0, nil, false
	}
	return created, ct, true
}

// flowCookie is the cookie of a flow; an empty value with maxAge -1
// clears it. Every attribute but the value and Max-Age is the same for
// setting and clearing, as browsers require to replace a cookie.
func flowCookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteLaxMode,
	}
}

// setFlowCookie starts state's flow in the browser. It refuses a cookie
// larger than browsers keep, which OAuthStart's bounds on the login hint
// and Chat's redirect rule out.
func setFlowCookie(w http.ResponseWriter, state, value string) error {
	name := flowCookieName(state)
	if n := len(name) + len(value); n > maxCookieBytes {
		return fmt.Errorf("oauth: the flow cookie would be %d bytes, more than the %d browsers keep", n, maxCookieBytes)
	}
	http.SetCookie(w, flowCookie(name, value, int(stateTTL/time.Second)))
	return nil
}

// clearFlowCookie ends state's flow in the browser.
func clearFlowCookie(w http.ResponseWriter, state string) {
	http.SetCookie(w, flowCookie(flowCookieName(state), "", -1))
}

// clearOldFlows makes room for one more flow: when r carries
// maxFlowCookies flow cookies or more, it clears the oldest, so that with
// the new one the browser keeps maxFlowCookies. A cookie whose value is
// not a flow's counts as the oldest. It returns how many it cleared.
func clearOldFlows(w http.ResponseWriter, r *http.Request) int {
	type flow struct {
		name    string
		created int64
	}
	var flows []flow
	for _, c := range r.Cookies() {
		if !strings.HasPrefix(c.Name, flowCookiePrefix) || slices.ContainsFunc(flows, func(f flow) bool { return f.name == c.Name }) {
			continue
		}
		created, _, ok := splitFlowValue(c.Value)
		if !ok {
			created = -1
		}
		flows = append(flows, flow{c.Name, created})
		if len(flows) == maxFlowCookiesRead {
			break
		}
	}
	excess := len(flows) - (maxFlowCookies - 1)
	if excess <= 0 {
		return 0
	}
	slices.SortStableFunc(flows, func(a, b flow) int { return cmp.Compare(a.created, b.created) })
	for _, f := range flows[:excess] {
		http.SetCookie(w, flowCookie(f.name, "", -1))
	}
	return excess
}

// findFlow opens the cookie of state's flow among those r carries, and
// checks that the flow is young enough. Every refusal is a restart page;
// only a cookie that opened lends its own login hint to it.
func (s *server) findFlow(r *http.Request, state string) (*stateRecord, error) {
	name := flowCookieName(state)
	sent, tries := false, 0
	for _, c := range r.Cookies() {
		if c.Name != name {
			continue
		}
		// A browser sends one cookie of a name; more than one (planted by
		// a client, not a browser) are each tried, a few at most, since
		// only a genuine one opens.
		sent = true
		if tries == maxFlowCookies {
			break
		}
		tries++
		rec, err := s.openFlow(state, c.Value)
		if err != nil {
			continue
		}
		// The lifetime is counted from the sealed creation time, with a
		// minute's grace for an instance whose clock runs ahead.
		now := s.now()
		if rec.CreatedAt.After(now.Add(time.Minute)) {
			return nil, s.restartError(statusPermissionDenied, "this sign-in link is not valid", rec.LoginHint)
		}
		if now.Sub(rec.CreatedAt) >= stateTTL {
			return nil, s.restartError(statusPermissionDenied, "this sign-in took longer than 10 minutes and expired", rec.LoginHint)
		}
		return rec, nil
	}
	if !sent {
		return nil, s.restartError(statusPermissionDenied, "this browser holds no sign-in for this link: it was already used, it expired (after 10 minutes), it was started in another browser, or cookies are blocked. Make sure cookies are allowed and that OAuthStart and OAuthCallback are on the same host", "")
	}
	return nil, s.restartError(statusPermissionDenied, "this sign-in's cookie is not valid: it was altered or made for another sign-in", "")
}

// usedStateExpiry is how long a used state's marker must outlive its use:
// as long as the flow's cookie could still be accepted, counted from the
// later of its creation and now (a creation time slightly ahead is
// admitted).
func usedStateExpiry(rec *stateRecord, now time.Time) time.Time {
	if rec.CreatedAt.After(now) {
		now = rec.CreatedAt
	}
	return now.Add(stateTTL)
}
