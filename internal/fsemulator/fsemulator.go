// Package fsemulator starts and stops the real Firestore emulator for tests,
// so that store tests run against Firestore's own semantics (transactions,
// queries, error codes) rather than a hand-written imitation of them.
//
// The emulator comes with the Google Cloud CLI and needs Java. Tests should
// call Available first and skip (or, in CI, fail) with its message when the
// emulator is missing. Point the Firestore client at Host through the
// FIRESTORE_EMULATOR_HOST environment variable, which the Go client honours.
//
// The package is for Unix-like systems: it runs the emulator in a process
// group of its own so that stopping it also stops the Java process that the
// gcloud launcher starts.
package fsemulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// startTimeout bounds the wait for a starting emulator when the caller's
	// context has no earlier deadline. It usually answers within 3 s, but
	// a loaded CI machine starting a JVM can take much longer.
	startTimeout = 60 * time.Second

	// stopGrace is how long a stopping emulator may take to exit after
	// SIGTERM before it is killed.
	stopGrace = 10 * time.Second

	// startAttempts is how often Start tries a fresh port when the one it
	// picked was taken before the emulator could bind it.
	startAttempts = 3

	// outputLimit caps the emulator output kept in memory, which is only
	// there to explain a failure, so a long test run does not grow it.
	outputLimit = 64 << 10

	installHint = "install the Firestore emulator and a Java runtime with " +
		"`apt-get install google-cloud-cli google-cloud-cli-firestore-emulator openjdk-17-jre-headless` " +
		"(the google-cloud-cli packages come from Google's Cloud SDK apt repository), " +
		"or with `gcloud components install cloud-firestore-emulator` for a non-apt Cloud SDK"
)

// javaOptions are the emulator JVM's switches, ahead of any the caller's
// JAVA_TOOL_OPTIONS gives (the later win). A test run's emulator lives
// about a minute, too short for the optimising compiler to repay its CPU:
// the quick compiler alone serves the tests as fast for much less
// (TESTING.md, "Where the CPU went"). The serial collector suits a small
// heap on a machine whose cores the tests already use.
const javaOptions = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

// errPortTaken reports that the emulator could not bind its port.
var errPortTaken = errors.New("port already in use")

// Emulator is a Firestore emulator process. Its methods are safe for
// concurrent use.
type Emulator struct {
	host string

	mu   sync.Mutex
	proc *process // nil while stopped
}

// Available reports whether the emulator can be started here: nil if gcloud,
// its Firestore emulator component and Java are installed, otherwise an error
// that says what is missing and how to install it.
func Available() error {
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		return fmt.Errorf("fsemulator: gcloud is not on PATH: %s", installHint)
	}
	root, err := sdkRoot(gcloud)
	if err != nil {
		return fmt.Errorf("fsemulator: cannot find the Cloud SDK root of %s (%w): %s", gcloud, err, installHint)
	}
	jar := filepath.Join(root, "platform", "cloud-firestore-emulator", "cloud-firestore-emulator.jar")
	if _, err := os.Stat(jar); err != nil {
		return fmt.Errorf("fsemulator: the Firestore emulator component is not installed (no %s): %s", jar, installHint)
	}
	if _, err := exec.LookPath("java"); err != nil {
		return fmt.Errorf("fsemulator: java is not on PATH, and the Firestore emulator runs on it: %s", installHint)
	}
	return nil
}

// sdkRoot finds the Cloud SDK installation that gcloud belongs to. The
// launcher normally lives in ROOT/bin, often behind a symlink (Debian's
// /usr/bin/gcloud); otherwise gcloud itself is asked, which is slower.
func sdkRoot(gcloud string) (string, error) {
	if real, err := filepath.EvalSymlinks(gcloud); err == nil {
		root := filepath.Dir(filepath.Dir(real))
		if _, err := os.Stat(filepath.Join(root, "platform")); err == nil {
			return root, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, gcloud, "info", "--format=value(installation.sdk_root)").Output()
	if err != nil {
		return "", fmt.Errorf("gcloud info: %w", err)
	}
	root := strings.TrimSpace(string(out))
	if root == "" {
		return "", errors.New("gcloud info named no SDK root")
	}
	return root, nil
}

// Start launches the emulator on a free loopback port and returns once it
// answers requests. ctx bounds only the start (at most about a minute), not
// the emulator's life, which lasts until Stop. If the emulator cannot start,
// the error includes its output.
func Start(ctx context.Context) (*Emulator, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	var err error
	for range startAttempts {
		var host string
		host, err = freeHost()
		if err != nil {
			return nil, err
		}
		var p *process
		p, err = launch(ctx, host)
		if err == nil {
			return &Emulator{host: host, proc: p}, nil
		}
		// The port was free when picked but is released before the emulator
		// binds it, so another process may win it; then a new port helps.
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, err
}

// freeHost returns a loopback host:port that is free at the time of the
// call.
func freeHost() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("fsemulator: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Host returns the emulator's "127.0.0.1:PORT", the value for
// FIRESTORE_EMULATOR_HOST.
func (e *Emulator) Host() string {
	return e.host
}

// Stop stops the emulator, the gcloud launcher and the Java process it
// started alike, and returns once they have exited, so a test leaves no
// process behind. Stopping a stopped emulator does nothing.
func (e *Emulator) Stop() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.proc
	e.proc = nil
	if p == nil {
		return nil
	}
	return p.stop()
}

// process is one run of the emulator.
type process struct {
	host string
	cmd  *exec.Cmd
	pgid int
	out  *tailBuffer
	done chan struct{} // closed once cmd.Wait has returned
	// lifeline is the write end of the watchdog's standard input: while
	// this process holds it open, the emulator lives.
	lifeline *os.File
}

// watchdog runs "$@" (gcloud) in place of the shell, after starting a
// background reader of the shell's standard input that kills the process
// group once that input closes. The reader's own output goes nowhere, so
// that it never keeps the emulator's output pipe open.
const watchdog = `exec 3<&0 </dev/null
{ read -r _ <&3; kill -KILL 0; } >/dev/null 2>&1 &
exec 3<&- "$@"`

// launch runs the emulator on host and waits until it answers. On failure
// it leaves no process behind.
func launch(ctx context.Context, host string) (*process, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	out := &tailBuffer{limit: outputLimit}
	// gcloud would otherwise try to reach Google to report usage and look
	// for updates, which only slows a start on a machine without Internet.
	env := append(os.Environ(),
		"CLOUDSDK_CORE_DISABLE_PROMPTS=1",
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true",
		"CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true",
		"JAVA_TOOL_OPTIONS="+strings.TrimSpace(javaOptions+" "+os.Getenv("JAVA_TOOL_OPTIONS")),
	)
	p, err := startGroup([]string{"gcloud", "emulators", "firestore", "start", "--host-port=" + host, "--quiet"}, env, out)
	if err != nil {
		return nil, err
	}
	p.host = host
	if err := p.waitReady(ctx); err != nil {
		if stopErr := p.stop(); stopErr != nil {
			err = fmt.Errorf("%w; and then: %w", err, stopErr)
		}
		return nil, err
	}
	return p, nil
}

// startGroup runs args in a process group of its own, under the watchdog,
// with its output going to out.
//
// The emulator must outlive the context of its start, so this is not
// exec.CommandContext. It must not outlive this process, though, however
// it ends: a test that panics runs no cleanup, and its emulator would
// serve on, holding half a gigabyte. So the command starts under a
// watchdog: a shell that reads its standard input, a pipe only this
// process writes, and kills the whole group when it closes — which the
// kernel does when this process exits, even by SIGKILL. The shell then
// execs the command, which so stays the group's leader.
func startGroup(args, env []string, out *tailBuffer) (*process, error) {
	watchIn, lifeline, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("fsemulator: %w", err)
	}
	defer watchIn.Close() // the shell has its own copy
	cmd := exec.Command("/bin/sh", append([]string{"-c", watchdog, "sh"}, args...)...)
	cmd.Stdin = watchIn
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	// gcloud is a Python launcher that runs a shell script that runs Java;
	// killing the launcher alone would leave Java serving the port. In a
	// group of its own, the three can be signalled together. (gcloud keeps
	// an existing group: it only makes one when it is not a group leader.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Java inherits the output pipe; should it outlive the launcher, Wait
	// must not block on the pipe forever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		lifeline.Close()
		return nil, fmt.Errorf("fsemulator: start %s: %w", args[0], err)
	}
	p := &process{cmd: cmd, pgid: cmd.Process.Pid, out: out, done: make(chan struct{}), lifeline: lifeline}
	go func() {
		// The exit status says nothing useful: gcloud exits 0 even when the
		// emulator failed, and a stopped emulator dies of a signal.
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls the emulator's root URL, which answers "Ok" once it
// serves, until it does, the emulator exits, or ctx ends.
func (p *process) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			out := p.out.String()
			if strings.Contains(out, "Address already in use") {
				return fmt.Errorf("fsemulator: start on %s: %w; output:\n%s", p.host, errPortTaken, out)
			}
			return fmt.Errorf("fsemulator: start on %s: the emulator exited before it answered; output:\n%s", p.host, out)
		case <-ctx.Done():
			return fmt.Errorf("fsemulator: start on %s: no answer: %w; output:\n%s", p.host, ctx.Err(), p.out.String())
		case <-tick.C:
			if p.answers(ctx, client) {
				return nil
			}
		}
	}
}

// answers reports whether the emulator answers its root URL with "Ok".
func (p *process) answers(ctx context.Context, client *http.Client) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.host+"/", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "Ok"
}

// stop ends the process group: SIGTERM first, so Java shuts down cleanly,
// then SIGKILL for whatever is left after stopGrace. It returns once the
// launcher has been reaped and no live process remains in the group.
func (p *process) stop() error {
	defer p.lifeline.Close()
	signalGroup(p.pgid, syscall.SIGTERM)
	if p.waitGone(stopGrace) {
		return nil
	}
	signalGroup(p.pgid, syscall.SIGKILL)
	if p.waitGone(stopGrace) {
		return nil
	}
	return fmt.Errorf("fsemulator: stop %s: process group %d still alive after SIGKILL", p.host, p.pgid)
}

// signalGroup sends sig to every process in the group. A group that is
// already gone is not an error: that is what stopping wants.
func signalGroup(pgid int, sig syscall.Signal) {
	_ = syscall.Kill(-pgid, sig)
}

// waitGone waits up to d for the launcher to be reaped and for the rest of
// its group to exit.
func (p *process) waitGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	select {
	case <-p.done:
	case <-time.After(d):
		return false
	}
	for groupAlive(p.pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// groupAlive reports whether a process of group pgid still runs. It reads
// /proc where it can, because zombies, which a container's init may never
// reap, count as alive for kill(2) but no longer hold the port.
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// The fields after the command name, which is in parentheses and
		// may itself hold spaces or parentheses, are: state ppid pgrp …
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			return true
		}
	}
	return false
}

// tailBuffer keeps the last limit bytes written to it. os/exec writes the
// output from its own goroutine while waitReady reads it, hence the lock.
type tailBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
