package chatauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// localStore keeps records in one bbolt file under DATA_DIR, for cmd/local.
// It mirrors the Firestore layout: one bucket per collection, JSON values.
// bbolt serialises writers, so every update is a transaction.
type localStore struct {
	db  *bolt.DB
	now func() time.Time
	// lastPurge is when expired states were last purged; only read and
	// written inside db.Update, whose writer lock orders the accesses.
	lastPurge time.Time
}

// purgeEvery bounds how often putState scans the pending states, so an
// OAuthStart does not pay for every abandoned consent.
const purgeEvery = time.Minute

var _ tokenStore = (*localStore)(nil)

// newLocalStore opens (or creates) DATA_DIR/chatauth.db. A second process
// on the same file waits a second and then fails with a clear error
// instead of hanging.
func newLocalStore(dir string, now func() time.Time) (*localStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "chatauth.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: another chatauth process holds it; stop it or set DATA_DIR elsewhere", path)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// The buckets are created in a write transaction only when missing: a
	// write syncs the file (0.4 ms here), which a cold start need not wait
	// for once the store exists (BENCHMARKS.md).
	buckets := []string{tokensCollection, statesCollection, emailsCollection}
	missing := false
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			missing = missing || tx.Bucket([]byte(b)) == nil
		}
		return nil
	})
	if err == nil && missing {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, b := range buckets {
				if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: init %s: %w", path, err)
	}
	return &localStore{db: db, now: now}, nil
}

// putState stores a new state and, at most once a minute, purges expired
// ones in the same write, so abandoned consents do not pile up (Firestore
// uses a TTL policy).
func (s *localStore) putState(ctx context.Context, key string, st *stateRecord) error {
	v, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("store: put state: %w", err)
	}
	now := s.now()
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(statesCollection))
		if b.Get([]byte(key)) != nil {
			return errors.New("state already exists")
		}
		if now.Sub(s.lastPurge) >= purgeEvery {
			if err := purgeExpiredStates(b, now); err != nil {
				return err
			}
			s.lastPurge = now
		}
		return b.Put([]byte(key), v)
	})
	if err != nil {
		return fmt.Errorf("store: put state: %w", err)
	}
	return nil
}

func purgeExpiredStates(b *bolt.Bucket, now time.Time) error {
	var expired [][]byte
	err := b.ForEach(func(k, v []byte) error {
		var st stateRecord
		if json.Unmarshal(v, &st) != nil || now.After(st.ExpireAt) {
			expired = append(expired, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range expired {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (s *localStore) consumeState(ctx context.Context, key string) (*stateRecord, error) {
	var st stateRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(statesCollection))
		v := b.Get([]byte(key))
		if v == nil {
			return errNotFound
		}
		if err := json.Unmarshal(v, &st); err != nil {
			return fmt.Errorf("decode state: %w", err)
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return nil, fmt.Errorf("store: consume state: %w", err)
	}
	return &st, nil
}

func (s *localStore) getToken(ctx context.Context, sub string) (*tokenRecord, error) {
	var rec *tokenRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = getLocalToken(tx, sub)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: get token %s: %w", sub, err)
	}
	if rec == nil {
		return nil, fmt.Errorf("store: get token %s: %w", sub, errNotFound)
	}
	return rec, nil
}

// getLocalToken returns the record or nil when there is none.
func getLocalToken(tx *bolt.Tx, sub string) (*tokenRecord, error) {
	v := tx.Bucket([]byte(tokensCollection)).Get([]byte(sub))
	if v == nil {
		return nil, nil
	}
	var rec tokenRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	rec.Sub = sub
	return &rec, nil
}

// tokenByEmail returns the record the email names (tokenStore's rules),
// reading its email record and the token record in one transaction.
func (s *localStore) tokenByEmail(ctx context.Context, email string) (*tokenRecord, error) {
	var rec *tokenRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		alias, err := getLocalEmail(tx, email)
		if err != nil {
			return err
		}
		if alias == nil {
			rec, err = legacyLocalToken(tx, email)
			return err
		}
		if alias.Sub == "" {
			return nil
		}
		if rec, err = getLocalToken(tx, alias.Sub); err == nil && rec != nil {
			if rec.Email != email {
				rec = nil // the account consented since with another address
			} else {
				rec.EmailSince = alias.Since
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: find token by email: %w", err)
	}
	if rec == nil {
		return nil, fmt.Errorf("store: find token by email: %w", errNotFound)
	}
	return rec, nil
}

// getLocalEmail returns an email's record, or nil when there is none.
func getLocalEmail(tx *bolt.Tx, email string) (*emailRecord, error) {
	v := tx.Bucket([]byte(emailsCollection)).Get([]byte(emailKey(email)))
	if v == nil {
		return nil, nil
	}
	var alias emailRecord
	if err := json.Unmarshal(v, &alias); err != nil {
		return nil, fmt.Errorf("decode email record: %w", err)
	}
	return &alias, nil
}

func putLocalEmail(tx *bolt.Tx, email string, alias *emailRecord) error {
	v, err := json.Marshal(alias)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(emailsCollection)).Put([]byte(emailKey(email)), v)
}

// legacyLocalToken is tokenByEmail for an email without an email record
// (soleLegacyRecord, records.go), or nil.
func legacyLocalToken(tx *bolt.Tx, email string) (*tokenRecord, error) {
	var found []*tokenRecord
	err := tx.Bucket([]byte(tokensCollection)).ForEach(func(k, v []byte) error {
		var rec tokenRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		if rec.Email == email {
			rec.Sub = string(k)
			found = append(found, &rec)
		}
		return nil
	})
	return soleLegacyRecord(found), err
}

func (s *localStore) updateToken(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	if err := s.writeToken(sub, fn, false); err != nil {
		return fmt.Errorf("store: update token %s: %w", sub, err)
	}
	return nil
}

// putConsent is updateToken that also makes the written record's email
// name sub, in the same transaction.
func (s *localStore) putConsent(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	if err := s.writeToken(sub, fn, true); err != nil {
		return fmt.Errorf("store: put consent %s: %w", sub, err)
	}
	return nil
}

func (s *localStore) writeToken(sub string, fn func(cur *tokenRecord) (*tokenRecord, error), consent bool) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		cur, err := getLocalToken(tx, sub)
		if err != nil {
			return err
		}
		next, err := fn(cur)
		if err != nil || next == nil {
			return err
		}
		v, err := json.Marshal(next)
		if err != nil {
			return err
		}
		if consent {
			prev, err := getLocalEmail(tx, next.Email)
			if err != nil {
				return err
			}
			if err := putLocalEmail(tx, next.Email, nextEmailRecord(prev, sub, next.ConsentedAt)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte(tokensCollection)).Put([]byte(sub), v)
	})
}

// deleteToken deletes sub's record, if check accepts it, and leaves its
// email naming nobody if it still names sub, in one transaction.
func (s *localStore) deleteToken(ctx context.Context, sub string, check func(cur *tokenRecord) error) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		cur, err := getLocalToken(tx, sub)
		if err != nil || cur == nil {
			return err
		}
		if err := checkDelete(check, cur); err != nil {
			return err
		}
		alias, err := getLocalEmail(tx, cur.Email)
		if err != nil {
			return err
		}
		if alias == nil {
			// A record from before email records: the email must still
			// name nobody afterwards, whatever other record carries it.
			alias = &emailRecord{Sub: sub}
		}
		if alias.Sub == sub {
			if err := putLocalEmail(tx, cur.Email, emptiedEmailRecord(alias)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte(tokensCollection)).Delete([]byte(sub))
	})
	if err != nil {
		return fmt.Errorf("store: delete token %s: %w", sub, err)
	}
	return nil
}

func (s *localStore) close() error { return s.db.Close() }
