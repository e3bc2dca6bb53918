package chatauth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks of the hot paths beside BenchmarkCreateSpaceWarm
// (spaces_test.go), BenchmarkVerifyHMAC (callers_test.go) and
// BenchmarkTokenEncryptDecrypt (crypto_test.go). BENCHMARKS.md records
// their figures and what the allocations are for.

// handlerFor is the registered function name as the Functions Framework
// calls it, served by s.
func handlerFor(b testing.TB, s *server, name string) http.HandlerFunc {
	b.Helper()
	inst := &instance{log: s.log}
	inst.srv.Store(s)
	for _, f := range registered {
		if f.name == name {
			return inst.handler(f)
		}
	}
	b.Fatalf("no function %s", name)
	return nil
}

// BenchmarkCreateSpaceWarmByID is the warm path for a user named by id,
// which reads one record by key (BenchmarkCreateSpaceWarm names the user
// by email), on the embedded store against the fake Chat API on loopback.
func BenchmarkCreateSpaceWarmByID(b *testing.B) {
	e := newPerfEnv(b, storeLocal)
	sub, _ := e.seed(b, 1, time.Now().Add(time.Hour))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code, body := e.post("users/"+sub, fmt.Sprintf("Bench %d", i)); code != http.StatusOK {
			b.Fatalf("got %d: %s", code, body)
		}
	}
}

// BenchmarkCreateSpaceWarmParallel drives the warm path from GOMAXPROCS
// goroutines, for 16 users, to show contention in the server (the store,
// the shared HTTP transport, the logger).
func BenchmarkCreateSpaceWarmParallel(b *testing.B) {
	e := newPerfEnv(b, storeLocal)
	var subs []string
	for n := range 16 {
		sub, _ := e.seed(b, n+1, time.Now().Add(time.Hour))
		subs = append(subs, sub)
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			if code, body := e.post("users/"+subs[n%16], fmt.Sprintf("Bench %d", n)); code != http.StatusOK {
				b.Errorf("got %d: %s", code, body)
				return
			}
		}
	})
}

// BenchmarkStateCreation is OAuthStart, which writes nothing to the
// store: the state and PKCE verifier (32 random bytes each), the flow
// record sealed into its cookie, and the authorization URL.
func BenchmarkStateCreation(b *testing.B) {
	e := newPerfEnv(b, storeLocal)
	h := handlerFor(b, e.srv, "OAuthStart")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := httptest.NewRecorder()
		h(w, httptest.NewRequest(http.MethodGet, "/OAuthStart?login_hint=alice%40example.com", nil))
		if w.Code != http.StatusFound {
			b.Fatalf("got %d: %s", w.Code, w.Body)
		}
	}
}
