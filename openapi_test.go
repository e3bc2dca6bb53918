package chatauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/chatauth/chatauth/internal/fakegoogle"
	"github.com/chatauth/chatauth/internal/fakesecretmanager"
)

// openapi.yaml is checked against the functions' real answers: every
// answer of the test requests below must be documented, with a body that
// validates against its documented schema and the headers it promises, and
// every documented status code, and every error status each documents,
// must be produced by some request.

// apiDoc is a parsed OpenAPI document, as JSON-like values.
type apiDoc struct {
	root map[string]any
}

func loadAPIDoc(t *testing.T) *apiDoc {
	t.Helper()
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	root, ok := jsonLike(v).(map[string]any)
	if !ok {
		t.Fatal("openapi.yaml is not a mapping")
	}
	return &apiDoc{root: root}
}

// jsonLike turns YAML-decoded values into what encoding/json produces:
// string-keyed maps and float64 numbers.
func jsonLike(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = jsonLike(x)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = jsonLike(x)
		}
		return m
	case []any:
		for i := range v {
			v[i] = jsonLike(v[i])
		}
		return v
	case int:
		return float64(v)
	case int64:
		return float64(v)
	case uint64:
		return float64(v)
	}
	return v
}

// get walks a path of keys from m; nil when any is missing.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// deref follows a local $ref ("#/components/...") until it reaches an
// object without one.
func (d *apiDoc) deref(v any) map[string]any {
	for i := 0; i < 16; i++ {
		m, _ := v.(map[string]any)
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		path := strings.Split(strings.TrimPrefix(ref, "#/"), "/")
		v = get(d.root, path...)
		if v == nil {
			return nil
		}
	}
	return nil
}

// schemaKeywords are the JSON Schema keywords the validator implements;
// annotations are accepted and ignored. Any other keyword in the document
// fails the test, so it cannot use one the check would silently skip.
var (
	schemaKeywords    = []string{"$ref", "allOf", "oneOf", "anyOf", "type", "enum", "required", "properties", "additionalProperties", "items", "maxItems", "minItems", "uniqueItems", "maxLength", "minLength", "pattern", "minimum", "maximum", "format"}
	schemaAnnotations = []string{"description", "title", "default", "examples", "example", "deprecated", "readOnly", "writeOnly"}
)

// ecmaEscape turns the \uXXXX escapes of an ECMA-262 pattern into RE2's.
var ecmaEscape = regexp.MustCompile(`\\u([0-9a-fA-F]{4})`)

// validate checks v against schema, returning one line per violation.
func (d *apiDoc) validate(schema any, v any, at string) []string {
	var errs []string
	bad := func(format string, args ...any) {
		errs = append(errs, at+": "+fmt.Sprintf(format, args...))
	}
	s, ok := schema.(map[string]any)
	if !ok {
		return []string{at + ": schema is not an object"}
	}
	for k := range s {
		if !slices.Contains(schemaKeywords, k) && !slices.Contains(schemaAnnotations, k) {
			bad("the schema uses %q, which this validator does not implement", k)
		}
	}
	if ref, ok := s["$ref"]; ok {
		target := d.deref(map[string]any{"$ref": ref})
		if target == nil {
			bad("unresolvable $ref %v", ref)
			return errs
		}
		errs = append(errs, d.validate(target, v, at)...)
	}
	for _, sub := range asList(s["allOf"]) {
		errs = append(errs, d.validate(sub, v, at)...)
	}
	if alts := asList(s["oneOf"]); len(alts) > 0 {
		n := 0
		var why []string
		for _, sub := range alts {
			if e := d.validate(sub, v, at); len(e) == 0 {
				n++
			} else {
				why = append(why, e...)
			}
		}
		if n != 1 {
			bad("matches %d of the oneOf alternatives, want exactly 1 (%s)", n, strings.Join(why, "; "))
		}
	}
	if alts := asList(s["anyOf"]); len(alts) > 0 {
		if !slices.ContainsFunc(alts, func(sub any) bool { return len(d.validate(sub, v, at)) == 0 }) {
			bad("matches none of the anyOf alternatives")
		}
	}
	if typ, ok := s["type"]; ok {
		types := asList(typ)
		if types == nil {
			types = []any{typ}
		}
		if !slices.ContainsFunc(types, func(t any) bool { return hasType(v, fmt.Sprint(t)) }) {
			bad("got %s, want type %v", jsonTypeOf(v), typ)
			return errs
		}
	}
	if enum := asList(s["enum"]); enum != nil {
		if !slices.ContainsFunc(enum, func(e any) bool { return sameJSON(e, v) }) {
			bad("%s is not one of %v", compactJSON(v), enum)
		}
	}
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range asList(s["required"]) {
			if _, ok := v[fmt.Sprint(r)]; !ok {
				bad("the required property %q is missing", r)
			}
		}
		for k, x := range v {
			if ps, ok := props[k]; ok {
				errs = append(errs, d.validate(ps, x, at+"."+k)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					bad("the property %q is not documented (additionalProperties: false)", k)
				}
			case map[string]any:
				errs = append(errs, d.validate(ap, x, at+"."+k)...)
			}
		}
	case []any:
		if n, ok := s["maxItems"].(float64); ok && float64(len(v)) > n {
			bad("%d items, at most %v allowed", len(v), n)
		}
		if n, ok := s["minItems"].(float64); ok && float64(len(v)) < n {
			bad("%d items, at least %v needed", len(v), n)
		}
		if u, _ := s["uniqueItems"].(bool); u {
			seen := map[string]bool{}
			for _, x := range v {
				if j := compactJSON(x); seen[j] {
					bad("the item %s repeats (uniqueItems)", j)
				} else {
					seen[j] = true
				}
			}
		}
		if items, ok := s["items"]; ok {
			for i, x := range v {
				errs = append(errs, d.validate(items, x, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	case string:
		n := float64(utf8.RuneCountInString(v))
		if m, ok := s["maxLength"].(float64); ok && n > m {
			bad("%v characters, at most %v allowed", n, m)
		}
		if m, ok := s["minLength"].(float64); ok && n < m {
			bad("%v characters, at least %v needed", n, m)
		}
		if p, ok := s["pattern"].(string); ok {
			re, err := regexp.Compile(ecmaEscape.ReplaceAllString(p, `\x{$1}`))
			if err != nil {
				bad("pattern %q does not compile: %v", p, err)
			} else if !re.MatchString(v) {
				bad("%q does not match %s", v, p)
			}
		}
		switch s["format"] {
		case "uri":
			if u, err := url.Parse(v); err != nil || u.Scheme == "" || u.Host == "" {
				bad("%q is not an absolute URI", v)
			}
		case "date-time":
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				bad("%q is not an RFC 3339 date-time", v)
			}
		}
	case float64:
		if m, ok := s["minimum"].(float64); ok && v < m {
			bad("%v is less than the minimum %v", v, m)
		}
		if m, ok := s["maximum"].(float64); ok && v > m {
			bad("%v is more than the maximum %v", v, m)
		}
	}
	return errs
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func hasType(v any, t string) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case "null":
		return v == nil
	}
	return false
}

func jsonTypeOf(v any) string {
	for _, t := range []string{"object", "array", "string", "boolean", "integer", "number", "null"} {
		if hasType(v, t) {
			return t
		}
	}
	return fmt.Sprintf("%T", v)
}

func compactJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func sameJSON(a, b any) bool { return compactJSON(a) == compactJSON(b) }

// apiResponse is what the document says one status code of an operation
// answers.
type apiResponse struct {
	schema  any
	headers map[string]map[string]any // name → header object
}

func (d *apiDoc) operations() []string {
	var out []string
	for path := range get(d.root, "paths").(map[string]any) {
		out = append(out, path)
	}
	sort.Strings(out)
	return out
}

func (d *apiDoc) responses(path string) map[string]apiResponse {
	out := map[string]apiResponse{}
	rs, _ := get(d.root, "paths", path, "post", "responses").(map[string]any)
	for code, r := range rs {
		resp := d.deref(r)
		ar := apiResponse{schema: get(resp, "content", "application/json", "schema"), headers: map[string]map[string]any{}}
		if hs, ok := resp["headers"].(map[string]any); ok {
			for name, h := range hs {
				ar.headers[name] = d.deref(h)
			}
		}
		out[code] = ar
	}
	return out
}

func (d *apiDoc) requestSchema(path string) any {
	return get(d.root, "paths", path, "post", "requestBody", "content", "application/json", "schema")
}

// checkAnswer validates one real answer against the document.
func (d *apiDoc) checkAnswer(path string, code int, header http.Header, body string) []string {
	r, ok := d.responses(path)[strconv.Itoa(code)]
	if !ok {
		return []string{fmt.Sprintf("%s answered %d, which openapi.yaml does not document: %s", path, code, body)}
	}
	var problems []string
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		problems = append(problems, fmt.Sprintf("Content-Type %q, want application/json", ct))
	}
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return append(problems, fmt.Sprintf("the body is not JSON: %v: %s", err, body))
	}
	if r.schema == nil {
		problems = append(problems, "no application/json schema is documented")
	} else {
		problems = append(problems, d.validate(r.schema, v, "body")...)
	}
	for name, h := range r.headers {
		val := header.Get(name)
		if val == "" {
			if req, _ := h["required"].(bool); req {
				problems = append(problems, fmt.Sprintf("the documented header %s is missing", name))
			}
			continue
		}
		var hv any = val
		if hasType(h["schema"], "object") && get(h, "schema", "type") == "integer" {
			n, err := strconv.Atoi(val)
			if err != nil {
				problems = append(problems, fmt.Sprintf("header %s: %q is not an integer", name, val))
				continue
			}
			hv = float64(n)
		}
		problems = append(problems, d.validate(h["schema"], hv, "header "+name)...)
	}
	return problems
}

// documentedStatuses lists the error statuses a response's schema admits,
// by asking the validator which envelopes it accepts.
func (d *apiDoc) documentedStatuses(r apiResponse, code int) []string {
	var out []string
	var statuses []string
	for s := range httpCodes {
		statuses = append(statuses, s)
	}
	sort.Strings(statuses)
	for _, status := range statuses {
		env := map[string]any{"error": map[string]any{"code": float64(code), "status": status, "message": "m", "authorizeUrl": "https://h.example/OAuthStart"}}
		if len(d.validate(r.schema, env, "body")) == 0 {
			out = append(out, status)
		}
	}
	return out
}

// TestOpenAPI drives CreateSpace, Disconnect, Users and ChatEvents (in
// both event formats) through the Functions Framework into every
// documented answer and checks each against
// openapi.yaml.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	doc := loadAPIDoc(t)
	const audience = "123456789012-abcdefghijklmnopqrstuvwxyz012345.apps.googleusercontent.com"
	e := newTestEnv(t, storeLocal, func(c *Config) {
		c.AllowedAudiences = []string{audience}
		c.ChatAudienceType, c.ChatAudience, c.ChatProjectNumber = chatAudienceEndpoint, chatEndpointURL, addOnProject
	})
	e.connect()
	chatApp, err := fakegoogle.NewChatApp(e.google)
	if err != nil {
		t.Fatal(err)
	}
	// chatAuth and addOnAuth sign a ChatEvents request as Google Chat and
	// as the add-on's service agent.
	chatAuth := func(string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + chatApp.EndpointToken(chatEndpointURL, nil)}
	}
	addOnAuth := func(string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + chatApp.AddOnToken(chatEndpointURL, addOnProject, nil)}
	}
	addOnEvent := func(classic string) string {
		b, err := fakegoogle.AddOnEvent([]byte(classic), "")
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	stranger := chatMsg{user: "users/999", email: "-", text: "create space Not yet"}.json()
	chatOff := func(t *testing.T) {
		a := e.srv.chatAuth
		e.srv.chatAuth = nil
		t.Cleanup(func() { e.srv.chatAuth = a })
	}

	idToken := func(email string) string {
		return "Bearer " + e.google.MintIDToken(map[string]any{
			"iss": "https://accounts.google.com", "aud": audience, "sub": subOf(email), "email": email,
			"email_verified": true, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
		})
	}
	signed := func(body string) map[string]string {
		return map[string]string{"X-Signature": signBody(testWebhookSecret, e.clock.Now(), []byte(body))}
	}
	// brokenInstance makes the next requests build their server with
	// build, as a fresh instance would, and restores the test's server
	// afterwards.
	brokenInstance := func(t *testing.T, build func(ctx context.Context) (*server, error)) {
		e.inst.srv.Store(nil)
		old := e.inst.build
		e.inst.build = build
		t.Cleanup(func() {
			e.inst.build = old
			e.use(e.srv)
		})
	}
	misconfigured := func(t *testing.T) {
		brokenInstance(t, func(ctx context.Context) (*server, error) {
			cfg, err := loadConfig(func(string) string { return "" }) // a deployment without its variables
			if err != nil {
				return nil, err
			}
			return newServer(ctx, cfg, serverOptions{logger: newLogger(e.logs)})
		})
	}
	secretManagerDown := func(t *testing.T) {
		sm, err := fakesecretmanager.Start()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sm.Close)
		cfg := e.cfg
		cfg.ClientSecrets = sm.Put("projects/p/secrets/oauth-client", e.google.ClientJSON("web"))
		cfg.WebhookSecrets = sm.Put("projects/p/secrets/webhook", []byte(testWebhookSecret))
		cfg.TokenKeyset = sm.Put("projects/p/secrets/keyset", testKeyset(t))
		// A new instance's own store: the server is built while the
		// secrets are read, and the embedded store admits one holder.
		cfg.DataDir = t.TempDir()
		sm.SetUnavailable(true)
		brokenInstance(t, func(ctx context.Context) (*server, error) {
			return newServer(ctx, cfg, serverOptions{secretManager: sm.ClientOptions(), secretWait: time.Second, logger: newLogger(e.logs)})
		})
	}
	// hangingRevoke points revocation at an endpoint that never answers,
	// on a restarted server whose HTTP client gives up after a second.
	hangingRevoke := func(t *testing.T) {
		hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
		}))
		t.Cleanup(hang.Close)
		orig := e.cfg.RevokeURL
		e.cfg.RevokeURL = hang.URL
		e.restart(func(o *serverOptions) { o.httpClient = &http.Client{Timeout: time.Second} })
		t.Cleanup(func() {
			e.cfg.RevokeURL = orig
			e.restart()
		})
	}

	long := strings.Repeat("x", 129)
	type apiCase struct {
		name   string
		path   string
		method string
		ctype  string // default application/json
		body   string
		auth   func(body string) map[string]string // default signed
		setup  func(t *testing.T)
		// validRequest says whether the body must satisfy the documented
		// request schema (true), must not (false), or either (nil).
		validRequest *bool
		code         int
	}
	yes, no := new(bool), new(bool)
	*yes = true
	cases := []apiCase{
		// CreateSpace.
		{name: "a space", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"Incident 4711","spaceType":"SPACE","description":"disk full","requestId":"oa-1"}`, validRequest: yes, code: 200},
		{name: "a space with members", path: "/CreateSpace", body: `{"user":"users/` + aliceSub + `","displayName":"Launch","members":["users/123","bob@example.com"],"requestId":"oa-2"}`, validRequest: yes, code: 200},
		{name: "a direct message", path: "/CreateSpace", body: `{"user":"alice@example.com","spaceType":"DIRECT_MESSAGE","members":["bob@example.com"]}`, validRequest: yes, code: 200},
		{name: "an ID-token caller as itself", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"From Apps Script"}`,
			auth: func(string) map[string]string { return map[string]string{"Authorization": idToken(aliceEmail)} }, validRequest: yes, code: 200},
		{name: "an unknown field", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"x","colour":"red"}`, validRequest: no, code: 400},
		{name: "a display name too long", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"` + long + `"}`, validRequest: no, code: 400},
		{name: "an unknown space type", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"x","spaceType":"ROOM"}`, validRequest: no, code: 400},
		{name: "a user that is no user", path: "/CreateSpace", body: `{"user":"alice","displayName":"x"}`, validRequest: no, code: 400},
		{name: "a control character", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"a\u0007b"}`, validRequest: no, code: 400},
		{name: "a left-to-right mark", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"admin\u200e"}`, validRequest: no, code: 400},
		{name: "a line separator in a description", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"x","description":"a\u2028b"}`, validRequest: no, code: 400},
		{name: "an emoji sequence", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"On call \ud83e\uddd1\u200d\ud83d\udcbb","requestId":"oa-emoji"}`, validRequest: yes, code: 200},
		{name: "a group chat with a name", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"Team","spaceType":"GROUP_CHAT","members":["users/1","users/2"]}`, code: 400},
		{name: "no credentials", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"x"}`, auth: func(string) map[string]string { return nil }, validRequest: yes, code: 401},
		{name: "an ID-token caller for someone else", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"Not mine"}`,
			auth: func(string) map[string]string {
				return map[string]string{"Authorization": idToken("mallory@example.com")}
			}, code: 403},
		{name: "Chat refuses permission", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"Forbidden"}`,
			setup: func(*testing.T) {
				e.google.InjectChatFaults(fakegoogle.ChatFault{Status: 403, Message: "The caller does not have permission"})
			}, code: 403},
		{name: "a user who has not consented", path: "/CreateSpace", body: `{"user":"bob@example.com","displayName":"x"}`, code: 403},
		{name: "Chat answers not found", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"Ghost","members":["users/999"]}`,
			setup: func(*testing.T) {
				e.google.InjectChatFaults(fakegoogle.ChatFault{Status: 404, Message: "Member not found."})
			}, code: 404},
		{name: "GET", path: "/CreateSpace", method: http.MethodGet, code: 405},
		{name: "a taken name", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"Taken"}`,
			setup: func(t *testing.T) {
				// Its own requestId: the same signed bytes would be the same
				// request, answered with the same space.
				b := `{"user":"alice@example.com","displayName":"Taken","requestId":"oa-taken-first"}`
				if code, resp := e.signed("CreateSpace", b); code != 200 {
					t.Fatalf("first Taken: %d %s", code, resp)
				}
			}, code: 409},
		{name: "a body over 64 KiB", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"x","description":"` + strings.Repeat("d", 70<<10) + `"}`, validRequest: no, code: 413},
		{name: "a form body", path: "/CreateSpace", ctype: "application/x-www-form-urlencoded", body: "user=alice", code: 415},
		{name: "Chat keeps rate limiting", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"Busy","requestId":"oa-busy"}`,
			setup: func(t *testing.T) {
				// A Retry-After beyond the request's deadline ends the retries.
				e.google.InjectChatFaults(fakegoogle.ChatFault{Status: 429, RetryAfter: "60"})
				t.Cleanup(e.google.ClearChatFaults)
			}, code: 429},
		{name: "a misconfigured instance", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"x"}`, setup: misconfigured, code: 500},
		{name: "no Chat app", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"No app"}`,
			setup: func(t *testing.T) {
				e.google.SetChatAppConfigured(false)
				t.Cleanup(func() { e.google.SetChatAppConfigured(true) })
			}, code: 502},
		{name: "Secret Manager down at cold start", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"x"}`, setup: secretManagerDown, code: 503},
		{name: "Chat too slow", path: "/CreateSpace", body: `{"user":"alice@example.com","displayName":"Slow","requestId":"oa-slow"}`,
			setup: func(t *testing.T) {
				e.srv.chatDeadline = time.Second
				e.google.SetChatLatency(5 * time.Second)
				t.Cleanup(func() {
					e.srv.chatDeadline = 30 * time.Second
					e.google.SetChatLatency(0)
				})
			}, code: 504},

		// Users.
		{name: "everyone", path: "/Users", body: `{}`, validRequest: yes, code: 200},
		{name: "connected only, one a page", path: "/Users", body: `{"pageSize":1,"status":"connected"}`, validRequest: yes, code: 200},
		{name: "a status that is none", path: "/Users", body: `{"status":"active"}`, validRequest: no, code: 400},
		{name: "a page too large", path: "/Users", body: `{"pageSize":501}`, validRequest: no, code: 400},
		{name: "no credentials", path: "/Users", body: `{}`, auth: func(string) map[string]string { return nil }, validRequest: yes, code: 401},
		{name: "an ID-token caller for someone else", path: "/Users", body: `{"user":"alice@example.com"}`,
			auth: func(string) map[string]string {
				return map[string]string{"Authorization": idToken("robot@example.com")}
			}, validRequest: yes, code: 403},
		{name: "GET", path: "/Users", method: http.MethodGet, code: 405},
		{name: "a body over 64 KiB", path: "/Users", body: `{"user":"` + strings.Repeat("a", 70<<10) + `@example.com"}`, validRequest: no, code: 413},
		{name: "a form body", path: "/Users", ctype: "text/plain", body: "all", code: 415},
		{name: "a misconfigured instance", path: "/Users", body: `{}`, setup: misconfigured, code: 500},
		{name: "Secret Manager down at cold start", path: "/Users", body: `{}`, setup: secretManagerDown, code: 503},

		// ChatEvents, in both formats.
		{name: "a classic message", path: "/ChatEvents", body: chatMsg{text: "create space OpenAPI classic"}.json(), auth: chatAuth, validRequest: yes, code: 200},
		{name: "a classic message from a user who has not connected", path: "/ChatEvents", body: stranger, auth: chatAuth, validRequest: yes, code: 200},
		{name: "an add-on slash command", path: "/ChatEvents", body: addOnEvent(chatMsg{text: "/createspace OpenAPI add-on", slash: createCommandID}.json()), auth: addOnAuth, validRequest: yes, code: 200},
		{name: "an add-on message from a user who has not connected", path: "/ChatEvents", body: addOnEvent(stranger), auth: addOnAuth, validRequest: yes, code: 200},
		{name: "an add-on removal", path: "/ChatEvents", body: addOnEvent(chatMsg{typ: "REMOVED_FROM_SPACE"}.json()), auth: addOnAuth, validRequest: yes, code: 200},
		{name: "neither format", path: "/ChatEvents", body: `{"message":{"text":"create space X"}}`, auth: chatAuth, validRequest: no, code: 400},
		{name: "an add-on event without a payload", path: "/ChatEvents", body: `{"commonEventObject":{"hostApp":"CHAT"},"chat":{"user":{"name":"users/1"}}}`, auth: addOnAuth, validRequest: no, code: 400},
		{name: "both formats at once", path: "/ChatEvents", body: strings.Replace(addOnEvent(stranger), "{", `{"type":"MESSAGE",`, 1), auth: addOnAuth, validRequest: no, code: 400},
		{name: "no credentials", path: "/ChatEvents", body: stranger, auth: func(string) map[string]string { return nil }, validRequest: yes, code: 401},
		{name: "a classic event from the add-on's agent", path: "/ChatEvents", body: stranger, auth: addOnAuth, validRequest: yes, code: 401},
		{name: "the Chat app off", path: "/ChatEvents", body: stranger, auth: chatAuth, setup: chatOff, validRequest: yes, code: 404},
		{name: "GET", path: "/ChatEvents", method: http.MethodGet, auth: chatAuth, code: 405},
		{name: "a body over 64 KiB", path: "/ChatEvents", body: chatMsg{text: "create space " + strings.Repeat("x", 70<<10)}.json(), auth: chatAuth, code: 413},
		{name: "a form body", path: "/ChatEvents", ctype: "text/plain", body: "hi", auth: chatAuth, code: 415},
		{name: "a misconfigured instance", path: "/ChatEvents", body: stranger, auth: chatAuth, setup: misconfigured, code: 500},
		{name: "Secret Manager down at cold start", path: "/ChatEvents", body: stranger, auth: chatAuth, setup: secretManagerDown, code: 503},

		// Disconnect; its success comes last, as it forgets alice.
		{name: "a user that is no user", path: "/Disconnect", body: `{"user":"alice"}`, validRequest: no, code: 400},
		{name: "an unknown field", path: "/Disconnect", body: `{"user":"alice@example.com","reason":"x"}`, validRequest: no, code: 400},
		{name: "no credentials", path: "/Disconnect", body: `{"user":"alice@example.com"}`, auth: func(string) map[string]string { return nil }, validRequest: yes, code: 401},
		{name: "an ID-token caller for someone else", path: "/Disconnect", body: `{"user":"alice@example.com"}`,
			auth: func(string) map[string]string {
				return map[string]string{"Authorization": idToken("mallory@example.com")}
			}, code: 403},
		{name: "a user without consent", path: "/Disconnect", body: `{"user":"bob@example.com"}`, validRequest: yes, code: 404},
		{name: "GET", path: "/Disconnect", method: http.MethodGet, code: 405},
		{name: "a body over 64 KiB", path: "/Disconnect", body: `{"user":"` + strings.Repeat("a", 70<<10) + `@example.com"}`, validRequest: no, code: 413},
		{name: "a form body", path: "/Disconnect", ctype: "text/plain", body: "alice", code: 415},
		{name: "a misconfigured instance", path: "/Disconnect", body: `{"user":"alice@example.com"}`, setup: misconfigured, code: 500},
		{name: "revocation fails", path: "/Disconnect", body: `{"user":"alice@example.com"}`, setup: func(*testing.T) { e.google.FailRevoke(500, 1) }, code: 502},
		{name: "Secret Manager down at cold start", path: "/Disconnect", body: `{"user":"alice@example.com"}`, setup: secretManagerDown, code: 503},
		{name: "revocation hangs", path: "/Disconnect", body: `{"user":"alice@example.com"}`, setup: hangingRevoke, code: 504},
		{name: "signed before the latest consent", path: "/Disconnect", body: `{"user":"alice@example.com"}`, setup: func(*testing.T) { e.connect() },
			auth: func(body string) map[string]string {
				return map[string]string{"X-Signature": signBody(testWebhookSecret, e.clock.Now().Add(-2*time.Second), []byte(body))}
			}, validRequest: yes, code: 409},
		{name: "alice", path: "/Disconnect", body: `{"user":"alice@example.com"}`, validRequest: yes, code: 200},
	}

	// seen[path][code] lists the error statuses answered (or "" for a
	// success).
	seen := map[string]map[string][]string{}
	for _, tc := range cases {
		t.Run(tc.path[1:]+"/"+tc.name, func(t *testing.T) {
			if tc.validRequest != nil {
				errs := doc.validate(doc.requestSchema(tc.path), decodeAny(t, tc.body), "request")
				if *tc.validRequest && len(errs) > 0 {
					t.Errorf("the request schema refuses a request the function serves: %s", strings.Join(errs, "; "))
				}
				if !*tc.validRequest && len(errs) == 0 && tc.code == 400 {
					t.Errorf("the request schema admits a body the function refuses with 400: %s", tc.body)
				}
			}
			if tc.setup != nil {
				tc.setup(t)
			}
			method, ctype, auth := tc.method, tc.ctype, tc.auth
			if method == "" {
				method = http.MethodPost
			}
			if ctype == "" {
				ctype = "application/json"
			}
			if auth == nil {
				auth = signed
			}
			code, b, header := e.send(method, tc.path, ctype, tc.body, auth(tc.body))
			if code != tc.code {
				t.Fatalf("got %d, want %d: %s", code, tc.code, b)
			}
			for _, p := range doc.checkAnswer(tc.path, code, header, b) {
				t.Errorf("%d answer: %s", code, p)
			}
			var env struct {
				Error struct{ Status string } `json:"error"`
			}
			json.Unmarshal([]byte(b), &env)
			if seen[tc.path] == nil {
				seen[tc.path] = map[string][]string{}
			}
			status := strconv.Itoa(code)
			seen[tc.path][status] = append(seen[tc.path][status], env.Error.Status)
		})
	}

	// Every documented answer was produced, with every status it admits.
	for _, path := range doc.operations() {
		for code, r := range doc.responses(path) {
			got, ok := seen[path][code]
			if !ok {
				t.Errorf("%s documents %s, which no test request produced", path, code)
				continue
			}
			if code[0] == '2' {
				continue
			}
			n, _ := strconv.Atoi(code)
			for _, status := range doc.documentedStatuses(r, n) {
				if !slices.Contains(got, status) {
					t.Errorf("%s %s documents the status %s, which no test request produced (got %v)", path, code, status, got)
				}
			}
		}
	}
}

func decodeAny(t *testing.T, body string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("test body is not JSON: %v", err)
	}
	return v
}

// TestOpenAPIShape checks what the real answers cannot show: the documented
// operations are registered functions, the security schemes say how to
// authenticate, and the documented user pattern agrees with the function's.
func TestOpenAPIShape(t *testing.T) {
	t.Parallel()
	doc := loadAPIDoc(t)
	if v := get(doc.root, "openapi"); v != "3.1.0" {
		t.Errorf("openapi: got %v, want 3.1.0", v)
	}
	if got := doc.operations(); !slices.Equal(got, []string{"/ChatEvents", "/CreateSpace", "/Disconnect", "/Users"}) {
		t.Errorf("paths: got %v, want /ChatEvents, /CreateSpace, /Disconnect and /Users", got)
	}
	if sec := compactJSON(get(doc.root, "paths", "/ChatEvents", "post", "security")); sec != `[{"googleChatToken":[]}]` {
		t.Errorf("ChatEvents' security: got %s, want Google Chat's token only", sec)
	}
	for _, path := range doc.operations() {
		if !slices.Contains(registeredNames(), path[1:]) {
			t.Errorf("%s is not a registered function", path)
		}
		if ops := get(doc.root, "paths", path).(map[string]any); len(ops) != 1 || ops["post"] == nil {
			t.Errorf("%s: want exactly one operation, post", path)
		}
		if s := doc.requestSchema(path); s == nil {
			t.Errorf("%s documents no application/json request body", path)
		}
	}

	hmacScheme, _ := get(doc.root, "components", "securitySchemes", "hmacSignature").(map[string]any)
	if hmacScheme["type"] != "apiKey" || hmacScheme["in"] != "header" || hmacScheme["name"] != signatureHeader {
		t.Errorf("hmacSignature: got %v, want an apiKey in the %s header", hmacScheme, signatureHeader)
	}
	if d, _ := hmacScheme["description"].(string); !strings.Contains(d, `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`) || !strings.Contains(d, "300 seconds") {
		t.Errorf("hmacSignature's description does not give the header format and window: %q", d)
	}
	bearer, _ := get(doc.root, "components", "securitySchemes", "googleIdToken").(map[string]any)
	if bearer["type"] != "http" || bearer["scheme"] != "bearer" || bearer["bearerFormat"] != "JWT" {
		t.Errorf("googleIdToken: got %v, want http bearer JWT", bearer)
	}
	if sec := compactJSON(get(doc.root, "security")); sec != `[{"hmacSignature":[]},{"googleIdToken":[]}]` {
		t.Errorf("security: got %s, want either scheme", sec)
	}

	// The documented user pattern is the function's rule.
	user := get(doc.root, "components", "schemas", "User")
	for _, s := range []string{
		"users/1", "users/112233445566778899000", "users/", "users/12a", "alice@example.com", "Bob.Smith+x@sub.example.co",
		"alice", "alice@", "@example.com", "alice@example", "a b@example.com", "alice@-example.com", "alice@exa_mple.com",
		"users/alice@example.com", strings.Repeat("a", 250) + "@example.com",
	} {
		schemaOK := len(doc.validate(user, s, "user")) == 0
		if schemaOK != validUser(s) {
			t.Errorf("%q: the schema says valid=%v, the function %v", s, schemaOK, validUser(s))
		}
	}
}

// TestAPIDocValidator shows that the validator refuses what it should, so
// a passing TestOpenAPI means something.
func TestAPIDocValidator(t *testing.T) {
	t.Parallel()
	doc := loadAPIDoc(t)
	errSchema := map[string]any{"$ref": "#/components/schemas/AuthorizationRequiredError"}
	for _, tc := range []struct {
		name   string
		schema any
		value  string
		want   string
	}{
		{"undocumented property", errSchema, `{"error":{"code":403,"status":"AUTHORIZATION_REQUIRED","message":"m","authorizeUrl":"https://h/x","extra":1}}`, `"extra" is not documented`},
		{"missing authorizeUrl", errSchema, `{"error":{"code":403,"status":"AUTHORIZATION_REQUIRED","message":"m"}}`, `"authorizeUrl" is missing`},
		{"wrong status", errSchema, `{"error":{"code":403,"status":"PERMISSION_DENIED","message":"m","authorizeUrl":"https://h/x"}}`, "is not one of"},
		{"wrong code", errSchema, `{"error":{"code":401,"status":"AUTHORIZATION_REQUIRED","message":"m","authorizeUrl":"https://h/x"}}`, "is not one of"},
		{"empty message", errSchema, `{"error":{"code":403,"status":"AUTHORIZATION_REQUIRED","message":"","authorizeUrl":"https://h/x"}}`, "at least 1"},
		{"relative authorizeUrl", errSchema, `{"error":{"code":403,"status":"AUTHORIZATION_REQUIRED","message":"m","authorizeUrl":"/OAuthStart"}}`, "not an absolute URI"},
		{"wrong type", map[string]any{"$ref": "#/components/schemas/CreateSpaceRequest"}, `{"user":7}`, "want type"},
		{"too many members", map[string]any{"$ref": "#/components/schemas/CreateSpaceRequest"}, `{"user":"a@b.example","members":[` + strings.TrimSuffix(strings.Repeat(`"x@b.example",`, 50), ",") + `]}`, "at most 49"},
		{"repeated member", map[string]any{"$ref": "#/components/schemas/CreateSpaceRequest"}, `{"user":"a@b.example","members":["x@b.example","x@b.example"]}`, "repeats"},
		{"neither 403", map[string]any{"oneOf": []any{map[string]any{"$ref": "#/components/schemas/PermissionDeniedError"}, errSchema}}, `{"error":{"code":403,"status":"INTERNAL","message":"m"}}`, "matches 0 of the oneOf"},
		{"unsupported keyword", map[string]any{"type": "string", "const": "x"}, `"x"`, `"const"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := doc.validate(jsonLike(tc.schema), decodeAny(t, tc.value), "v")
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, tc.want) }) {
				t.Errorf("got %q, want a problem mentioning %q", errs, tc.want)
			}
		})
	}
}
