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

// errStoreTimeout is the cause of an operation's own deadline.
var errStoreTimeout = errors.New("no answer from Firestore in time")

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
// does, so a cold start pays only for what it uses.
func newFirestoreStore(ctx context.Context, project, database string, opts ...option.ClientOption) (*firestoreStore, error) {
	c, err := firestore.NewClientWithDatabase(ctx, project, database, append(slices.Clip(opts), noClientLogs)...)
	if err != nil {
		return nil, fmt.Errorf("store: new Firestore client for %s/%s: %w", project, database, storeErr(err))
	}
	return &firestoreStore{client: c, timeout: storeOpTimeout}, nil
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

// tokenByEmail finds the record of an email. Should an email ever map to
// two accounts (an account deleted and re-created), the one updated last
// wins.
func (s *firestoreStore) tokenByEmail(ctx context.Context, email string) (*tokenRecord, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	it := s.client.Collection(tokensCollection).Where("email", "==", email).Limit(10).Documents(ctx)
	defer it.Stop()
	var best *tokenRecord
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
		if best == nil || rec.UpdatedAt.After(best.UpdatedAt) {
			best = rec
		}
	}
	if best == nil {
		return nil, fmt.Errorf("store: find token by email: %w", errNotFound)
	}
	return best, nil
}

// updateToken runs fn on the current record (nil when there is none) in a
// transaction and writes what fn returns; a nil result writes nothing. fn
// may run more than once and must not call out of the process.
func (s *firestoreStore) updateToken(ctx context.Context, sub string, fn func(cur *tokenRecord) (*tokenRecord, error)) error {
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
		return tx.Set(doc, next)
	})
	if err != nil {
		return fmt.Errorf("store: update token %s: %w", sub, opErr(ctx, err))
	}
	return nil
}

func (s *firestoreStore) deleteToken(ctx context.Context, sub string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.client.Collection(tokensCollection).Doc(sub).Delete(ctx); err != nil {
		return fmt.Errorf("store: delete token %s: %w", sub, opErr(ctx, err))
	}
	return nil
}

func (s *firestoreStore) close() error { return s.client.Close() }
