// Command loadtest measures chatauth's warm CreateSpace path against the
// floor: it builds the local runner (cmd/local) and the floor
// (internal/perf/floor), starts both against the same fakes (fake Google in
// this process; for -store firestore also the Firestore emulator behind a
// counting proxy and the fake Secret Manager), connects the users through
// chatauth's own consent flow, warms both up, and then drives signed
// CreateSpace requests at them in alternating rounds.
//
// It prints requests/s, p50 and p99 latency, the resident set of each
// process after the rounds, and per successful create the Chat API calls
// and token-endpoint calls the fake Google saw and the store reads the
// Firestore proxy saw — each as a ratio to the floor.
//
//	go run ./cmd/loadtest                          # embedded store, 16 concurrent, 3 rounds of 10 s
//	go run ./cmd/loadtest -store firestore -c 16 -d 10s
//
// As in cmd/coldstart, each setup gets the builds that serve it: for
// -store local the runner built with -tags nodemo,localonly and the floor
// with -tags localonly; for -store firestore the runner with -tags nodemo
// and the floor without tags.
//
// Every request goes to 127.0.0.1; the run is bounded (-c ≤ 256, -d ≤ 2m,
// -rounds ≤ 10) and every process it started is killed before it exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/chatauth/chatauth/internal/perf"
)

func main() {
	store := flag.String("store", perf.StoreLocal, "store setup: local (embedded store, file secrets) or firestore (emulator, fake Secret Manager)")
	c := flag.Int("c", 16, "concurrent callers (1..256)")
	d := flag.Duration("d", 10*time.Second, "duration of each round and target (≤ 2m)")
	n := flag.Int("n", 0, "requests per round and target (0: bounded by -d only)")
	rounds := flag.Int("rounds", 3, "rounds; each drives chatauth and the floor once, alternating which goes first (1..10)")
	warmup := flag.Duration("warmup", 2*time.Second, "warm-up per target before the rounds (≤ 30s)")
	users := flag.Int("users", 16, "users to connect (1..1000)")
	keep := flag.Bool("keep", false, "keep the work directory (binaries, logs) and print its path, for profiling")
	flag.Parse()
	switch {
	case *store != perf.StoreLocal && *store != perf.StoreFirestore:
		fail(fmt.Errorf("-store %q: want local or firestore", *store))
	case *c < 1 || *c > perf.MaxConcurrency:
		fail(fmt.Errorf("-c %d: want 1..%d", *c, perf.MaxConcurrency))
	case *d <= 0 || *d > perf.MaxDuration:
		fail(fmt.Errorf("-d %s: want up to %s", *d, perf.MaxDuration))
	case *n < 0 || *n > perf.MaxRequests:
		fail(fmt.Errorf("-n %d: want 0..%d", *n, perf.MaxRequests))
	case *rounds < 1 || *rounds > 10:
		fail(fmt.Errorf("-rounds %d: want 1..10", *rounds))
	case *warmup < 0 || *warmup > 30*time.Second:
		fail(fmt.Errorf("-warmup %s: want up to 30s", *warmup))
	case *users < 1 || *users > 1000:
		fail(fmt.Errorf("-users %d: want 1..1000", *users))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := perf.LoadConfig{Store: *store, Users: *users, Concurrency: *c, Duration: *d, Requests: *n, Warmup: *warmup, Rounds: *rounds}
	if err := run(ctx, cfg, *keep); err != nil {
		stop()
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loadtest:", err)
	os.Exit(1)
}

func run(ctx context.Context, cfg perf.LoadConfig, keep bool) error {
	dir, err := perf.TempDir("loadtest")
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Fprintln(os.Stderr, "work directory kept:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if cfg.Bin, err = perf.BuildBinaries(ctx, dir); err != nil {
		return err
	}
	cfg.Dir = dir
	cfg.Progress = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	rep, err := perf.RunLoad(ctx, cfg)
	if err != nil {
		return err
	}
	sum := perf.Summarize(rep)

	fmt.Printf("\nwarm CreateSpace, store %s, %d concurrent callers, %d users, %d rounds of %s per target\n",
		cfg.Store, cfg.Concurrency, cfg.Users, cfg.Rounds, cfg.Duration)
	fmt.Printf("machine: %s\n\n", perf.Machine())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "target\treq/s\tp50\tp99\tCPU/create\tfailed\tChat calls/create\ttoken calls/create\tstore reads/create\tRSS\tpeak RSS\tcreates served\t")
	for _, t := range []string{perf.TargetProduct, perf.TargetFloor} {
		s := sum[t]
		reads := "n/a (in process)"
		if s.ReadsPerReq >= 0 {
			reads = fmt.Sprintf("%.3f", s.ReadsPerReq)
		}
		m := rep.Memory[t]
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%s\t%d\t%.3f\t%.3f\t%s\t%.1f MiB\t%.1f MiB\t%d\t\n", t, s.RPS, s.P50, s.P99, s.CPUPerReq, s.Failures,
			s.ChatPerReq, s.TokenPerReq, reads, mib(m.RSS), mib(m.Peak), rep.Creates[t])
	}
	w.Flush()
	p, f := sum[perf.TargetProduct], sum[perf.TargetFloor]
	fmt.Printf("\nratios to the floor (medians of the rounds): throughput %.2f× (target ≥ 0.70), p99 %.2f× (target ≤ 2.00), p50 %.2f×, CPU per create %.2f×\n",
		p.RPS/f.RPS, float64(p.P99)/float64(f.P99), float64(p.P50)/float64(f.P50), float64(p.CPUPerReq)/float64(f.CPUPerReq))
	fmt.Printf("targets per warm create: 1 Chat call, 0 token calls, ≤ 1 store read; RSS ≤ 40 MiB after 10,000 creates\n")
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
