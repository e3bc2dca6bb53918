package chatauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
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
		s, err = openFirestore(context.Background(), needFirestore(t), "(default)", patientTimeout)
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
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Run("token round trip", func(t *testing.T) { t.Parallel(); testTokenRoundTrip(t, newTestStore(t, kind)) })
			t.Run("update merges", func(t *testing.T) { t.Parallel(); testUpdateMerges(t, newTestStore(t, kind)) })
			t.Run("lookup by email", func(t *testing.T) { t.Parallel(); testLookupByEmail(t, newTestStore(t, kind)) })
			t.Run("state used once", func(t *testing.T) { t.Parallel(); testStateUsedOnce(t, newTestStore(t, kind)) })
			t.Run("records from before email records", func(t *testing.T) { t.Parallel(); testLegacyRecords(t, newTestStore(t, kind)) })
			t.Run("delete checked", func(t *testing.T) { t.Parallel(); testDeleteChecked(t, newTestStore(t, kind)) })
			t.Run("concurrent consents", func(t *testing.T) { t.Parallel(); testConcurrentConsents(t, newTestStore(t, kind)) })
			t.Run("concurrent updates", func(t *testing.T) { t.Parallel(); testConcurrentUpdates(t, newTestStore(t, kind)) })
			t.Run("list tokens", func(t *testing.T) { t.Parallel(); testListTokens(t, newTestStore(t, kind)) })
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
	if err := s.deleteToken(ctx, "111", nil); err != nil {
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

// consent stores rec as a consent (putConsent), given at `at`.
func consent(t *testing.T, s tokenStore, rec *tokenRecord, at time.Time) {
	t.Helper()
	c := *rec
	c.ConsentedAt, c.UpdatedAt = at, at
	if err := s.putConsent(t.Context(), rec.Sub, func(*tokenRecord) (*tokenRecord, error) { return &c, nil }); err != nil {
		t.Fatalf("putConsent(%s): %v", rec.Sub, err)
	}
}

// wantEmailNames checks which account email names: sub, or nobody ("").
func wantEmailNames(t *testing.T, s tokenStore, email, sub, when string) {
	t.Helper()
	got, err := s.tokenByEmail(t.Context(), email)
	switch {
	case sub == "" && !errors.Is(err, errNotFound):
		t.Errorf("%s: tokenByEmail(%s) = %v, %v; want errNotFound (the email names nobody)", when, email, got, err)
	case sub != "" && (err != nil || got.Sub != sub || got.Email != email):
		t.Errorf("%s: tokenByEmail(%s) = %+v, %v; want the record of %s", when, email, got, err, sub)
	}
}

// testLookupByEmail: an email names the last account that consented with
// it; refreshes never move it, and Disconnect leaves it naming nobody.
func testLookupByEmail(t *testing.T, s tokenStore) {
	ctx := t.Context()
	wantEmailNames(t, s, "nobody@example.com", "", "never used")
	consent(t, s, sampleToken("444", "c@example.com"), sampleTime)
	wantEmailNames(t, s, "c@example.com", "444", "after 444 consented")
	consent(t, s, sampleToken("555", "c@example.com"), sampleTime.Add(time.Minute))
	consent(t, s, sampleToken("666", "d@example.com"), sampleTime.Add(time.Minute))
	wantEmailNames(t, s, "c@example.com", "555", "after 555 consented with the same email")

	// A refresh of the older record, however recent, moves nothing.
	err := s.updateToken(ctx, "444", func(cur *tokenRecord) (*tokenRecord, error) {
		next := *cur
		next.AccessToken, next.UpdatedAt, next.LastRefreshAt = "ya29.refreshed", sampleTime.Add(time.Hour), sampleTime.Add(time.Hour)
		return &next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantEmailNames(t, s, "c@example.com", "555", "after a refresh of 444")
	if got, err := s.getToken(ctx, "444"); err != nil || got.Email != "c@example.com" {
		t.Errorf("the earlier consent by its id: got %v, %v; want it kept until revoked", got, err)
	}

	// Disconnect of the newer account: the email names nobody, even though
	// 444's record still carries it.
	if err := s.deleteToken(ctx, "555", nil); err != nil {
		t.Fatal(err)
	}
	wantEmailNames(t, s, "c@example.com", "", "after 555 disconnected")
	// Disconnect of an account the email no longer names leaves it alone.
	consent(t, s, sampleToken("555", "c@example.com"), sampleTime.Add(2*time.Hour))
	if err := s.deleteToken(ctx, "444", nil); err != nil {
		t.Fatal(err)
	}
	wantEmailNames(t, s, "c@example.com", "555", "after 444, which the email no longer named, disconnected")
	wantEmailNames(t, s, "d@example.com", "666", "another email")

	// EmailSince: when the email came to name its account. A consent by
	// that account keeps it; one by another account, or after a Disconnect
	// by another account, starts it again.
	since := func(email string) time.Time {
		t.Helper()
		got, err := s.tokenByEmail(ctx, email)
		if err != nil {
			t.Fatalf("tokenByEmail(%s): %v", email, err)
		}
		return got.EmailSince
	}
	if got := since("d@example.com"); !got.IsZero() {
		t.Errorf("d@ names the first account it named since %v, want no time", got)
	}
	if got, want := since("c@example.com"), sampleTime.Add(time.Minute); !got.Equal(want) {
		t.Errorf("c@ names 555 since %v, want %v (its consent after 444's)", got, want)
	}
	consent(t, s, sampleToken("555", "c@example.com"), sampleTime.Add(3*time.Hour))
	if got, want := since("c@example.com"), sampleTime.Add(time.Minute); !got.Equal(want) {
		t.Errorf("after 555 consented again: since %v, want %v (kept)", got, want)
	}
	if err := s.deleteToken(ctx, "555", nil); err != nil {
		t.Fatal(err)
	}
	consent(t, s, sampleToken("555", "c@example.com"), sampleTime.Add(4*time.Hour))
	if got, want := since("c@example.com"), sampleTime.Add(time.Minute); !got.Equal(want) {
		t.Errorf("after 555 disconnected and consented again: since %v, want %v (kept)", got, want)
	}
	if err := s.deleteToken(ctx, "555", nil); err != nil {
		t.Fatal(err)
	}
	consent(t, s, sampleToken("444", "c@example.com"), sampleTime.Add(5*time.Hour))
	if got, want := since("c@example.com"), sampleTime.Add(5*time.Hour); !got.Equal(want) {
		t.Errorf("after 444 took c@ back: since %v, want %v", got, want)
	}

	// An account that consents with another address leaves the old one
	// naming nobody; the address is lowercase and may hold a '/'.
	consent(t, s, sampleToken("666", "d/2@example.com"), sampleTime.Add(2*time.Hour))
	wantEmailNames(t, s, "d@example.com", "", "after 666 moved to d/2@")
	wantEmailNames(t, s, "d/2@example.com", "666", "after 666 moved to d/2@")
	// Deleting a record that is not there is no error.
	if err := s.deleteToken(ctx, "999", nil); err != nil {
		t.Errorf("deleteToken of a missing record: %v", err)
	}
}

// testLegacyRecords: records written before email records existed (no
// consentedAt, no email record) still answer to their email, as long as
// one record alone carries it, and a Disconnect leaves the email naming
// nobody.
func testLegacyRecords(t *testing.T, s tokenStore) {
	ctx := t.Context()
	put(t, s, sampleToken("101", "old@example.com"))
	wantEmailNames(t, s, "old@example.com", "101", "one record from before")
	put(t, s, sampleToken("102", "old@example.com"))
	wantEmailNames(t, s, "old@example.com", "", "two records from before")
	if err := s.deleteToken(ctx, "102", nil); err != nil {
		t.Fatal(err)
	}
	wantEmailNames(t, s, "old@example.com", "", "after one of them disconnected")
	if _, err := s.getToken(ctx, "101"); err != nil {
		t.Errorf("the other legacy record: %v", err)
	}
	consent(t, s, sampleToken("101", "old@example.com"), sampleTime)
	wantEmailNames(t, s, "old@example.com", "101", "after it consented again")
}

// testDeleteChecked: deleteToken asks check first, and a refusal deletes
// nothing.
func testDeleteChecked(t *testing.T, s tokenStore) {
	ctx := t.Context()
	consent(t, s, sampleToken("303", "f@example.com"), sampleTime)
	refused := errors.New("consented after the request was signed")
	var saw *tokenRecord
	err := s.deleteToken(ctx, "303", func(cur *tokenRecord) error { saw = cur; return refused })
	if !errors.Is(err, refused) {
		t.Errorf("deleteToken with a refusing check: got %v, want it to wrap %v", err, refused)
	}
	if saw == nil || saw.Sub != "303" || saw.Email != "f@example.com" || !saw.ConsentedAt.Equal(sampleTime) || saw.RefreshToken != "" || saw.AccessToken != "" {
		t.Errorf("check saw %+v, want the stored record of 303 without its tokens", saw)
	}
	wantEmailNames(t, s, "f@example.com", "303", "after a refused delete")
	if err := s.deleteToken(ctx, "303", func(*tokenRecord) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.getToken(ctx, "303"); !errors.Is(err, errNotFound) {
		t.Errorf("after an accepted delete: got %v, want errNotFound", err)
	}
	wantEmailNames(t, s, "f@example.com", "", "after an accepted delete")
}

// testConcurrentConsents: accounts consenting with one email at once
// leave it naming exactly one of them, whose record carries it, and each
// account reachable by its id.
func testConcurrentConsents(t *testing.T, s tokenStore) {
	ctx := t.Context()
	const accounts = 6
	var wg sync.WaitGroup
	for i := range accounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := sampleToken(fmt.Sprint(800+i), "g@example.com")
			rec.ConsentedAt = sampleTime.Add(time.Duration(i) * time.Second)
			if err := s.putConsent(ctx, rec.Sub, func(*tokenRecord) (*tokenRecord, error) { return rec, nil }); err != nil {
				t.Errorf("putConsent(%s): %v", rec.Sub, err)
			}
		}()
	}
	wg.Wait()
	got, err := s.tokenByEmail(ctx, "g@example.com")
	if err != nil {
		t.Fatalf("tokenByEmail after concurrent consents: %v", err)
	}
	for i := range accounts {
		sub := fmt.Sprint(800 + i)
		if _, err := s.getToken(ctx, sub); err != nil {
			t.Errorf("getToken(%s): %v", sub, err)
		}
		if sub != got.Sub {
			// Disconnecting an account the email does not name leaves it.
			if err := s.deleteToken(ctx, sub, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantEmailNames(t, s, "g@example.com", got.Sub, "after the others disconnected")
	if err := s.deleteToken(ctx, got.Sub, nil); err != nil {
		t.Fatal(err)
	}
	wantEmailNames(t, s, "g@example.com", "", "after all disconnected")
}

// testStateUsedOnce: of racing markStateUsed calls for one state exactly
// one creates the marker; every other, and every later one, is told the
// state is used. Other states are not affected.
func testStateUsedOnce(t *testing.T, s tokenStore) {
	ctx := t.Context()
	expireAt := time.Now().Add(stateTTL)
	const racers = 20
	var wg sync.WaitGroup
	var won, used atomic.Int32
	var errs sync.Map
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := s.markStateUsed(ctx, "k1", expireAt); {
			case err == nil:
				won.Add(1)
			case errors.Is(err, errAlreadyExists):
				used.Add(1)
			default:
				errs.Store(err.Error(), true)
			}
		}()
	}
	wg.Wait()
	errs.Range(func(k, _ any) bool { t.Errorf("markStateUsed: unexpected error %v", k); return true })
	if got := won.Load(); got != 1 {
		t.Errorf("%d of %d racing callers marked the state, want exactly 1", got, racers)
	}
	if got := used.Load(); got != racers-1 {
		t.Errorf("%d of %d racing callers were told the state is used, want %d", got, racers, racers-1)
	}
	if err := s.markStateUsed(ctx, "k1", expireAt); !errors.Is(err, errAlreadyExists) {
		t.Errorf("marking a used state again: got %v, want errAlreadyExists", err)
	}
	if err := s.markStateUsed(ctx, "k2", expireAt); err != nil {
		t.Errorf("marking another state: %v", err)
	}
}

// patientTimeout is the Firestore bound of the tests (newTestStore,
// newTestEnv). The emulator makes contending writes wait and retry, so on
// a loaded machine (CI runs packages in parallel, under -race) they can
// outlast the 10 s bound; that bound is faults_test.go's subject.
const patientTimeout = time.Minute

// testConcurrentUpdates: concurrent read-modify-writes lose no update.
// The Firestore emulator makes contending transactions wait and retry, so
// on a loaded machine (CI runs packages in parallel, under -race) ten of
// them can outlast the store's 10 s per-operation bound; that bound is
// faults_test.go's subject, this test's is atomicity, so it allows a minute.
func testConcurrentUpdates(t *testing.T, s tokenStore) {
	ctx := t.Context()
	put(t, s, sampleToken("777", "e@example.com"))
	const writers = 10
	var (
		wg     sync.WaitGroup
		failed atomic.Int32
	)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.updateToken(ctx, "777", func(cur *tokenRecord) (*tokenRecord, error) {
				next := *cur
				next.Scopes = append(append([]string(nil), cur.Scopes...), "x")
				return &next, nil
			})
			switch {
			case err == nil:
			case errors.Is(err, errStoreUnavailable):
				// The Firestore emulator gives up on a transaction that
				// waited too long for its lock ("Transaction lock timeout")
				// once the client's attempts are spent: reported, so the
				// caller answers 503 with Retry-After, and not applied.
				failed.Add(1)
				t.Logf("updateToken under contention: %v", err)
			default:
				t.Errorf("updateToken: %v, want nil or errStoreUnavailable", err)
			}
		}()
	}
	wg.Wait()
	got, err := s.getToken(ctx, "777")
	if err != nil {
		t.Fatal(err)
	}
	applied := writers - int(failed.Load())
	if applied == 0 {
		t.Fatalf("none of %d concurrent updates succeeded", writers)
	}
	if want := 2 + applied; len(got.Scopes) != want {
		t.Errorf("after %d concurrent appends that reported success: %d scopes, want %d (an update that succeeded was lost, or one that failed was applied)", applied, len(got.Scopes), want)
	}
}

// TestLocalStorePurgesUsedStates: used-state markers do not pile up in
// the embedded store (Firestore has a TTL policy on expireAt instead). A
// marker stays until its expireAt, so a state cannot be used twice while
// its cookie could still be accepted; after it, a call to markStateUsed
// removes expired markers, at most purgeBatch of them, taken from the
// expiry index without a scan.
func TestLocalStorePurgesUsedStates(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	s, err := newLocalStore(filepath.Join(t.TempDir(), "data"), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	ctx := t.Context()
	if err := s.markStateUsed(ctx, "early", clock.Now().Add(stateTTL)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(stateTTL - time.Second)
	if err := s.markStateUsed(ctx, "later", clock.Now().Add(stateTTL)); err != nil {
		t.Fatal(err)
	}
	if err := s.markStateUsed(ctx, "early", clock.Now().Add(stateTTL)); !errors.Is(err, errAlreadyExists) {
		t.Errorf("a marker a second before its expireAt: got %v, want errAlreadyExists", err)
	}
	clock.Advance(2 * time.Second)
	if err := s.markStateUsed(ctx, "trigger", clock.Now().Add(stateTTL)); err != nil {
		t.Fatal(err)
	}
	if got, want := usedStateKeys(t, s), []string{"later", "trigger"}; !slices.Equal(got, want) {
		t.Errorf("markers after the first expired: got %q, want %q", got, want)
	}

	// A backlog is purged a batch per call: each call removes more than
	// it adds.
	const backlog = 2*purgeBatch + 10
	for i := range backlog {
		if err := s.markStateUsed(ctx, fmt.Sprintf("old-%03d", i), clock.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(stateTTL + time.Second) // every marker has expired
	for call, want := range []int{backlog + 3 - purgeBatch, backlog + 4 - 2*purgeBatch, 3} {
		if err := s.markStateUsed(ctx, fmt.Sprintf("new-%d", call), clock.Now().Add(stateTTL)); err != nil {
			t.Fatal(err)
		}
		if got := len(usedStateKeys(t, s)); got != want {
			t.Errorf("after call %d with %d expired markers: %d markers left, want %d", call+1, backlog+2, got, want)
		}
	}
}

// usedStateKeys lists the embedded store's markers, and checks that the
// expiry index names exactly them.
func usedStateKeys(t *testing.T, s *localStore) []string {
	t.Helper()
	var keys, indexed []string
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte(usedStatesCollection)).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket([]byte(usedStatesByExpiry)).ForEach(func(k, _ []byte) error {
			indexed = append(indexed, string(k[8:]))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(indexed)
	if !slices.Equal(keys, indexed) {
		t.Errorf("the expiry index names %q, the markers are %q", indexed, keys)
	}
	return keys
}

// TestLocalStoreDropsLegacyStates: the bucket of pending states that
// earlier versions kept (PKCE verifiers in clear) is dropped when the
// embedded store opens.
func TestLocalStoreDropsLegacyStates(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := newLocalStore(dir, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte(legacyStatesBucket))
		if err != nil {
			return err
		}
		return b.Put([]byte("0123abcd"), []byte(`{"verifier":"a-verifier-in-clear"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.close()
	if s, err = newLocalStore(dir, time.Now); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte(legacyStatesBucket)) != nil {
			t.Errorf("the %s bucket is still there", legacyStatesBucket)
		}
		return nil
	})
}

// TestUsedStateLayout: a used state is stored as the data layout
// says (README, "Data"), chatauth_used_states/{hash} with a timestamp expireAt (the field a
// Firestore TTL policy deletes by), on both stores.
func TestUsedStateLayout(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newTestStore(t, kind)
			expireAt := sampleTime.Add(stateTTL)
			key := hashToken("a-state")
			if err := s.markStateUsed(t.Context(), key, expireAt); err != nil {
				t.Fatal(err)
			}
			var got time.Time
			switch s := s.(type) {
			case *firestoreStore:
				snap, err := s.client.Collection(usedStatesCollection).Doc(key).Get(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if n := len(snap.Data()); n != 1 {
					t.Errorf("the marker has %d fields (%v), want only expireAt", n, snap.Data())
				}
				got, _ = snap.Data()["expireAt"].(time.Time)
			case *localStore:
				s.db.View(func(tx *bolt.Tx) error {
					var rec usedStateRecord
					if err := json.Unmarshal(tx.Bucket([]byte(usedStatesCollection)).Get([]byte(key)), &rec); err != nil {
						t.Errorf("decode the marker: %v", err)
					}
					got = rec.ExpireAt
					return nil
				})
			}
			if !got.Equal(expireAt) {
				t.Errorf("expireAt: got %v, want %v (a timestamp)", got, expireAt)
			}
		})
	}
}

// testListTokens: pages in byte order of sub, each record once, a status
// filter, a cursor whose record went away, and no token in any record.
func testListTokens(t *testing.T, s tokenStore) {
	ctx := t.Context()
	if got, err := s.listTokens(ctx, tokenQuery{limit: 10}); err != nil || len(got) != 0 {
		t.Fatalf("empty store: got %d records, %v; want none", len(got), err)
	}
	subs := []string{"3", "10", "2", "111", "1", "25", "200"}
	for i, sub := range subs {
		rec := sampleToken(sub, "u"+sub+"@example.com")
		if i%3 == 0 {
			rec.Status = tokenNeedsReauth
		}
		put(t, s, rec)
	}
	want := slices.Clone(subs)
	slices.Sort(want) // byte order: "1" < "10" < "111" < "2" …
	list := func(q tokenQuery) []string {
		t.Helper()
		recs, err := s.listTokens(ctx, q)
		if err != nil {
			t.Fatalf("listTokens(%+v): %v", q, err)
		}
		var got []string
		for _, r := range recs {
			if r.RefreshToken != "" || r.AccessToken != "" {
				t.Errorf("listTokens: record %s carries a token", r.Sub)
			}
			if r.Email != "u"+r.Sub+"@example.com" || len(r.Scopes) != 2 || r.CreatedAt.IsZero() {
				t.Errorf("listTokens: record %s lacks its fields: %+v", r.Sub, r)
			}
			got = append(got, r.Sub)
		}
		return got
	}
	var all []string
	for after := ""; ; {
		page := list(tokenQuery{after: after, limit: 3})
		all = append(all, page...)
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1]
	}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("pages of 3 (-want +got):\n%s", diff)
	}
	if got := list(tokenQuery{status: tokenNeedsReauth, limit: 10}); !slices.Equal(got, []string{"111", "200", "3"}) {
		t.Errorf("needs_reauth: got %q, want [111 200 3]", got)
	}
	if got := list(tokenQuery{status: tokenActive, after: "10", limit: 2}); !slices.Equal(got, []string{"2", "25"}) {
		t.Errorf("active after 10, 2 of them: got %q, want [2 25]", got)
	}
	// The record a page ended with is deleted before the next page: the
	// next page starts where it would have.
	if err := s.deleteToken(ctx, "111", nil); err != nil {
		t.Fatal(err)
	}
	if got := list(tokenQuery{after: "111", limit: 10}); !slices.Equal(got, []string{"2", "200", "25", "3"}) {
		t.Errorf("after a deleted 111: got %q, want [2 200 25 3]", got)
	}
}
