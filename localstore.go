package chatauth

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// localStore keeps records in one bbolt file under DATA_DIR, for cmd/local.
// It mirrors the Firestore layout: one bucket per collection, JSON values.
// bbolt serialises writers, so every update is a transaction.
type localStore struct {
	db  *bolt.DB
	now func() time.Time
}

const (
	// usedStatesByExpiry indexes chatauth_used_states by expireAt (an
	// 8-byte big-endian Unix second, then the marker's key), so that
	// expired markers are found from the index's start, without a scan.
	usedStatesByExpiry = "chatauth_used_states_by_expiry"
	// legacyStatesBucket is where earlier versions kept pending consent
	// states, PKCE verifiers in clear. Nothing reads it, so it is dropped
	// when the store opens.
	legacyStatesBucket = "chatauth_states"
	// purgeBatch bounds the expired markers one markStateUsed removes, so
	// that no callback pays for a long backlog at once; each call removes
	// more than it adds.
	purgeBatch = 64
)

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
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: another chatauth process holds it; stop it or set DATA_DIR elsewhere", path)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// The buckets are created in a write transaction only when missing: a
	// write syncs the file, which a cold start need not wait for once the
	// store exists (BENCHMARKS.md).
	buckets := []string{tokensCollection, usedStatesCollection, usedStatesByExpiry, emailsCollection}
	missing := false
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			missing = missing || tx.Bucket([]byte(b)) == nil
		}
		missing = missing || tx.Bucket([]byte(legacyStatesBucket)) != nil
		return nil
	})
	if err == nil && missing {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, b := range buckets {
				if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
					return err
				}
			}
			if tx.Bucket([]byte(legacyStatesBucket)) != nil {
				return tx.DeleteBucket([]byte(legacyStatesBucket))
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

// markStateUsed creates the state's marker in one write transaction
// (bbolt admits one writer at a time, so exactly one of racing callers
// finds no marker), after removing up to purgeBatch expired markers, taken
// from the start of the expiry index: abandoned markers do not pile up,
// and no call scans the collection (Firestore uses a TTL policy).
func (s *localStore) markStateUsed(ctx context.Context, key string, expireAt time.Time) error {
	v, err := json.Marshal(&usedStateRecord{ExpireAt: expireAt})
	if err != nil {
		return fmt.Errorf("store: mark state used: %w", err)
	}
	now := s.now()
	err = s.db.Update(func(tx *bolt.Tx) error {
		used := tx.Bucket([]byte(usedStatesCollection))
		byExpiry := tx.Bucket([]byte(usedStatesByExpiry))
		if err := purgeUsedStates(used, byExpiry, now); err != nil {
			return err
		}
		if used.Get([]byte(key)) != nil {
			return errAlreadyExists
		}
		if err := used.Put([]byte(key), v); err != nil {
			return err
		}
		return byExpiry.Put(expiryKey(expireAt, key), []byte{})
	})
	if err != nil {
		return fmt.Errorf("store: mark state used: %w", err)
	}
	return nil
}

// expiryKey is a marker's key in the expiry index: expireAt rounded up to
// the second, as an 8-byte big-endian Unix time (so keys sort by time),
// then the marker's key. Rounding up means a marker never goes early.
func expiryKey(expireAt time.Time, key string) []byte {
	sec := expireAt.Unix()
	if expireAt.Nanosecond() != 0 {
		sec++
	}
	return append(binary.BigEndian.AppendUint64(nil, uint64(max(sec, 0))), key...)
}

// purgeUsedStates removes up to purgeBatch markers whose expireAt has
// passed, oldest first.
func purgeUsedStates(used, byExpiry *bolt.Bucket, now time.Time) error {
	c := byExpiry.Cursor()
	for range purgeBatch {
		k, _ := c.First()
		if k == nil {
			return nil
		}
		if len(k) >= 8 {
			if int64(binary.BigEndian.Uint64(k[:8])) > now.Unix() {
				return nil
			}
			if err := used.Delete(k[8:]); err != nil {
				return err
			}
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
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

// listTokens reads one page of records in key order (tokenStore's rules),
// from a cursor placed just after q.after.
func (s *localStore) listTokens(ctx context.Context, q tokenQuery) ([]*tokenRecord, error) {
	var recs []*tokenRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(tokensCollection)).Cursor()
		k, v := c.First()
		if q.after != "" {
			if k, v = c.Seek([]byte(q.after)); k != nil && string(k) == q.after {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(recs) < q.limit; k, v = c.Next() {
			var rec tokenRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			if q.status != "" && rec.Status != q.status {
				continue
			}
			rec.Sub = string(k)
			recs = append(recs, withoutTokens(&rec))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list tokens: %w", err)
	}
	return recs, nil
}

func (s *localStore) close() error { return s.db.Close() }
