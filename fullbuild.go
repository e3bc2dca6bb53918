//go:build !localonly

package chatauth

// unbuilt lists no setting: this build links every client chatauth may
// use. A build with -tags localonly leaves some out (localonly.go).
func unbuilt(Config) []string { return nil }

// CheckBuild reports the settings in the environment that need a Google
// client this binary was built without. This build has them all, so it
// reads nothing and is always nil; see localonly.go for the other build.
func CheckBuild() error { return nil }
