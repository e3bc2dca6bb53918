//go:build !localonly

package chatauth

import (
	"context"
	"testing"

	"github.com/chatauth/chatauth/internal/fakesecretmanager"
)

// TestSecretManagerEmulatorHost: with no client options, the reader reads
// from SECRETMANAGER_EMULATOR_HOST; given options, it ignores the variable.
func TestSecretManagerEmulatorHost(t *testing.T) {
	sm, err := fakesecretmanager.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sm.Close)
	ref := sm.Put("projects/p/secrets/s", []byte("from the emulator"))

	t.Run("variable", func(t *testing.T) {
		t.Setenv(secretManagerEmulatorEnv, sm.Addr())
		r := &secretReader{}
		defer r.close()
		got, err := r.read(context.Background(), "WEBHOOK_SECRETS", ref)
		if err != nil || string(got) != "from the emulator" {
			t.Fatalf("read: got %q, %v; want the emulator's secret", got, err)
		}
		if sm.Calls() != 1 {
			t.Errorf("emulator calls: got %d, want 1", sm.Calls())
		}
	})
	t.Run("options win", func(t *testing.T) {
		t.Setenv(secretManagerEmulatorEnv, "127.0.0.1:1") // nothing listens there
		r := &secretReader{opts: sm.ClientOptions()}
		defer r.close()
		if got, err := r.read(context.Background(), "WEBHOOK_SECRETS", ref); err != nil || string(got) != "from the emulator" {
			t.Fatalf("read: got %q, %v; want the secret through the given options", got, err)
		}
	})
}
