package chatauth

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
)

// newLogger writes JSON lines that Cloud Logging reads as structured
// entries: "severity" and "message" instead of slog's "level" and "msg".
func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.LevelKey:
				a.Key = "severity"
				switch l := a.Value.Any().(slog.Level); {
				case l >= slog.LevelError:
					a.Value = slog.StringValue("ERROR")
				case l >= slog.LevelWarn:
					a.Value = slog.StringValue("WARNING")
				case l >= slog.LevelInfo:
					a.Value = slog.StringValue("INFO")
				default:
					a.Value = slog.StringValue("DEBUG")
				}
			case slog.MessageKey:
				a.Key = "message"
			}
			return a
		},
	}))
}

// requestLogger adds the request's trace and execution ids, so Cloud
// Logging groups a request's lines under its trace. The trace comes from
// X-Cloud-Trace-Context (read by the Functions Framework) or W3C
// traceparent; the execution id from the Functions Framework.
func requestLogger(base *slog.Logger, r *http.Request, function, project string) *slog.Logger {
	attrs := []any{"function", function}
	trace := funcframework.TraceIDFromContext(r.Context())
	if trace == "" {
		trace = traceparentID(r.Header.Get("traceparent"))
	}
	if trace != "" {
		if project != "" {
			trace = "projects/" + project + "/traces/" + trace
		}
		attrs = append(attrs, "logging.googleapis.com/trace", trace)
	}
	if id := funcframework.ExecutionIDFromContext(r.Context()); id != "" {
		// A group, not a map: the same JSON without encoding/json's
		// reflection on every request (BENCHMARKS.md).
		attrs = append(attrs, slog.Group("logging.googleapis.com/labels", slog.String("execution_id", id)))
	}
	return base.With(attrs...)
}

// traceparentID returns the trace id of a W3C traceparent header
// ("00-<32 hex>-<16 hex>-<2 hex>"), or "" when it is malformed.
func traceparentID(h string) string {
	parts := strings.Split(h, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || !isHex(parts[1]) {
		return ""
	}
	return parts[1]
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

type loggerKey struct{}

func withLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// loggerFrom returns the request's logger.
func loggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
