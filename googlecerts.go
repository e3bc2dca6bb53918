package chatauth

import (
	"net/http"
	"net/url"
)

// Google's signing keys, and their stand-ins for offline runs. Two
// signers vouch for requests here: Google's OAuth key signs the ID tokens
// of webhook callers, of Chat's "HTTP endpoint URL" events and of a
// Workspace add-on's events, and
// chat@system.gserviceaccount.com's own keys sign Chat's "Project number"
// events. GOOGLE_CERTS_URL and CHAT_CERTS_URL point the verifiers at
// other keys (the demo's fake Google), as CHAT_API_ENDPOINT points the
// Chat client elsewhere. Whoever serves those keys could sign as any
// caller or as Google Chat, so a deployment refuses both (loadConfig).

// googleCertsURL is the JWK set of the keys Google signs ID tokens with.
// google.golang.org/api/idtoken fetches exactly this URL; it has no
// setting for another.
const googleCertsURL = "https://www.googleapis.com/oauth2/v3/certs"

// checkCertsOverrides validates GOOGLE_CERTS_URL and CHAT_CERTS_URL for
// loadConfig: absolute http(s) URLs (http on loopback only), and neither
// when deployed.
func checkCertsOverrides(c Config) []string {
	var problems []string
	for _, v := range []struct{ name, url, signs string }{
		{"GOOGLE_CERTS_URL", c.GoogleCertsURL, "any ID-token caller, and Google Chat with CHAT_AUDIENCE_TYPE=ENDPOINT_URL"},
		{"CHAT_CERTS_URL", c.ChatCertsURL, "Google Chat with CHAT_AUDIENCE_TYPE=PROJECT_NUMBER"},
	} {
		switch {
		case v.url == "":
		case c.Deployed:
			problems = append(problems, v.name+": replaces Google's signing keys, so whoever serves that URL could sign as "+v.signs+"; it is for offline runs and tests, and refused when deployed (K_SERVICE is set): unset it")
		default:
			if err := checkBaseURL(v.url, false); err != nil {
				problems = append(problems, v.name+": "+err.Error())
			}
		}
	}
	return problems
}

// withGoogleCertsURL returns a client that fetches Google's ID-token keys
// from certsURL instead of googleCertsURL, and sends every other request
// as c would. The idtoken validator has Google's URL built in, so the
// override is made where its request leaves.
func withGoogleCertsURL(c *http.Client, certsURL string) (*http.Client, error) {
	to, err := url.Parse(certsURL)
	if err != nil {
		return nil, err
	}
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c2 := *c
	c2.Transport = certsRedirect{next: next, to: to}
	return &c2, nil
}

// certsRedirect sends requests for googleCertsURL to another URL.
type certsRedirect struct {
	next http.RoundTripper
	to   *url.URL
}

func (t certsRedirect) RoundTrip(r *http.Request) (*http.Response, error) {
	if u := r.URL; u.Scheme+"://"+u.Host+u.Path != googleCertsURL {
		return t.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.URL = t.to
	r.Host = t.to.Host
	return t.next.RoundTrip(r)
}
