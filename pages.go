package chatauth

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"sync"
)

// page is what the browser-facing functions show a person.
type page struct {
	Title    string
	Heading  string
	Lines    []string // paragraphs of plain text
	Link     string   // an optional next step
	LinkText string
	Status   string // the error status, shown small, for support requests
}

// pageTemplate is self-contained: no script, no external style, font or
// image, so the strict Content-Security-Policy below holds.
var pageTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#202124}h1{font-size:1.4rem}a.button{display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;background:#1a73e8;color:#fff;border-radius:4px;text-decoration:none}small{color:#5f6368}</style>
</head><body>
<h1>{{.Heading}}</h1>
{{range .Lines}}<p>{{.}}</p>
{{end}}{{if .Link}}<p><a class="button" href="{{.Link}}">{{.LinkText}}</a></p>
{{end}}{{if .Status}}<p><small>{{.Status}}</small></p>
{{end}}</body></html>
`))
})

// setPageHeaders sets the headers every HTML page carries: nothing
// external may load, the page may not be framed, sniffed, cached, or leak
// its URL (which may carry a code) through Referer.
func setPageHeaders(h http.Header) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
}

func renderPage(w http.ResponseWriter, code int, p page) {
	var buf bytes.Buffer
	if err := pageTemplate().Execute(&buf, p); err != nil {
		// The template is fixed and its data plain strings, so this does not
		// happen; answer something readable rather than half a page.
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	setPageHeaders(w.Header())
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// errorPage shows an error to a person, with the way forward when there is
// one.
func errorPage(e *Error) page {
	p := page{Title: "chatauth: " + e.Message, Heading: "Something went wrong", Lines: []string{e.Message}, Status: e.Status}
	switch {
	case e.AuthorizeURL != "":
		p.Heading = "Google Chat is not connected"
		p.Link, p.LinkText = e.AuthorizeURL, "Connect Google Chat"
	case e.restartURL != "":
		p.Heading = "Google Chat is not connected"
		p.Link, p.LinkText = e.restartURL, "Start again"
	}
	return p
}

// wantsJSON reports whether the client asked for JSON rather than a page.
func wantsJSON(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")
}

// writeJSON answers v as JSON with the given status code.
// Messages keep "<" and ">" readable: the answer is JSON with nosniff, never
// rendered as HTML.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, `{"error":{"code":500,"status":"INTERNAL","message":"internal error"}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}
