// Package fakesecretmanager is an in-process gRPC fake of Google Cloud
// Secret Manager. Tests point the real Go client at it with ClientOptions, so
// the code under test keeps its real request building, retries and error
// handling, and only the server side is replaced.
//
// The fake implements AccessSecretVersion only, which is all chatauth reads.
// It answers the way the real service does: the same status codes and
// messages, the resolved version name instead of "latest", and a CRC32C
// (Castagnoli) checksum of the payload that callers are expected to verify.
// Every other method answers codes.Unimplemented.
package fakesecretmanager

import (
	"context"
	"fmt"
	"hash/crc32"
	"net"
	"strconv"
	"strings"
	"sync"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// castagnoli is the CRC32C table; Secret Manager's data_crc32c uses the
// Castagnoli polynomial, not the IEEE one hash/crc32 defaults to.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Server is a running fake. Its methods are safe for concurrent use, so a
// test may change the fake's state while the code under test reads from it.
type Server struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer

	lis    net.Listener
	srv    *grpc.Server
	served chan struct{} // closed when Serve has returned

	mu          sync.Mutex
	secrets     map[string][]*version // secret name → versions; version N is at index N-1
	unavailable bool
	calls       int
}

// version is one stored secret version.
type version struct {
	payload  []byte
	disabled bool
	corrupt  bool // answer with a wrong checksum
}

// Start starts a fake on a free loopback port. Call Close when done, usually
// with t.Cleanup.
func Start() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakesecretmanager: listen: %w", err)
	}
	s := &Server{
		lis:     lis,
		served:  make(chan struct{}),
		secrets: make(map[string][]*version),
	}
	// The interceptor, not each method, applies SetUnavailable, so that
	// every method fails alike, as when the real service is unreachable.
	s.srv = grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	secretmanagerpb.RegisterSecretManagerServiceServer(s.srv, s)
	go func() {
		defer close(s.served)
		// Serve returns only after Stop; its error then is not interesting.
		_ = s.srv.Serve(lis)
	}()
	return s, nil
}

// Addr returns the host:port the fake listens on.
func (s *Server) Addr() string {
	return s.lis.Addr().String()
}

// ClientOptions returns the options that point secretmanager.NewClient at
// the fake: its address, no credentials (the fake checks none, and a test
// must not need Application Default Credentials) and a plaintext connection.
func (s *Server) ClientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(s.Addr()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}
}

// Put adds a new version holding payload to secret, a name of the form
// "projects/P/secrets/S" (or "projects/P/locations/L/secrets/S"), creating
// the secret on first use (the real service needs CreateSecret before
// AddSecretVersion; a test has no use for the difference). It returns the new
// version's name, "projects/P/secrets/S/versions/N", where N counts from 1.
//
// Project ids and numbers are plain strings to the fake: a secret put under
// "projects/123" is not found under "projects/my-project".
//
// Put panics if secret is not a secret name, because that is a mistake in
// the test, not a condition to test.
func (s *Server) Put(secret string, payload []byte) (versionName string) {
	if !validSecretName(secret) {
		panic(fmt.Sprintf("fakesecretmanager: Put(%q): want a secret name of the form projects/P/secrets/S", secret))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[secret] = append(s.secrets[secret], &version{payload: append([]byte(nil), payload...)})
	return secret + "/versions/" + strconv.Itoa(len(s.secrets[secret]))
}

// Disable disables a version, after which accessing it fails with
// codes.FailedPrecondition, as on the real service. versionName may be
// "…/versions/latest", which names the newest version at the time of the call.
//
// As on the real service, "latest" is the most recently created version
// whatever its state: disabling it makes "latest" fail rather than fall back
// to an older enabled version.
//
// Disable panics if the version does not exist, because that is a mistake in
// the test.
func (s *Server) Disable(versionName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustLookup("Disable", versionName).disabled = true
}

// CorruptChecksum makes the fake answer for a version with a data_crc32c
// that does not match the payload, so a test can check that the client
// verifies the checksum instead of trusting the bytes. versionName may end in
// "latest", as for Disable. It panics if the version does not exist.
func (s *Server) CorruptChecksum(versionName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustLookup("CorruptChecksum", versionName).corrupt = true
}

// SetUnavailable makes every call fail with codes.Unavailable while on is
// true, so a test can check that a failure at cold start is retried and not
// remembered.
func (s *Server) SetUnavailable(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unavailable = on
}

// Calls returns how many AccessSecretVersion calls the fake has received,
// including those that failed, so a test can tell a cached secret from one
// read again, and count the client's retries.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Close stops the fake, ending open connections, and waits until it has
// stopped serving. It may be called more than once.
func (s *Server) Close() {
	s.srv.Stop()
	<-s.served
}

// intercept counts AccessSecretVersion calls and, while the fake is set
// unavailable, fails every call before it reaches its method.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.mu.Lock()
	if info.FullMethod == secretmanagerpb.SecretManagerService_AccessSecretVersion_FullMethodName {
		s.calls++
	}
	unavailable := s.unavailable
	s.mu.Unlock()
	if unavailable {
		return nil, status.Error(codes.Unavailable, "The service is currently unavailable.")
	}
	return handler(ctx, req)
}

// AccessSecretVersion implements secretmanagerpb.SecretManagerServiceServer.
// It returns a version's payload with its checksum, and the version's own
// name when the request asked for "latest".
func (s *Server) AccessSecretVersion(_ context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, v, err := s.lookup(req.GetName())
	if err != nil {
		return nil, err
	}
	if v.disabled {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in DISABLED state.", name)
	}
	sum := int64(crc32.Checksum(v.payload, castagnoli))
	if v.corrupt {
		sum ^= 1
	}
	return &secretmanagerpb.AccessSecretVersionResponse{
		Name: name,
		Payload: &secretmanagerpb.SecretPayload{
			Data:       append([]byte(nil), v.payload...),
			DataCrc32C: &sum,
		},
	}, nil
}

// lookup resolves a version name, "latest" included, to the version's own
// name and the version. Its errors are the status errors the real service
// answers with. The caller holds s.mu.
func (s *Server) lookup(versionName string) (string, *version, error) {
	secret, id, ok := strings.Cut(versionName, "/versions/")
	if !ok || !validSecretName(secret) || id == "" {
		return "", nil, status.Error(codes.InvalidArgument, "Invalid resource field value in the request.")
	}
	versions := s.secrets[secret]
	if len(versions) == 0 {
		return "", nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", secret)
	}
	n := len(versions)
	if id != "latest" {
		var err error
		n, err = strconv.Atoi(id)
		if err != nil || n < 1 {
			return "", nil, status.Error(codes.InvalidArgument, "Invalid resource field value in the request.")
		}
		if n > len(versions) {
			return "", nil, status.Errorf(codes.NotFound, "Secret Version [%s] not found.", versionName)
		}
	}
	return secret + "/versions/" + strconv.Itoa(n), versions[n-1], nil
}

// mustLookup is lookup for the test-facing setters, which panic on a name
// that does not resolve. The caller holds s.mu.
func (s *Server) mustLookup(op, versionName string) *version {
	_, v, err := s.lookup(versionName)
	if err != nil {
		panic(fmt.Sprintf("fakesecretmanager: %s(%q): %v", op, versionName, status.Convert(err).Message()))
	}
	return v
}

// validSecretName reports whether name is "projects/P/secrets/S" or
// "projects/P/locations/L/secrets/S" with non-empty segments.
func validSecretName(name string) bool {
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if p == "" {
			return false
		}
	}
	switch len(parts) {
	case 4:
		return parts[0] == "projects" && parts[2] == "secrets"
	case 6:
		return parts[0] == "projects" && parts[2] == "locations" && parts[4] == "secrets"
	}
	return false
}
