//go:build nodemo

package main

import "errors"

// startFakeGoogle is not linked into a runner built with -tags nodemo.
func startFakeGoogle(dataDir, redirectURL, publicURL string) (interface{ Close() }, string, error) {
	return nil, "", errors.New("-demo: this runner was built with -tags nodemo, without the fake Google; build it without the tag")
}

// fakegoogleUser is unused without the demo; it keeps main.go's printout
// the same in both builds.
const fakegoogleUser = "you@example.com"
