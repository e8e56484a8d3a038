package grpcserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hivemind/hivemind/pkg/audit"
)

// Audit configures the audit trail and the refusal counters.
type Audit struct {
	// Log receives one record per call Method selects and per refused
	// call. Nil: no records (the counters still count).
	Log *audit.Log
	// Method reports whether a call of method is recorded whatever its
	// outcome (mutating and administrative calls). Nil: only refusals.
	Method func(method string) bool
	// Caller names the caller from a call's context ("node:host1",
	// "operator:ops"), or "" when it has no identity.
	Caller func(ctx context.Context) string
}

// auditor records calls as Audit says, and counts refusals by method.
type auditor struct {
	cfg      Audit
	refusals *prometheus.CounterVec
	// known holds the registered methods once Serve starts; a refused
	// call of any other method is counted as "unknown", so made-up method
	// names cannot grow the counter without bound.
	known atomic.Pointer[map[string]bool]
}

func newAuditor(cfg Audit) *auditor {
	return &auditor{cfg: cfg, refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_refusals_total",
		Help: "Calls refused for who made them or how many (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED), by method and gRPC code; before or after the request was read.",
	}, []string{"grpc_method", "grpc_code"})}
}

// refusal reports whether code says the caller, not the call, was the
// problem.
func refusal(code codes.Code) bool {
	return code == codes.Unauthenticated || code == codes.PermissionDenied || code == codes.ResourceExhausted
}

func (a *auditor) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		a.finish(ctx, info.FullMethod, func() string { return resourceOf(req) }, err)
		return resp, err
	}
}

func (a *auditor) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		w := &firstRecv{ServerStream: ss}
		err := handler(srv, w)
		a.finish(ss.Context(), info.FullMethod, func() string { return w.resource }, err)
		return err
	}
}

// firstRecv remembers what a stream's first request named.
type firstRecv struct {
	grpc.ServerStream
	seen     bool
	resource string
}

func (s *firstRecv) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && !s.seen {
		s.seen = true
		s.resource = resourceOf(m)
	}
	return err
}

// finish counts and records a call that reached the handlers.
func (a *auditor) finish(ctx context.Context, method string, resource func() string, err error) {
	code := status.Code(err)
	refused := refusal(code)
	if refused {
		a.refusals.WithLabelValues(a.methodLabel(method), code.String()).Inc()
	}
	if a.cfg.Log == nil || !refused && (a.cfg.Method == nil || !a.cfg.Method(method)) {
		return
	}
	a.write(ctx, method, resource(), code, refused)
}

// tapRefused counts and records a call the tap refused before its request
// was read (bad credential, over its rate). ctx carries the identity when
// the credential was good.
func (a *auditor) tapRefused(ctx context.Context, method string, err error) {
	code := status.Code(err)
	if !refusal(code) {
		return
	}
	a.refusals.WithLabelValues(a.methodLabel(method), code.String()).Inc()
	if a.cfg.Log != nil {
		a.write(ctx, method, "", code, true)
	}
}

func (a *auditor) methodLabel(method string) string {
	if k := a.known.Load(); k != nil && (*k)[method] {
		return method
	}
	return "unknown"
}

func (a *auditor) write(ctx context.Context, method, resource string, code codes.Code, refused bool) {
	r := audit.Record{Method: method, Resource: resource, Code: code.String(), Refused: refused, RequestID: requestID(ctx), Caller: "anonymous"}
	if a.cfg.Caller != nil {
		if c := a.cfg.Caller(ctx); c != "" {
			r.Caller = c
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		r.Peer = p.Addr.String()
	}
	a.cfg.Log.Write(r)
}

// maxRequestID bounds a caller's x-request-id kept in a record.
const maxRequestID = 128

// requestID is the caller's x-request-id, or a random one.
func requestID(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("x-request-id"); len(v) > 0 && v[0] != "" {
			return v[0][:min(len(v[0]), maxRequestID)]
		}
	}
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// resourceFields are the request fields that name what a call is about,
// in the order they are looked for. Values, targets (URLs may carry
// credentials) and secrets are never among them.
var resourceFields = []protoreflect.Name{"key", "prefix", "uri", "name"}

// resourceOf finds the name of what a request is about: a string field
// called key, prefix, uri or name at the top, or in a message one level
// down (an AppendEventRequest's event, a subscription).
func resourceOf(req any) string {
	m, ok := req.(proto.Message)
	if !ok {
		return ""
	}
	return findResource(m.ProtoReflect(), 2)
}

func findResource(m protoreflect.Message, depth int) string {
	fields := m.Descriptor().Fields()
	for _, n := range resourceFields {
		if fd := fields.ByName(n); fd != nil && fd.Kind() == protoreflect.StringKind && !fd.IsList() {
			if v := m.Get(fd).String(); v != "" {
				return v
			}
		}
	}
	if depth <= 1 {
		return ""
	}
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && m.Has(fd) {
			if v := findResource(m.Get(fd).Message(), depth-1); v != "" {
				return v
			}
		}
	}
	return ""
}
