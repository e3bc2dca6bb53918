// Command coldstart measures chatauth's cold start against the floor: it
// builds the local runner (cmd/local) and the floor (internal/perf/floor),
// seeds one user, then spawns each binary again and again, alternating,
// and reports spawn → first answered CreateSpace (polled on a fresh
// connection every few milliseconds), as the median of the spawns and as a
// ratio to the floor's median.
//
// Each setup gets the builds that serve it: for "local" the runner built
// with -tags nodemo,localonly and the floor with -tags localonly, neither
// linking the Firestore client; for "firestore" the runner with -tags
// nodemo, as a deployed function links it, and the floor without tags.
// The "local" setup also spawns floor+grpc, the floor with the Firestore
// client linked though it reads bbolt: what linking that client costs.
//
//	go run ./cmd/coldstart                  # both store setups, 15 spawns each
//	go run ./cmd/coldstart -store local -spawns 21
//
// Store setups: "local" is the embedded store with secrets in files;
// "firestore" is the Firestore emulator (gcloud and Java needed) with the
// secrets in the fake Secret Manager. Everything runs on 127.0.0.1; every
// process started is killed before the program exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/chatauth/chatauth/internal/perf"
)

func main() {
	store := flag.String("store", "both", "store setup: local, firestore or both")
	spawns := flag.Int("spawns", 15, "spawns per binary and store setup (10..101)")
	interval := flag.Duration("interval", 2*time.Millisecond, "poll interval (1ms..20ms)")
	keep := flag.Bool("keep", false, "keep the work directory (binaries, logs) and print its path, for profiling")
	flag.Parse()
	if *spawns < 10 || *spawns > 101 {
		fail(fmt.Errorf("-spawns %d: want 10..101", *spawns))
	}
	if *interval < time.Millisecond || *interval > 20*time.Millisecond {
		fail(fmt.Errorf("-interval %s: want 1ms..20ms", *interval))
	}
	stores := []string{perf.StoreLocal, perf.StoreFirestore}
	switch *store {
	case "both":
	case perf.StoreLocal, perf.StoreFirestore:
		stores = []string{*store}
	default:
		fail(fmt.Errorf("-store %q: want local, firestore or both", *store))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stores, *spawns, *interval, *keep); err != nil {
		stop()
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "coldstart:", err)
	os.Exit(1)
}

func run(ctx context.Context, stores []string, spawns int, interval time.Duration, keep bool) error {
	dir, err := perf.TempDir("coldstart")
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Fprintln(os.Stderr, "work directory kept:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin, err := perf.BuildBinaries(ctx, dir)
	if err != nil {
		return err
	}
	progress := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	var reports []*perf.ColdReport
	for _, st := range stores {
		work, err := os.MkdirTemp(dir, st+"-")
		if err != nil {
			return err
		}
		rep, err := perf.RunColdStart(ctx, perf.ColdConfig{Store: st, Spawns: spawns, Interval: interval, Dir: work, Bin: bin, Progress: progress})
		if err != nil {
			return fmt.Errorf("%s: %w", st, err)
		}
		reports = append(reports, rep)
	}

	fmt.Printf("\ncold start: spawn → first answered CreateSpace, %d spawns each, polled every %s\n", spawns, interval)
	fmt.Printf("machine: %s\n\n", perf.Machine())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "store\ttarget\tmedian\tmin\tmax\tRSS at answer\tratio to floor\t")
	for _, rep := range reports {
		floor := perf.Median(slices.Clone(rep.Times[perf.TargetFloor]))
		for _, t := range []string{perf.TargetProduct, perf.TargetFloor, perf.TargetFloorLinked} {
			if len(rep.Times[t]) == 0 {
				continue
			}
			ts := slices.Clone(rep.Times[t])
			med := perf.Median(ts)
			var rss []int64
			for _, m := range rep.Memory[t] {
				rss = append(rss, m.RSS)
			}
			slices.Sort(rss)
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.1f MiB\t%.2f×\t\n", rep.Config.Store, t,
				ms(med), ms(ts[0]), ms(ts[len(ts)-1]), float64(rss[len(rss)/2])/(1<<20), float64(med)/float64(floor))
		}
	}
	w.Flush()
	for _, rep := range reports {
		if linked := rep.Times[perf.TargetFloorLinked]; len(linked) > 0 {
			fmt.Printf("\n%s: %s (the floor with the Firestore client linked, as chatauth's full build links it) is %.2f× the floor:\n"+
				"what linking that client costs a cold start; chatauth's local-only build, measured here, does not link it.\n",
				rep.Config.Store, perf.TargetFloorLinked, float64(perf.Median(slices.Clone(linked)))/float64(perf.Median(slices.Clone(rep.Times[perf.TargetFloor]))))
		}
	}
	fmt.Printf("\ntarget: chatauth ≤ 1.5× the floor in both store setups (Go %s)\n", runtime.Version())
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
