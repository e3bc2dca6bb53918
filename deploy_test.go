package chatauth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The checks below read cloudbuild.yaml and cloudbuild-test.yaml as Cloud
// Build does and hold them to what a secure deployment needs: the tests
// pass first, in a build of their own under an account that cannot deploy;
// every image is pinned by digest and every secret version by number; every
// registered function (and nothing else) is deployed under its own name,
// bounded, built by a dedicated account and run by the account of its kind,
// given only the variables it reads; ChatEvents is private and deployed only
// with a Chat app; every substitution is declared; and no secret value is
// written into either file. README.md, "Deploy to Google Cloud", explains
// each rule.

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
	secretVersionRef = regexp.MustCompile(`^projects/[a-z0-9-]+/secrets/[A-Za-z0-9_-]+/versions/[1-9][0-9]*$`)
	// A --set-secrets value: [projects/P/secrets/]NAME:VERSION, pinned.
	functionSecretRef = regexp.MustCompile(`^(projects/[a-z0-9-]+/secrets/)?[A-Za-z0-9_-]+:[1-9][0-9]*$`)
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

// operatorSubstitutions are the substitutions cloudbuild.yaml declares
// without a default, which every `gcloud builds submit` must pass (the
// README's command does), with the values the checks give them.
var operatorSubstitutions = map[string]string{
	"_GCLOUD_IMAGE_DIGEST":    "sha256:" + strings.Repeat("a1", 32),
	"_GO_IMAGE_DIGEST":        "sha256:" + strings.Repeat("b2", 32),
	"_CLIENT_SECRET_VERSION":  "3",
	"_WEBHOOK_SECRET_VERSION": "2",
	"_KEYSET_SECRET_VERSION":  "1",
}

// Names the checks hold the build files to.
const (
	testBuildFile = "cloudbuild-test.yaml"
	// chatGuard is the one script allowed to wrap a gcloud command: it runs
	// the command given as its arguments when its $0, chatGuardArg, names
	// Chat's signer, and does nothing otherwise. The argument is never
	// empty, so it keeps its place however empty arguments are passed.
	chatGuard    = `[ "$$0" != chat-invoker= ] || { echo "_CHAT_APP_INVOKER is empty: no Chat app, so ChatEvents is not deployed"; exit 0; }; exec gcloud "$$@"`
	chatGuardArg = "chat-invoker=" + chatInvoker
	// chatInvoker is the substitution naming who may invoke ChatEvents.
	chatInvoker = "${_CHAT_APP_INVOKER}"
)

// Functions by what they need: delegatingFunctions act as users through
// lookupUser (spaces.go, chatevents.go); privateFunctions are invoked only
// by Google Chat. Browser-facing functions are marked in registered.
var (
	delegatingFunctions = []string{"CreateSpace", "ChatEvents"}
	privateFunctions    = []string{"ChatEvents"}
	delegationVars      = []string{"CREDENTIAL_SOURCE", "DELEGATED_DOMAINS", "DELEGATION_SERVICE_ACCOUNT", "DELEGATION_KEY"}
	callerVars          = []string{"WEBHOOK_SECRETS", "ALLOWED_AUDIENCES", "TRUSTED_CALLERS"}
	chatVars            = []string{"CHAT_AUDIENCE_TYPE", "CHAT_AUDIENCE", "CHAT_PROJECT_NUMBER"}
	// Flags every deployment sets, to the same value.
	sharedDeployFlags = []string{"--region", "--runtime", "--build-service-account", "--memory", "--cpu", "--concurrency", "--max-instances", "--timeout"}
)

// pinnedImage is an image named by digest (a tag before it only documents
// which tag the digest was taken from).
var pinnedImage = regexp.MustCompile(`^([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9._-]+(/[a-z0-9._-]+)*(:[A-Za-z0-9._-]+)?@sha256:[0-9a-f]{64}$`)

// notSecret matches what a step may hold that the secret patterns would
// take for one: an image digest, a Cloud KMS key's resource name.
var notSecret = regexp.MustCompile(`@?sha256:[0-9a-f]{64}|gcp-kms://projects/[a-z0-9-]+/locations/[a-z0-9-]+/keyRings/[A-Za-z0-9_-]+/cryptoKeys/[A-Za-z0-9_-]+`)

func isBrowser(name string) bool {
	for _, f := range registered {
		if f.name == name {
			return f.browser
		}
	}
	return false
}

// parseBuild decodes a Cloud Build config with unknown fields refused, so
// a misspelt key (waitfor, arg) fails here rather than being ignored by
// Cloud Build's looser reading.
func parseBuild(data []byte) (*cloudBuild, error) {
	var cb cloudBuild
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cb); err != nil {
		return nil, err
	}
	if len(cb.Steps) == 0 {
		return nil, errors.New("no steps")
	}
	return &cb, nil
}

// checkBuildCommon holds both build files to the rules they share: every
// substitution used is declared (or built in) and every one declared is
// used, no secret value anywhere, every image pinned by digest. It returns
// the substitution function for the file's remaining checks.
func checkBuildCommon(file string, cb *cloudBuild, bad func(string, ...any)) func(string) string {
	used := map[string]bool{}
	for i := range cb.Steps {
		for _, s := range cb.Steps[i].strings() {
			expand(s, cb.Substitutions, func(name string) {
				bad("%s: step %q uses ${%s}, which is neither declared under substitutions nor built in", file, cb.Steps[i].ID, name)
			})
			for _, m := range substitutionRef.FindAllStringSubmatch(s, -1) {
				used[strings.Trim(m[1], "{}")] = true
			}
		}
	}
	values := map[string]string{}
	for name, v := range cb.Substitutions {
		if !strings.HasPrefix(name, "_") {
			bad("%s: substitution %s: user-defined substitutions must start with an underscore", file, name)
		}
		if !used[name] {
			bad("%s: substitution %s is declared but never used", file, name)
		}
		for _, p := range secretProblems("substitution "+name, v) {
			bad("%s: %s", file, p)
		}
		values[name] = v
		if ov, ok := operatorSubstitutions[name]; ok {
			if v != "" {
				bad("%s: substitution %s has the default %q; it must have none, so that a build without it fails", file, name, v)
			}
			values[name] = ov
		}
	}
	sub := func(s string) string { return expand(s, values, func(string) {}) }

	if cb.AvailableSecrets != nil {
		if len(cb.AvailableSecrets.Inline) > 0 {
			bad("%s: availableSecrets.inline carries secret material in the file; use availableSecrets.secretManager", file)
		}
		for _, s := range cb.AvailableSecrets.SecretManager {
			if !secretVersionRef.MatchString(sub(s.VersionName)) {
				bad("%s: availableSecrets: %q is not a pinned Secret Manager version name", file, s.VersionName)
			}
		}
	}
	for i := range cb.Steps {
		st := &cb.Steps[i]
		for _, s := range st.strings() {
			for _, p := range secretProblems(fmt.Sprintf("step %q", st.ID), notSecret.ReplaceAllString(sub(s), "")) {
				bad("%s: %s", file, p)
			}
		}
		if !pinnedImage.MatchString(sub(st.Name)) {
			bad("%s: step %q runs the image %q, which is not pinned by digest (IMAGE@sha256:…, or @${_…_DIGEST})", file, st.ID, st.Name)
		}
	}
	return sub
}

// stepText is everything a step runs, joined.
func stepText(st *buildStep) string { return strings.Join(st.strings(), "\n") }

// checkTestBuild holds cloudbuild-test.yaml to running vet and the whole
// suite, on the module's Go version, under CI=true, and to nothing else:
// it deploys nothing and reads no secret.
func checkTestBuild(data []byte, goVersion string, bad func(string, ...any)) {
	cb, err := parseBuild(data)
	if err != nil {
		bad("%s: parse: %v", testBuildFile, err)
		return
	}
	checkBuildCommon(testBuildFile, cb, bad)
	if cb.AvailableSecrets != nil {
		bad("%s: the test build reads secrets (availableSecrets); the tests need none and their account may read none", testBuildFile)
	}
	tests := 0
	for i := range cb.Steps {
		st := &cb.Steps[i]
		text := stepText(st)
		if len(st.SecretEnv) > 0 {
			bad("%s: step %q reads secrets", testBuildFile, st.ID)
		}
		if regexp.MustCompile(`gcloud[^\n]*\b(deploy|add-invoker-policy-binding|add-iam-policy-binding|secrets versions access)\b`).MatchString(text) {
			bad("%s: step %q deploys or reaches a secret; the test build only tests", testBuildFile, st.ID)
		}
		if !strings.Contains(text, "go vet ./...") {
			continue
		}
		tests++
		if !strings.Contains(text, ".ci/run") && !strings.Contains(text, "go test -race -count=1 ./...") {
			bad("%s: the test step %q vets but does not run the test suite (.ci/run or go test -race -count=1 ./...)", testBuildFile, st.ID)
		}
		if !strings.HasPrefix(st.Name, "golang:"+goVersion) {
			bad("%s: the test step %q runs on %s; the module needs Go %s (golang:%s-…)", testBuildFile, st.ID, st.Name, goVersion, goVersion)
		}
		if !slices.Contains(st.Env, "CI=true") {
			bad("%s: the test step %q does not set CI=true: tests that need the Firestore emulator, gcloud or Chromium would be skipped instead of failing", testBuildFile, st.ID)
		}
	}
	if tests != 1 {
		bad("%s: %d steps run go vet ./... and the tests; want exactly one", testBuildFile, tests)
	}
}

// gcloudArgs returns the gcloud command a step runs, and whether it runs
// it only with a Chat app (under chatGuard). ok is false for a step that
// runs no gcloud command in a form the checks read.
func gcloudArgs(st *buildStep) (args []string, guarded, ok bool) {
	switch {
	case st.Entrypoint == "gcloud":
		return st.Args, false, true
	case st.Entrypoint == "bash" && len(st.Args) >= 3 && st.Args[0] == "-c" && st.Args[1] == chatGuard:
		if st.Args[2] != chatGuardArg {
			return nil, true, false
		}
		return st.Args[3:], true, true
	}
	return nil, false, false
}

// checkCloudBuild returns everything wrong with cloudbuild.yaml (data) and
// cloudbuild-test.yaml (testData), which must test and then deploy exactly
// the functions named, on the module's Go version.
func checkCloudBuild(data, testData []byte, functions []string, goVersion string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	checkTestBuild(testData, goVersion, bad)

	cb, err := parseBuild(data)
	if err != nil {
		return append(problems, "parse: "+err.Error())
	}
	sub := checkBuildCommon("cloudbuild.yaml", cb, bad)

	// The first step checks the pins the operator passes; every other step
	// runs after it.
	check := &cb.Steps[0]
	for name := range operatorSubstitutions {
		if _, ok := cb.Substitutions[name]; !ok {
			continue
		}
		if !strings.Contains(stepText(check), "${"+name+"}") {
			bad("the first step %q does not check %s, which has no default", check.ID, name)
		}
	}
	if text := stepText(check); !strings.Contains(text, chatInvoker) || !strings.Contains(text, "serviceAccount:chat@system.gserviceaccount.com") {
		bad("the first step %q does not check _CHAT_APP_INVOKER: only Chat's signer may invoke ChatEvents, never allUsers", check.ID)
	}
	if text := stepText(check); !strings.Contains(text, "${_CHAT_PROJECT_NUMBER}") || !strings.Contains(text, "serviceAccount:service-$$CHAT_PROJECT_NUMBER@gcp-sa-gsuiteaddons.iam.gserviceaccount.com") {
		bad("the first step %q does not hold _CHAT_PROJECT_NUMBER to _CHAT_APP_INVOKER: an add-on's service agent must be the one CHAT_PROJECT_NUMBER names", check.ID)
	}
	if text := stepText(check); !strings.Contains(text, "^[1-9][0-9]*$$") || !strings.Contains(text, "gcloud secrets versions describe") || !strings.Contains(text, "^sha256:[0-9a-f]{64}$$") {
		bad("the first step %q must refuse a secret version that is not a number or not enabled, and a digest that is not sha256:<hex>", check.ID)
	}
	for i := 1; i < len(cb.Steps); i++ {
		if !dependsOn(cb.Steps, i, 0) {
			bad("step %q does not wait for the check step %q", cb.Steps[i].ID, check.ID)
		}
	}

	// The tests: never in this build, which runs with the deployer's rights;
	// one step submits cloudbuild-test.yaml as a separate build under the
	// tester account and fails unless that build succeeds.
	testStep := -1
	for i := range cb.Steps {
		text := stepText(&cb.Steps[i])
		if strings.Contains(text, "go vet") || strings.Contains(text, "go test") || strings.Contains(text, ".ci/run") {
			bad("step %q runs the tests in the deploying build, with the deployer's rights; run them in %s", cb.Steps[i].ID, testBuildFile)
		}
		if !strings.Contains(text, "--config="+testBuildFile) {
			continue
		}
		if testStep >= 0 {
			bad("steps %q and %q both submit the test build; keep one", cb.Steps[testStep].ID, cb.Steps[i].ID)
		}
		testStep = i
		tester := regexp.MustCompile(`--service-account=projects/\$\{PROJECT_ID\}/serviceAccounts/\$\{(_[A-Z_]+)\}@\$\{PROJECT_ID\}\.iam\.gserviceaccount\.com`).FindStringSubmatch(text)
		switch {
		case tester == nil:
			bad("step %q submits the test build without --service-account=projects/${PROJECT_ID}/serviceAccounts/${_TESTER_SERVICE_ACCOUNT_ID}@…: it would run as the deployer", cb.Steps[i].ID)
		case tester[1] != "_TESTER_SERVICE_ACCOUNT_ID":
			bad("step %q submits the test build as ${%s}; use the tester account, ${_TESTER_SERVICE_ACCOUNT_ID}", cb.Steps[i].ID, tester[1])
		}
		if !strings.Contains(text, "SUCCESS) ") || !strings.Contains(text, "exit 1") || !strings.Contains(text, "gcloud builds describe") {
			bad("step %q does not wait for the test build and fail unless it ends in SUCCESS", cb.Steps[i].ID)
		}
		if !strings.Contains(text, "_GO_IMAGE_DIGEST=${_GO_IMAGE_DIGEST}") {
			bad("step %q does not pass _GO_IMAGE_DIGEST to the test build", cb.Steps[i].ID)
		}
	}
	if testStep < 0 {
		bad("no step submits %s and waits for it before deploying", testBuildFile)
	}

	// Deploy steps, and the step that lets Chat invoke ChatEvents.
	var deploys []deployment
	invokerStep := -1
	for i := range cb.Steps {
		st := &cb.Steps[i]
		cmd, guarded, ok := gcloudArgs(st)
		if !ok {
			if regexp.MustCompile(`functions\s+(deploy|add-invoker-policy-binding)`).MatchString(stepText(st)) {
				bad("step %q deploys from a script; write the deployment as entrypoint gcloud with args (or the Chat guard), so it can be checked", st.ID)
			}
			continue
		}
		if len(cmd) >= 3 && cmd[0] == "functions" && cmd[1] == "add-invoker-policy-binding" {
			invokerStep = i
			if cmd[2] != "ChatEvents" || !guarded || !slices.Contains(cmd, "--member="+chatInvoker) || !slices.Contains(cmd, "--region=${_REGION}") {
				bad("step %q must run, only with a Chat app, exactly: functions add-invoker-policy-binding ChatEvents --region=${_REGION} --member=%s", st.ID, chatInvoker)
			}
			if d := slices.IndexFunc(cb.Steps, func(s buildStep) bool { return s.ID == "deploy-ChatEvents" }); d < 0 || !dependsOn(cb.Steps, i, d) {
				bad("step %q does not wait for deploy-ChatEvents", st.ID)
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
		if private := slices.Contains(privateFunctions, d.name); guarded != private {
			if private {
				bad("step %q deploys %s unconditionally; deploy it only with a Chat app, under the Chat guard", st.ID, d.name)
			} else {
				bad("step %q deploys %s only with a Chat app; it is always needed", st.ID, d.name)
			}
		}
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
						bad("step %q: %s %s=%q is not a pinned Secret Manager reference (SECRET:VERSION)", st.ID, f, k, ref)
					}
				}
			}
		}
		deploys = append(deploys, d)
		if testStep >= 0 && !dependsOn(cb.Steps, i, testStep) {
			bad("step %q does not wait for the test step %q (waitFor)", st.ID, cb.Steps[testStep].ID)
		}
	}
	if slices.ContainsFunc(deploys, func(d deployment) bool { return slices.Contains(privateFunctions, d.name) }) && invokerStep < 0 {
		bad("no step lets Chat's signer invoke ChatEvents (functions add-invoker-policy-binding ChatEvents --member=%s)", chatInvoker)
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

	wantRuntime := "go" + strings.ReplaceAll(goVersion, ".", "")
	known := configVariables()
	accounts := map[string]string{} // function kind → runtime account
	for _, d := range deploys {
		where := fmt.Sprintf("step %q (%s)", d.step, d.name)
		access := "--allow-unauthenticated"
		if slices.Contains(privateFunctions, d.name) {
			access = "--no-allow-unauthenticated"
			if _, ok := d.flags["--allow-unauthenticated"]; ok {
				bad("%s: %s is invoked only by Google Chat; deploy it with --no-allow-unauthenticated", where, d.name)
			}
		} else if _, ok := d.flags["--no-allow-unauthenticated"]; ok {
			bad("%s: %s must stay public (its callers are browsers or authenticate in the request itself)", where, d.name)
		}
		for flag, want := range map[string]string{
			"--entry-point": d.name, "--runtime": wantRuntime, "--source": ".",
			"--gen2": "", "--trigger-http": "", access: "",
		} {
			if got, ok := d.flags[flag]; !ok || got != want {
				bad("%s: want %s", where, strings.TrimSuffix(flag+"="+want, "="))
			}
		}
		for _, flag := range append([]string{"--service-account", "--set-env-vars"}, sharedDeployFlags...) {
			if d.flags[flag] == "" {
				bad("%s: %s is missing", where, flag)
			}
		}

		// Bounds: instances, concurrency (above 1: the code is concurrent,
		// which Cloud Run functions allow only with a whole CPU), a timeout.
		if n, err := strconv.Atoi(sub(d.flags["--max-instances"])); d.flags["--max-instances"] != "" && (err != nil || n < 1 || n > 1000) {
			bad("%s: --max-instances=%s is not a number of instances (1–1000)", where, sub(d.flags["--max-instances"]))
		}
		if n, err := strconv.Atoi(sub(d.flags["--concurrency"])); d.flags["--concurrency"] != "" && (err != nil || n < 2 || n > 1000) {
			bad("%s: --concurrency=%s: want 2–1000 concurrent requests per instance; chatauth is concurrent", where, sub(d.flags["--concurrency"]))
		}
		if cpu, err := strconv.ParseFloat(sub(d.flags["--cpu"]), 64); d.flags["--cpu"] != "" && (err != nil || cpu < 1) {
			bad("%s: --cpu=%s: a concurrency above 1 needs at least one CPU", where, sub(d.flags["--cpu"]))
		}
		if t, err := time.ParseDuration(sub(d.flags["--timeout"])); d.flags["--timeout"] != "" && (err != nil || t < 30*time.Second || t > 300*time.Second) {
			bad("%s: --timeout=%s: want 30s–300s, above CreateSpace's own 30-second bound and far below the platform's hour", where, sub(d.flags["--timeout"]))
		}

		// Identities: one runtime account per kind, a dedicated build account.
		sa := sub(d.flags["--service-account"])
		if sa != "" && !regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\.iam\.gserviceaccount\.com$`).MatchString(sa) {
			bad("%s: --service-account %q is not a service account email of the project", where, sa)
		}
		kind := "webhook"
		if isBrowser(d.name) {
			kind = "browser"
		}
		if prev, ok := accounts[kind]; ok && prev != sa {
			bad("%s: runs as %s, another %s function as %s; one account per kind", where, sa, kind, prev)
		}
		accounts[kind] = sa
		build := sub(d.flags["--build-service-account"])
		if m := regexp.MustCompile(`^projects/[a-z0-9-]+/serviceAccounts/([^/]+)$`).FindStringSubmatch(build); build != "" && m == nil {
			bad("%s: --build-service-account %q is not projects/PROJECT/serviceAccounts/EMAIL", where, build)
		} else if m != nil && (m[1] == sa || strings.HasSuffix(m[1], "-compute@developer.gserviceaccount.com") || strings.HasSuffix(m[1], "@cloudbuild.gserviceaccount.com")) {
			bad("%s: --build-service-account %s: the function's build needs an account of its own, not a default or runtime one", where, m[1])
		}

		// Configuration: what the function needs, and no more.
		need := []string{"GOOGLE_CLOUD_PROJECT", "FIRESTORE_DATABASE", "CLIENT_SECRETS", "TOKEN_KEYSET", tokenKeysetKMSKeyVar, "REDIRECT_URL", "PUBLIC_URL"}
		var refuse []string
		if callerFree[d.name] {
			refuse = append(refuse, callerVars...)
		} else {
			need = append(need, callerVars...)
		}
		if slices.Contains(delegatingFunctions, d.name) {
			need = append(need, "CREDENTIAL_SOURCE", "DELEGATED_DOMAINS", "DELEGATION_SERVICE_ACCOUNT")
		} else {
			refuse = append(refuse, delegationVars...)
		}
		if d.name == "ChatEvents" {
			need = append(need, chatVars...)
		} else {
			refuse = append(refuse, chatVars...)
		}
		for _, k := range need {
			if _, ok := d.env[k]; !ok {
				bad("%s: --set-env-vars lacks %s", where, k)
			}
		}
		for _, k := range refuse {
			if _, ok := d.env[k]; ok {
				bad("%s: --set-env-vars sets %s, which %s does not need; give each function only what it reads", where, k, d.name)
			}
		}
		if d.env[tokenKeysetKMSKeyVar] == "" {
			bad("%s: %s is empty: a deployed keyset is wrapped with Cloud KMS", where, tokenKeysetKMSKeyVar)
		}
		for k, v := range d.env {
			if !slices.Contains(known, k) {
				bad("%s: --set-env-vars sets %s, which the function does not read", where, k)
			}
			if !slices.Contains(secretRefVars, k) {
				continue
			}
			if strings.HasSuffix(v, "/versions/latest") {
				bad("%s: %s=%q: pin the version; with latest, a new secret version goes live at the next cold start, untested and without a rollback point", where, k, v)
			} else if !secretVersionRef.MatchString(v) {
				bad("%s: %s=%q is not a pinned Secret Manager version name (projects/P/secrets/S/versions/N)", where, k, v)
			}
		}
		// The configuration is one the function accepts, as deployed.
		getenv := func(k string) string {
			switch k {
			case "K_SERVICE":
				return strings.ToLower(d.name)
			case "FUNCTION_TARGET":
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
		if slices.Contains(privateFunctions, d.name) && d.env["CHAT_AUDIENCE_TYPE"] != "ENDPOINT_URL" {
			bad("%s: CHAT_AUDIENCE_TYPE must be ENDPOINT_URL: only then does Chat send a Google-signed ID token for the URL, which Cloud Run's invoker check accepts", where)
		}
		if d.env["CHAT_AUDIENCE_TYPE"] == "ENDPOINT_URL" && d.env["CHAT_AUDIENCE"] != wantBase+"/ChatEvents" {
			bad("%s: CHAT_AUDIENCE %q must be %s/ChatEvents, the HTTP endpoint URL of the Chat app", where, d.env["CHAT_AUDIENCE"], wantBase)
		}
	}
	if accounts["browser"] != "" && accounts["browser"] == accounts["webhook"] {
		bad("the browser-facing and the webhook functions both run as %s; give each kind its own account, granted only the secrets it reads", accounts["browser"])
	}
	if testStep >= 0 {
		tester := sub("${_TESTER_SERVICE_ACCOUNT_ID}@${PROJECT_ID}.iam.gserviceaccount.com")
		for kind, sa := range accounts {
			if sa == tester {
				bad("the tests run as %s, the %s functions' runtime account", sa, kind)
			}
		}
	}
	// Values every function shares are the same everywhere.
	for _, d := range deploys[min(1, len(deploys)):] {
		for _, flag := range sharedDeployFlags {
			if d.flags[flag] != deploys[0].flags[flag] {
				bad("step %q: %s differs from step %q's; every function must be deployed alike", d.step, flag, deploys[0].step)
			}
		}
	}
	firstEnv := map[string]deployment{}
	for _, d := range deploys {
		for k, v := range d.env {
			if first, ok := firstEnv[k]; !ok {
				firstEnv[k] = d
			} else if first.env[k] != v {
				bad("step %q: %s differs from step %q's; every function that reads it must get the same", d.step, k, first.step)
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

// TestCloudBuild checks the real cloudbuild.yaml and cloudbuild-test.yaml
// against the registered functions.
func TestCloudBuild(t *testing.T) {
	t.Parallel()
	data, testData := readBuildFiles(t)
	for _, p := range checkCloudBuild(data, testData, registeredNames(), goMinor(t)) {
		t.Error(p)
	}
}

func readBuildFiles(t *testing.T) (deploy, test []byte) {
	t.Helper()
	deploy, err := os.ReadFile("cloudbuild.yaml")
	if err != nil {
		t.Fatal(err)
	}
	test, err = os.ReadFile(testBuildFile)
	if err != nil {
		t.Fatal(err)
	}
	return deploy, test
}

// inStep replaces the first old with new inside the step with the given
// id only.
func inStep(file, id, old, new string) string {
	start := strings.Index(file, "\n  - id: "+id+"\n")
	if start < 0 {
		return file
	}
	end := strings.Index(file[start+1:], "\n  - id: ")
	if end < 0 {
		end = len(file)
	} else {
		end += start + 1
	}
	return file[:start] + strings.Replace(file[start:end], old, new, 1) + file[end:]
}

// dropStep removes the step with the given id.
func dropStep(file, id string) string {
	start := strings.Index(file, "\n  - id: "+id+"\n")
	if start < 0 {
		return file
	}
	end := strings.Index(file[start+1:], "\n  - id: ")
	if end < 0 {
		return file[:start+1]
	}
	return file[:start] + file[start+1+end:]
}

// TestCloudBuildChecks shows that each check catches what it is for, on
// the real files with one thing broken.
func TestCloudBuildChecks(t *testing.T) {
	t.Parallel()
	data, testData := readBuildFiles(t)
	orig, origTest := string(data), string(testData)
	names := registeredNames()
	const envStart = "--set-env-vars=^|^"
	const webhookRef = "WEBHOOK_SECRETS=projects/${PROJECT_ID}/secrets/${_WEBHOOK_SECRET_NAME}/versions/${_WEBHOOK_SECRET_VERSION}"
	const kmsRef = "TOKEN_KEYSET_KMS_KEY=gcp-kms://projects/${PROJECT_ID}/locations/${_KMS_LOCATION}/keyRings/${_KMS_KEY_RING}/cryptoKeys/${_KMS_KEY}"
	const delegation = "|CREDENTIAL_SOURCE=${_CREDENTIAL_SOURCE}|DELEGATED_DOMAINS=${_DELEGATED_DOMAINS}|DELEGATION_SERVICE_ACCOUNT=${_DELEGATION_SERVICE_ACCOUNT}"
	guarded := "    entrypoint: bash\n    args:\n      - -c\n      - '" + chatGuard + "'\n      - " + chatGuardArg + "\n"
	for _, tc := range []struct {
		name       string
		file, test string // "" means the real file
		functions  []string
		want       string
	}{
		// What is deployed.
		{"a registered function not deployed", "", "", append(slices.Clone(names), "Extra"), "Extra is registered but not deployed"},
		{"a deployed function not registered", "", "", slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "Disconnect" }), "deploys Disconnect, which is not a registered function"},
		{"a step dropped", dropStep(orig, "deploy-Disconnect"), "", names, "Disconnect is registered but not deployed"},
		{"wrong runtime", strings.Replace(orig, "--runtime=go126", "--runtime=go125", 1), "", names, "want --runtime=go126"},
		{"entry point differs from the name", strings.Replace(orig, "--entry-point=CreateSpace", "--entry-point=createSpace", 1), "", names, "want --entry-point=CreateSpace"},
		{"deploy hidden in a script", strings.Replace(orig, "        echo \"test build $$id runs", "        gcloud functions deploy Extra --gen2\n        echo \"test build $$id runs", 1), "", names, "deploys from a script"},
		{"misspelt key", strings.Replace(orig, "waitFor: [test]", "waitfor: [test]", 1), "", names, "field waitfor not found"},

		// Substitutions and secret values.
		{"undeclared substitution", strings.Replace(orig, "--region=${_REGION}", "--region=${_REGOIN}", 1), "", names, "${_REGOIN}, which is neither declared"},
		{"unused substitution", strings.Replace(orig, "substitutions:\n", "substitutions:\n  _UNUSED: x\n", 1), "", names, "_UNUSED is declared but never used"},
		{"bare shell variable", strings.Replace(orig, `fail() { echo "check: $$*"`, `fail() { echo "check: $HOME"`, 1), "", names, "uses ${HOME}"},
		{"hex webhook secret inline", strings.Replace(orig, webhookRef, "WEBHOOK_SECRETS=3f6c1d0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d", 1), "", names, "looks like a long hex string inline"},
		{"secret file path instead of a reference", strings.Replace(orig, "TOKEN_KEYSET=projects/${PROJECT_ID}/secrets/${_KEYSET_SECRET_NAME}/versions/${_KEYSET_SECRET_VERSION}", "TOKEN_KEYSET=/workspace/keyset.json", 1), "", names, `TOKEN_KEYSET="/workspace/keyset.json" is not a pinned Secret Manager version name`},
		{"client secret in a substitution", strings.Replace(orig, "_TRUSTED_CALLERS: \"\"", "_TRUSTED_CALLERS: GOCSPX-abcdefghijklmnopqrstuvwxyz12", 1), "", names, "GOCSPX-"},
		{"PEM in the test build's env", "", strings.Replace(origTest, "- DEBIAN_FRONTEND=noninteractive", "- KEY=-----BEGIN PRIVATE KEY-----", 1), names, "a PEM block"},
		{"Tink keyset inline", strings.Replace(orig, envStart, envStart+`X={"primaryKeyId":1}|`, 1), "", names, "a Tink keyset"},
		{"literal --set-secrets", strings.Replace(orig, "      - --trigger-http\n", "      - --trigger-http\n      - --set-secrets=WEBHOOK=hunter2hunter2\n", 1), "", names, "is not a pinned Secret Manager reference"},
		{"unknown environment variable", strings.Replace(orig, envStart, envStart+"CLIENT_SECRET=x|", 1), "", names, "sets CLIENT_SECRET, which the function does not read"},

		// Pinned secret versions, checked before anything runs.
		{"secret version latest", strings.Replace(orig, "/versions/${_CLIENT_SECRET_VERSION}", "/versions/latest", 1), "", names, "pin the version"},
		{"secret version with a default", strings.Replace(orig, "_KEYSET_SECRET_VERSION: \"\"", "_KEYSET_SECRET_VERSION: \"1\"", 1), "", names, "_KEYSET_SECRET_VERSION has the default"},
		{"a version left unchecked", inStep(orig, "check", "=${_KEYSET_SECRET_VERSION}\n", "=1\n"), "", names, "does not check _KEYSET_SECRET_VERSION"},
		{"any Chat invoker", inStep(orig, "check", "      - CHAT_APP_INVOKER=${_CHAT_APP_INVOKER}\n", ""), "", names, "does not check _CHAT_APP_INVOKER"},
		{"check accepts any version", inStep(orig, "check", "^[1-9][0-9]*$$", ".*"), "", names, "must refuse a secret version that is not a number"},
		{"a step before the check", inStep(orig, "test", "waitFor: [check]", "waitFor: ['-']"), "", names, "does not wait for the check step"},

		// Images pinned by digest.
		{"tag-only gcloud image", inStep(orig, "deploy-CreateSpace", "google-cloud-cli:slim@${_GCLOUD_IMAGE_DIGEST}", "google-cloud-cli:slim"), "", names, `"deploy-CreateSpace" runs the image "gcr.io/google.com/cloudsdktool/google-cloud-cli:slim", which is not pinned`},
		{"tag-only Go image", "", strings.Replace(origTest, "golang:1.26-bookworm@${_GO_IMAGE_DIGEST}", "golang:1.26-bookworm", 1), names, "which is not pinned by digest"},
		{"digest with a default", strings.Replace(orig, "_GCLOUD_IMAGE_DIGEST: \"\"", "_GCLOUD_IMAGE_DIGEST: sha256:latest", 1), "", names, "_GCLOUD_IMAGE_DIGEST has the default"},

		// The tests: in their own build, as the tester, before any deploy.
		{"tests in the deploying build", inStep(orig, "check", "set -euo pipefail\n", "set -euo pipefail\n        go test ./...\n"), "", names, "runs the tests in the deploying build"},
		{"no test build", dropStep(orig, "test"), "", names, "no step submits cloudbuild-test.yaml"},
		{"test build as the deployer", inStep(orig, "test", "--service-account=projects/${PROJECT_ID}/serviceAccounts/${_TESTER_SERVICE_ACCOUNT_ID}@${PROJECT_ID}.iam.gserviceaccount.com", ""), "", names, "it would run as the deployer"},
		{"test build as a runtime account", inStep(orig, "test", "${_TESTER_SERVICE_ACCOUNT_ID}@${PROJECT_ID}.iam.gserviceaccount.com", "${_WEBHOOK_SERVICE_ACCOUNT_ID}@${PROJECT_ID}.iam.gserviceaccount.com"), "", names, "use the tester account"},
		{"tester is a runtime account", strings.Replace(orig, "_TESTER_SERVICE_ACCOUNT_ID: chatauth-tester", "_TESTER_SERVICE_ACCOUNT_ID: chatauth-hooks", 1), "", names, "the tests run as chatauth-hooks@"},
		{"test verdict ignored", inStep(orig, "test", "exit 1 ;;", "exit 0 ;;"), "", names, "does not wait for the test build"},
		{"deploy without waiting", strings.Replace(orig, "waitFor: [test]", "waitFor: [check]", 1), "", names, "does not wait for the test step"},
		{"no test step", "", strings.Replace(origTest, "go vet ./...", "true", 1), names, "0 steps run go vet"},
		{"tests without CI=true", "", strings.Replace(origTest, "      - CI=true\n", "", 1), names, "does not set CI=true"},
		{"old Go image", "", strings.Replace(origTest, "name: golang:1.26-bookworm", "name: golang:1.25-bookworm", 1), names, "the module needs Go"},
		{"test build deploys", "", strings.Replace(origTest, "bash .ci/run", "bash .ci/run\n        gcloud functions deploy CreateSpace", 1), names, "deploys or reaches a secret"},
		{"test build reads secrets", "", strings.Replace(origTest, "\nsteps:\n", "\navailableSecrets:\n  secretManager:\n    - versionName: projects/${PROJECT_ID}/secrets/chatauth-webhook/versions/2\n      env: W\nsteps:\n", 1), names, "the test build reads secrets"},

		// The functions' own builds.
		{"no build service account", inStep(orig, "deploy-OAuthStart", "      - --build-service-account=projects/${PROJECT_ID}/serviceAccounts/${_BUILDER_SERVICE_ACCOUNT_ID}@${PROJECT_ID}.iam.gserviceaccount.com\n", ""), "", names, "--build-service-account is missing"},
		{"Compute Engine default build account", strings.ReplaceAll(orig, "serviceAccounts/${_BUILDER_SERVICE_ACCOUNT_ID}@${PROJECT_ID}.iam.gserviceaccount.com", "serviceAccounts/${PROJECT_NUMBER}-compute@developer.gserviceaccount.com"), "", names, "not a default or runtime one"},

		// Bounds.
		{"no max-instances", inStep(orig, "deploy-Disconnect", "      - --max-instances=${_MAX_INSTANCES}\n", ""), "", names, "--max-instances is missing"},
		{"unbounded instances", strings.Replace(orig, `_MAX_INSTANCES: "10"`, `_MAX_INSTANCES: "0"`, 1), "", names, "is not a number of instances"},
		{"concurrency 1", strings.Replace(orig, `_CONCURRENCY: "32"`, `_CONCURRENCY: "1"`, 1), "", names, "want 2–1000 concurrent requests"},
		{"no timeout", inStep(orig, "deploy-CreateSpace", "      - --timeout=60s\n", ""), "", names, "--timeout is missing"},
		{"hour-long timeout", strings.ReplaceAll(orig, "--timeout=60s", "--timeout=3600s"), "", names, "want 30s–300s"},
		{"a fraction of a CPU", strings.ReplaceAll(orig, "--cpu=1\n", "--cpu=0.5\n"), "", names, "needs at least one CPU"},
		{"deployments differ", inStep(orig, "deploy-Disconnect", "--timeout=60s", "--timeout=90s"), "", names, "--timeout differs"},

		// Identities and what each function is given.
		{"a browser function as the webhook account", inStep(orig, "deploy-OAuthCallback", "${_BROWSER_SERVICE_ACCOUNT_ID}@", "${_WEBHOOK_SERVICE_ACCOUNT_ID}@"), "", names, "one account per kind"},
		{"one account for every function", strings.ReplaceAll(strings.Replace(orig, "  _BROWSER_SERVICE_ACCOUNT_ID: chatauth-web\n", "", 1), "${_BROWSER_SERVICE_ACCOUNT_ID}@", "${_WEBHOOK_SERVICE_ACCOUNT_ID}@"), "", names, "both run as chatauth-hooks@"},
		{"the webhook secret for OAuthStart", inStep(orig, "deploy-OAuthStart", envStart, envStart+webhookRef+"|"), "", names, "sets WEBHOOK_SECRETS, which OAuthStart does not need"},
		{"delegation for Disconnect", inStep(orig, "deploy-Disconnect", "|TRUSTED_CALLERS=${_TRUSTED_CALLERS}", "|TRUSTED_CALLERS=${_TRUSTED_CALLERS}"+delegation), "", names, "sets CREDENTIAL_SOURCE, which Disconnect does not need"},
		{"no delegation settings for CreateSpace", inStep(orig, "deploy-CreateSpace", delegation, ""), "", names, "lacks CREDENTIAL_SOURCE"},
		{"Chat settings everywhere", inStep(orig, "deploy-OAuthStart", envStart, envStart+"CHAT_AUDIENCE_TYPE=ENDPOINT_URL|"), "", names, "sets CHAT_AUDIENCE_TYPE, which OAuthStart does not need"},
		{"cleartext keyset", strings.ReplaceAll(orig, kmsRef, "TOKEN_KEYSET_KMS_KEY="), "", names, "TOKEN_KEYSET_KMS_KEY is empty"},
		{"Chat API elsewhere", inStep(orig, "deploy-CreateSpace", envStart, envStart+"CHAT_API_ENDPOINT=https://chat.evil.example|"), "", names, "CHAT_API_ENDPOINT"},

		// ChatEvents: private, only with a Chat app.
		{"ChatEvents public", inStep(orig, "deploy-ChatEvents", "--no-allow-unauthenticated", "--allow-unauthenticated"), "", names, "deploy it with --no-allow-unauthenticated"},
		{"a public function private", inStep(orig, "deploy-CreateSpace", "--allow-unauthenticated", "--no-allow-unauthenticated"), "", names, "CreateSpace must stay public"},
		{"ChatEvents without a Chat app", inStep(orig, "deploy-ChatEvents", guarded, "    entrypoint: gcloud\n    args:\n"), "", names, "deploys ChatEvents unconditionally"},
		{"guard on another substitution", inStep(orig, "deploy-ChatEvents", "      - "+chatGuardArg+"\n      - functions", "      - chat-invoker=${_REGION}\n      - functions"), "", names, "deploys from a script"},
		{"no invoker for Chat", dropStep(orig, "invoker-ChatEvents"), "", names, "no step lets Chat's signer invoke ChatEvents"},
		{"ChatEvents invoked by everyone", inStep(orig, "invoker-ChatEvents", "--member="+chatInvoker, "--member=allUsers"), "", names, "functions add-invoker-policy-binding ChatEvents --region=${_REGION} --member=${_CHAT_APP_INVOKER}"},
		{"add-on project number everywhere", inStep(orig, "deploy-OAuthStart", envStart, envStart+"CHAT_PROJECT_NUMBER=${_CHAT_PROJECT_NUMBER}|"), "", names, "sets CHAT_PROJECT_NUMBER, which OAuthStart does not need"},
		{"no add-on project number for ChatEvents", inStep(orig, "deploy-ChatEvents", "|CHAT_PROJECT_NUMBER=${_CHAT_PROJECT_NUMBER}", ""), "", names, "lacks CHAT_PROJECT_NUMBER"},
		{"add-on agent unchecked", inStep(orig, "check", "      - CHAT_PROJECT_NUMBER=${_CHAT_PROJECT_NUMBER}\n", ""), "", names, "does not hold _CHAT_PROJECT_NUMBER to _CHAT_APP_INVOKER"},
		{"Chat audience as project number", inStep(orig, "deploy-ChatEvents", "CHAT_AUDIENCE_TYPE=ENDPOINT_URL|CHAT_AUDIENCE=https://${_REGION}-${PROJECT_ID}.cloudfunctions.net/ChatEvents", "CHAT_AUDIENCE_TYPE=PROJECT_NUMBER|CHAT_AUDIENCE=123456789012"), "", names, "CHAT_AUDIENCE_TYPE must be ENDPOINT_URL"},

		// One host.
		{"Chat audience on another host", strings.Replace(orig, "CHAT_AUDIENCE=https://${_REGION}-${PROJECT_ID}.cloudfunctions.net/ChatEvents", "CHAT_AUDIENCE=https://chat.example/ChatEvents", 1), "", names, "the HTTP endpoint URL of the Chat app"},
		{"callback on another host", strings.ReplaceAll(orig, "REDIRECT_URL=https://${_REGION}-${PROJECT_ID}.cloudfunctions.net/OAuthCallback", "REDIRECT_URL=https://chatauth.example/OAuthCallback"), "", names, "the host all functions share"},
		{"configuration the function refuses", strings.Replace(orig, "|PUBLIC_URL=https://${_REGION}-${PROJECT_ID}.cloudfunctions.net", "|PUBLIC_URL=http://example.com", 1), "", names, "the function would refuse this configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file, test := tc.file, tc.test
			if file == "" {
				file = orig
			}
			if test == "" {
				test = origTest
			}
			if file == orig && test == origTest && slices.Equal(tc.functions, names) {
				t.Fatal("the mutation changed nothing")
			}
			problems := checkCloudBuild([]byte(file), []byte(test), tc.functions, goMinor(t))
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got:\n%s", tc.want, strings.Join(problems, "\n"))
		})
	}
}

// TestCheckStep runs cloudbuild.yaml's first step in bash, with a gcloud
// that knows which secret versions are enabled, and shows that it passes
// the pins the README's command gives and refuses each bad one before
// anything is deployed, without running what a value holds.
func TestCheckStep(t *testing.T) {
	t.Parallel()
	data, _ := readBuildFiles(t)
	cb, err := parseBuild(data)
	if err != nil {
		t.Fatal(err)
	}
	check := cb.Steps[0]
	if check.ID != "check" || len(check.Args) != 2 || check.Args[0] != "-c" {
		t.Fatalf("the first step is %q with %d arguments, want the check script", check.ID, len(check.Args))
	}
	bin := t.TempDir()
	// Versions 1–3 of every secret exist; 3 is disabled.
	writeTreeFile(t, filepath.Join(bin, "gcloud"), []byte(`#!/bin/bash
case "$1 $2 $3 $4" in
  "secrets versions describe 1"|"secrets versions describe 2") echo ENABLED ;;
  "secrets versions describe 3") echo DISABLED ;;
  "secrets versions describe "*) echo "ERROR: NOT_FOUND" >&2; exit 1 ;;
  *) echo "unexpected gcloud $*" >&2; exit 3 ;;
esac
`))
	if err := os.Chmod(filepath.Join(bin, "gcloud"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := map[string]string{"_CHAT_APP_INVOKER": "serviceAccount:chat@system.gserviceaccount.com", "_CLIENT_SECRET_VERSION": "2"}
	for k, v := range operatorSubstitutions {
		if _, ok := good[k]; !ok {
			good[k] = v
		}
	}
	run := func(t *testing.T, with map[string]string) (string, error) {
		values := map[string]string{}
		for k, v := range cb.Substitutions {
			values[k] = v
		}
		for k, v := range good {
			values[k] = v
		}
		for k, v := range with {
			values[k] = v
		}
		sub := func(s string) string { return expand(s, values, func(string) {}) }
		cmd := exec.Command("bash", "-c", sub(check.Args[1]))
		cmd.Dir = t.TempDir()
		cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"}
		for _, e := range check.Env {
			cmd.Env = append(cmd.Env, sub(e))
		}
		out, err := cmd.CombinedOutput()
		// A value is data, never script.
		if _, serr := os.Stat(filepath.Join(cmd.Dir, "injected")); serr == nil {
			t.Error("a substitution's value was run as a command")
		}
		return string(out), err
	}
	for _, tc := range []struct {
		name string
		with map[string]string
		want string // "" means passes
	}{
		{"the README's pins", nil, ""},
		{"no Chat app", map[string]string{"_CHAT_APP_INVOKER": ""}, ""},
		{"an add-on's service agent", map[string]string{"_CHAT_APP_INVOKER": "serviceAccount:service-123456789012@gcp-sa-gsuiteaddons.iam.gserviceaccount.com", "_CHAT_PROJECT_NUMBER": "123456789012"}, ""},
		{"an add-on's agent without its project number", map[string]string{"_CHAT_APP_INVOKER": "serviceAccount:service-123456789012@gcp-sa-gsuiteaddons.iam.gserviceaccount.com"}, "needs _CHAT_PROJECT_NUMBER"},
		{"an add-on's agent of another project", map[string]string{"_CHAT_APP_INVOKER": "serviceAccount:service-111111111111@gcp-sa-gsuiteaddons.iam.gserviceaccount.com", "_CHAT_PROJECT_NUMBER": "123456789012"}, "needs _CHAT_PROJECT_NUMBER"},
		{"an add-on's project number with Chat's own signer", map[string]string{"_CHAT_PROJECT_NUMBER": "123456789012"}, "needs _CHAT_PROJECT_NUMBER"},
		{"an add-on's project number without a Chat app", map[string]string{"_CHAT_APP_INVOKER": "", "_CHAT_PROJECT_NUMBER": "123456789012"}, "needs _CHAT_PROJECT_NUMBER"},
		{"an add-on's project id for its number", map[string]string{"_CHAT_APP_INVOKER": "serviceAccount:service-my-project@gcp-sa-gsuiteaddons.iam.gserviceaccount.com", "_CHAT_PROJECT_NUMBER": "my-project"}, "must be"},
		{"a project number that is a command", map[string]string{"_CHAT_APP_INVOKER": "serviceAccount:service-1@gcp-sa-gsuiteaddons.iam.gserviceaccount.com", "_CHAT_PROJECT_NUMBER": "$(touch injected)"}, "needs _CHAT_PROJECT_NUMBER"},
		{"version missing", map[string]string{"_KEYSET_SECRET_VERSION": ""}, "_KEYSET_SECRET_VERSION must be the number"},
		{"version latest", map[string]string{"_WEBHOOK_SECRET_VERSION": "latest"}, "_WEBHOOK_SECRET_VERSION must be the number"},
		{"version 0", map[string]string{"_CLIENT_SECRET_VERSION": "0"}, "_CLIENT_SECRET_VERSION must be the number"},
		{"version with a suffix", map[string]string{"_CLIENT_SECRET_VERSION": "2 "}, "_CLIENT_SECRET_VERSION must be the number"},
		{"version disabled", map[string]string{"_KEYSET_SECRET_VERSION": "3"}, "is DISABLED, not ENABLED"},
		{"version absent", map[string]string{"_KEYSET_SECRET_VERSION": "9"}, "is missing or unreadable (see above), not ENABLED"},
		{"digest missing", map[string]string{"_GO_IMAGE_DIGEST": ""}, "_GO_IMAGE_DIGEST must be an image digest"},
		{"a tag for a digest", map[string]string{"_GCLOUD_IMAGE_DIGEST": "slim"}, "_GCLOUD_IMAGE_DIGEST must be an image digest"},
		{"a short digest", map[string]string{"_GCLOUD_IMAGE_DIGEST": "sha256:abc"}, "_GCLOUD_IMAGE_DIGEST must be an image digest"},
		{"everyone may invoke ChatEvents", map[string]string{"_CHAT_APP_INVOKER": "allUsers"}, "_CHAT_APP_INVOKER must be"},
		{"every Google account may", map[string]string{"_CHAT_APP_INVOKER": "allAuthenticatedUsers"}, "_CHAT_APP_INVOKER must be"},
		{"another account", map[string]string{"_CHAT_APP_INVOKER": "serviceAccount:chat@system.gserviceaccount.com.evil.example"}, "_CHAT_APP_INVOKER must be"},
		{"a look-alike agent", map[string]string{"_CHAT_APP_INVOKER": "serviceAccount:service-1@gcp-sa-gsuiteaddons.iam.gserviceaccount.com,allUsers"}, "_CHAT_APP_INVOKER must be"},
		{"a value that is a command", map[string]string{"_CHAT_APP_INVOKER": "$(touch injected)", "_GO_IMAGE_DIGEST": "`touch injected`"}, "must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.with)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v\n%s", err, out)
			case tc.want != "" && (err == nil || !strings.Contains(out, tc.want)):
				t.Errorf("got %v:\n%s\nwant a refusal saying %q", err, out, tc.want)
			}
			if strings.Contains(out, "unexpected gcloud") {
				t.Errorf("the check ran another gcloud command:\n%s", out)
			}
		})
	}
}

// TestCallerFreeFunctions: deployed alone, OAuthStart, OAuthCallback and
// ChatEvents need no webhook secret; every other function, and an
// instance serving all of them, still does.
func TestCallerFreeFunctions(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"GOOGLE_CLOUD_PROJECT": "p",
		"CLIENT_SECRETS":       "projects/p/secrets/client/versions/3",
		"TOKEN_KEYSET":         "projects/p/secrets/keyset/versions/1",
		"REDIRECT_URL":         "https://europe-west1-p.cloudfunctions.net/OAuthCallback",
		"PUBLIC_URL":           "https://europe-west1-p.cloudfunctions.net",
		"K_SERVICE":            "x",
	}
	for _, name := range append(registeredNames(), "", "Users", "oauthstart") {
		env["FUNCTION_TARGET"] = name
		_, err := loadConfig(envMap(env))
		if free := name == "OAuthStart" || name == "OAuthCallback" || name == "ChatEvents"; free != (err == nil) {
			t.Errorf("FUNCTION_TARGET=%q without WEBHOOK_SECRETS: got %v, want accepted %v", name, err, free)
		} else if err != nil && !strings.Contains(err.Error(), "WEBHOOK_SECRETS") {
			t.Errorf("FUNCTION_TARGET=%q: got %v, want an error naming WEBHOOK_SECRETS", name, err)
		}
	}
}

// TestGcloudDict pins the gcloud dictionary syntax the checks parse.
func TestGcloudDict(t *testing.T) {
	t.Parallel()
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
