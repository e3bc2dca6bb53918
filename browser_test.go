package chatauth

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// browserTimeout bounds one browser scenario: starting Chromium, the whole
// flow and the screenshots.
const browserTimeout = 60 * time.Second

// chromiumFlags are the only switches Chromium is started with, besides its
// fresh profile directory and the --remote-debugging-pipe and about:blank
// that chromedp adds to drive it. chromedp's option helpers are not used
// because they add switches of their own (Headless adds --hide-scrollbars
// and --mute-audio, DisableGPU adds --enable-unsafe-swiftshader), and its
// DefaultExecAllocatorOptions add two dozen more.
var chromiumFlags = []string{
	"headless",
	"no-sandbox", // tests run as root in a container, where the sandbox cannot start
	"disable-gpu",
	"no-first-run",
	"disable-background-networking",
	"disable-component-update",
	"disable-sync",
	"disable-quic",
	// Browser chrome a headless test never sees, which costs a renderer
	// process per BrowserContext (the omnibox popup's WebUI), and the spare
	// renderer Chromium warms up ahead of the next navigation: more CPU
	// than the pages under test (TESTING.md). Pages render the same.
	"disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup,SpareRendererForSitePerProcess",
}

// chromiumCandidates are where Debian's chromium package puts the browser.
// The binary under /usr/lib comes first: /usr/bin/chromium is a shell
// wrapper that adds switches of its own (extensions, GPU rasterization)
// and Google API keys, so the browser would not run with chromiumFlags
// alone.
var chromiumCandidates = []string{"/usr/lib/chromium/chromium", "/usr/bin/chromium", "chromium"}

// needChromium returns the Chromium to run. Where there is none the test
// fails under CI=true, which must prove the browser flow, and is skipped
// elsewhere, with the way to install it.
func needChromium(t *testing.T) string {
	t.Helper()
	for _, c := range chromiumCandidates {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	msg := "Chromium is needed for the browser tests and was not found (tried " +
		strings.Join(chromiumCandidates, ", ") + "); install it with: apt-get install -y chromium"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// chromium is the one headless Chromium of the test binary, started by the
// first test that needs a browser and stopped by TestMain: starting a
// browser costs more CPU than the scenario it serves. Each test gets a
// BrowserContext of its own (newChromium), which shares no cookies,
// storage or cache with any other, as a fresh profile would.
var chromium struct {
	once   sync.Once
	ctx    context.Context // the browser's first tab; its contexts derive from it
	stop   func()
	output *syncBuffer
	err    error
}

// startChromium starts the shared browser, once.
func startChromium(t *testing.T) context.Context {
	t.Helper()
	path := needChromium(t)
	chromium.once.Do(func() {
		dir, err := os.MkdirTemp("", "chatauth-chromium-")
		if err != nil {
			chromium.err = err
			return
		}
		opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(path), chromedp.UserDataDir(dir)}
		for _, f := range chromiumFlags {
			opts = append(opts, chromedp.Flag(f, true))
		}
		chromium.output = &syncBuffer{}
		opts = append(opts, chromedp.CombinedOutput(chromium.output))
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelBrowser := chromedp.NewContext(allocCtx)
		chromium.ctx = ctx
		chromium.stop = func() {
			cancelBrowser()
			cancelAlloc() // waits for the browser process to exit
			os.RemoveAll(dir)
		}
		// The first Do starts the browser, so a broken installation fails
		// here rather than in the middle of a flow. Its context is the
		// browser's life, so it has no timeout: a hung start is bounded
		// by the test binary's.
		if err := chromedp.Do(ctx); err != nil {
			chromium.err = fmt.Errorf("start Chromium: %w\n%s", err, chromium.output)
		}
	})
	if chromium.err != nil {
		t.Fatal(chromium.err)
	}
	return chromium.ctx
}

// stopChromium stops the shared browser, if a test started it.
func stopChromium() {
	if chromium.stop != nil {
		chromium.stop()
	}
}

// newChromium returns the context of a new tab in a BrowserContext of
// the test's own, in the shared headless Chromium. Everything done with
// it ends after browserTimeout; the tab and its BrowserContext are
// disposed of when the test ends.
func newChromium(t *testing.T) context.Context {
	t.Helper()
	tab, cancelTab := chromedp.NewContext(startChromium(t), chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(tab, browserTimeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		if t.Failed() {
			t.Logf("Chromium's output:\n%s", chromium.output)
		}
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab in Chromium: %v", err)
	}
	return ctx
}

// newBrowserEnv is a testEnv for a real browser: its fake Google shows the
// consent page instead of consenting on its own, and chatauth's public
// URLs (REDIRECT_URL, PUBLIC_URL) are on http://localhost while the fake
// Google is on http://127.0.0.1. Those are different sites, so the way back
// from the consent page is a cross-site navigation, as it is from
// accounts.google.com, and the SameSite=Lax state cookie must survive it.
// The Functions Framework listens on 127.0.0.1, which localhost reaches.
func newBrowserEnv(t *testing.T, storeKind string) *testEnv {
	t.Helper()
	e := newTestEnv(t, storeKind)
	fw, err := url.Parse(e.base)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://localhost:" + fw.Port()
	g, err := fakegoogle.New(fakegoogle.Options{AutoConsent: false, RedirectURIs: []string{base + "/OAuthCallback"}})
	if err != nil {
		t.Fatalf("start fake Google: %v", err)
	}
	t.Cleanup(g.Close)
	writeFile(t, e.cfg.ClientSecrets, g.ClientJSON("web"))
	e.cfg.RedirectURL = base + "/OAuthCallback"
	e.cfg.PublicURL = base
	e.cfg.ChatEndpoint = g.ChatEndpoint()
	e.cfg.RevokeURL = g.RevokeURL()
	// The first server lets go of its store, as a stopped instance would:
	// the embedded store's file admits one process-wide opener.
	e.srv.close()
	e.google, e.base = g, base
	e.srv = e.newServer()
	e.use(e.srv)
	return e
}

// TestBrowserConsent runs the consent flow in a real headless Chromium:
// OAuthStart, the fake Google's consent page, Allow or Deny, and the page
// chatauth answers; and a forged callback opened directly. It saves
// screenshots under testoutput/<store>/.
func TestBrowserConsent(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Run("allow", func(t *testing.T) {
				t.Parallel()
				e := newBrowserEnv(t, kind)
				ctx := newChromium(t)
				openConsentPage(t, ctx, e)
				if got := flowCookies(t, ctx, e.base); len(got) != 1 {
					t.Fatalf("Chromium holds %d %s… cookies for %s, want 1", len(got), flowCookiePrefix, e.base)
				} else if c := got[0]; !c.Secure || !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax || c.Path != "/" || c.Domain != "localhost" {
					t.Errorf("flow cookie in Chromium: secure %v httpOnly %v sameSite %q path %q domain %q; want Secure HttpOnly Lax / localhost",
						c.Secure, c.HTTPOnly, c.SameSite, c.Path, c.Domain)
				}
				screenshot(t, ctx, kind, "consent-page")

				resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("allow")))
				if err != nil {
					t.Fatalf("click Allow: %v", err)
				}
				text := pageText(t, ctx)
				if resp.Status != http.StatusOK || !strings.HasPrefix(resp.URL, e.base+"/OAuthCallback?") {
					t.Fatalf("after Allow: got %d at %s, want 200 at %s/OAuthCallback; page: %s", resp.Status, resp.URL, e.base, text)
				}
				if !strings.Contains(text, "Google Chat is connected") || !strings.Contains(text, aliceEmail) {
					t.Errorf("the success page does not say Google Chat is connected for %s: %s", aliceEmail, text)
				}
				screenshot(t, ctx, kind, "consent-success")

				rec := e.storedToken(aliceSub)
				if rec == nil {
					t.Fatal("no token stored after Allow in the browser")
				}
				if rec.Email != aliceEmail || rec.Status != tokenActive || rec.RefreshToken == "" {
					t.Errorf("stored record: email %q status %q refresh token set %v; want %q, active, set", rec.Email, rec.Status, rec.RefreshToken != "", aliceEmail)
				}
				if strings.Contains(text, rec.RefreshToken) || strings.Contains(text, rec.AccessToken) {
					t.Error("the success page shows a token")
				}
				if got := flowCookies(t, ctx, e.base); len(got) != 0 {
					t.Errorf("the flow cookie is still in Chromium after the callback")
				}
			})

			t.Run("two tabs", func(t *testing.T) {
				// Two consents under way in one browser at once, as with a
				// second tab (or another site sending the browser to
				// OAuthStart): each has its own cookie, and both complete,
				// the one started first last.
				e := newBrowserEnv(t, kind)
				first := newChromium(t)
				openConsentPage(t, first, e)
				second, cancel := chromedp.NewContext(first)
				defer cancel()
				openConsentPage(t, second, e)
				if got := flowCookies(t, first, e.base); len(got) != 2 {
					t.Fatalf("Chromium holds %d flow cookies for %s with two consents under way, want 2", len(got), e.base)
				}
				for i, tab := range []context.Context{second, first} {
					resp, err := chromedp.RunResponse(tab, chromedp.Click(chromedp.ID("allow")))
					if err != nil {
						t.Fatalf("click Allow in tab %d: %v", 2-i, err)
					}
					if text := pageText(t, tab); resp.Status != http.StatusOK || !strings.Contains(text, "Google Chat is connected") {
						t.Fatalf("Allow in tab %d: got %d at %s, want the success page; page: %s", 2-i, resp.Status, resp.URL, text)
					}
				}
				screenshot(t, first, kind, "two-tabs-first-done")
				if got := flowCookies(t, first, e.base); len(got) != 0 {
					t.Errorf("%d flow cookies are still in Chromium after both callbacks, want 0", len(got))
				}
				if got := e.google.ExchangeCalls(); got != 2 {
					t.Errorf("token endpoint called %d times, want 2 (one per tab)", got)
				}
				if rec := e.storedToken(aliceSub); rec == nil || rec.Status != tokenActive {
					t.Errorf("stored record after two consents: %+v, want an active one", rec)
				}
			})

			t.Run("deny", func(t *testing.T) {
				t.Parallel()
				e := newBrowserEnv(t, kind)
				ctx := newChromium(t)
				openConsentPage(t, ctx, e)
				resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("deny")))
				if err != nil {
					t.Fatalf("click Deny: %v", err)
				}
				text := pageText(t, ctx)
				if resp.Status != http.StatusForbidden || resp.MimeType != "text/html" {
					t.Errorf("after Deny: got %d %s, want 403 text/html", resp.Status, resp.MimeType)
				}
				if !strings.Contains(text, "declined") {
					t.Errorf("the page does not say that access was declined: %s", text)
				}
				want := e.base + "/OAuthStart?login_hint=" + url.QueryEscape(aliceEmail)
				if got := buttonLink(t, ctx); got != want {
					t.Errorf("the page links to %q, want %q", got, want)
				}
				screenshot(t, ctx, kind, "consent-denied")
				if e.storedToken(aliceSub) != nil {
					t.Error("a token was stored after Deny")
				}
				if got := e.google.ExchangeCalls(); got != 0 {
					t.Errorf("token endpoint called %d times after Deny, want 0", got)
				}
			})

			t.Run("forged callback", func(t *testing.T) {
				t.Parallel()
				e := newBrowserEnv(t, kind)
				ctx := newChromium(t)
				resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(e.base+"/OAuthCallback?code=x&state=forged"))
				if err != nil {
					t.Fatalf("open the forged callback: %v", err)
				}
				text := pageText(t, ctx)
				if resp.Status != http.StatusForbidden || resp.MimeType != "text/html" {
					t.Errorf("forged callback: got %d %s, want 403 text/html", resp.Status, resp.MimeType)
				}
				if !strings.Contains(text, "Google Chat is not connected") || !strings.Contains(text, "Start again") {
					t.Errorf("the error page is not readable or offers no fresh start: %s", text)
				}
				if got := buttonLink(t, ctx); got != e.base+"/OAuthStart" {
					t.Errorf("Start again links to %q, want %q", got, e.base+"/OAuthStart")
				}
				screenshot(t, ctx, kind, "forged-callback")
				if got := e.google.ExchangeCalls(); got != 0 {
					t.Errorf("token endpoint called %d times for a forged callback, want 0", got)
				}

				// Start again leads to the consent page.
				resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("a.button")))
				if err != nil {
					t.Fatalf("click Start again: %v", err)
				}
				if resp.Status != http.StatusOK || !strings.HasPrefix(resp.URL, e.google.URL()+"/") {
					t.Errorf("Start again: got %d at %s, want the consent page on %s", resp.Status, resp.URL, e.google.URL())
				}
			})
		})
	}
}

// openConsentPage opens OAuthStart for Alice on chatauth's public URL and
// waits for the fake Google's consent page.
func openConsentPage(t *testing.T, ctx context.Context, e *testEnv) {
	t.Helper()
	start := e.base + "/OAuthStart?login_hint=" + url.QueryEscape(aliceEmail)
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(start))
	if err != nil {
		t.Fatalf("open %s: %v", start, err)
	}
	if resp.Status != http.StatusOK || !strings.HasPrefix(resp.URL, e.google.URL()+"/") {
		t.Fatalf("OAuthStart led to %d at %s, want the consent page on %s; page: %s", resp.Status, resp.URL, e.google.URL(), pageText(t, ctx))
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("allow")), chromedp.WaitVisible(chromedp.ID("deny"))); err != nil {
		t.Fatalf("the consent page has no Allow and Deny buttons: %v", err)
	}
}

// flowCookies returns the flow cookies Chromium would send to u.
func flowCookies(t *testing.T, ctx context.Context, u string) []*network.Cookie {
	t.Helper()
	all, err := chromedp.Run(ctx, chromedp.Action[[]*network.Cookie](func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{u + "/"}})
		return res.Cookies, err
	}))
	if err != nil {
		t.Fatalf("read Chromium's cookies: %v", err)
	}
	var out []*network.Cookie
	for _, c := range all {
		if strings.HasPrefix(c.Name, flowCookiePrefix) {
			out = append(out, c)
		}
	}
	return out
}

// pageText returns the text of the page shown.
func pageText(t *testing.T, ctx context.Context) string {
	t.Helper()
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatalf("read the page's text: %v", err)
	}
	return text
}

// buttonLink returns where the page's button (the way forward on an error
// page) leads.
func buttonLink(t *testing.T, ctx context.Context) string {
	t.Helper()
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("a.button")?.href ?? ""`))
	if err != nil {
		t.Fatalf("read the page's link: %v", err)
	}
	return href
}

// screenshot saves the whole page as testoutput/<store>/<name>.png, for
// people to look at.
func screenshot(t *testing.T, ctx context.Context, kind, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s is not a PNG", name)
	}
	dir := filepath.Join("testoutput", kind)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
