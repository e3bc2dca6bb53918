package chatauth

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/api/iterator"
)

// storeWrapper is a store that wraps another: the server's wrappers
// (encryptedStore, forgettingStore) and the tests' spies.
type storeWrapper interface{ unwrap() tokenStore }

// innerStore is the store under every wrapper of s: the one that keeps
// the records.
func innerStore(s tokenStore) tokenStore {
	for {
		w, ok := s.(storeWrapper)
		if !ok {
			return s
		}
		s = w.unwrap()
	}
}

func (s spyStore) unwrap() tokenStore { return s.tokenStore }

// storeContents is everything the backing storage holds, as text by
// document path (or bucket and key), and the embedded store's file size.
func storeContents(t *testing.T, e *testEnv) (map[string]string, int64) {
	t.Helper()
	out := map[string]string{}
	switch s := innerStore(e.srv.store).(type) {
	case *firestoreStore:
		ctx := t.Context()
		cols := s.client.Collections(ctx)
		for {
			col, err := cols.Next()
			if err == iterator.Done {
				break
			}
			if err != nil {
				t.Fatalf("list collections: %v", err)
			}
			docs, err := col.Documents(ctx).GetAll()
			if err != nil {
				t.Fatalf("list %s: %v", col.ID, err)
			}
			for _, d := range docs {
				out[col.ID+"/"+d.Ref.ID] = fmt.Sprintf("%v", d.Data())
			}
		}
		return out, 0
	case *localStore:
		err := s.db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				return b.ForEach(func(k, v []byte) error {
					out[string(name)+"/"+string(k)] = string(v)
					return nil
				})
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(e.cfg.DataDir, "chatauth.db"))
		if err != nil {
			t.Fatal(err)
		}
		return out, fi.Size()
	default:
		t.Fatalf("no reader for %T", s)
		return nil, 0
	}
}

// TestStartWritesNothing: 500 abandoned OAuthStarts, half from clients
// without cookies and half from one browser that keeps them, leave the
// store exactly as it was, records and (embedded) file size, on both
// stores: a pending consent lives in the browser.
func TestStartWritesNothing(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			e.connect() // a store that holds something
			before, size := storeContents(t, e)
			b := newBrowser(t)
			for i := range 500 {
				var resp *http.Response
				if i%2 == 0 {
					resp, _ = b.get(e.base + "/OAuthStart?login_hint=alice%40example.com")
				} else {
					resp, _ = newBrowser(t).get(e.base + "/OAuthStart")
				}
				if resp.StatusCode != http.StatusFound {
					t.Fatalf("OAuthStart %d: got %d, want 302", i, resp.StatusCode)
				}
			}
			after, sizeAfter := storeContents(t, e)
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("500 OAuthStarts changed the store (-before +after):\n%s", diff)
			}
			if sizeAfter != size {
				t.Errorf("the embedded store's file grew from %d to %d bytes", size, sizeAfter)
			}
			t.Logf("%s: %d records, %d bytes, before and after 500 OAuthStarts", kind, len(after), sizeAfter)
			if n := len(flowCookieNames(b)); n != maxFlowCookies {
				t.Errorf("the browser that started 250 consents holds %d flow cookies, want %d", n, maxFlowCookies)
			}
		})
	}
}

// flowCookieNames lists the flow cookies b holds.
func flowCookieNames(b *browser) []string {
	var out []string
	for name := range b.cookies {
		if strings.HasPrefix(name, flowCookiePrefix) {
			out = append(out, name)
		}
	}
	return out
}

// TestTwoFlowsOneBrowser: two consents under way in one browser (two tabs,
// or another site sending it to OAuthStart) each keep their own cookie,
// and both complete, the one started first last. Each callback clears
// only its own flow's cookie.
func TestTwoFlowsOneBrowser(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			b := newBrowser(t)
			first := e.startConsent(b, aliceEmail)
			second := e.startConsent(b, "")
			if n := len(flowCookieNames(b)); n != 2 {
				t.Fatalf("the browser holds %d flow cookies, want 2", n)
			}
			for _, cb := range []*url.URL{second, first} {
				if resp, body := b.get(cb.String()); resp.StatusCode != http.StatusOK {
					t.Fatalf("callback: got %d, want 200: %s", resp.StatusCode, body)
				}
				if _, ok := b.cookies[flowCookieName(cb.Query().Get("state"))]; ok {
					t.Error("the callback did not clear its flow's cookie")
				}
				if cb == second {
					if _, ok := b.cookies[flowCookieName(first.Query().Get("state"))]; !ok {
						t.Error("the second flow's callback cleared the first flow's cookie")
					}
				}
			}
			if got := e.google.ExchangeCalls(); got != 2 {
				t.Errorf("token endpoint called %d times, want 2", got)
			}
		})
	}
}

// TestFlowCookieCap: a browser keeps at most maxFlowCookies pending
// flows. Each further OAuthStart clears the oldest; those flows are
// refused at the callback without reaching Google, and the kept ones
// complete.
func TestFlowCookieCap(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	b := newBrowser(t)
	var flows []*url.URL
	for i := range maxFlowCookies + 3 {
		flows = append(flows, e.startConsent(b, ""))
		if n := len(flowCookieNames(b)); n != min(i+1, maxFlowCookies) {
			t.Fatalf("after %d starts the browser holds %d flow cookies, want %d", i+1, n, min(i+1, maxFlowCookies))
		}
		e.clock.Advance(time.Second) // flows are ordered by their start, to the second
	}
	b.header.Set("Accept", "application/json")
	for i, cb := range flows {
		_, kept := b.cookies[flowCookieName(cb.Query().Get("state"))]
		if want := i >= 3; kept != want {
			t.Errorf("flow %d of %d: cookie kept %v, want %v (the oldest go first)", i+1, len(flows), kept, want)
		}
		calls := e.google.ExchangeCalls()
		resp, body := b.get(cb.String())
		switch {
		case kept && resp.StatusCode != http.StatusOK:
			t.Errorf("kept flow %d: got %d, want 200: %s", i+1, resp.StatusCode, body)
		case !kept:
			checkJSONBody(t, body, 403, statusPermissionDenied)
			if e.google.ExchangeCalls() != calls {
				t.Errorf("cleared flow %d reached the token endpoint", i+1)
			}
		}
	}
}

// TestStartClearsFlowCookies: what OAuthStart clears of the flow cookies
// a request carries. A value that is not a flow's goes before any genuine
// one; duplicates of a name count once; a request with more flow cookies
// than any browser keeps gets a bounded answer; and other cookies are
// never touched.
func TestStartClearsFlowCookies(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	genuine := func(created int64) (string, string) {
		state := randomToken()
		v, err := e.srv.sealFlow(state, &stateRecord{Verifier: "v", CreatedAt: time.Unix(created, 0)})
		if err != nil {
			t.Fatal(err)
		}
		return flowCookieName(state), v
	}
	start := func(t *testing.T, header string) (cleared []string, set int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.base+"/OAuthStart", nil)
		req.Header.Set("Cookie", header)
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("OAuthStart: got %d, want 302", resp.StatusCode)
		}
		for _, c := range resp.Cookies() {
			if c.MaxAge < 0 {
				cleared = append(cleared, c.Name)
			} else {
				set++
			}
		}
		return cleared, set
	}
	now := e.clock.Now().Unix()

	t.Run("junk before the oldest", func(t *testing.T) {
		var pairs []string
		for i := range maxFlowCookies - 1 {
			n, v := genuine(now - int64(100*(i+1)))
			pairs = append(pairs, n, v)
		}
		junk := flowCookiePrefix + "0123456789abcdef"
		cleared, set := start(t, cookieHeader(append(pairs, junk, "not-a-flow", "other", "kept")...))
		if set != 1 || len(cleared) != 1 || cleared[0] != junk {
			t.Errorf("cleared %q and set %d; want only the malformed %s cleared, one new flow set", cleared, set, junk)
		}
	})
	t.Run("oldest go first", func(t *testing.T) {
		var pairs []string
		var oldest []string
		for i := range maxFlowCookies + 2 {
			n, v := genuine(now - int64(i))
			pairs = append(pairs, n, v)
			if i >= maxFlowCookies-1 {
				oldest = append(oldest, n)
			}
		}
		cleared, _ := start(t, cookieHeader(pairs...))
		if !cmp.Equal(cleared, oldest, cmp.Transformer("sorted", func(s []string) map[string]bool {
			m := map[string]bool{}
			for _, x := range s {
				m[x] = true
			}
			return m
		})) {
			t.Errorf("cleared %q, want the %d oldest %q", cleared, len(oldest), oldest)
		}
	})
	t.Run("a name sent twice counts once", func(t *testing.T) {
		var pairs []string
		for range maxFlowCookies - 1 {
			n, v := genuine(now)
			pairs = append(pairs, n, v, n, v)
		}
		if cleared, _ := start(t, cookieHeader(pairs...)); len(cleared) != 0 {
			t.Errorf("cleared %q, want nothing: %d distinct flows are within the cap", cleared, maxFlowCookies-1)
		}
	})
	t.Run("thousands of flow cookies", func(t *testing.T) {
		var pairs []string
		for i := range 2000 {
			pairs = append(pairs, fmt.Sprintf("%s%016x", flowCookiePrefix, i), "x")
		}
		cleared, set := start(t, cookieHeader(pairs...))
		if want := maxFlowCookiesRead - (maxFlowCookies - 1); len(cleared) != want || set != 1 {
			t.Errorf("cleared %d and set %d, want %d cleared (of the first %d read) and 1 set", len(cleared), set, want, maxFlowCookiesRead)
		}
	})
}

// TestCallbackRace: one callback, its cookie included, sent many times at
// once (a double click, or an attacker racing the victim with a copied
// cookie) is served once: the store's marker lets exactly one through to
// Google, on both stores.
func TestCallbackRace(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, kind)
			b := newBrowser(t)
			cb := e.startConsent(b, aliceEmail)
			name := flowCookieName(cb.Query().Get("state"))
			const racers = 8
			codes := make([]int, racers)
			var wg sync.WaitGroup
			for i := range racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest(http.MethodGet, cb.String(), nil)
					req.AddCookie(&http.Cookie{Name: name, Value: b.cookies[name]})
					req.Header.Set("Accept", "application/json")
					resp, err := noRedirects.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					codes[i] = resp.StatusCode
				}()
			}
			wg.Wait()
			ok, refused := 0, 0
			for _, c := range codes {
				switch c {
				case http.StatusOK:
					ok++
				case http.StatusForbidden:
					refused++
				}
			}
			if ok != 1 || refused != racers-1 {
				t.Errorf("answers %v: want one 200 and %d 403", codes, racers-1)
			}
			if got := e.google.ExchangeCalls(); got != 1 {
				t.Errorf("token endpoint called %d times, want 1", got)
			}
		})
	}
}

// TestCallbackRefusedHint: Google's error redirect names the flow's
// login hint (in the link to start again) only to the browser that holds
// that flow's cookie, and clears that cookie alone. Sent without the
// cookie, it changes nothing: the consent can still complete.
func TestCallbackRefusedHint(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	victim := newBrowser(t)
	other := e.startConsent(victim, "")
	cb := e.startConsent(victim, aliceEmail)
	denied := *cb
	denied.RawQuery = url.Values{"error": {"access_denied"}, "state": {cb.Query().Get("state")}}.Encode()

	stranger := newBrowser(t)
	stranger.header.Set("Accept", "application/json")
	resp, body := stranger.get(denied.String())
	checkJSONBody(t, body, 403, statusAuthorizationRequired)
	if strings.Contains(body, "alice") || strings.Contains(resp.Header.Get("Location"), "alice") {
		t.Errorf("a browser without the flow's cookie was shown its login hint: %s", body)
	}
	if len(resp.Cookies()) != 0 {
		t.Errorf("the refusal without the cookie set cookies: %v", resp.Cookies())
	}

	victim.header.Set("Accept", "application/json")
	resp, body = victim.get(denied.String())
	checkJSONBody(t, body, 403, statusAuthorizationRequired)
	if !strings.Contains(body, `"authorizeUrl":"`+e.base+`/OAuthStart?login_hint=alice%40example.com"`) {
		t.Errorf("the flow's own browser is not offered a fresh start for its login hint: %s", body)
	}
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].Name != flowCookieName(cb.Query().Get("state")) || cs[0].MaxAge >= 0 {
		t.Errorf("cookies set: %v; want only the declined flow's cleared", cs)
	}
	if resp, body := victim.get(other.String()); resp.StatusCode != http.StatusOK {
		t.Errorf("the browser's other flow after a declined one: got %d, want 200: %s", resp.StatusCode, body)
	}
	if got := e.google.ExchangeCalls(); got != 1 {
		t.Errorf("token endpoint called %d times, want 1 (the other flow)", got)
	}
}

// TestFlowCookieSize: the largest flow OAuthStart can make (a Chat ticket
// with the longest login hint, user id and redirect it keeps) fits the
// 4096 bytes every browser keeps for a cookie; a longer redirect is not
// kept; an ordinary flow's cookie is small.
func TestFlowCookieSize(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, storeLocal)
	longHint := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 57) + ".com"
	if len(longHint) != 254 || !validEmail(longHint) {
		t.Fatalf("the test's hint is %d bytes, valid %v; want a valid 254", len(longHint), validEmail(longHint))
	}
	start := func(t *testing.T, redirect string) (*http.Cookie, *stateRecord) {
		t.Helper()
		ticket, err := e.srv.sealTicket(chatTicket{User: "users/" + strings.Repeat("9", 64), Email: longHint, Redirect: redirect, Exp: e.clock.Now().Add(ticketTTL).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		resp, body := newBrowser(t).get(e.base + "/OAuthStart?ticket=" + url.QueryEscape(ticket))
		if resp.StatusCode != http.StatusFound || len(resp.Cookies()) != 1 {
			t.Fatalf("OAuthStart: got %d with %d cookies: %s", resp.StatusCode, len(resp.Cookies()), body)
		}
		c := resp.Cookies()[0]
		rec, err := e.srv.openFlow(location(t, resp).Query().Get("state"), c.Value)
		if err != nil {
			t.Fatal(err)
		}
		return c, rec
	}
	longest := chatRedirectPrefix + strings.Repeat("x", maxChatRedirect-len(chatRedirectPrefix))
	c, rec := start(t, longest)
	if n := len(c.Name) + len(c.Value); n > maxCookieBytes {
		t.Errorf("the largest flow cookie is %d bytes, more than %d", n, maxCookieBytes)
	} else {
		t.Logf("the largest flow cookie: %d bytes", n)
	}
	if rec.ChatRedirect != longest || rec.LoginHint != longHint {
		t.Errorf("the largest flow lost its redirect or hint")
	}
	if _, rec := start(t, longest+"x"); rec.ChatRedirect != "" {
		t.Errorf("a redirect of %d bytes was kept, want it dropped", len(longest)+1)
	}
	resp, _ := newBrowser(t).get(e.base + "/OAuthStart?login_hint=alice%40example.com")
	if c := resp.Cookies()[0]; len(c.Name)+len(c.Value) > 300 {
		t.Errorf("an ordinary flow cookie is %d bytes, want at most 300", len(c.Name)+len(c.Value))
	}
}

// TestFlowSeal: a sealed flow opens only for its own state, creation time
// and keyset, and only as a flow.
func TestFlowSeal(t *testing.T) {
	t.Parallel()
	s := &server{tickets: newTestCipher(t).aead}
	rec := &stateRecord{Verifier: "a-verifier", LoginHint: "a@example.com", CreatedAt: time.Unix(1_750_000_000, 0), ChatUser: "users/1", ChatRedirect: chatRedirectPrefix + "x"}
	v, err := s.sealFlow("state-1", rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.openFlow("state-1", v)
	if err != nil || !cmp.Equal(got, rec) {
		t.Fatalf("openFlow: got %+v, %v; want %+v", got, err, rec)
	}
	ticket, err := s.sealTicket(chatTicket{User: "users/1", Exp: 1})
	if err != nil {
		t.Fatal(err)
	}
	other := &server{tickets: newTestCipher(t).aead}
	otherValue, err := other.sealFlow("state-1", rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, state, value string }{
		{"another state", "state-2", v},
		{"a state one byte longer", "state-1x", v},
		{"a creation time moved", "state-1", strings.Replace(v, "1750000000", "1750000600", 1)},
		{"another keyset", "state-1", otherValue},
		{"a Chat ticket", "state-1", flowValuePrefix + "1750000000." + strings.TrimPrefix(ticket, ticketPrefix)},
		{"no prefix", "state-1", strings.TrimPrefix(v, flowValuePrefix)},
		{"a signed time", "state-1", strings.Replace(v, "1750000000", "+1750000000", 1)},
		{"padded base64", "state-1", v + "=="},
		{"empty", "state-1", ""},
	} {
		if _, err := s.openFlow(tc.state, tc.value); err == nil {
			t.Errorf("%s: opened, want refused", tc.name)
		}
	}
}

// TestFlowCookieAttributes: the cookie OAuthStart sets and the one the
// callback clears have the same attributes, which browsers need to
// replace a cookie, and which a __Host- name requires.
func TestFlowCookieAttributes(t *testing.T) {
	t.Parallel()
	for _, c := range []*http.Cookie{flowCookie(flowCookieName("s"), "v", 600), flowCookie(flowCookieName("s"), "", -1)} {
		w := httptest.NewRecorder()
		http.SetCookie(w, c)
		line := w.Header().Get("Set-Cookie")
		for _, want := range []string{flowCookiePrefix, "Path=/", "HttpOnly", "Secure", "SameSite=Lax", "Max-Age="} {
			if !strings.Contains(line, want) {
				t.Errorf("Set-Cookie %q lacks %q", line, want)
			}
		}
		if strings.Contains(line, "Domain=") {
			t.Errorf("Set-Cookie %q has a Domain, which a __Host- cookie may not", line)
		}
	}
}
