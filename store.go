//go:build !localonly

package chatauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// firestoreStore keeps records in Firestore (native mode). It honours
// FIRESTORE_EMULATOR_HOST through the client library.
type firestoreStore struct {
	client  *firestore.Client
	timeout time.Duration // bound on one operation, retries included; see bound
}

// storeOpTimeout bounds one Firestore operation, the client's own retries
// included.
const storeOpTimeout = 10 * time.Second

// bound gives one operation a deadline of its own. The client retries an
// unreachable Firestore until its context ends, and a request's context
// may have no deadline at all (OAuthStart), so without it a request would
// hang for as long as Firestore is away; with it the caller gets
// errStoreUnavailable, answered 503 with Retry-After.
func (s *firestoreStore) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.timeout, errStoreTimeout)
}

// opErr is storeErr for an operation run under bound. The bound running
// out while the caller still waits means Firestore is unavailable; the
// cause is kept as text only, so that it does not read as the caller's
// own deadline.
func opErr(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errStoreTimeout) {
		return fmt.Errorf("%w: %w (%v)", errStoreUnavailable, errStoreTimeout, err)
	}
	return storeErr(err)
}

var _ tokenStore = (*firestoreStore)(nil)

// newFirestoreStore creates the client. It does not dial: the first call
// does, so a cold start pays only for what it uses. timeout bounds one
// operation (bound); zero is storeOpTimeout.
func newFirestoreStore(ctx context.Context, project, database string, timeout time.Duration, opts ...option.ClientOption) (*firestoreStore, error) {
	if timeout <= 0 {
		timeout = storeOpTimeout
	}
	c, err := firestore.NewClientWithDatabase(ctx, project, database, append(slices.Clip(opts), noClientLogs)...)
	if err != nil {
		return nil, fmt.Errorf("store: new Firestore client for %s/%s: %w", project, database, storeErr(err))
	}
	return &firestoreStore{client: c, timeout: timeout}, nil
}

// storeErr translates gRPC codes at the store's boundary, so the rest of
// the code asks errors.Is(err, errNotFound) (or errAlreadyExists) and never
// imports gRPC.
func storeErr(err error) error {
	st, ok := status.FromError(err)
	if err == nil || !ok {
		return err
	}
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%w: %w", errNotFound, err)
	case codes.AlreadyExists:
		return fmt.Errorf("%w: %w", errAlreadyExists, err)
	case codes.Unavailable, codes.Aborted, codes.ResourceExhausted, codes.Internal, codes.Unknown:
		return fmt.Errorf("%w: %w", errStoreUnavailable, err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// markStateUsed creates the state's marker with Firestore's Create, which
// succeeds for exactly one caller however many race, on any instance; the
// others get AlreadyExists, translated to errAlreadyExists. The marker's
// expireAt is the field the collection's TTL policy deletes by.
func (s *firestoreStore) markStateUsed(ctx context.Context, key string, expireAt time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.client.Collection(usedStatesCollection).Doc(key).Create(ctx, &usedStateRecord{ExpireAt: expireAt})
	if err != nil {
		return fmt.Errorf("store: mark state used: %w", opErr(ctx, err))
	}
	return nil
}

func (s *firestoreStore) getToken(ctx context.Context, sub string) (*tokenRecord, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	snap, err := s.client.Collection(tokensCollection).Doc(sub).Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: get token %s: %w", sub, opErr(ctx, err))
	}
	return decodeToken(snap)
}

func decodeToken(snap *firestore.DocumentSnapshot) (*tokenRecord, error) {
	var rec tokenRecord
	if err := snap.DataTo(&rec); err != nil {
		return nil, fmt.Errorf("store: decode token %s: %w", snap.Ref.ID, err)
	}
	rec.Sub = snap.Ref.ID
	return &rec, nil
}

// tokenByEmail returns the record the email names (tokenStore's rules):
// its email record, then the token record of the sub it names.
func (s *firestoreStore) tokenByEmail(ctx context.Context, email string) (*tokenRecord, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	snap, err := s.client.Collection(emailsCollection).Doc(emailKey(email)).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return s.legacyTokenByEmail(ctx, email)
	}
	if err != nil {
		return nil, fmt.Errorf("store: find token by email: %w", opErr(ctx, err))
	}
	var alias emailRecord
	if err := snap.DataTo(&alias); err != nil {
		return nil, fmt.Errorf("store: decode email record: %w", err)
	}
	if alias.Sub == "" {
		return nil, fmt.Errorf("store: find token by email: %w", errNotFound)
	}
	tsnap, err := s.client.Collection(tokensCollection).Doc(alias.Sub).Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: find token by email: %w", opErr(ctx, err))
	}
	rec, err := decodeToken(tsnap)
	if err != nil {
		return nil, err
	}
	if rec.Email != email {
		// The account consented since with another address.
		return nil, fmt.Errorf("store: find token by email: %w", errNotFound)
	}
	rec.EmailSince = alias.Since
	return rec, nil
}

// legacyTokenByEmail is tokenByEmail for an email that has no email
// record: the one record carrying it that predates consentedAt, if
// exactly one does. Two such records leave the email naming nobody until
// one of the accounts consents again.
func (s *firestoreStore) legacyTokenByEmail(ctx context.Context, email string) (*tokenRecord, error) {
	it := s.client.Collection(tokensCollection).Where("email", "==", email).Limit(10).Documents(ctx)
	defer it.Stop()
	var found []*tokenRecord
	for {
		snap, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("store: find token by email: %w", opErr(ctx, err))
		}
		rec, err := decodeToken(snap)
		if err != nil {
			return nil, err
		}
		found = append(found, rec)
	}
	if rec := soleLegacyRecord(found); rec != nil {
		return rec, nil
	}
	return nil, fmt.Errorf("store: find token by email: %w", errNotFound)
}

// updateToken runs fn on the current record (nil when there is none) in a
// transaction and writes what fn returns; a nil result writes nothing. fn
// may run more than once and must not call out of the process.
func (s *firestoreStore) updateToken(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	if err := s.writeToken(ctx, sub, fn, false); err != nil {
		return fmt.Errorf("store: update token %s: %w", sub, err)
	}
	return nil
}

// putConsent is updateToken that also makes the written record's email
// name sub, in the same transaction.
func (s *firestoreStore) putConsent(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
	if err := s.writeToken(ctx, sub, fn, true); err != nil {
		return fmt.Errorf("store: put consent %s: %w", sub, err)
	}
	return nil
}

func (s *firestoreStore) writeToken(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error), consent bool) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	doc := s.client.Collection(tokensCollection).Doc(sub)
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		var cur *tokenRecord
		snap, err := tx.Get(doc)
		switch {
		case status.Code(err) == codes.NotFound:
		case err != nil:
			return err
		default:
			if cur, err = decodeToken(snap); err != nil {
				return err
			}
		}
		next, err := fn(cur)
		if err != nil || next == nil {
			return err
		}
		if consent {
			aliasDoc := s.client.Collection(emailsCollection).Doc(emailKey(next.Email))
			prev, err := txEmail(tx, aliasDoc)
			if err != nil {
				return err
			}
			if err := tx.Set(aliasDoc, nextEmailRecord(prev, sub, next.ConsentedAt)); err != nil {
				return err
			}
		}
		return tx.Set(doc, next)
	})
	return opErr(ctx, err)
}

// deleteToken deletes sub's record, if check accepts it, and leaves its
// email naming nobody if it still names sub, in one transaction.
func (s *firestoreStore) deleteToken(ctx context.Context, sub string, check func(cur *tokenRecord) error) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	doc := s.client.Collection(tokensCollection).Doc(sub)
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(doc)
		if status.Code(err) == codes.NotFound {
			return nil
		}
		if err != nil {
			return err
		}
		cur, err := decodeToken(snap)
		if err != nil {
			return err
		}
		if err := checkDelete(check, cur); err != nil {
			return err
		}
		aliasDoc := s.client.Collection(emailsCollection).Doc(emailKey(cur.Email))
		alias, err := txEmail(tx, aliasDoc)
		if err != nil {
			return err
		}
		if alias == nil {
			// A record from before email records: the email must still
			// name nobody afterwards, whatever other record carries it.
			alias = &emailRecord{Sub: sub}
		}
		if alias.Sub == sub {
			if err := tx.Set(aliasDoc, emptiedEmailRecord(alias)); err != nil {
				return err
			}
		}
		return tx.Delete(doc)
	})
	if err != nil {
		return fmt.Errorf("store: delete token %s: %w", sub, opErr(ctx, err))
	}
	return nil
}

// listedFields are the token record's fields a Firestore listing reads: everything
// but the tokens and the lease.
var listedFields = []string{"email", "scopes", "status", "createdAt", "updatedAt", "lastRefreshAt", "lastError", "consentedAt"}

// listTokens reads one page of records in document-id order (tokenStore's
// rules), projected to listedFields so that no token leaves Firestore.
// Ordering by document id alone, with at most an equality filter on
// status, is served by Firestore's automatic single-field indexes, and a
// cursor on the last id keeps pages stable while records come and go.
func (s *firestoreStore) listTokens(ctx context.Context, q tokenQuery) ([]*tokenRecord, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	query := s.client.Collection(tokensCollection).Select(listedFields...)
	if q.status != "" {
		query = query.Where("status", "==", q.status)
	}
	query = query.OrderBy(firestore.DocumentID, firestore.Asc)
	if q.after != "" {
		query = query.StartAfter(q.after)
	}
	it := query.Limit(q.limit).Documents(ctx)
	defer it.Stop()
	var recs []*tokenRecord
	for {
		snap, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return recs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("store: list tokens: %w", opErr(ctx, err))
		}
		rec, err := decodeToken(snap)
		if err != nil {
			return nil, err
		}
		recs = append(recs, withoutTokens(rec))
	}
}

// txEmail reads an email record in tx, or nil when there is none.
func txEmail(tx *firestore.Transaction, doc *firestore.DocumentRef) (*emailRecord, error) {
	snap, err := tx.Get(doc)
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var alias emailRecord
	if err := snap.DataTo(&alias); err != nil {
		return nil, fmt.Errorf("decode email record: %w", err)
	}
	return &alias, nil
}

func (s *firestoreStore) close() error { return s.client.Close() }
