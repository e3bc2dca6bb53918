package chatauth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
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

// gcloudDriver parses command lines with gcloud's own command-line
// interface, loaded once (a gcloud process per command takes seconds): it
// reads one JSON array of arguments per line from a file (a command may
// read its standard input, --data-file=-) and runs each as gcloud would,
// marking on stderr where each command's messages begin.
const gcloudDriver = `
import json, os, sys
root = sys.argv[1]
sys.path.insert(0, os.path.join(root, 'lib', 'third_party'))
sys.path.insert(0, os.path.join(root, 'lib'))
from googlecloudsdk import gcloud_main
cli = gcloud_main.CreateCLI([])
for line in open(sys.argv[2]):
    args = json.loads(line)
    sys.stderr.write('@@chatauth-command@@\n'); sys.stderr.flush()
    code = '0'
    try:
        cli.Execute(args + ['--quiet'])
    except SystemExit as e:
        code = str(e.code)
    except BaseException as e:
        code = 'exception ' + type(e).__name__
    sys.stderr.flush()
    print(json.dumps(code), flush=True)
`

// gcloudParse runs each command line through gcloud, offline and without
// credentials, and returns for each "" when gcloud parsed it, or what
// gcloud said otherwise. Files a command reads (--data-file) are created
// empty first, in a directory of their own.
func gcloudParse(t *testing.T, gcloud string, cmds [][]string) []string {
	t.Helper()
	bin, err := filepath.EvalSymlinks(gcloud)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(bin))
	python := filepath.Join(root, "platform", "bundledpythonunix", "bin", "python3")
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			t.Fatal("no Python to run gcloud's parser with")
		}
	}
	dir := t.TempDir()
	var in bytes.Buffer
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
		line, _ := json.Marshal(c)
		in.Write(append(line, '\n'))
	}
	list := filepath.Join(t.TempDir(), "commands.jsonl")
	writeTreeFile(t, list, in.Bytes())
	cmd := exec.Command(python, "-c", gcloudDriver, root, list)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CLOUDSDK_CONFIG="+t.TempDir(), "CLOUDSDK_CORE_DISABLE_PROMPTS=1",
		"CLOUDSDK_CORE_PROJECT=my-project", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1",
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=1", "CLOUDSDK_PYTHON_SITEPACKAGES=0")
	cmd.Stdin = strings.NewReader("")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gcloud's parser: %v\n%s", err, stderr.String())
	}
	var codes []string
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var c string
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("gcloud's parser printed %q", l)
		}
		codes = append(codes, c)
	}
	msgs := strings.Split(stderr.String(), "@@chatauth-command@@\n")[1:]
	if len(codes) != len(cmds) || len(msgs) != len(cmds) {
		t.Fatalf("gcloud's parser answered %d codes and %d messages for %d commands:\n%s", len(codes), len(msgs), len(cmds), stderr.String())
	}
	out := make([]string, len(cmds))
	for i, code := range codes {
		switch {
		case code == "2" || gcloudParseError.MatchString(msgs[i]):
			out[i] = msgs[i]
		case code == "0" || gcloudNeedsAccount.MatchString(msgs[i]):
		default:
			out[i] = fmt.Sprintf("neither parsed nor refused for want of an account (exit %s):\n%s", code, msgs[i])
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
