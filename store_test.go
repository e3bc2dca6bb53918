package chatauth

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// newTestStore opens a store of the given kind, empty.
func newTestStore(t *testing.T, kind string) tokenStore {
	t.Helper()
	var (
		s   tokenStore
		err error
	)
	switch kind {
	case storeFirestore:
		needFirestore(t)
		s, err = newFirestoreStore(context.Background(), testProject, "(default)")
	case storeLocal:
		s, err = newLocalStore(filepath.Join(t.TempDir(), "data"), time.Now)
	}
	if err != nil {
		t.Fatalf("open %s store: %v", kind, err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

// TestStore is the one store test every implementation passes.
func TestStore(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Run("token round trip", func(t *testing.T) { testTokenRoundTrip(t, newTestStore(t, kind)) })
			t.Run("update merges", func(t *testing.T) { testUpdateMerges(t, newTestStore(t, kind)) })
			t.Run("lookup by email", func(t *testing.T) { testLookupByEmail(t, newTestStore(t, kind)) })
			t.Run("state consumed once", func(t *testing.T) { testStateConsumedOnce(t, newTestStore(t, kind)) })
			t.Run("state expiry kept", func(t *testing.T) { testStateExpiry(t, newTestStore(t, kind)) })
			t.Run("concurrent updates", func(t *testing.T) { testConcurrentUpdates(t, newTestStore(t, kind)) })
		})
	}
}

var sampleTime = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func sampleToken(sub, email string) *tokenRecord {
	return &tokenRecord{
		Sub: sub, Email: email, RefreshToken: "1//refresh-" + sub, AccessToken: "ya29.access-" + sub,
		Expiry: sampleTime.Add(time.Hour), Scopes: []string{"openid", scopeChatCreate}, Status: tokenActive,
		CreatedAt: sampleTime, UpdatedAt: sampleTime,
	}
}

// put stores rec unconditionally.
func put(t *testing.T, s tokenStore, rec *tokenRecord) {
	t.Helper()
	err := s.updateToken(t.Context(), rec.Sub, func(*tokenRecord) (*tokenRecord, error) { return rec, nil })
	if err != nil {
		t.Fatalf("updateToken(%s): %v", rec.Sub, err)
	}
}

// timeEqual compares times at Firestore's precision, microseconds.
var timeEqual = cmp.Comparer(func(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
})

func testTokenRoundTrip(t *testing.T, s tokenStore) {
	ctx := t.Context()
	if _, err := s.getToken(ctx, "nobody"); !errors.Is(err, errNotFound) {
		t.Fatalf("getToken(nobody): got %v, want errNotFound", err)
	}
	want := sampleToken("111", "a@example.com")
	put(t, s, want)
	got, err := s.getToken(ctx, "111")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, timeEqual); diff != "" {
		t.Errorf("getToken mismatch (-want +got):\n%s", diff)
	}
	if err := s.deleteToken(ctx, "111"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.getToken(ctx, "111"); !errors.Is(err, errNotFound) {
		t.Errorf("after delete: got %v, want errNotFound", err)
	}
}

func testUpdateMerges(t *testing.T, s tokenStore) {
	ctx := t.Context()
	put(t, s, sampleToken("222", "b@example.com"))
	// fn sees the current record, and its result replaces it.
	err := s.updateToken(ctx, "222", func(cur *tokenRecord) (*tokenRecord, error) {
		if cur == nil || cur.RefreshToken != "1//refresh-222" {
			t.Errorf("updateToken: fn got %+v, want the stored record", cur)
			return nil, nil
		}
		next := *cur
		next.AccessToken = "ya29.new"
		return &next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.getToken(ctx, "222")
	if got.AccessToken != "ya29.new" || got.RefreshToken != "1//refresh-222" {
		t.Errorf("after merge: access %q refresh %q", got.AccessToken, got.RefreshToken)
	}
	// A nil result and an error both leave the record as it was.
	sentinel := errors.New("refused")
	if err := s.updateToken(ctx, "222", func(*tokenRecord) (*tokenRecord, error) { return nil, sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("updateToken with a failing fn: got %v, want it to wrap %v", err, sentinel)
	}
	if err := s.updateToken(ctx, "222", func(*tokenRecord) (*tokenRecord, error) { return nil, nil }); err != nil {
		t.Error(err)
	}
	if again, _ := s.getToken(ctx, "222"); again.AccessToken != "ya29.new" {
		t.Errorf("a refused update changed the record: %+v", again)
	}
	// fn gets nil for a user with no record.
	err = s.updateToken(ctx, "333", func(cur *tokenRecord) (*tokenRecord, error) {
		if cur != nil {
			t.Errorf("fn got %+v for a missing record, want nil", cur)
		}
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.getToken(ctx, "333"); !errors.Is(err, errNotFound) {
		t.Errorf("a nil result created a record: %v", err)
	}
}

func testLookupByEmail(t *testing.T, s tokenStore) {
	ctx := t.Context()
	put(t, s, sampleToken("444", "c@example.com"))
	newer := sampleToken("555", "c@example.com")
	newer.UpdatedAt = sampleTime.Add(time.Minute)
	put(t, s, newer)
	put(t, s, sampleToken("666", "d@example.com"))
	got, err := s.tokenByEmail(ctx, "c@example.com")
	if err != nil || got.Sub != "555" {
		t.Errorf("tokenByEmail(c@): got %v, %v; want sub 555 (the one updated last)", got, err)
	}
	if _, err := s.tokenByEmail(ctx, "nobody@example.com"); !errors.Is(err, errNotFound) {
		t.Errorf("tokenByEmail(nobody@): got %v, want errNotFound", err)
	}
}

func testStateConsumedOnce(t *testing.T, s tokenStore) {
	ctx := t.Context()
	want := &stateRecord{Verifier: "v", CookieHash: "c", LoginHint: "a@example.com", CreatedAt: time.Now(), ExpireAt: time.Now().Add(stateTTL)}
	if err := s.putState(ctx, "k1", want); err != nil {
		t.Fatal(err)
	}
	if err := s.putState(ctx, "k1", want); err == nil {
		t.Error("putState over an existing key succeeded; states must be unique")
	}
	const racers = 20
	var wg sync.WaitGroup
	var won atomic.Int32
	var errs sync.Map
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.consumeState(ctx, "k1")
			switch {
			case err == nil:
				won.Add(1)
				if diff := cmp.Diff(want, got, timeEqual); diff != "" {
					t.Errorf("consumed state mismatch (-want +got):\n%s", diff)
				}
			case !errors.Is(err, errNotFound):
				errs.Store(err.Error(), true)
			}
		}()
	}
	wg.Wait()
	errs.Range(func(k, _ any) bool { t.Errorf("consumeState: unexpected error %v", k); return true })
	if got := won.Load(); got != 1 {
		t.Errorf("%d of %d racing consumers got the state, want exactly 1", got, racers)
	}
	if _, err := s.consumeState(ctx, "k1"); !errors.Is(err, errNotFound) {
		t.Errorf("consume after consume: got %v, want errNotFound", err)
	}
}

// testStateExpiry checks the expiry is stored as written, for the handler
// to check; the local store also purges expired states on its own.
func testStateExpiry(t *testing.T, s tokenStore) {
	ctx := t.Context()
	past := &stateRecord{Verifier: "v", CreatedAt: time.Now().Add(-time.Hour), ExpireAt: time.Now().Add(-time.Minute)}
	if err := s.putState(ctx, "old", past); err != nil {
		t.Fatal(err)
	}
	got, err := s.consumeState(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(past, got, timeEqual); diff != "" {
		t.Errorf("expired state mismatch (-want +got):\n%s", diff)
	}
}

// testConcurrentUpdates: concurrent read-modify-writes lose no update.
// The Firestore emulator makes contending transactions wait and retry, so
// on a loaded machine (CI runs packages in parallel, under -race) ten of
// them can outlast the store's 10 s per-operation bound; that bound is
// faults_test.go's subject, this test's is atomicity, so it allows a minute.
func testConcurrentUpdates(t *testing.T, s tokenStore) {
	ctx := t.Context()
	for inner := s; inner != nil; {
		switch w := inner.(type) {
		case *encryptedStore:
			inner = w.tokenStore
		case *firestoreStore:
			w.timeout = time.Minute
			inner = nil
		default:
			inner = nil
		}
	}
	put(t, s, sampleToken("777", "e@example.com"))
	const writers = 10
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.updateToken(ctx, "777", func(cur *tokenRecord) (*tokenRecord, error) {
				next := *cur
				next.Scopes = append(append([]string(nil), cur.Scopes...), "x")
				return &next, nil
			})
			if err != nil {
				t.Errorf("updateToken: %v", err)
			}
		}()
	}
	wg.Wait()
	got, _ := s.getToken(ctx, "777")
	if want := 2 + writers; len(got.Scopes) != want {
		t.Errorf("after %d concurrent appends: %d scopes, want %d (an update was lost)", writers, len(got.Scopes), want)
	}
}

// TestLocalStorePurgesExpiredStates: abandoned consents do not pile up in
// the embedded store (Firestore has a TTL policy on expireAt instead).
func TestLocalStorePurgesExpiredStates(t *testing.T) {
	clock := &testClock{}
	s, err := newLocalStore(filepath.Join(t.TempDir(), "data"), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	ctx := t.Context()
	now := clock.Now()
	if err := s.putState(ctx, "abandoned", &stateRecord{Verifier: "v", CreatedAt: now, ExpireAt: now.Add(stateTTL)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(stateTTL + time.Second)
	later := clock.Now()
	if err := s.putState(ctx, "fresh", &stateRecord{Verifier: "w", CreatedAt: later, ExpireAt: later.Add(stateTTL)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.consumeState(ctx, "abandoned"); !errors.Is(err, errNotFound) {
		t.Errorf("expired state: got %v, want it purged (errNotFound)", err)
	}
	if _, err := s.consumeState(ctx, "fresh"); err != nil {
		t.Errorf("unexpired state: %v", err)
	}
}
