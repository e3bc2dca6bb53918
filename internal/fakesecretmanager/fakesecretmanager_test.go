package fakesecretmanager

import (
	"context"
	"fmt"
	"hash/crc32"
	"strings"
	"sync"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// setup starts a fake and a real Secret Manager client pointed at it, both
// closed when the test ends.
func setup(t *testing.T) (*Server, *secretmanager.Client) {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Close)
	c, err := secretmanager.NewClient(context.Background(), s.ClientOptions()...)
	if err != nil {
		t.Fatalf("secretmanager.NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c
}

// noRetry turns off the client's default retry of Unavailable, so a test
// sees the first failure instead of waiting for the client to give up.
var noRetry = gax.WithRetry(func() gax.Retryer { return nil })

func access(ctx context.Context, c *secretmanager.Client, name string, opts ...gax.CallOption) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	return c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name}, opts...)
}

func TestAccessResolvesVersions(t *testing.T) {
	s, c := setup(t)
	ctx := context.Background()
	const secret = "projects/demo/secrets/client"
	if got, want := s.Put(secret, []byte("one")), secret+"/versions/1"; got != want {
		t.Errorf("first Put = %q, want %q", got, want)
	}
	if got, want := s.Put(secret, []byte("two")), secret+"/versions/2"; got != want {
		t.Errorf("second Put = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		name, wantName, wantData string
	}{
		{secret + "/versions/latest", secret + "/versions/2", "two"},
		{secret + "/versions/1", secret + "/versions/1", "one"},
		{secret + "/versions/2", secret + "/versions/2", "two"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := access(ctx, c, tc.name)
			if err != nil {
				t.Fatalf("AccessSecretVersion: %v", err)
			}
			if got := resp.GetName(); got != tc.wantName {
				t.Errorf("got name %q, want %q", got, tc.wantName)
			}
			if got := string(resp.GetPayload().GetData()); got != tc.wantData {
				t.Errorf("got data %q, want %q", got, tc.wantData)
			}
		})
	}
}

func TestAccessErrors(t *testing.T) {
	s, c := setup(t)
	ctx := context.Background()
	s.Put("projects/123456/secrets/known", []byte("x"))
	for _, tc := range []struct {
		name        string
		wantCode    codes.Code
		wantMessage string
	}{
		{"projects/123456/secrets/missing/versions/latest", codes.NotFound,
			"Secret [projects/123456/secrets/missing] not found or has no versions."},
		// Project ids and numbers are not mapped onto each other.
		{"projects/my-project/secrets/known/versions/latest", codes.NotFound,
			"Secret [projects/my-project/secrets/known] not found or has no versions."},
		{"projects/123456/secrets/known/versions/7", codes.NotFound,
			"Secret Version [projects/123456/secrets/known/versions/7] not found."},
		{"projects/123456/secrets/known", codes.InvalidArgument, "Invalid resource field value in the request."},
		{"projects/123456/secrets/known/versions/first", codes.InvalidArgument, "Invalid resource field value in the request."},
		{"projects/123456/secrets/known/versions/0", codes.InvalidArgument, "Invalid resource field value in the request."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := access(ctx, c, tc.name)
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("got code %v (%v), want %v", got, err, tc.wantCode)
			}
			if got := status.Convert(err).Message(); got != tc.wantMessage {
				t.Errorf("got message %q, want %q", got, tc.wantMessage)
			}
		})
	}
}

func TestLocationalSecret(t *testing.T) {
	s, c := setup(t)
	name := s.Put("projects/p/locations/europe-west1/secrets/s", []byte("regional"))
	resp, err := access(context.Background(), c, "projects/p/locations/europe-west1/secrets/s/versions/latest")
	if err != nil {
		t.Fatalf("AccessSecretVersion: %v", err)
	}
	if got := resp.GetName(); got != name {
		t.Errorf("got name %q, want %q", got, name)
	}
}

func TestUnavailable(t *testing.T) {
	s, c := setup(t)
	ctx := context.Background()
	name := s.Put("projects/p/secrets/s", []byte("v"))

	s.SetUnavailable(true)
	_, err := access(ctx, c, name, noRetry)
	if got, want := status.Code(err), codes.Unavailable; got != want {
		t.Fatalf("while unavailable: got code %v (%v), want %v", got, err, want)
	}
	if got, want := s.Calls(), 1; got != want {
		t.Errorf("got %d calls, want %d", got, want)
	}

	s.SetUnavailable(false)
	resp, err := access(ctx, c, name, noRetry)
	if err != nil {
		t.Fatalf("after SetUnavailable(false): %v", err)
	}
	if got, want := string(resp.GetPayload().GetData()), "v"; got != want {
		t.Errorf("got data %q, want %q", got, want)
	}
	if got, want := s.Calls(), 2; got != want {
		t.Errorf("got %d calls, want %d", got, want)
	}
}

// TestUnavailableRetriedByClient checks that the client's default retry
// policy, which production code relies on, gets through once the fake is
// back. The client's first back-off is up to 2 s, so this test takes that.
func TestUnavailableRetriedByClient(t *testing.T) {
	s, c := setup(t)
	name := s.Put("projects/p/secrets/s", []byte("v"))
	s.SetUnavailable(true)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct {
		resp *secretmanagerpb.AccessSecretVersionResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := access(ctx, c, name)
		done <- result{resp, err}
	}()
	for s.Calls() == 0 {
		select {
		case r := <-done:
			t.Fatalf("call returned while unavailable: %v", r.err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.SetUnavailable(false)
	r := <-done
	if r.err != nil {
		t.Fatalf("AccessSecretVersion: %v", r.err)
	}
	if got, want := string(r.resp.GetPayload().GetData()), "v"; got != want {
		t.Errorf("got data %q, want %q", got, want)
	}
	if got := s.Calls(); got < 2 {
		t.Errorf("got %d calls, want at least 2 (one failed, one retried)", got)
	}
}

func TestChecksum(t *testing.T) {
	s, c := setup(t)
	ctx := context.Background()
	data := []byte("client secret payload")
	want := int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	good := s.Put("projects/p/secrets/good", data)
	bad := s.Put("projects/p/secrets/bad", data)
	s.CorruptChecksum(bad)

	resp, err := access(ctx, c, good)
	if err != nil {
		t.Fatalf("AccessSecretVersion(%s): %v", good, err)
	}
	if resp.GetPayload().DataCrc32C == nil {
		t.Fatalf("got no data_crc32c, want %d", want)
	}
	if got := *resp.GetPayload().DataCrc32C; got != want {
		t.Errorf("got data_crc32c %d, want %d (CRC32C of the payload)", got, want)
	}

	resp, err = access(ctx, c, bad)
	if err != nil {
		t.Fatalf("AccessSecretVersion(%s): %v", bad, err)
	}
	if got := string(resp.GetPayload().GetData()); got != string(data) {
		t.Errorf("corrupted version: got data %q, want %q unchanged", got, data)
	}
	if sum := resp.GetPayload().DataCrc32C; sum == nil || *sum == want {
		t.Errorf("corrupted version: got data_crc32c %v, want present and not %d", sum, want)
	}
}

func TestDisabled(t *testing.T) {
	s, c := setup(t)
	ctx := context.Background()
	v1 := s.Put("projects/p/secrets/s", []byte("one"))
	v2 := s.Put("projects/p/secrets/s", []byte("two"))
	s.Disable(v2)

	wantMessage := fmt.Sprintf("Secret Version [%s] is in DISABLED state.", v2)
	// Like the real service, "latest" is the newest version even when it is
	// disabled; it does not fall back to v1.
	for _, name := range []string{v2, "projects/p/secrets/s/versions/latest"} {
		_, err := access(ctx, c, name)
		if got, want := status.Code(err), codes.FailedPrecondition; got != want {
			t.Fatalf("%s: got code %v (%v), want %v", name, got, err, want)
		}
		if got := status.Convert(err).Message(); got != wantMessage {
			t.Errorf("%s: got message %q, want %q", name, got, wantMessage)
		}
	}

	resp, err := access(ctx, c, v1)
	if err != nil {
		t.Fatalf("AccessSecretVersion(%s): %v", v1, err)
	}
	if got, want := string(resp.GetPayload().GetData()), "one"; got != want {
		t.Errorf("got data %q, want %q", got, want)
	}

	// A version put after the disabled one becomes "latest" again.
	v3 := s.Put("projects/p/secrets/s", []byte("three"))
	resp, err = access(ctx, c, "projects/p/secrets/s/versions/latest")
	if err != nil {
		t.Fatalf("AccessSecretVersion(latest) after a new version: %v", err)
	}
	if got := resp.GetName(); got != v3 {
		t.Errorf("got name %q, want %q", got, v3)
	}
}

func TestMisusePanics(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer s.Close()
	for name, f := range map[string]func(){
		"Put without secrets/":    func() { s.Put("projects/p/s", nil) },
		"Put with a version":      func() { s.Put("projects/p/secrets/s/versions/1", nil) },
		"Disable unknown":         func() { s.Disable("projects/p/secrets/nope/versions/1") },
		"CorruptChecksum unknown": func() { s.CorruptChecksum("projects/p/secrets/nope/versions/latest") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil || !strings.HasPrefix(fmt.Sprint(r), "fakesecretmanager: ") {
					t.Errorf("got panic %v, want a fakesecretmanager panic", r)
				}
			}()
			f()
		})
	}
}

// TestConcurrent is for the race detector: tests change the fake while the
// code under test reads from it.
func TestConcurrent(t *testing.T) {
	s, c := setup(t)
	ctx := context.Background()
	const secret = "projects/p/secrets/s"
	s.Put(secret, []byte("0"))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				s.Put(secret, []byte(fmt.Sprint(i, j)))
				if _, err := access(ctx, c, secret+"/versions/latest"); err != nil {
					t.Errorf("AccessSecretVersion: %v", err)
				}
				s.Calls()
			}
		})
	}
	wg.Wait()
	if got, want := s.Calls(), 80; got != want {
		t.Errorf("got %d calls, want %d", got, want)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	s.Close()
	s.Close()
}
