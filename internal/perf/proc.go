// Package perf holds what chatauth's performance programs (cmd/loadtest,
// cmd/coldstart) share: building and spawning the local runner and the
// floor (internal/perf/floor) as processes of their own, hosting the fakes
// they talk to (fake Google, fake Secret Manager, the Firestore emulator
// behind a counting proxy), seeding users, driving signed CreateSpace
// requests, and summarising what was measured.
//
// Everything listens on 127.0.0.1 only, every run is bounded in time and
// size, and every process started here runs in a process group of its own
// that is killed when the run ends (or when the parent dies, through
// Pdeathsig), so nothing outlives a program.
package perf

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Build compiles the main package pkg (an import path or ./dir, relative to
// the module root modDir) with the go build flags given into dir and
// returns the binary's path. It builds with go run, which keeps the
// executable in the build cache (go build would link it again every time),
// and -exec cp, which copies it out instead of running it. The program is
// the same; go run leaves out DWARF, which a running program never reads.
func Build(ctx context.Context, modDir, pkg, dir string, flags ...string) (string, error) {
	name := filepath.Base(pkg)
	for _, f := range flags {
		if !strings.HasPrefix(f, "-") {
			name += "-" + f // the tags, say, not the flags' names
		}
	}
	out := filepath.Join(dir, name)
	args := append(append([]string{"run", "-exec", "cp"}, flags...), pkg, out)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = modDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("perf: go run -exec cp %s: %w\n%s", pkg, err, stderr.String())
	}
	return out, nil
}

// ModuleRoot finds the directory holding go.mod, from the working directory
// up, so the programs run from anywhere inside the repository.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("perf: no go.mod above the working directory; run from inside the repository")
		}
		dir = parent
	}
}

// Process is a spawned binary in a process group of its own.
type Process struct {
	cmd  *exec.Cmd
	log  string // the file its output is appended to
	done chan struct{}
	err  error
}

// Spawn starts bin with exactly env (nothing is inherited but PATH and
// HOME), its output appended to logPath.
func Spawn(bin string, env []string, logPath string) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Stdout, cmd.Stderr = log, log
	// Setpgid lets Stop kill the whole group; Pdeathsig kills the child if
	// this program dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf: start %s: %w", bin, err)
	}
	p := &Process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exitedEarly is the error for a process that exited before it did what
// was awaited (before): it quotes the end of the process's log, which
// the caller's temporary directory may not outlive.
func (p *Process) exitedEarly(before string) error {
	<-p.done
	tail := "(no log)"
	if b, err := os.ReadFile(p.log); err == nil {
		tail = string(b[max(0, len(b)-2048):])
	}
	return fmt.Errorf("perf: the process exited (%v) before %s; the end of %s:\n%s", p.err, before, p.log, tail)
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process group: SIGTERM, then SIGKILL after a second. It
// returns once the process has been reaped.
func (p *Process) Stop() {
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Anything left in the group (there should be nothing) goes too.
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// Memory is a process's resident set, from /proc/<pid>/status.
type Memory struct {
	RSS, Peak int64 // VmRSS and VmHWM, bytes
}

// ReadMemory reads the resident set of pid.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("perf: parse %s %q: %w", k, v, err)
		}
		if k == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
	}
	return m, sc.Err()
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// ReadCPU reads the CPU time (user and system) pid has used so far.
func ReadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces; the fields after
	// it are numbered from 3 (state), so utime and stime are 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("perf: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("perf: short /proc/%d/stat", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("perf: parse /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// FreePort returns a loopback port that was free a moment ago, from below
// the kernel's ephemeral range where it can. A run binds its ports again
// and again (each cold start spawns its target anew), and between two
// spawns a port of the ephemeral range may be handed to any process's
// listen on port 0 or outgoing connection, as happens while tests run
// beside it; a port below the range is taken only by an explicit bind.
func FreePort() (int, error) {
	if low := ephemeralLow(); low > fixedPortBase+1000 {
		for range 100 {
			port := fixedPortBase + rand.IntN(low-fixedPortBase)
			if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
				l.Close()
				return port, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// fixedPortBase is the lowest port FreePort picks: the ports below it are
// where services conventionally listen.
const fixedPortBase = 10000

// ephemeralLow is the first port of the kernel's ephemeral range, or 0
// where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var low, high int
	if n, _ := fmt.Sscan(string(b), &low, &high); n != 2 {
		return 0
	}
	return low
}
