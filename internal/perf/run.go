package perf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Binaries are the programs measured side by side.
type Binaries struct {
	// Runner is cmd/local built with -tags nodemo, as a deployed function
	// links it; RunnerLocal the same built with -tags nodemo,localonly,
	// without Google's gRPC clients (Firestore, Secret Manager, Cloud KMS),
	// the runner of the embedded-store setup.
	Runner, RunnerLocal string
	// Floor is internal/perf/floor; FloorLocal the same built with
	// -tags localonly, without the Firestore client, the floor of the
	// embedded-store setup.
	Floor, FloorLocal string
}

// runner is the runner binary for store.
func (b Binaries) runner(store string) string {
	if store == StoreLocal {
		return b.RunnerLocal
	}
	return b.Runner
}

// floor is the floor binary for store.
func (b Binaries) floor(store string) string {
	if store == StoreLocal {
		return b.FloorLocal
	}
	return b.Floor
}

// BuildBinaries builds the runner and the floor, each in both builds,
// into dir/bin.
func BuildBinaries(ctx context.Context, dir string) (Binaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	dir = filepath.Join(dir, "bin")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Binaries{}, err
	}
	var b Binaries
	// The runner leaves out the demo's fake Google: it then links what a
	// deployed function links, or, local-only, what a runner on the
	// embedded store needs.
	if b.Runner, err = Build(ctx, root, "./cmd/local", dir, "-tags", "nodemo"); err != nil {
		return b, err
	}
	if b.RunnerLocal, err = Build(ctx, root, "./cmd/local", dir, "-tags", "nodemo,localonly"); err != nil {
		return b, err
	}
	if b.Floor, err = Build(ctx, root, "./internal/perf/floor", dir); err != nil {
		return b, err
	}
	if b.FloorLocal, err = Build(ctx, root, "./internal/perf/floor", dir, "-tags", "localonly"); err != nil {
		return b, err
	}
	return b, nil
}

// LoadConfig is one load run.
type LoadConfig struct {
	Store       string
	Users       int
	Concurrency int
	Duration    time.Duration // per round and target
	Requests    int           // per round and target; 0: bounded by Duration only
	Warmup      time.Duration // per target, before the rounds
	Rounds      int
	Dir         string // a fresh work directory
	Emulator    string // a running Firestore emulator to share (SetupOptions.Emulator); empty: start one
	Bin         Binaries
	// Progress, when set, receives a line per finished step.
	Progress func(format string, args ...any)
}

// Sample is what one target did in one round.
type Sample struct {
	Target string // "chatauth" or "floor"
	*DriveResult
	// Per successful request: calls the fake Chat API and token endpoint
	// saw, and store reads at the Firestore wire (-1: not observable, the
	// embedded store is read inside the process).
	ChatPerReq, TokenPerReq, ReadsPerReq float64
	// CPUPerReq is the CPU time (user and system) the target's process
	// spent per successful request: a steadier comparison than requests/s
	// on a machine whose CPUs the load generator and the fakes share.
	CPUPerReq time.Duration
}

// LoadReport is a whole load run.
type LoadReport struct {
	Config  LoadConfig
	Samples []Sample
	// Memory of each process after the rounds, and how many creates it had
	// served by then (warm-up and seeding included).
	Memory  map[string]Memory
	Creates map[string]int
}

// Target names.
const (
	TargetProduct = "chatauth"
	TargetFloor   = "floor"
	// TargetFloorLinked is, in the embedded-store setup, the floor built
	// with the Firestore client linked in, as the full build of chatauth
	// links it, though it reads bbolt: against the floor it shows what
	// linking that client costs a cold start, which chatauth's local-only
	// build (Binaries.RunnerLocal) does not pay.
	TargetFloorLinked = "floor+grpc"
)

// RunLoad spawns the runner and the floor built for one store setup
// (Binaries) against that setup, seeds them, warms them up and then drives
// both in alternating rounds.
func RunLoad(ctx context.Context, c LoadConfig) (*LoadReport, error) {
	progress := c.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	if c.Rounds < 1 {
		c.Rounds = 1
	}
	s, err := NewSetup(ctx, SetupOptions{Store: c.Store, Dir: c.Dir, Users: c.Users, CountReads: true, Emulator: c.Emulator})
	if err != nil {
		return nil, err
	}
	defer s.Close()

	product, err := Spawn(c.Bin.runner(c.Store), s.ProductEnv(), filepath.Join(c.Dir, "runner.log"))
	if err != nil {
		return nil, err
	}
	defer product.Stop()
	if err := WaitListening(ctx, s.ProductURL(), product); err != nil {
		return nil, err
	}
	if err := s.SeedProduct(ctx); err != nil {
		return nil, err
	}
	if err := s.SeedFloor(ctx); err != nil {
		return nil, err
	}
	floor, err := Spawn(c.Bin.floor(c.Store), s.FloorEnv(), filepath.Join(c.Dir, "floor.log"))
	if err != nil {
		return nil, err
	}
	defer floor.Stop()
	if err := WaitListening(ctx, s.FloorURL(), floor); err != nil {
		return nil, err
	}
	progress("seeded %d users; warming up", len(s.Users))

	subs := make([]string, len(s.Users))
	for i, u := range s.Users {
		subs[i] = u.Sub
	}
	targets := map[string]string{TargetProduct: s.ProductURL(), TargetFloor: s.FloorURL()}
	procs := map[string]*Process{TargetProduct: product, TargetFloor: floor}
	rep := &LoadReport{Config: c, Memory: map[string]Memory{}, Creates: map[string]int{}}
	seq := 0
	drive := func(target string, o DriveOptions) (*DriveResult, error) {
		seq++
		caller := &Caller{Secret: s.Secret, Subs: subs, Tag: fmt.Sprintf("%s r%d", target, seq)}
		res, err := Drive(ctx, targets[target], caller, o)
		if err == nil {
			rep.Creates[target] += len(res.Latencies)
		}
		return res, err
	}
	for _, t := range []string{TargetProduct, TargetFloor} {
		if c.Warmup > 0 {
			if _, err := drive(t, DriveOptions{Concurrency: c.Concurrency, Duration: c.Warmup}); err != nil {
				return nil, err
			}
		}
	}
	for r := range c.Rounds {
		order := []string{TargetProduct, TargetFloor}
		if r%2 == 1 {
			order = []string{TargetFloor, TargetProduct}
		}
		for _, t := range order {
			chat0, tok0, reads0 := s.Google.TotalChatCalls(), s.Google.TokenCalls(), s.reads()
			cpu0, err := ReadCPU(procs[t].Pid())
			if err != nil {
				return nil, err
			}
			res, err := drive(t, DriveOptions{Concurrency: c.Concurrency, Duration: c.Duration, Requests: c.Requests})
			if err != nil {
				return nil, err
			}
			cpu1, err := ReadCPU(procs[t].Pid())
			if err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			ok := float64(len(res.Latencies))
			sm := Sample{Target: t, DriveResult: res, ReadsPerReq: -1}
			if ok > 0 {
				sm.ChatPerReq = float64(s.Google.TotalChatCalls()-chat0) / ok
				sm.TokenPerReq = float64(s.Google.TokenCalls()-tok0) / ok
				if reads0 >= 0 {
					sm.ReadsPerReq = float64(s.reads()-reads0) / ok
				}
				sm.CPUPerReq = (cpu1 - cpu0) / time.Duration(len(res.Latencies))
			}
			rep.Samples = append(rep.Samples, sm)
			progress("round %d %-8s %8.0f req/s  p50 %-10s p99 %-10s CPU/create %-9s failures %d", r+1, t, res.RPS(), res.Percentile(50), res.Percentile(99), sm.CPUPerReq, res.Failures)
		}
	}
	for t, p := range procs {
		m, err := ReadMemory(p.Pid())
		if err != nil {
			return nil, err
		}
		rep.Memory[t] = m
	}
	return rep, nil
}

// reads is the Firestore read count so far, or -1 without a proxy.
func (s *Setup) reads() int64 {
	if s.Proxy == nil {
		return -1
	}
	return s.Proxy.Reads()
}

// ColdConfig is one cold-start run.
type ColdConfig struct {
	Store    string
	Spawns   int           // per target
	Interval time.Duration // between polls
	Dir      string
	Emulator string // a running Firestore emulator to share (SetupOptions.Emulator); empty: start one
	Bin      Binaries
	Progress func(format string, args ...any)
}

// ColdReport holds every spawn → first answered CreateSpace, per target,
// and the resident set at that moment.
type ColdReport struct {
	Config ColdConfig
	Times  map[string][]time.Duration
	Memory map[string][]Memory
}

// RunColdStart seeds one store setup, then spawns the runner and the floor
// built for it (Binaries) in alternation, measuring each spawn → first
// answered CreateSpace. One unmeasured spawn of each comes first, so all
// binaries are in the page cache alike.
func RunColdStart(ctx context.Context, c ColdConfig) (*ColdReport, error) {
	progress := c.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	s, err := NewSetup(ctx, SetupOptions{Store: c.Store, Dir: c.Dir, Users: 1, Emulator: c.Emulator})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	p, err := Spawn(c.Bin.runner(c.Store), s.ProductEnv(), filepath.Join(c.Dir, "seed.log"))
	if err != nil {
		return nil, err
	}
	err = WaitListening(ctx, s.ProductURL(), p)
	if err == nil {
		err = s.SeedProduct(ctx)
	}
	p.Stop()
	if err != nil {
		return nil, err
	}
	if err := s.SeedFloor(ctx); err != nil {
		return nil, err
	}
	progress("%s: seeded", c.Store)

	caller := &Caller{Secret: s.Secret, Subs: []string{s.Users[0].Sub}, Tag: "cold " + c.Store}
	type target struct {
		name, bin, base, log string
		env                  []string
	}
	targets := []target{
		{TargetProduct, c.Bin.runner(c.Store), s.ProductURL(), filepath.Join(c.Dir, "runner.log"), s.ProductEnv()},
		{TargetFloor, c.Bin.floor(c.Store), s.FloorURL(), filepath.Join(c.Dir, "floor.log"), s.FloorEnv()},
	}
	if c.Store == StoreLocal {
		targets = append(targets, target{TargetFloorLinked, c.Bin.Floor, s.FloorURL(), filepath.Join(c.Dir, "floor-linked.log"), s.FloorEnv()})
	}
	rep := &ColdReport{Config: c, Times: map[string][]time.Duration{}, Memory: map[string][]Memory{}}
	for i := -1; i < c.Spawns; i++ {
		// The order rotates, so no target always follows the same one.
		order := append(slices.Clone(targets[i%len(targets)+1:]), targets[:i%len(targets)+1]...)
		if i < 0 {
			order = targets
		}
		for _, t := range order {
			d, p, err := FirstAnswer(ctx, t.bin, t.env, t.log, t.base, caller, c.Interval)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			m, _ := ReadMemory(p.Pid())
			p.Stop()
			if i < 0 {
				continue // the page-cache warm-up
			}
			rep.Times[t.name] = append(rep.Times[t.name], d)
			rep.Memory[t.name] = append(rep.Memory[t.name], m)
		}
		if i >= 0 {
			progress("%s: spawn %d/%d: chatauth %s, floor %s", c.Store, i+1, c.Spawns, rep.Times[TargetProduct][i], rep.Times[TargetFloor][i])
		}
	}
	return rep, nil
}

// TempDir makes a work directory for a run.
func TempDir(name string) (string, error) {
	return os.MkdirTemp("", "chatauth-"+name+"-")
}

// Summary is one target's figures over the rounds: the median round's
// throughput and latencies, and counts per create over all rounds.
type Summary struct {
	RPS                                  float64
	P50, P99                             time.Duration
	Failures                             int
	ChatPerReq, TokenPerReq, ReadsPerReq float64
	CPUPerReq                            time.Duration // median of the rounds
}

// Summarize takes, per target, the median over the rounds of requests/s,
// p50 and p99, and the mean per-create counts weighted by requests.
func Summarize(rep *LoadReport) map[string]Summary {
	out := map[string]Summary{}
	for _, t := range []string{TargetProduct, TargetFloor} {
		var rps []float64
		var p50, p99, cpu []time.Duration
		var s Summary
		var ok float64
		for _, sm := range rep.Samples {
			if sm.Target != t {
				continue
			}
			rps = append(rps, sm.RPS())
			p50 = append(p50, sm.Percentile(50))
			p99 = append(p99, sm.Percentile(99))
			cpu = append(cpu, sm.CPUPerReq)
			s.Failures += sm.Failures
			n := float64(len(sm.Latencies))
			ok += n
			s.ChatPerReq += sm.ChatPerReq * n
			s.TokenPerReq += sm.TokenPerReq * n
			s.ReadsPerReq += sm.ReadsPerReq * n
		}
		if ok > 0 {
			s.ChatPerReq /= ok
			s.TokenPerReq /= ok
			s.ReadsPerReq /= ok
		}
		slices.Sort(rps)
		if len(rps) > 0 {
			s.RPS = rps[len(rps)/2]
		}
		s.P50, s.P99, s.CPUPerReq = Median(p50), Median(p99), Median(cpu)
		out[t] = s
	}
	return out
}
