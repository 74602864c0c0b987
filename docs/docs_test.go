package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// root is the repository's root.
const root = ".."

// frontPageLines is the most the README may hold: what the service is, the
// two commands, the architecture and the folders, and links; everything
// else belongs in a document of this folder.
const frontPageLines = 250

// documents are the README and every Markdown file of this folder, as
// paths from the repository's root.
func documents(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no documents in docs/ (%v)", err)
	}
	out := []string{"README.md"}
	for _, d := range docs {
		rel, _ := filepath.Rel(root, d)
		out = append(out, filepath.ToSlash(rel))
	}
	return out
}

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fence opens or closes a fenced code block.
var fence = regexp.MustCompile("^\\s*```")

// codeSpan is inline code: what it holds is not a link.
var codeSpan = regexp.MustCompile("`[^`]*`")

// prose is a document's lines with fenced code blocks and inline code
// blanked: what is left can hold links.
func prose(text string) []string {
	var out []string
	in := false
	for _, line := range strings.Split(text, "\n") {
		switch {
		case fence.MatchString(line):
			in = !in
			out = append(out, "")
		case in:
			out = append(out, "")
		default:
			out = append(out, codeSpan.ReplaceAllString(line, "``"))
		}
	}
	return out
}

var heading = regexp.MustCompile(`^#{1,6}\s+(.+?)\s*#*\s*$`)

// anchors are the fragments GitHub gives a document's headings: lower
// case, letters, digits, '-' and '_' kept, spaces made '-', anything else
// dropped; a repeated one gets -1, -2, ...
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	in := false
	for _, line := range strings.Split(text, "\n") {
		if fence.MatchString(line) {
			in = !in
			continue
		}
		m := heading.FindStringSubmatch(line)
		if in || m == nil {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(m[1]) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			out[a+"-"+strconv.Itoa(n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

// link is a Markdown link or image: [text](target) or ![alt](target).
var link = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

var scheme = regexp.MustCompile(`^[a-z][a-z0-9+.-]*:`)

func TestEveryLinkAndAnchorResolves(t *testing.T) {
	for _, doc := range documents(t) {
		text := strings.Join(prose(read(t, doc)), "\n") // a link's text may span lines
		for _, loc := range link.FindAllStringSubmatchIndex(text, -1) {
			line, target := strings.Count(text[:loc[0]], "\n")+1, text[loc[2]:loc[3]]
			if scheme.MatchString(target) {
				continue // http:, https:, mailto: are not this repository's
			}
			ref, fragment, _ := strings.Cut(target, "#")
			file := doc
			if ref != "" {
				file = filepath.ToSlash(filepath.Join(filepath.Dir(doc), ref))
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(file))); err != nil {
					t.Errorf("%s:%d: link %s: no file %s", doc, line, target, file)
					continue
				}
			}
			switch {
			case fragment == "":
			case !strings.HasSuffix(file, ".md"):
				t.Errorf("%s:%d: link %s: an anchor into a file that is not Markdown", doc, line, target)
			case !anchors(read(t, file))[fragment]:
				t.Errorf("%s:%d: link %s: %s has no heading #%s", doc, line, target, file, fragment)
			}
		}
	}
}

func TestTheREADMEIsAFrontPageThatLinksEveryDocument(t *testing.T) {
	readme := read(t, "README.md")
	if n := strings.Count(strings.TrimRight(readme, "\n"), "\n") + 1; n > frontPageLines {
		t.Errorf("README.md is %d lines; a front page is at most %d: move the detail to docs/", n, frontPageLines)
	}
	linked := map[string]bool{}
	for _, m := range link.FindAllStringSubmatch(strings.Join(prose(readme), "\n"), -1) {
		ref, _, _ := strings.Cut(m[1], "#")
		linked[ref] = true
	}
	for _, doc := range documents(t)[1:] {
		if !linked[doc] {
			t.Errorf("README.md does not link %s", doc)
		}
	}
	cmds := shellCommands(readme)
	for _, want := range []string{"make dev", "make test"} {
		if !slices.Contains(cmds, want) {
			t.Errorf("README.md does not show %q in a sh block: the two commands come first", want)
		}
	}
}

// shellLanguages are the fenced blocks whose lines are commands.
var shellLanguages = []string{"sh", "bash", "shell", "console"}

// shellCommands are the commands a document shows in its shell blocks,
// normalised: a trailing comment dropped, continued lines joined, spaces
// collapsed.
func shellCommands(text string) []string {
	var out []string
	in := false
	var cont string
	for _, line := range strings.Split(text, "\n") {
		if fence.MatchString(line) {
			lang := strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(line), "`"))
			in = !in && slices.Contains(shellLanguages, lang)
			continue
		}
		if !in {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		if cmd := strings.Join(strings.Fields(cont+line), " "); cmd != "" {
			out = append(out, cmd)
		}
		cont = ""
	}
	return out
}

// runner says how the repository runs a documented command.
type runner struct {
	// tests ("dir.TestName", dir from the repository's root) run the
	// command, or what it runs, as how says; with notRun they stand in for
	// it.
	tests []string
	how   string
	// notRun says why no test runs the command itself.
	notRun string
	// ci is a CI script that runs the command.
	ci string
}

// noEngine is why a docker command runs nowhere here.
const noEngine = "needs a Docker engine, which this project's machine and its CI lack; the tests named load the compose file with compose-go and run its setup natively"

// commands is every command the documents show in a shell block, and
// what runs it. A command shown and not listed fails, and so does one
// listed and no longer shown.
var commands = map[string]runner{
	"make dev": {tests: []string{"e2e.TestRunCommand"},
		how: "builds cmd/devstack, which the target runs, and runs it twice on free ports"},
	"make test": {ci: ".ci/run", how: "CI's entry point: .ci/run runs it on a fresh PostgreSQL database"},
	"STRIPE_WEBHOOK_SECRET=whsec_devstack_not_a_secret go run ./cmd/stripe-event -url http://127.0.0.1:8080/webhooks/stripe -type verified -session vs_demo_...": {
		tests: []string{"e2e.TestRunCommand"},
		how:   "runs the command `make dev` prints, as printed (with that stack's port, secret and demo session)"},
	"identity-verification check-config [webhook|worker|admin|all]": {
		tests: []string{"cmd/identity-verification.TestCheckConfigPrintsTheEffectiveConfigurationMasked",
			"cmd/identity-verification.TestCheckConfigFailsWithEveryProblem", "cmd/identity-verification.TestCheckConfigRefusesAnUnknownRole",
			"cmd/identity-verification.TestCheckConfigQuietPrintsTheVerdictOnly"},
		how: "run the subcommand as main does (checkConfig with its arguments), for all, webhook and an unknown role"},
	"go run ./cmd/loadgen -sessions 500 -concurrency 32": {tests: []string{"e2e.TestRunCommand"},
		how: "runs `go run ./cmd/loadgen` against the `make dev` stack it started, with 4 sessions, 2 senders, that stack's addresses and no bare run"},
	"make faults": {tests: []string{"e2e.TestFaultStorm", "e2e.TestFaultWorkerKilled", "e2e.TestFaultSMTPDown",
		"e2e.TestFaultTemporalDown", "e2e.TestFaultDatabaseDown", "e2e.TestFaultStripeFailing", "e2e.TestFaultAbuse"},
		how: "the target runs these tests with FAULTS=full; make test (CI) runs them at their short size"},
	"make scale": {tests: []string{"e2e.TestScaleOut"},
		how: "the target runs this test with SCALE_LONG=1; make test (CI, with TEST_DATABASE_URL) runs its short version"},
	"RECORD_HISTORIES=1 RECORD_ONLY=new_path go test -run TestRecordHistories ./workflows/": {
		tests: []string{"workflows.TestReplayRecordedHistories"},
		notRun: "it records histories into workflows/testdata, a change to review and commit, so CI runs TestRecordHistories " +
			"without RECORD_HISTORIES, and it skips; every recording is replayed by the test named"},
	"make replay-live": {tests: []string{"e2e.TestReplayCommandCatchesAChangeWithoutGetVersion"},
		how: "builds cmd/identity-verification and runs its replay subcommand, which the target runs, against a real Temporal dev server instead of your cluster"},
	"cp .env.example .env": {tests: []string{"deploy.TestTheDevStackStartsFromTheExampleAsItIs", "e2e.TestProductionTopology"},
		notRun: "it copies a file; the tests named read .env.example as the compose file then reads .env"},
	"docker compose up -d --build": {notRun: noEngine, tests: []string{"deploy.TestEveryServiceResolves",
		"deploy.TestTheDevStackStartsFromTheExampleAsItIs", "deploy.TestOurServicesGetAValidConfiguration",
		"deploy.TestHealthChecksBackEveryDependency", "deploy.TestTheSetupJobsRunAgainstStandIns",
		"deploy.TestTheDatabaseRolesHaveLeastPrivilege", "deploy.TestTheDockerfileBuildsAStaticNonRootImage", "e2e.TestProductionTopology"}},
	"docker compose ps -a": {notRun: noEngine, tests: []string{"deploy.TestHealthChecksBackEveryDependency",
		"deploy.TestTheGuideShowsEveryServiceAndTheSetupJobs"}},
	"identity-verification api-key create --name backend --scopes sessions:create,sessions:register,sessions:read": {
		tests: []string{"cmd/identity-verification.TestAPIKeysAreMadeListedAndRevokedWithTheSecretShownOnce", "e2e.TestProductionTopology"},
		how:   "run the subcommand as main does (apiKey with its arguments) on both databases; the topology test runs the built binary's api-key create with the admin service's environment"},
	"identity-verification api-key list": {
		tests: []string{"cmd/identity-verification.TestAPIKeysAreMadeListedAndRevokedWithTheSecretShownOnce"},
		how:   "runs the subcommand as main does, on both databases"},
	"identity-verification api-key revoke 3f9a0c1d2e4b": {
		tests: []string{"cmd/identity-verification.TestAPIKeysAreMadeListedAndRevokedWithTheSecretShownOnce"},
		how:   "revokes the key it made (its own id), as main does, on both databases"},
	"curl -H \"Authorization: Bearer $KEY\" 'http://127.0.0.1:8081/admin/audit?session=vs_...&since=2026-12-01T00:00:00Z&limit=100'": {
		tests: []string{"e2e.TestTheAuditLogOfAScriptedScenario", "admin.TestKeysWorkWithinTheirScopesAndNotOnceRevoked"},
		notRun: "curl needs a running admin listener and a key; the tests named make the same GET /admin/audit with an " +
			"audit:read key, with since (the e2e test) and session (the admin test), and check the rows"},
	"docker compose up -d --no-deps postgresql postgresql-setup mailpit check-config worker webhook admin": {notRun: noEngine,
		tests: []string{"deploy.TestAnotherTemporalStartsTheRestWithoutTemporal"}},
}

func TestEveryDocumentedCommandIsRun(t *testing.T) {
	shown := map[string][]string{}
	for _, doc := range documents(t) {
		for _, cmd := range shellCommands(read(t, doc)) {
			shown[cmd] = append(shown[cmd], doc)
		}
	}
	for cmd, docs := range shown {
		if _, ok := commands[cmd]; !ok {
			t.Errorf("%v show %q, which is not in this test's table: name the test that runs it", docs, cmd)
		}
	}
	tests := testFunctions(t)
	makefile := read(t, "Makefile")
	for cmd, r := range commands {
		if _, ok := shown[cmd]; !ok {
			t.Errorf("%q is no longer shown by any document: drop it from the table", cmd)
			continue
		}
		if r.ci != "" {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(cmd) + `$`).MatchString(read(t, r.ci)) {
				t.Errorf("%q: %s does not run it", cmd, r.ci)
			}
			continue
		}
		if len(r.tests) == 0 || (r.how == "" && r.notRun == "") {
			t.Errorf("%q: no test named, or no word on how they run it", cmd)
		}
		var files []string
		for _, name := range r.tests {
			dir, fn, _ := strings.Cut(name, ".")
			file, ok := tests[dir][fn]
			if !ok {
				t.Errorf("%q: %s names no test function of %s", cmd, name, dir)
				continue
			}
			files = append(files, file)
		}
		if r.notRun != "" {
			continue
		}
		// What the command runs must be what the tests run.
		args := strings.Fields(cmd)
		switch {
		case args[0] == "make":
			recipe := makeRecipe(t, makefile, args[1])
			if m := regexp.MustCompile(`-run '?([^' ]+)'?`).FindStringSubmatch(recipe); m != nil {
				matching(t, cmd, m[1], r.tests)
			}
			if m := regexp.MustCompile(`(?:go|\$\(GO\)) run (\./cmd/\S+)`).FindStringSubmatch(recipe); m != nil {
				mentioned(t, cmd, strings.TrimPrefix(m[1], "./"), files)
			}
		case slices.Contains(args, "go") && slices.Contains(args, "run"):
			mentioned(t, cmd, strings.TrimPrefix(args[slices.Index(args, "run")+1], "./"), files)
		case slices.Contains(args, "go") && slices.Contains(args, "test"):
			i := slices.Index(args, "-run")
			pkg := strings.Trim(strings.TrimPrefix(args[len(args)-1], "./"), "/")
			var names []string
			for fn := range tests[pkg] {
				names = append(names, pkg+"."+fn)
			}
			matching(t, cmd, args[i+1], names)
		case args[0] == "identity-verification":
			mentioned(t, cmd, "cmd/identity-verification", files)
		default:
			t.Errorf("%q: this test does not know how to tie it to the tests named", cmd)
		}
	}
}

// makeRecipe is the recipe of a Makefile target.
func makeRecipe(t *testing.T, makefile, target string) string {
	t.Helper()
	lines := strings.Split(makefile, "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, target+":") {
			var recipe []string
			for _, l := range lines[i+1:] {
				if !strings.HasPrefix(l, "\t") {
					break
				}
				recipe = append(recipe, l)
			}
			return strings.Join(recipe, "\n")
		}
	}
	t.Errorf("the Makefile has no target %s", target)
	return ""
}

// matching checks that a -run pattern selects at least one of the tests.
func matching(t *testing.T, cmd, pattern string, tests []string) {
	t.Helper()
	re, err := regexp.Compile(pattern)
	if err != nil {
		t.Errorf("%q: -run %s: %v", cmd, pattern, err)
		return
	}
	for _, name := range tests {
		if _, fn, _ := strings.Cut(name, "."); re.MatchString(fn) {
			return
		}
	}
	t.Errorf("%q: -run %s selects none of %v", cmd, pattern, tests)
}

// mentioned checks that one of the tests is in the package the command
// runs, or builds it (its file names the package).
func mentioned(t *testing.T, cmd, pkg string, files []string) {
	t.Helper()
	for _, f := range files {
		if path.Dir(f) == pkg || strings.Contains(read(t, f), pkg) {
			return
		}
	}
	t.Errorf("%q runs %s, which none of the tests' files %v names", cmd, pkg, files)
}

// testFunctions are the repository's test functions: directory (from the
// root), function name, and the file that declares it.
func testFunctions(t *testing.T) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "testdata" || d.Name() == "tools") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		dir := filepath.ToSlash(filepath.Dir(rel))
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Test") {
				if out[dir] == nil {
					out[dir] = map[string]string{}
				}
				out[dir][fn.Name.Name] = filepath.ToSlash(rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
