package chatauth

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The checks below read cloudbuild.yaml as Cloud Build does and hold it to
// what a deployment needs: the tests run first, every registered function
// (and nothing else) is deployed under its own name with the same
// configuration, every substitution is declared, and no secret value is
// written into the file.

// cloudBuild is the part of a Cloud Build config that the checks read. It is
// decoded with unknown fields refused, so a misspelt key (waitfor, arg)
// fails here rather than being ignored by Cloud Build's looser reading.
type cloudBuild struct {
	Steps            []buildStep       `yaml:"steps"`
	Substitutions    map[string]string `yaml:"substitutions"`
	Options          map[string]any    `yaml:"options"`
	Timeout          string            `yaml:"timeout"`
	ServiceAccount   string            `yaml:"serviceAccount"`
	LogsBucket       string            `yaml:"logsBucket"`
	Tags             []string          `yaml:"tags"`
	Images           []string          `yaml:"images"`
	AvailableSecrets *struct {
		SecretManager []struct {
			VersionName string `yaml:"versionName"`
			Env         string `yaml:"env"`
		} `yaml:"secretManager"`
		Inline []any `yaml:"inline"`
	} `yaml:"availableSecrets"`
}

type buildStep struct {
	ID           string   `yaml:"id"`
	Name         string   `yaml:"name"`
	Entrypoint   string   `yaml:"entrypoint"`
	Args         []string `yaml:"args"`
	Env          []string `yaml:"env"`
	SecretEnv    []string `yaml:"secretEnv"`
	WaitFor      []string `yaml:"waitFor"`
	Dir          string   `yaml:"dir"`
	Timeout      string   `yaml:"timeout"`
	Script       string   `yaml:"script"`
	AllowFailure bool     `yaml:"allowFailure"`
}

// strings returns every string of the step that Cloud Build substitutes.
func (s *buildStep) strings() []string {
	out := []string{s.ID, s.Name, s.Entrypoint, s.Dir, s.Script}
	out = append(out, s.Args...)
	return append(out, s.Env...)
}

// builtinSubstitutions are Cloud Build's own substitutions, with the value
// each is given when the file is checked.
var builtinSubstitutions = map[string]string{
	"PROJECT_ID": "example-project", "PROJECT_NUMBER": "123456789012", "LOCATION": "us-central1",
	"BUILD_ID": "build", "TRIGGER_NAME": "", "COMMIT_SHA": "", "REVISION_ID": "", "SHORT_SHA": "",
	"REPO_NAME": "", "REPO_FULL_NAME": "", "BRANCH_NAME": "", "TAG_NAME": "", "REF_NAME": "",
	"TRIGGER_BUILD_CONFIG_PATH": "", "SERVICE_ACCOUNT_EMAIL": "", "SERVICE_ACCOUNT": "",
}

// substitutionRef matches what Cloud Build treats as a substitution: $$ (a
// literal dollar), ${NAME} or $NAME.
var substitutionRef = regexp.MustCompile(`\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)`)

// expand applies Cloud Build's substitution to s, reporting every name that
// is neither declared nor built in.
func expand(s string, subs map[string]string, unknown func(name string)) string {
	return substitutionRef.ReplaceAllStringFunc(s, func(ref string) string {
		if ref == "$$" {
			return "$"
		}
		name := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(ref, "$"), "{"), "}")
		if v, ok := subs[name]; ok {
			return v
		}
		if v, ok := builtinSubstitutions[name]; ok {
			return v
		}
		unknown(name)
		return ""
	})
}

// deployment is one `gcloud functions deploy` step, parsed.
type deployment struct {
	step  string
	name  string            // the function's name
	flags map[string]string // --flag=value; a boolean flag maps to ""
	env   map[string]string // --set-env-vars, substituted
}

// Flags of `gcloud functions deploy` that take no value.
var booleanDeployFlags = []string{"--gen2", "--trigger-http", "--allow-unauthenticated", "--no-allow-unauthenticated", "--retry", "--quiet"}

// gcloudDict parses a gcloud dictionary flag value, "K=V,K=V" or, with an
// alternate delimiter (gcloud topic escaping), "^|^K=V|K=V".
func gcloudDict(v string) map[string]string {
	delim := ","
	if strings.HasPrefix(v, "^") {
		if end := strings.Index(v[1:], "^"); end > 0 {
			delim, v = v[1:1+end], v[end+2:]
		}
	}
	out := map[string]string{}
	for _, item := range strings.Split(v, delim) {
		if item == "" {
			continue
		}
		k, val, _ := strings.Cut(item, "=")
		out[k] = val
	}
	return out
}

// Environment variables that must be Secret Manager version names, and
// the form of one.
var (
	secretRefVars    = []string{"CLIENT_SECRETS", "WEBHOOK_SECRETS", "TOKEN_KEYSET"}
	secretVersionRef = regexp.MustCompile(`^projects/[a-z0-9-]+/secrets/[A-Za-z0-9_-]+/versions/(latest|[0-9]+)$`)
	// A --set-secrets value: [projects/P/secrets/]NAME:VERSION.
	functionSecretRef = regexp.MustCompile(`^(projects/[a-z0-9-]+/secrets/)?[A-Za-z0-9_-]+:(latest|[0-9]+)$`)
)

// secretPatterns recognise secret values that could be pasted into a build
// file: an OAuth client secret, a PEM key, Google tokens and API keys, a Tink
// keyset, and long hex or base64 runs (an `openssl rand -hex 32` webhook
// secret, a key).
var secretPatterns = []struct {
	what string
	re   *regexp.Regexp
}{
	{"an OAuth client secret (GOCSPX-)", regexp.MustCompile(`GOCSPX-`)},
	{"a PEM block", regexp.MustCompile(`-----BEGIN`)},
	{"a Google access token", regexp.MustCompile(`ya29\.[0-9A-Za-z_-]{10,}`)},
	{"a Google refresh token", regexp.MustCompile(`1//0[0-9A-Za-z_-]{10,}`)},
	{"a Google API key", regexp.MustCompile(`AIza[0-9A-Za-z_-]{30,}`)},
	{"a Tink keyset", regexp.MustCompile(`primaryKeyId|keyMaterialType`)},
	{"an OAuth client JSON", regexp.MustCompile(`"client_secret"|"private_key"`)},
	{"a long hex string", regexp.MustCompile(`[0-9a-fA-F]{32,}`)},
	{"a long base64 string", regexp.MustCompile(`[A-Za-z0-9+/_]{40,}={0,2}`)},
}

func secretProblems(where, s string) []string {
	var out []string
	for _, p := range secretPatterns {
		if p.re.MatchString(s) {
			out = append(out, fmt.Sprintf("%s: looks like %s inline; pass a Secret Manager version name instead", where, p.what))
		}
	}
	return out
}

// goMinor is the module's Go version as "1.26".
func goMinor(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// configVariables lists every environment variable loadConfig reads, by
// running it with a getenv that records its argument.
func configVariables() []string {
	var names []string
	loadConfig(func(k string) string {
		names = append(names, k)
		return ""
	})
	return names
}

// checkCloudBuild returns everything wrong with a Cloud Build config that
// must deploy exactly the functions named, with runtime goRuntime.
func checkCloudBuild(data []byte, functions []string, goVersion string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	var cb cloudBuild
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cb); err != nil {
		return []string{"parse: " + err.Error()}
	}
	if len(cb.Steps) == 0 {
		return []string{"no steps"}
	}

	// Substitutions: every one used is declared (or built in), and every
	// one declared is used.
	used := map[string]bool{}
	for i := range cb.Steps {
		for _, s := range cb.Steps[i].strings() {
			expand(s, cb.Substitutions, func(name string) {
				bad("step %q uses ${%s}, which is neither declared under substitutions nor built in", cb.Steps[i].ID, name)
			})
			for _, m := range substitutionRef.FindAllStringSubmatch(s, -1) {
				used[strings.Trim(m[1], "{}")] = true
			}
		}
	}
	for name, v := range cb.Substitutions {
		if !strings.HasPrefix(name, "_") {
			bad("substitution %s: user-defined substitutions must start with an underscore", name)
		}
		if !used[name] {
			bad("substitution %s is declared but never used", name)
		}
		problems = append(problems, secretProblems("substitution "+name, v)...)
	}
	sub := func(s string) string { return expand(s, cb.Substitutions, func(string) {}) }

	// No secret values anywhere: not in a step, not in the build's secrets.
	if cb.AvailableSecrets != nil {
		if len(cb.AvailableSecrets.Inline) > 0 {
			bad("availableSecrets.inline carries secret material in the file; use availableSecrets.secretManager")
		}
		for _, s := range cb.AvailableSecrets.SecretManager {
			if !secretVersionRef.MatchString(sub(s.VersionName)) {
				bad("availableSecrets: %q is not a Secret Manager version name", s.VersionName)
			}
		}
	}
	for i := range cb.Steps {
		st := &cb.Steps[i]
		for _, s := range st.strings() {
			problems = append(problems, secretProblems(fmt.Sprintf("step %q", st.ID), sub(s))...)
		}
	}

	// The test step: vet and the whole suite, on the module's Go version.
	testStep := -1
	for i := range cb.Steps {
		text := strings.Join(cb.Steps[i].strings(), "\n")
		if strings.Contains(text, "go vet ./...") {
			if testStep >= 0 {
				bad("steps %q and %q both vet the code; keep one test step", cb.Steps[testStep].ID, cb.Steps[i].ID)
			}
			testStep = i
			if !strings.Contains(text, ".ci/run") && !strings.Contains(text, "go test -race -count=1 ./...") {
				bad("the test step %q vets but does not run the test suite (.ci/run or go test -race -count=1 ./...)", cb.Steps[i].ID)
			}
			if !strings.HasPrefix(cb.Steps[i].Name, "golang:"+goVersion) {
				bad("the test step %q runs on %s; the module needs Go %s (golang:%s-…)", cb.Steps[i].ID, cb.Steps[i].Name, goVersion, goVersion)
			}
			if !slices.Contains(cb.Steps[i].Env, "CI=true") {
				bad("the test step %q does not set CI=true: tests that need the Firestore emulator or Chromium would be skipped instead of failing", cb.Steps[i].ID)
			}
		}
	}
	if testStep < 0 {
		bad("no step runs go vet ./... and the tests before deploying")
	}

	// Deploy steps.
	var deploys []deployment
	for i := range cb.Steps {
		st := &cb.Steps[i]
		cmd := st.Args
		if st.Entrypoint != "gcloud" {
			if strings.Contains(strings.Join(st.strings(), " "), "functions deploy") {
				bad("step %q deploys from a script; write the deployment as entrypoint gcloud with args, so it can be checked", st.ID)
			}
			continue
		}
		if len(cmd) < 2 || cmd[0] != "functions" || cmd[1] != "deploy" {
			continue
		}
		if len(cmd) < 3 || strings.HasPrefix(cmd[2], "-") {
			bad("step %q: gcloud functions deploy without a function name", st.ID)
			continue
		}
		d := deployment{step: st.ID, name: cmd[2], flags: map[string]string{}}
		for _, a := range cmd[3:] {
			k, v, hasValue := strings.Cut(a, "=")
			if !strings.HasPrefix(k, "--") {
				bad("step %q: argument %q is not a --flag", st.ID, a)
				continue
			}
			if !hasValue && !slices.Contains(booleanDeployFlags, k) {
				bad("step %q: write %s as %s=VALUE", st.ID, k, k)
			}
			if _, dup := d.flags[k]; dup {
				bad("step %q: %s is given twice", st.ID, k)
			}
			d.flags[k] = v
		}
		d.env = map[string]string{}
		for k, v := range gcloudDict(d.flags["--set-env-vars"]) {
			d.env[k] = sub(v)
		}
		for _, f := range []string{"--set-secrets", "--update-secrets"} {
			if v, ok := d.flags[f]; ok {
				for k, ref := range gcloudDict(v) {
					if !functionSecretRef.MatchString(sub(ref)) {
						bad("step %q: %s %s=%q is not a Secret Manager reference (SECRET:VERSION)", st.ID, f, k, ref)
					}
				}
			}
		}
		deploys = append(deploys, d)

		// The deployment waits for the tests, directly or not.
		if testStep >= 0 && !dependsOn(cb.Steps, i, testStep) {
			bad("step %q does not wait for the test step %q (waitFor)", st.ID, cb.Steps[testStep].ID)
		}
	}

	// Exactly the registered functions, each once.
	seen := map[string]bool{}
	for _, d := range deploys {
		if seen[d.name] {
			bad("%s is deployed twice", d.name)
		}
		seen[d.name] = true
		if !slices.Contains(functions, d.name) {
			bad("step %q deploys %s, which is not a registered function", d.step, d.name)
		}
	}
	for _, f := range functions {
		if !seen[f] {
			bad("%s is registered but not deployed", f)
		}
	}

	// Each deployment: its own name as entry point, 2nd gen, HTTP, the
	// module's runtime, one host, the configuration the function needs.
	wantRuntime := "go" + strings.ReplaceAll(goVersion, ".", "")
	known := configVariables()
	for _, d := range deploys {
		where := fmt.Sprintf("step %q (%s)", d.step, d.name)
		for flag, want := range map[string]string{
			"--entry-point": d.name, "--runtime": wantRuntime, "--source": ".",
			"--gen2": "", "--trigger-http": "", "--allow-unauthenticated": "",
		} {
			if got, ok := d.flags[flag]; !ok || got != want {
				bad("%s: want %s", where, strings.TrimSuffix(flag+"="+want, "="))
			}
		}
		for _, flag := range []string{"--region", "--service-account", "--set-env-vars"} {
			if d.flags[flag] == "" {
				bad("%s: %s is missing", where, flag)
			}
		}
		if sa := sub(d.flags["--service-account"]); sa != "" && !regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\.iam\.gserviceaccount\.com$`).MatchString(sa) {
			bad("%s: --service-account %q is not a service account email", where, sa)
		}
		for _, k := range []string{"GOOGLE_CLOUD_PROJECT", "CLIENT_SECRETS", "WEBHOOK_SECRETS", "TOKEN_KEYSET", "REDIRECT_URL", "PUBLIC_URL", "FIRESTORE_DATABASE", "ALLOWED_AUDIENCES"} {
			if _, ok := d.env[k]; !ok {
				bad("%s: --set-env-vars lacks %s", where, k)
			}
		}
		for k, v := range d.env {
			if !slices.Contains(known, k) {
				bad("%s: --set-env-vars sets %s, which the function does not read", where, k)
			}
			if slices.Contains(secretRefVars, k) && !secretVersionRef.MatchString(v) {
				bad("%s: %s=%q is not a Secret Manager version name (projects/P/secrets/S/versions/V)", where, k, v)
			}
		}
		// The configuration is one the function accepts, as deployed.
		getenv := func(k string) string {
			if k == "K_SERVICE" {
				return d.name
			}
			return d.env[k]
		}
		cfg, err := loadConfig(getenv)
		if err != nil {
			bad("%s: the function would refuse this configuration: %v", where, err)
			continue
		}
		wantBase := "https://" + sub(d.flags["--region"]) + "-" + cfg.Project + ".cloudfunctions.net"
		if cfg.PublicURL != wantBase || cfg.RedirectURL != wantBase+"/OAuthCallback" {
			bad("%s: PUBLIC_URL %q and REDIRECT_URL %q must be %s and %s/OAuthCallback, the host all functions share", where, cfg.PublicURL, cfg.RedirectURL, wantBase, wantBase)
		}
		// With ENDPOINT_URL, Chat's tokens name the ChatEvents URL.
		if d.env["CHAT_AUDIENCE_TYPE"] == "ENDPOINT_URL" && d.env["CHAT_AUDIENCE"] != wantBase+"/ChatEvents" {
			bad("%s: CHAT_AUDIENCE %q must be %s/ChatEvents, the HTTP endpoint URL of the Chat app", where, d.env["CHAT_AUDIENCE"], wantBase)
		}
	}
	// Every function gets the same configuration.
	for _, d := range deploys[min(1, len(deploys)):] {
		for _, flag := range []string{"--region", "--service-account", "--set-env-vars", "--runtime"} {
			if d.flags[flag] != deploys[0].flags[flag] {
				bad("step %q: %s differs from step %q's; every function must be deployed alike", d.step, flag, deploys[0].step)
			}
		}
	}
	sort.Strings(problems)
	return slices.Compact(problems)
}

// dependsOn reports whether step i runs after step j under Cloud Build's
// rules: no waitFor means after every earlier step, waitFor ["-"] means at
// the start, otherwise after the named steps.
func dependsOn(steps []buildStep, i, j int) bool {
	ids := map[string]int{}
	for k, s := range steps {
		if s.ID != "" {
			ids[s.ID] = k
		}
	}
	seen := map[int]bool{}
	var visit func(k int) bool
	visit = func(k int) bool {
		if seen[k] {
			return false
		}
		seen[k] = true
		var deps []int
		switch w := steps[k].WaitFor; {
		case len(w) == 0:
			for p := 0; p < k; p++ {
				deps = append(deps, p)
			}
		case len(w) == 1 && w[0] == "-":
		default:
			for _, id := range w {
				if p, ok := ids[id]; ok {
					deps = append(deps, p)
				}
			}
		}
		for _, p := range deps {
			if p == j || visit(p) {
				return true
			}
		}
		return false
	}
	return visit(i)
}

func registeredNames() []string {
	var names []string
	for _, f := range registered {
		names = append(names, f.name)
	}
	return names
}

// TestCloudBuild checks the real cloudbuild.yaml against the registered
// functions.
func TestCloudBuild(t *testing.T) {
	data, err := os.ReadFile("cloudbuild.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkCloudBuild(data, registeredNames(), goMinor(t)) {
		t.Error(p)
	}
}

// TestCloudBuildChecks shows that each check catches what it is for, on
// the real file with one thing broken.
func TestCloudBuildChecks(t *testing.T) {
	data, err := os.ReadFile("cloudbuild.yaml")
	if err != nil {
		t.Fatal(err)
	}
	orig := string(data)
	names := registeredNames()
	const envStart = "--set-env-vars=^|^"
	// lastStep is the file without its last step.
	lastStep := strings.LastIndex(orig, "\n  - id: ")
	for _, tc := range []struct {
		name      string
		file      string
		functions []string
		want      string
	}{
		{"a registered function not deployed", orig, append(slices.Clone(names), "Extra"), "Extra is registered but not deployed"},
		{"a deployed function not registered", orig, names[:len(names)-1], "which is not a registered function"},
		{"a step dropped", orig[:lastStep+1], names, "is registered but not deployed"},
		{"undeclared substitution", strings.Replace(orig, "--region=${_REGION}", "--region=${_REGOIN}", 1), names, "${_REGOIN}, which is neither declared"},
		{"unused substitution", strings.Replace(orig, "substitutions:\n", "substitutions:\n  _UNUSED: x\n", 1), names, "_UNUSED is declared but never used"},
		{"bare shell variable", strings.Replace(orig, "go vet ./...", "go vet ./... $HOME", 1), names, "uses ${HOME}"},
		{"hex webhook secret inline", strings.Replace(orig, "WEBHOOK_SECRETS=projects/${PROJECT_ID}/secrets/${_WEBHOOK_SECRET_NAME}/versions/latest", "WEBHOOK_SECRETS=3f6c1d0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d", 1), names, "looks like a long hex string inline"},
		{"secret file path instead of a reference", strings.Replace(orig, "TOKEN_KEYSET=projects/${PROJECT_ID}/secrets/${_KEYSET_SECRET_NAME}/versions/latest", "TOKEN_KEYSET=/workspace/keyset.json", 1), names, `TOKEN_KEYSET="/workspace/keyset.json" is not a Secret Manager version name`},
		{"client secret in a substitution", strings.Replace(orig, "_TRUSTED_CALLERS: \"\"", "_TRUSTED_CALLERS: GOCSPX-abcdefghijklmnopqrstuvwxyz12", 1), names, "GOCSPX-"},
		{"PEM in a step env", strings.Replace(orig, "- DEBIAN_FRONTEND=noninteractive", "- KEY=-----BEGIN PRIVATE KEY-----", 1), names, "a PEM block"},
		{"Tink keyset inline", strings.Replace(orig, envStart, envStart+`X={"primaryKeyId":1}|`, 1), names, "a Tink keyset"},
		{"literal --set-secrets", strings.Replace(orig, "      - --trigger-http\n", "      - --trigger-http\n      - --set-secrets=WEBHOOK=hunter2hunter2\n", 1), names, "is not a Secret Manager reference"},
		{"unknown environment variable", strings.Replace(orig, envStart, envStart+"CLIENT_SECRET=x|", 1), names, "sets CLIENT_SECRET, which the function does not read"},
		{"deploy without waiting", strings.Replace(orig, "waitFor: [test]", "waitFor: ['-']", 1), names, "does not wait for the test step"},
		{"no test step", strings.Replace(orig, "go vet ./...", "true", 1), names, "no step runs go vet"},
		{"tests without CI=true", strings.Replace(orig, "      - CI=true\n", "", 1), names, "does not set CI=true"},
		{"old Go image", strings.Replace(orig, "golang:1.26-bookworm", "golang:1.25-bookworm", 1), names, "the module needs Go"},
		{"wrong runtime", strings.Replace(orig, "--runtime=go126", "--runtime=go125", 1), names, "want --runtime=go126"},
		{"entry point differs from the name", strings.Replace(orig, "--entry-point=CreateSpace", "--entry-point=createSpace", 1), names, "want --entry-point=CreateSpace"},
		{"private function", strings.Replace(orig, "      - --allow-unauthenticated\n", "", 1), names, "want --allow-unauthenticated"},
		{"Chat audience on another host", strings.Replace(orig, "CHAT_AUDIENCE=https://${_REGION}-${PROJECT_ID}.cloudfunctions.net/ChatEvents", "CHAT_AUDIENCE=https://chat.example/ChatEvents", 1), names, "the HTTP endpoint URL of the Chat app"},
		{"callback on another host", strings.Replace(orig, "REDIRECT_URL=https://${_REGION}-${PROJECT_ID}.cloudfunctions.net/OAuthCallback", "REDIRECT_URL=https://chatauth.example/OAuthCallback", 1), names, "the host all functions share"},
		{"configuration the function refuses", strings.Replace(orig, "|PUBLIC_URL=https://${_REGION}-${PROJECT_ID}.cloudfunctions.net|", "|PUBLIC_URL=http://example.com|", 1), names, "the function would refuse this configuration"},
		{"deployments differ", strings.Replace(orig, "|ALLOWED_AUDIENCES=${_ALLOWED_AUDIENCES}", "", 1), names, "--set-env-vars differs"},
		{"misspelt key", strings.Replace(orig, "waitFor: [test]", "waitfor: [test]", 1), names, "field waitfor not found"},
		{"deploy hidden in a script", strings.Replace(orig, "bash .ci/run", "bash .ci/run\n        gcloud functions deploy Extra --gen2", 1), names, "deploys from a script"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.file == orig && slices.Equal(tc.functions, names) {
				t.Fatal("the mutation changed nothing")
			}
			problems := checkCloudBuild([]byte(tc.file), tc.functions, goMinor(t))
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got:\n%s", tc.want, strings.Join(problems, "\n"))
		})
	}
}

// TestGcloudDict pins the gcloud dictionary syntax the checks parse.
func TestGcloudDict(t *testing.T) {
	for in, want := range map[string]map[string]string{
		"A=1,B=2":     {"A": "1", "B": "2"},
		"^|^A=x,y|B=": {"A": "x,y", "B": ""},
		"A=b=c":       {"A": "b=c"},
	} {
		got := gcloudDict(in)
		if len(got) != len(want) {
			t.Errorf("gcloudDict(%q) = %v, want %v", in, got, want)
			continue
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("gcloudDict(%q)[%q] = %q, want %q", in, k, got[k], v)
			}
		}
	}
}
