//go:build !localonly

package main

import (
	"context"
	"os"

	"cloud.google.com/go/firestore"
)

// openFirestore creates the Firestore client (it dials on first use) and
// returns the read of one record.
func openFirestore(ctx context.Context) (func(ctx context.Context, sub string) (string, error), error) {
	c, err := firestore.NewClient(context.WithoutCancel(ctx), os.Getenv("GOOGLE_CLOUD_PROJECT"))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, sub string) (string, error) {
		snap, err := c.Collection(collection).Doc(sub).Get(ctx)
		if err != nil {
			return "", err
		}
		tok, _ := snap.Data()["accessToken"].(string)
		return tok, nil
	}, nil
}
