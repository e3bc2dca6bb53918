package chatauth

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// gcloudStubs run README.md's shell blocks and cloudbuild.yaml's scripts
// without running anything: gcloud records its arguments, exactly as the
// shell expanded them, on file descriptor 3, one line per command in one
// write (the two ends of a pipe run at once), the arguments separated by
// the unit separator; every other program is missing and does nothing.
const gcloudStubs = `
PATH=/nonexistent
command_not_found_handle() { return 0; }
gcloud() { local IFS=$'\x1f'; printf '%s\n' "$*" >&3; }
mktemp() { echo "$CHATAUTH_WORK"; }
crane() { echo sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef; }
cd() { :; }
trap() { :; }
`

// gcloudParseError is what gcloud prints when it refuses a command line:
// an unknown command, flag or value, or a missing argument.
var gcloudParseError = regexp.MustCompile(`unrecognized arguments|Invalid choice|argument [^\n]*: |Invalid value for|must be specified|expected one argument|Bad value|is not a valid|Unknown|not a valid name`)

// gcloudNeedsAccount is how gcloud answers a well-formed command when it
// has no credentials, which is how the checks run it.
var gcloudNeedsAccount = regexp.MustCompile(`active account selected|gcloud auth login|property \[project\] is not currently set|You do not currently have`)

// recordGcloud runs script under the stubs and returns every gcloud
// command line it ran.
func recordGcloud(t *testing.T, script string) [][]string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", gcloudStubs+script)
	cmd.Env = []string{"HOME=" + t.TempDir(), "LANG=C", "CHATAUTH_WORK=" + t.TempDir()}
	cmd.ExtraFiles = []*os.File{w}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var out []byte
	done := make(chan struct{})
	go func() {
		var buf bytes.Buffer
		buf.ReadFrom(r)
		out = buf.Bytes()
		close(done)
	}()
	runErr := cmd.Run()
	w.Close()
	<-done
	r.Close()
	if strings.Contains(stderr.String(), "unbound variable") || strings.Contains(stderr.String(), "syntax error") {
		t.Errorf("the shell refused a command: %s", stderr.String())
	}
	_ = runErr // scripts may exit non-zero: the stubs answer nothing
	var cmds [][]string
	for _, line := range bytes.Split(out, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		args := strings.Split(string(line), "\x1f")
		cmds = append(cmds, args)
	}
	return cmds
}

// readmeShellBlocks returns README.md's sh blocks that run gcloud, the one
// that sets the deployment's variables first, and its inline commands that
// are written out whole (with a flag, without an ellipsis).
func readmeShellBlocks(t *testing.T) (setup string, blocks []string) {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
		switch {
		case strings.Contains(m[1], "export PROJECT="):
			setup = m[1]
		case strings.Contains(m[1], "gcloud "):
			blocks = append(blocks, m[1])
		}
	}
	for _, m := range regexp.MustCompile("`(gcloud [^`]+)`").FindAllStringSubmatch(string(data), -1) {
		if strings.Contains(m[1], " --") && !strings.Contains(m[1], "…") {
			blocks = append(blocks, m[1])
		}
	}
	if setup == "" {
		t.Fatal("README.md has no sh block that sets PROJECT and the other deployment variables")
	}
	return setup, blocks
}

// cloudBuildCommands returns the gcloud command lines of cloudbuild.yaml,
// with the checks' substitution values.
func cloudBuildCommands(t *testing.T) [][]string {
	t.Helper()
	data, _ := readBuildFiles(t)
	cb, err := parseBuild(data)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	for k, v := range cb.Substitutions {
		values[k] = v
	}
	for k, v := range operatorSubstitutions {
		values[k] = v
	}
	values["_CHAT_APP_INVOKER"] = "serviceAccount:chat@system.gserviceaccount.com"
	sub := func(s string) string { return expand(s, values, func(string) {}) }
	var cmds [][]string
	for i := range cb.Steps {
		st := &cb.Steps[i]
		if args, _, ok := gcloudArgs(st); ok {
			var a []string
			for _, s := range args {
				a = append(a, sub(s))
			}
			cmds = append(cmds, a)
			continue
		}
		if st.Entrypoint == "bash" && len(st.Args) == 2 && st.Args[0] == "-c" {
			var env strings.Builder
			for _, e := range st.Env {
				k, v, _ := strings.Cut(sub(e), "=")
				fmt.Fprintf(&env, "export %s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
			}
			cmds = append(cmds, recordGcloud(t, env.String()+sub(st.Args[1]))...)
		}
	}
	return cmds
}

// TestGcloudCommandsParse runs every gcloud command of README.md and
// cloudbuild.yaml through the real gcloud, offline and without
// credentials: each must get past gcloud's argument parsing (and then
// stop for want of an account), so a misspelt flag or a removed command
// fails here rather than in someone's deployment.
func TestGcloudCommandsParse(t *testing.T) {
	t.Parallel()
	gcloud := needGcloud(t)
	setup, blocks := readmeShellBlocks(t)
	// The blocks run in order in one shell, as a person pastes them, so
	// a variable one block sets is there for the next.
	cmds := recordGcloud(t, setup+"\nset -u\n"+strings.Join(blocks, "\n"))
	if len(cmds) < 40 {
		t.Fatalf("found only %d gcloud commands in README.md; the extraction no longer reads them", len(cmds))
	}
	fromBuild := cloudBuildCommands(t)
	if len(fromBuild) < 7 {
		t.Fatalf("found only %d gcloud commands in cloudbuild.yaml", len(fromBuild))
	}
	cmds = append(cmds, fromBuild...)

	seen := map[string]bool{}
	var unique [][]string
	for _, c := range cmds {
		if key := strings.Join(c, "\x00"); !seen[key] {
			seen[key] = true
			unique = append(unique, c)
		}
	}
	for i, msg := range gcloudParse(t, gcloud, unique) {
		if msg != "" {
			t.Errorf("gcloud %s:\n%s", strings.Join(unique[i], " "), msg)
		}
	}
}

// gcloudDriver runs command lines with gcloud's own command-line interface,
// loaded once per test binary, since loading it costs more CPU than most
// commands it then runs: it reads one request per line
// from file descriptor 3, {"dir": working directory, "args": [...]}, runs
// the command as gcloud would, with an empty standard input, and writes
// {"code", "stdout", "stderr"} as one line to file descriptor 4.
const gcloudDriver = `
import io, json, os, sys
root = sys.argv[1]
sys.path.insert(0, os.path.join(root, 'lib', 'third_party'))
sys.path.insert(0, os.path.join(root, 'lib'))
from googlecloudsdk import gcloud_main
from googlecloudsdk.core import log
cli = gcloud_main.CreateCLI([])
requests, answers = os.fdopen(3), os.fdopen(4, 'w')
for line in requests:
    req = json.loads(line)
    os.chdir(req['dir'])
    out, err = io.StringIO(), io.StringIO()
    sys.stdin = io.TextIOWrapper(io.BytesIO(b''))
    sys.stdout, sys.stderr = out, err
    log.Reset(out, err)
    code = '0'
    try:
        cli.Execute(req['args'] + ['--quiet'])
    except SystemExit as e:
        code = str(e.code)
    except BaseException as e:
        code = 'exception ' + type(e).__name__
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    log.Reset(sys.stdout, sys.stderr)
    answers.write(json.dumps({'code': code, 'stdout': out.getvalue(), 'stderr': err.getvalue()}) + '\n')
    answers.flush()
`

// gcloudCLI is the test binary's one gcloud driver, started by the first
// test that runs a gcloud command and stopped by TestMain.
var gcloudCLI struct {
	once     sync.Once
	mu       sync.Mutex // one command at a time
	cmd      *exec.Cmd
	requests *os.File
	answers  *bufio.Reader
	output   *syncBuffer // the driver's own output, to explain a failure
	config   string      // its CLOUDSDK_CONFIG, empty: offline, no account
	err      error
}

// gcloudResult is what gcloud did with one command line.
type gcloudResult struct {
	Code           string // the exit status, or "exception NAME"
	Stdout, Stderr string
}

// runGcloud runs one gcloud command line in dir, offline and without
// credentials, with the project property set to my-project.
func runGcloud(t *testing.T, gcloud, dir string, args []string) gcloudResult {
	t.Helper()
	gcloudCLI.once.Do(func() { gcloudCLI.err = startGcloudCLI(gcloud) })
	if gcloudCLI.err != nil {
		t.Fatal(gcloudCLI.err)
	}
	req, err := json.Marshal(map[string]any{"dir": dir, "args": args})
	if err != nil {
		t.Fatal(err)
	}
	gcloudCLI.mu.Lock()
	defer gcloudCLI.mu.Unlock()
	var res gcloudResult
	if _, err := gcloudCLI.requests.Write(append(req, '\n')); err != nil {
		t.Fatalf("gcloud %s: the driver took no request: %v\n%s", strings.Join(args, " "), err, gcloudCLI.output)
	}
	line, err := gcloudCLI.answers.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &res)
	}
	if err != nil {
		t.Fatalf("gcloud %s: the driver gave no answer: %v\n%s", strings.Join(args, " "), err, gcloudCLI.output)
	}
	return res
}

// startGcloudCLI starts the driver with the Python and the libraries of
// the Cloud SDK that gcloud belongs to.
func startGcloudCLI(gcloud string) error {
	bin, err := filepath.EvalSymlinks(gcloud)
	if err != nil {
		return err
	}
	root := filepath.Dir(filepath.Dir(bin))
	python := filepath.Join(root, "platform", "bundledpythonunix", "bin", "python3")
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			return errors.New("no Python to run gcloud with")
		}
	}
	if gcloudCLI.config, err = os.MkdirTemp("", "chatauth-gcloud-"); err != nil {
		return err
	}
	reqRead, reqWrite, err := os.Pipe()
	if err != nil {
		return err
	}
	ansRead, ansWrite, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(python, "-c", gcloudDriver, root)
	cmd.Env = append(os.Environ(), "CLOUDSDK_CONFIG="+gcloudCLI.config, "CLOUDSDK_CORE_DISABLE_PROMPTS=1",
		"CLOUDSDK_CORE_PROJECT=my-project", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1",
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=1", "CLOUDSDK_PYTHON_SITEPACKAGES=0")
	cmd.ExtraFiles = []*os.File{reqRead, ansWrite}
	gcloudCLI.output = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = gcloudCLI.output, gcloudCLI.output
	err = cmd.Start()
	reqRead.Close()
	ansWrite.Close()
	if err != nil {
		reqWrite.Close()
		ansRead.Close()
		return fmt.Errorf("start gcloud's driver: %w", err)
	}
	gcloudCLI.cmd, gcloudCLI.requests, gcloudCLI.answers = cmd, reqWrite, bufio.NewReader(ansRead)
	return nil
}

// stopGcloudCLI ends the driver, if a test started it: it exits at the
// end of its requests.
func stopGcloudCLI() {
	if gcloudCLI.cmd != nil {
		gcloudCLI.requests.Close()
		gcloudCLI.cmd.Wait()
	}
	if gcloudCLI.config != "" { // also when the driver failed to start
		os.RemoveAll(gcloudCLI.config)
	}
}

// gcloudParse runs each command line through gcloud, offline and without
// credentials, and returns for each "" when gcloud parsed it, or what
// gcloud said otherwise. Files a command reads (--data-file) are created
// empty first, in a directory of their own.
func gcloudParse(t *testing.T, gcloud string, cmds [][]string) []string {
	t.Helper()
	dir := t.TempDir()
	for _, c := range cmds {
		for _, a := range c {
			if f, ok := strings.CutPrefix(a, "--config="); ok && !filepath.IsAbs(f) {
				if data, err := os.ReadFile(f); err == nil {
					writeTreeFile(t, filepath.Join(dir, f), data)
				}
			}
			if f, ok := strings.CutPrefix(a, "--data-file="); ok && f != "-" {
				if !filepath.IsAbs(f) {
					f = filepath.Join(dir, f)
				}
				os.MkdirAll(filepath.Dir(f), 0o700)
				if _, err := os.Stat(f); err != nil {
					writeTreeFile(t, f, []byte("{}"))
				}
			}
		}
	}
	out := make([]string, len(cmds))
	for i, c := range cmds {
		r := runGcloud(t, gcloud, dir, c)
		switch msg := r.Stderr; {
		case r.Code == "2" || gcloudParseError.MatchString(msg):
			out[i] = msg
		case r.Code == "0" || gcloudNeedsAccount.MatchString(msg):
		default:
			out[i] = fmt.Sprintf("neither parsed nor refused for want of an account (exit %s):\n%s", r.Code, msg)
		}
	}
	return out
}

// TestGcloudCommandsParseChecks: the check refuses a misspelt flag, an
// unknown command and a bad choice, and accepts a well-formed command.
func TestGcloudCommandsParseChecks(t *testing.T) {
	t.Parallel()
	gcloud := needGcloud(t)
	cases := []struct {
		args []string
		ok   bool
	}{
		{[]string{"functions", "deploy", "X", "--gen2", "--region=r", "--max-instances=10", "--concurrency=32", "--timeout=60s", "--no-allow-unauthenticated"}, true},
		{[]string{"functions", "deploy", "X", "--gen2", "--region=r", "--max-instance=10"}, false},
		{[]string{"functions", "deplyo", "X"}, false},
		{[]string{"firestore", "databases", "create", "--location=eur3", "--type=firestore-nativ"}, false},
		{[]string{"secrets", "versions", "access", "1", "--secret=s", "--out-fil=x"}, false},
		{[]string{"secrets", "versions", "add", "s", "--data-file=absent/x.json"}, true},
	}
	var cmds [][]string
	for _, tc := range cases {
		cmds = append(cmds, tc.args)
	}
	for i, msg := range gcloudParse(t, gcloud, cmds) {
		if (msg == "") != cases[i].ok {
			t.Errorf("gcloud %s: got %q, want parsed %v", strings.Join(cases[i].args, " "), msg, cases[i].ok)
		}
	}
	// The shell stubs record the command as the shell expands it.
	got := recordGcloud(t, `X="a b"; for s in one two; do gcloud secrets describe $s --x="$X"; done`)
	want := [][]string{{"secrets", "describe", "one", "--x=a b"}, {"secrets", "describe", "two", "--x=a b"}}
	if len(got) != 2 || !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) {
		t.Errorf("recorded %q, want %q", got, want)
	}
}
