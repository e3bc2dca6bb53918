package fsemulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
)

const project = "demo-test"

// requireEmulator skips the test where the emulator is not installed, but
// fails it in CI, where a skip would hide that the store tests never ran.
func requireEmulator(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// newClient returns a Firestore client for the emulator named by
// FIRESTORE_EMULATOR_HOST, closed when the test ends.
func newClient(ctx context.Context, t *testing.T) *firestore.Client {
	t.Helper()
	c, err := firestore.NewClient(ctx, project)
	if err != nil {
		t.Fatalf("firestore.NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// emulatorProcesses returns the command lines of the running emulator
// processes, launcher or Java, that serve host.
func emulatorProcesses(t *testing.T, host string) []string {
	t.Helper()
	_, port, err := net.SplitHostPort(host)
	if err != nil {
		t.Fatalf("SplitHostPort(%q): %v", host, err)
	}
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || len(b) == 0 {
			continue // exited, or a zombie
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, "firestore") && (strings.Contains(cmd, "--port="+port) || strings.Contains(cmd, "--host-port="+host)) {
			found = append(found, cmd)
		}
	}
	return found
}

func TestEmulator(t *testing.T) {
	requireEmulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	e, err := Start(ctx)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	host := e.Host()
	if !strings.HasPrefix(host, "127.0.0.1:") {
		t.Errorf("got Host %q, want 127.0.0.1:PORT", host)
	}
	t.Setenv("FIRESTORE_EMULATOR_HOST", host)

	c := newClient(ctx, t)
	doc := c.Collection("things").Doc("a")
	if _, err := doc.Set(ctx, map[string]any{"n": 1}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	snap, err := doc.Get(ctx)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got, want := snap.Data()["n"], int64(1); got != want {
		t.Errorf("got n = %v, want %v", got, want)
	}

	if len(emulatorProcesses(t, host)) == 0 {
		t.Fatalf("found no emulator process for %s while it runs; the leak check below would prove nothing", host)
	}
	// The launcher, its script and Java are all in the one group that the
	// watchdog kills when the starter ends (TestDiesWithItsStarter) and
	// Stop signals.
	pgids := processGroups(t, host)
	if len(pgids) != 1 || !pgids[e.proc.pgid] {
		t.Fatalf("the emulator's processes on %s are in groups %v, want only its own group %d", host, pgids, e.proc.pgid)
	}
	// Java runs with javaOptions.
	var javas int
	for _, p := range procs(t) {
		if p.pgid != e.proc.pgid || !strings.HasPrefix(p.cmd, "java ") {
			continue
		}
		javas++
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains("\x00"+string(env), "\x00JAVA_TOOL_OPTIONS="+javaOptions) {
			t.Errorf("the emulator's Java runs without JAVA_TOOL_OPTIONS=%s", javaOptions)
		}
	}
	if javas != 1 {
		t.Errorf("found %d Java processes in the emulator's group, want 1", javas)
	}

	if err := e.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := e.Stop(); err != nil {
		t.Errorf("second Stop: got %v, want nil", err)
	}
	if left := emulatorProcesses(t, host); len(left) > 0 {
		t.Errorf("after Stop: got processes %q, want none", left)
	}
	// Every process of the emulator's group is gone, children that do not
	// name the port included. (Probing the port instead would race: go test
	// runs packages in parallel, and another package's emulator may bind a
	// port the moment it is freed.)
	for pgid := range pgids {
		if left := groupMembers(t, pgid); len(left) > 0 {
			t.Errorf("after Stop: process group %d still has %q", pgid, left)
		}
	}
}

// processGroups returns the process groups of the emulator processes for
// host.
func processGroups(t *testing.T, host string) map[int]bool {
	t.Helper()
	groups := map[int]bool{}
	for _, p := range procs(t) {
		port := host[strings.LastIndex(host, ":")+1:]
		if strings.Contains(p.cmd, "firestore") && (strings.Contains(p.cmd, "--port="+port) || strings.Contains(p.cmd, "--host-port="+host)) {
			groups[p.pgid] = true
		}
	}
	return groups
}

// groupMembers returns the live (not zombie) processes of a group.
func groupMembers(t *testing.T, pgid int) []string {
	t.Helper()
	var out []string
	for _, p := range procs(t) {
		if p.pgid == pgid && p.state != "Z" {
			out = append(out, fmt.Sprintf("%d %s", p.pid, p.cmd))
		}
	}
	return out
}

type proc struct {
	pid, pgid int
	state     string
	cmd       string
}

// procs reads /proc: each process's id, group, state and command line.
func procs(t *testing.T) []proc {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var out []proc
	for _, dir := range dirs {
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // exited
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces, so split
		// after its closing parenthesis.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 3 {
			continue
		}
		var p proc
		fmt.Sscan(filepath.Base(dir), &p.pid)
		fmt.Sscan(f[2], &p.pgid)
		p.state = f[0]
		cmd, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		p.cmd = strings.ReplaceAll(string(cmd), "\x00", " ")
		out = append(out, p)
	}
	return out
}

// TestPortTaken checks that a start on a taken port is recognised as such,
// which is what makes Start move to another port, and leaves nothing behind.
func TestPortTaken(t *testing.T) {
	t.Parallel()
	requireEmulator(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	host := l.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := launch(ctx, host)
	if err == nil {
		p.stop()
		t.Fatalf("launch on taken port %s: got nil error, want one", host)
	}
	if !errors.Is(err, errPortTaken) {
		t.Errorf("launch on taken port: got %v, want errPortTaken", err)
	}
	if !strings.Contains(err.Error(), "BindException") {
		t.Errorf("launch on taken port: got error %q, want the emulator's output in it", err)
	}
	if left := emulatorProcesses(t, host); len(left) > 0 {
		t.Errorf("after a failed launch: got processes %q, want none", left)
	}
}

func TestAvailableExplainsInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := Available()
	if err == nil {
		t.Fatal("Available with an empty PATH: got nil, want an error")
	}
	for _, want := range []string{"apt-get install", "google-cloud-cli-firestore-emulator", "openjdk-17-jre-headless"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got error %q, want it to contain %q", err, want)
		}
	}
}

// TestDiesWithItsStarter: a process group started under the watchdog —
// gcloud, its shell script and Java, for the emulator — goes when its
// starter exits without stopping it: a test that panicked, a killed test
// binary. The starter is this test binary run again in a mode that starts
// a group of two (a shell and its background child, as the launcher and
// Java are), prints the group and kills itself. The group is a stand-in
// for the emulator's, because a JVM start costs seconds of CPU and proves
// no more: TestEmulator shows that every emulator process is in the group
// the watchdog kills.
func TestDiesWithItsStarter(t *testing.T) {
	if os.Getenv("FSEMULATOR_STARTER") == "1" {
		out := &tailBuffer{limit: outputLimit}
		p, err := startGroup([]string{"/bin/sh", "-c", "sleep 600 & echo started; wait"}, os.Environ(), out)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		for !strings.Contains(out.String(), "started") {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Printf("pgid %d\n", p.pgid)
		os.Stdout.Sync()
		syscall.Kill(os.Getpid(), syscall.SIGKILL) // no cleanup of any kind
		select {}
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiesWithItsStarter$")
	cmd.Env = append(os.Environ(), "FSEMULATOR_STARTER=1")
	out, _ := cmd.Output()
	var pgid int
	if _, err := fmt.Sscanf(string(out), "pgid %d", &pgid); err != nil {
		t.Fatalf("the starter did not start its group: %q", out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			t.Fatalf("the process group %d outlived its starter by 30 s", pgid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
