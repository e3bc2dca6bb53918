package chatauth

import (
	"regexp"
	"strings"
	"sync"
)

// Limits shared by CreateSpace and ChatEvents' /createspace; they are
// Chat's own (README.md, openapi.yaml).
const (
	// maxDisplayName bounds a space's name, in characters.
	maxDisplayName = 128
	// maxDescription bounds a space's description, in characters.
	maxDescription = 4096
	// maxMembers bounds the members a new space starts with, besides the
	// user who creates it.
	maxMembers = 49
	// maxRequestID bounds a requestId, in bytes.
	maxRequestID = 128
)

// requestIDPattern bounds no length: a counted repetition ({1,128}) is
// costly to compile at a cold start (BENCHMARKS.md), so validate checks
// the length itself.
var requestIDPattern = lazyRegexp(`^[A-Za-z0-9._:~-]+$`)

// lazyRegexp compiles expr on its first use. A package-level
// regexp.MustCompile runs at every cold start, before the first request,
// whether any request needs the pattern or not, and compiling patterns is
// most of what chatauth's own package initialisation would do
// (BENCHMARKS.md). Tests use every
// pattern, so a broken one still fails them.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// isUserID reports whether u is a Chat user name, "users/" and 1 to 64
// digits.
func isUserID(u string) bool {
	id, ok := strings.CutPrefix(u, "users/")
	return ok && isDigits(id, 64)
}

// isDigits reports whether s is 1 to max ASCII digits. It replaces the
// patterns [0-9]{1,max}, whose counted repetition is compiled into max
// states at every cold start.
func isDigits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func validUser(u string) bool { return isUserID(u) || validEmail(u) }

// validEmail accepts the plain addresses Google accounts have.
func validEmail(s string) bool {
	return len(s) <= 254 && emailPattern().MatchString(s)
}
