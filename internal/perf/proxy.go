package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// CountingProxy is a transparent gRPC proxy on loopback that counts the
// calls passing through it by method. Put in front of the Firestore
// emulator (FIRESTORE_EMULATOR_HOST=proxy.Addr()), it counts a process's
// store round trips from outside the process, at the wire, for chatauth and
// the floor alike. Messages are forwarded as raw bytes and never decoded.
type CountingProxy struct {
	lis     net.Listener
	srv     *grpc.Server
	backend *grpc.ClientConn

	mu     sync.Mutex
	counts map[string]int64
}

// StartCountingProxy proxies a free loopback port to backend (host:port).
func StartCountingProxy(backend string) (*CountingProxy, error) {
	conn, err := grpc.NewClient(backend, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("perf: proxy dial %s: %w", backend, err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("perf: proxy listen: %w", err)
	}
	p := &CountingProxy{lis: lis, backend: conn, counts: map[string]int64{}}
	p.srv = grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(p.forward))
	go p.srv.Serve(lis)
	return p, nil
}

// Addr is the proxy's host:port.
func (p *CountingProxy) Addr() string { return p.lis.Addr().String() }

// Close stops the proxy and its connection to the backend.
func (p *CountingProxy) Close() {
	p.srv.Stop()
	p.backend.Close()
}

// Counts returns the calls so far by full method name
// ("/google.firestore.v1.Firestore/BatchGetDocuments").
func (p *CountingProxy) Counts() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.counts)
}

// firestoreReads are the Firestore methods that read documents.
var firestoreReads = []string{"BatchGetDocuments", "GetDocument", "RunQuery", "RunAggregationQuery", "ListDocuments"}

// Reads counts the Firestore calls that read documents, transactional
// reads included.
func (p *CountingProxy) Reads() int64 {
	var n int64
	for m, c := range p.Counts() {
		for _, r := range firestoreReads {
			if strings.HasSuffix(m, "/"+r) {
				n += c
			}
		}
	}
	return n
}

// Writes counts Commit calls (every write and every transaction's end).
func (p *CountingProxy) Writes() int64 {
	var n int64
	for m, c := range p.Counts() {
		if strings.HasSuffix(m, "/Commit") {
			n += c
		}
	}
	return n
}

// forward relays one call of any kind (unary or streaming) to the backend.
func (p *CountingProxy) forward(_ any, in grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(in)
	if !ok {
		return errors.New("perf: proxy: no method")
	}
	p.mu.Lock()
	p.counts[method]++
	p.mu.Unlock()

	ctx, cancel := context.WithCancel(in.Context())
	defer cancel()
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, md.Copy())
	out, err := p.backend.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	// Client → backend, until the client half-closes.
	upErr := make(chan error, 1)
	go func() {
		for {
			var f frame
			if err := in.RecvMsg(&f); err != nil {
				if errors.Is(err, io.EOF) {
					upErr <- out.CloseSend()
					return
				}
				upErr <- err
				return
			}
			if err := out.SendMsg(&f); err != nil {
				upErr <- err
				return
			}
		}
	}()
	// Backend → client, until the backend ends the call.
	first := true
	for {
		var f frame
		err := out.RecvMsg(&f)
		if first {
			first = false
			if h, herr := out.Header(); herr == nil {
				in.SetHeader(h)
			}
		}
		if errors.Is(err, io.EOF) {
			in.SetTrailer(out.Trailer())
			return nil
		}
		if err != nil {
			in.SetTrailer(out.Trailer())
			return err // a status error passes through unchanged
		}
		if err := in.SendMsg(&f); err != nil {
			return err
		}
		select {
		case err := <-upErr:
			if err != nil {
				return err
			}
			upErr = nil // the client is done sending; keep relaying
		default:
		}
	}
}

// frame is one message's raw bytes.
type frame struct{ b []byte }

// rawCodec passes message bytes through without decoding them.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("perf: raw codec: unexpected %T", v)
	}
	return f.b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("perf: raw codec: unexpected %T", v)
	}
	f.b = append(f.b[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }
