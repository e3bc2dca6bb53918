package perf

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Hard bounds of one drive, whatever the flags say.
const (
	MaxConcurrency = 256
	MaxDuration    = 2 * time.Minute
	MaxRequests    = 1_000_000
)

// Caller signs and sends CreateSpace requests as an HMAC webhook caller
// (README.md, "Caller authentication": X-Signature), for users by id ("users/{sub}"), with display
// names unique per Caller so that the fake Chat API never answers 409.
type Caller struct {
	Secret string
	Subs   []string
	Tag    string // prefixes display names; make it unique per run
	n      atomic.Int64
}

// NewRequest returns the next signed request to base/CreateSpace.
func (c *Caller) NewRequest(ctx context.Context, base string) (*http.Request, error) {
	n := c.n.Add(1)
	sub := c.Subs[int(n)%len(c.Subs)]
	body := []byte(`{"user":"users/` + sub + `","displayName":"` + c.Tag + ` ` + strconv.FormatInt(n, 10) + `"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/CreateSpace", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Signature", Sign(c.Secret, time.Now(), body))
	return req, nil
}

// Sign is the X-Signature of body at t under secret.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// DriveOptions bound one drive; it ends at Duration or after Requests
// requests, whichever comes first.
type DriveOptions struct {
	Concurrency int
	Duration    time.Duration
	Requests    int // 0: no count bound
}

// DriveResult is what one drive measured.
type DriveResult struct {
	Requests     int
	Failures     int
	FirstFailure string
	Elapsed      time.Duration
	Latencies    []time.Duration // successful requests, sorted
}

// RPS is successful requests per second.
func (r *DriveResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Elapsed.Seconds()
}

// Percentile is the p-th percentile (0 < p ≤ 100) of the latencies, by
// the nearest-rank method.
func (r *DriveResult) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(r.Latencies)))) - 1
	return r.Latencies[max(0, min(i, len(r.Latencies)-1))]
}

// Drive sends CreateSpace requests to base from o.Concurrency workers over
// persistent connections, as the Functions front end does, and measures
// each request's latency.
func Drive(ctx context.Context, base string, c *Caller, o DriveOptions) (*DriveResult, error) {
	if o.Concurrency < 1 || o.Concurrency > MaxConcurrency {
		return nil, fmt.Errorf("perf: concurrency %d is outside 1..%d", o.Concurrency, MaxConcurrency)
	}
	if o.Duration <= 0 || o.Duration > MaxDuration {
		return nil, fmt.Errorf("perf: duration %s is outside (0, %s]", o.Duration, MaxDuration)
	}
	if o.Requests < 0 || o.Requests > MaxRequests {
		return nil, fmt.Errorf("perf: requests %d is outside 0..%d", o.Requests, MaxRequests)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConnsPerHost = o.Concurrency
	t.MaxConnsPerHost = o.Concurrency
	defer t.CloseIdleConnections()
	client := &http.Client{Transport: t, Timeout: 30 * time.Second}

	// Requests in flight at the deadline finish, so that every call the
	// fakes counted belongs to a request counted here.
	deadline := time.Now().Add(o.Duration)
	var (
		tickets   atomic.Int64
		mu        sync.Mutex
		res       = &DriveResult{}
		wg        sync.WaitGroup
		perWorker = make([][]time.Duration, o.Concurrency)
	)
	start := time.Now()
	for w := range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			defer func() { perWorker[w] = lat }()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if o.Requests > 0 && tickets.Add(1) > int64(o.Requests) {
					return
				}
				req, err := c.NewRequest(ctx, base)
				if err != nil {
					return
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() != nil {
						return // interrupted: not a failure
					}
					mu.Lock()
					res.Failures++
					if res.FirstFailure == "" {
						res.FirstFailure = err.Error()
					}
					mu.Unlock()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				d := time.Since(t0)
				if resp.StatusCode != http.StatusOK {
					mu.Lock()
					res.Failures++
					if res.FirstFailure == "" {
						res.FirstFailure = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
					}
					mu.Unlock()
					continue
				}
				lat = append(lat, d)
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	for _, l := range perWorker {
		res.Latencies = append(res.Latencies, l...)
	}
	slices.Sort(res.Latencies)
	res.Requests = len(res.Latencies) + res.Failures
	return res, nil
}

// FirstAnswer spawns bin and measures spawn → first successful answer to a
// CreateSpace sent on a fresh connection every interval: the cold start as
// a caller sees it. The process is left running; the caller stops it.
func FirstAnswer(ctx context.Context, bin string, env []string, logPath, base string, c *Caller, interval time.Duration) (time.Duration, *Process, error) {
	client := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		Timeout:   30 * time.Second,
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	p, err := Spawn(bin, env, logPath)
	if err != nil {
		return 0, nil, err
	}
	for {
		req, err := c.NewRequest(ctx, base)
		if err != nil {
			p.Stop()
			return 0, nil, err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusOK:
				return time.Since(start), p, nil
			case resp.StatusCode < 500:
				p.Stop()
				return 0, nil, fmt.Errorf("perf: first answer %d: %s", resp.StatusCode, bytes.TrimSpace(body))
			}
		}
		if p.Exited() {
			return 0, nil, p.exitedEarly("answering")
		}
		select {
		case <-ctx.Done():
			p.Stop()
			return 0, nil, fmt.Errorf("perf: no answer from %s: %w", base, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// Median of ds (which it sorts).
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	if len(ds)%2 == 1 {
		return ds[len(ds)/2]
	}
	return (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
}
