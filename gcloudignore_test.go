package chatauth

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// plantedSecrets are files that hold secret material and that README.md's
// steps, cmd/local or a person following them leave in the source
// directory. readmeCreatedFiles adds every file the README's commands
// write.
var plantedSecrets = []string{
	".chatauth/token_keyset.json", ".chatauth/webhook_secret", ".chatauth/chatauth.db",
	".chatauth/demo_client_secrets.json",
	"client_secrets.json", "client_secret_123-abc.apps.googleusercontent.com.json",
	"keyset.json", "keyset-added.json", "keyset-new.json", "token_keyset.json",
	"token_keyset.wrapped.json", "webhook_secret", "webhook_secrets", "key.json",
	"chatauth-delegate-key.json", "cmd/local/key.json", "examples/curl/webhook_secret",
	"internal/keyset.json", "server.pem", ".env",
}

// readmeWrites finds the files the README's commands write: --data-file,
// --out, a shell redirection, `keys create`, and what `shred -u` removes.
var readmeWrites = regexp.MustCompile(`(?:--data-file=|--out[ =]|--in[ =]|> ?|keys create |shred -u )((?:"?\$\{?[A-Z_]+\}?"?/)?[A-Za-z0-9_./-]+(?: [A-Za-z0-9_.-]+\.json)*)`)

// readmeCreatedFiles lists, by base name, every file README.md's commands
// read or write by name, as it would land in the source directory if a
// step were run there rather than in its temporary directory.
func readmeCreatedFiles(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range readmeWrites.FindAllStringSubmatch(string(data), -1) {
		for _, f := range strings.Fields(m[1]) {
			// A file in a step's temporary directory ($WORK/x) lands as x.
			if i := strings.LastIndex(f, "/"); strings.HasPrefix(f, "$") || strings.HasPrefix(f, `"$`) || strings.HasPrefix(f, "/") {
				f = f[i+1:]
			}
			f = strings.Trim(f, `"`)
			if f == "-" || f == "" || f == "." || strings.HasSuffix(f, "/") || strings.HasPrefix(f, "..") || f == "null" || strings.HasPrefix(f, "$") || !strings.Contains(f, ".") && !strings.Contains(f, "secret") {
				continue
			}
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// sourceFiles lists the repository's files that a build needs: the
// top-level Go files, module files, documents and build files, and every
// file under the source directories.
func sourceFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	topLevel := regexp.MustCompile(`^([^/]+\.(go|md|yaml)|go\.mod|go\.sum|\.gcloudignore)$`)
	dirs := []string{".ci", "cmd", "examples", "internal", "testdata"}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && !slices.Contains(dirs, strings.SplitN(p, string(filepath.Separator), 2)[0]) {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && (topLevel.MatchString(p) || strings.Contains(p, string(filepath.Separator))) {
			out = append(out, filepath.ToSlash(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGcloudIgnore copies the sources into a directory, plants every file
// of secret material beside them, and asks the real gcloud which files
// `gcloud builds submit` and `gcloud functions deploy` would upload: every
// source, and none of the secrets.
func TestGcloudIgnore(t *testing.T) {
	t.Parallel()
	gcloud := needGcloud(t)
	dir := t.TempDir()
	sources := sourceFiles(t)
	for _, f := range sources {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeTreeFile(t, filepath.Join(dir, f), data)
	}
	secrets := slices.Clone(plantedSecrets)
	fromREADME := readmeCreatedFiles(t)
	if len(fromREADME) < 5 {
		t.Fatalf("found only %q written by README.md's commands; the pattern no longer reads them", fromREADME)
	}
	for _, f := range fromREADME {
		if !slices.Contains(secrets, f) {
			secrets = append(secrets, f)
		}
	}
	for _, f := range secrets {
		if slices.Contains(sources, f) {
			continue // a source file the README reads, such as cloudbuild.yaml
		}
		writeTreeFile(t, filepath.Join(dir, f), []byte("planted secret"))
	}
	listed := listFilesForUpload(t, gcloud, dir)
	for _, f := range secrets {
		if slices.Contains(listed, f) && !slices.Contains(sources, f) {
			t.Errorf("%s would be uploaded; add its name to .gcloudignore (and .gitignore)", f)
		}
	}
	for _, f := range sources {
		if !slices.Contains(listed, f) {
			t.Errorf("the source file %s would not be uploaded: .gcloudignore leaves it out", f)
		}
	}
}

// TestGcloudIgnoreChecks: the check above fails when .gcloudignore is
// missing or lets one secret through.
func TestGcloudIgnoreChecks(t *testing.T) {
	gcloud := needGcloud(t)
	orig, err := os.ReadFile(".gcloudignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		ignore []byte // nil: no .gcloudignore
		leaked string
	}{
		{"no .gcloudignore", nil, "keyset.json"},
		{"everything uploaded", bytes.Replace(orig, []byte("\n/*\n"), []byte("\n"), 1), "notes-with-a-token.txt"},
		{"keysets uploaded", bytes.Replace(orig, []byte("\n*keyset*.json\n"), []byte("\n"), 1), "internal/token_keyset.wrapped.json"},
		{"keys uploaded", bytes.Replace(orig, []byte("\nkey.json\n"), []byte("\n"), 1), "cmd/local/key.json"},
		{"local data uploaded", bytes.Replace(orig, []byte("\n.chatauth/\n"), []byte("\n!/.chatauth/\n"), 1), ".chatauth/chatauth.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.ignore != nil && bytes.Equal(tc.ignore, orig) {
				t.Fatal("the mutation changed nothing")
			}
			dir := t.TempDir()
			writeTreeFile(t, filepath.Join(dir, "go.mod"), []byte("module x\n"))
			if tc.ignore != nil {
				writeTreeFile(t, filepath.Join(dir, ".gcloudignore"), tc.ignore)
			}
			writeTreeFile(t, filepath.Join(dir, tc.leaked), []byte("planted secret"))
			if !slices.Contains(listFilesForUpload(t, gcloud, dir), tc.leaked) {
				t.Errorf("%s is not listed, so the test would not notice this breakage", tc.leaked)
			}
		})
	}
}

// needGcloud returns the gcloud CLI's path. Without it the test is
// skipped, but under CI=true it fails: CI must check the ignore file.
func needGcloud(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("gcloud")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("gcloud is not installed; CI needs it to check .gcloudignore (apt-get install google-cloud-cli)")
		}
		t.Skip("gcloud is not installed")
	}
	return p
}

// listFilesForUpload runs `gcloud meta list-files-for-upload dir` offline,
// in the test binary's gcloud (runGcloud).
func listFilesForUpload(t *testing.T, gcloud, dir string) []string {
	t.Helper()
	r := runGcloud(t, gcloud, dir, []string{"meta", "list-files-for-upload", dir})
	if r.Code != "0" {
		t.Fatalf("gcloud meta list-files-for-upload: exit %s\n%s", r.Code, r.Stderr)
	}
	var files []string
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			files = append(files, filepath.ToSlash(l))
		}
	}
	sort.Strings(files)
	return files
}

func writeTreeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
