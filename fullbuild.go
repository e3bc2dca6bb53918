//go:build !localonly

package chatauth

// unbuilt lists no setting: this build links every client chatauth may
// use. A build with -tags localonly leaves some out (localonly.go).
func unbuilt(Config) []string { return nil }
