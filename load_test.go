package chatauth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fakegoogle"
)

// The bounded load, on loopback: TESTING.md records the
// figures of the last run and the command that reproduces them.
const (
	loadCalls       = 5000
	loadConcurrency = 32
	loadUsers       = 50
	loadExpiredEach = 10 // every tenth user's access token has expired
	loadBound       = 150 * time.Second
)

// loadUser is one seeded consent.
type loadUser struct {
	sub, email string
	expired    bool
}

// TestLoad sends 5,000 signed CreateSpace calls, 32 at a time, for 50
// users, a tenth of whom hold an expired access token, through the
// Functions Framework to fake Google and the Firestore emulator. It
// checks that no call got a 5xx (every one is 200), that each expired
// user's token was refreshed exactly once and nobody else's at all, that
// every space was created exactly once with its own requestId, and that
// every stored token still reads back, active and live at Google. It
// stops by itself: the work is finite and bounded by loadBound.
func TestLoad(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the load test takes about a minute; it runs without -short")
	}
	e := newTestEnv(t, storeFirestore)
	ctx, cancel := context.WithTimeout(context.Background(), loadBound)
	defer cancel()

	// The users are seeded directly in the store, through the server's
	// encrypted store, with tokens fake Google issued: 50 browser consents
	// would only slow the test down.
	users := make([]loadUser, loadUsers)
	for i := range users {
		u := loadUser{sub: fmt.Sprintf("4%020d", i), email: fmt.Sprintf("load%02d@example.com", i), expired: i%loadExpiredEach == 0}
		e.google.AddUser(fakegoogle.User{Sub: u.sub, Email: u.email, EmailVerified: true})
		access, refresh := e.google.IssueTokens(u.sub, "openid", "email", scopeChatCreate)
		now := e.clock.Now()
		rec := &tokenRecord{Sub: u.sub, Email: u.email, AccessToken: access, RefreshToken: refresh, Expiry: now.Add(time.Hour),
			Scopes: []string{"openid", "email", scopeChatCreate}, Status: tokenActive, CreatedAt: now, UpdatedAt: now, ConsentedAt: now.Add(-time.Hour)}
		if u.expired {
			rec.Expiry = now.Add(-time.Minute)
			e.google.ExpireAccessTokens(u.sub)
		}
		if err := e.srv.store.putConsent(ctx, u.sub, func(*tokenRecord) (*tokenRecord, error) { return rec, nil }); err != nil {
			t.Fatalf("seed %s: %v", u.email, err)
		}
		users[i] = u
	}

	// One keep-alive transport for all workers, as a real caller would
	// have; without it 5,000 connections would exhaust loopback ports.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = loadConcurrency
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()

	type result struct {
		code    int
		space   string
		latency time.Duration
		err     error
	}
	results := make([]result, loadCalls)
	work := make(chan int)
	var wg sync.WaitGroup
	var done atomic.Int32
	start := time.Now()
	for range loadConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				u := users[i%loadUsers]
				who := "users/" + u.sub
				if i%10 == 5 {
					who = u.email // every tenth call names the user by email
				}
				body := fmt.Sprintf(`{"user":%q,"displayName":"Load %d","requestId":"load-%d"}`, who, i, i)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/CreateSpace", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Signature", signBody(testWebhookSecret, e.clock.Now(), []byte(body)))
				t0 := time.Now()
				resp, err := client.Do(req)
				r := result{err: err}
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					r.code = resp.StatusCode
					if r.code == http.StatusOK {
						r.space = spaceName(b)
					} else if r.err == nil {
						r.err = fmt.Errorf("%d %s", r.code, b)
					}
				}
				r.latency = time.Since(t0)
				results[i] = r
				done.Add(1)
			}
		}()
	}
feed:
	for i := range loadCalls {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)

	if n := int(done.Load()); n != loadCalls {
		t.Fatalf("only %d of %d calls were made within %v", n, loadCalls, loadBound)
	}
	codes := map[int]int{}
	var latencies []time.Duration
	failures := 0
	for i, r := range results {
		codes[r.code]++
		latencies = append(latencies, r.latency)
		if r.err != nil || r.code != http.StatusOK {
			if failures++; failures <= 5 {
				t.Errorf("call %d: %v", i, r.err)
			}
		}
	}
	if codes[http.StatusOK] != loadCalls {
		t.Errorf("statuses: %v, want %d × 200 and no 5xx", codes, loadCalls)
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		return latencies[int(p*float64(len(latencies)-1))].Round(100 * time.Microsecond)
	}
	t.Logf("load: %d calls, concurrency %d, %d users (%d expired): %v, %.0f calls/s; latency p50 %v p95 %v p99 %v max %v; statuses %v",
		loadCalls, loadConcurrency, loadUsers, loadUsers/loadExpiredEach, elapsed.Round(time.Millisecond), float64(loadCalls)/elapsed.Seconds(),
		pct(0.50), pct(0.95), pct(0.99), latencies[len(latencies)-1].Round(100*time.Microsecond), codes)

	// Exactly one refresh per expired user, none for the others.
	refreshes := e.google.RefreshCallsBySub()
	for _, u := range users {
		want := 0
		if u.expired {
			want = 1
		}
		if got := refreshes[u.sub]; got != want {
			t.Errorf("%s (expired %v): %d refreshes, want %d", u.email, u.expired, got, want)
		}
	}
	if got, want := e.google.TotalRefreshCalls(), loadUsers/loadExpiredEach; got != want {
		t.Errorf("refresh requests in all: %d, want %d", got, want)
	}

	// Every space exactly once, by its requestId, and the one answered.
	spaces := e.google.Spaces()
	if len(spaces) != loadCalls {
		t.Errorf("Chat holds %d spaces, want %d", len(spaces), loadCalls)
	}
	byRequest := map[string]string{}
	for _, sp := range spaces {
		if _, dup := byRequest[sp.RequestID]; dup {
			t.Errorf("requestId %s made two spaces", sp.RequestID)
		}
		byRequest[sp.RequestID] = sp.Name
	}
	for i, r := range results {
		if r.code == http.StatusOK && byRequest[fmt.Sprintf("load-%d", i)] != r.space {
			t.Errorf("call %d answered %s, but Chat made %s for it", i, r.space, byRequest[fmt.Sprintf("load-%d", i)])
		}
	}
	if calls := e.google.ChatCalls("spaces.create"); calls != loadCalls {
		t.Errorf("spaces.create called %d times, want %d (no retries, no 401s)", calls, loadCalls)
	}

	// Every token still reads back, active and live at Google.
	for _, u := range users {
		rec, err := e.srv.store.getToken(context.Background(), u.sub)
		if err != nil {
			t.Errorf("%s: the stored token does not read back: %v", u.email, err)
			continue
		}
		if rec.Status != tokenActive || !e.google.AccessTokenValid(rec.AccessToken) || !slices.Contains(e.google.LiveRefreshTokens(u.sub), rec.RefreshToken) {
			t.Errorf("%s: stored status %q, access token live %v, refresh token live %v", u.email, rec.Status,
				e.google.AccessTokenValid(rec.AccessToken), slices.Contains(e.google.LiveRefreshTokens(u.sub), rec.RefreshToken))
		}
	}
}

// spaceName is the name of the Space resource in b, or "".
func spaceName(b []byte) string {
	var sp struct {
		Name string `json:"name"`
	}
	json.Unmarshal(b, &sp)
	return sp.Name
}
