//go:build localonly

package main

import (
	"context"
	"errors"
)

func openFirestore(context.Context) (func(ctx context.Context, sub string) (string, error), error) {
	return nil, errors.New("floor: built with -tags localonly, without Firestore")
}
