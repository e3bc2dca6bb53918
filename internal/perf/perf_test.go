package perf

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatauth/chatauth/internal/fsemulator"
)

// These tests run the programs' machinery in small, bounded runs and check
// counts only (requests, calls per create, processes left), never times.

var (
	buildOnce sync.Once
	buildDir  string
	bins      Binaries
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if emulator.e != nil {
		emulator.e.Stop()
	}
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func binaries(t *testing.T) Binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and spawns binaries")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "chatauth-perf-test-")
		if buildErr == nil {
			bins, buildErr = BuildBinaries(context.Background(), buildDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

// emulator is the one Firestore emulator the tests share, each run in a
// project of its own (SetupOptions.Emulator); TestMain stops it.
var emulator struct {
	once sync.Once
	e    *fsemulator.Emulator
	err  error
}

// needEmulator returns the shared emulator's address, starting it on first
// use; it skips (fails under CI=true) where the Firestore emulator cannot
// run.
func needEmulator(t *testing.T) string {
	t.Helper()
	if err := fsemulator.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	emulator.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		emulator.e, emulator.err = fsemulator.Start(ctx)
	})
	if emulator.err != nil {
		t.Fatal(emulator.err)
	}
	return emulator.e.Host()
}

// refused reports whether nothing listens on port any more.
func refused(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return true
}

func TestRunLoad(t *testing.T) {
	t.Parallel()
	for _, store := range []string{StoreLocal, StoreFirestore} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			b := binaries(t)
			var host string
			if store == StoreFirestore {
				host = needEmulator(t)
			}
			rep, err := RunLoad(context.Background(), LoadConfig{
				Store: store, Users: 3, Concurrency: 4, Duration: time.Second, Requests: 40, Rounds: 2,
				Dir: t.TempDir(), Bin: b, Emulator: host,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(rep.Samples); got != 4 {
				t.Fatalf("samples: got %d, want 4 (2 rounds × 2 targets)", got)
			}
			for _, s := range rep.Samples {
				if s.Failures != 0 || len(s.Latencies) == 0 {
					t.Errorf("%s: %d ok, %d failed (first: %s)", s.Target, len(s.Latencies), s.Failures, s.FirstFailure)
				}
				if s.ChatPerReq != 1 || s.TokenPerReq != 0 {
					t.Errorf("%s: per create %.3f Chat calls and %.3f token calls, want 1 and 0", s.Target, s.ChatPerReq, s.TokenPerReq)
				}
				switch {
				case store == StoreLocal:
					if s.ReadsPerReq != -1 { // the embedded store is not observable
						t.Errorf("%s: store reads per create %.3f, want -1 (not observable)", s.Target, s.ReadsPerReq)
					}
				case s.Target == TargetFloor:
					if s.ReadsPerReq != 1 {
						t.Errorf("floor: store reads per create %.3f, want 1", s.ReadsPerReq)
					}
				default:
					// At most one; fewer while chatauth's token cache holds
					// the user (tokens.go).
					if s.ReadsPerReq < 0 || s.ReadsPerReq > 1 {
						t.Errorf("%s: store reads per create %.3f, want between 0 and 1", s.Target, s.ReadsPerReq)
					}
				}
			}
			for _, t0 := range []string{TargetProduct, TargetFloor} {
				if rep.Memory[t0].RSS <= 0 {
					t.Errorf("%s: no RSS read", t0)
				}
			}
		})
	}
}

func TestRunColdStart(t *testing.T) {
	t.Parallel()
	for _, store := range []string{StoreLocal, StoreFirestore} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			b := binaries(t)
			var host string
			if store == StoreFirestore {
				host = needEmulator(t)
			}
			rep, err := RunColdStart(context.Background(), ColdConfig{Store: store, Spawns: 2, Interval: 2 * time.Millisecond, Dir: t.TempDir(), Bin: b, Emulator: host})
			if err != nil {
				t.Fatal(err)
			}
			targets := []string{TargetProduct, TargetFloor}
			if store == StoreLocal {
				targets = append(targets, TargetFloorLinked)
			}
			for _, t0 := range targets {
				if got := len(rep.Times[t0]); got != 2 {
					t.Errorf("%s: %d spawns measured, want 2", t0, got)
				}
			}
		})
	}
}

// TestNothingOutlives: a spawned process group is gone after Stop.
func TestNothingOutlives(t *testing.T) {
	t.Parallel()
	b := binaries(t)
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := Spawn(b.FloorLocal, []string{"PORT=" + strconv.Itoa(port), "STORE=local", "DATA_DIR=" + dir}, dir+"/log")
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitListening(context.Background(), "http://127.0.0.1:"+strconv.Itoa(port), p); err != nil {
		p.Stop()
		t.Fatal(err)
	}
	p.Stop()
	if !p.Exited() || !refused(port) {
		t.Errorf("after Stop: exited %v, port %d refused %v; want both", p.Exited(), port, refused(port))
	}
}

// TestFreePortBelowTheEphemeralRange: the port a run binds again and again
// is not one the kernel hands out for a listen on port 0 or a connection.
func TestFreePortBelowTheEphemeralRange(t *testing.T) {
	t.Parallel()
	low := ephemeralLow()
	if low <= fixedPortBase+1000 {
		t.Skipf("the ephemeral range starts at %d: nothing below it to pick from", low)
	}
	for range 20 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if port < fixedPortBase || port >= low {
			t.Fatalf("FreePort: got %d, want one in [%d, %d)", port, fixedPortBase, low)
		}
	}
}

// TestExitedEarlyQuotesTheLog: a spawned process that exits before it
// listens is reported with the end of its log, which the run's temporary
// directory may not outlive.
func TestExitedEarlyQuotesTheLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "fails")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'listen tcp 127.0.0.1:1: bind: address already in use'\nexit 3\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := Spawn(bin, nil, filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	err = WaitListening(context.Background(), "http://127.0.0.1:"+strconv.Itoa(port), p)
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("got %v, want the exit status and the log's last line", err)
	}
}

func TestPercentileAndMedian(t *testing.T) {
	t.Parallel()
	r := &DriveResult{}
	for i := 1; i <= 100; i++ {
		r.Latencies = append(r.Latencies, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}} {
		if got := r.Percentile(tc.p); got != tc.want {
			t.Errorf("p%v: got %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := Median([]time.Duration{3, 1, 2}); got != 2 {
		t.Errorf("median of 3: got %d, want 2", got)
	}
	if got := Median([]time.Duration{4, 1, 3, 2}); got != 2 {
		t.Errorf("median of 4: got %d, want 2 (2.5 truncated)", got)
	}
}
