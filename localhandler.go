package chatauth

import "net/http"

// LocalHandler serves every registered function at /<Name>, as the
// Functions Framework does when FUNCTION_TARGET is unset, through the same
// per-instance server and error mapping. cmd/local serves it from an
// http.Server of its own, because the framework's Start listens with no
// timeouts at all: a client that sends its headers slowly, or never
// reads the answer, would hold a connection for as long as it liked.
//
// Unlike the framework it adds no execution id to the request's context,
// so local log lines carry none; Cloud Functions serves through the
// framework and keeps them.
func LocalHandler() http.Handler {
	mux := http.NewServeMux()
	for _, f := range registered {
		mux.Handle("/"+f.name, defaultInstance.handler(f))
	}
	return mux
}
