package milter_test

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLayering enforces the house's one direction (DESIGN.md, Layout):
// cmd -> milter/* -> {policy, keyring}. policy imports neither milter nor
// keyring; keyring imports no milter; nothing but cmd imports cmd.
func TestLayering(t *testing.T) {
	const mod = "github.com/listcrypt/listcrypt/"
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	layer := func(p string) string {
		rel := strings.TrimPrefix(p, mod)
		top, _, _ := strings.Cut(rel, "/")
		return top
	}
	forbidden := map[string][]string{
		"policy":  {"milter", "keyring", "cmd"},
		"keyring": {"milter", "cmd"},
		"milter":  {"cmd"},
		"contrib": {"cmd"},
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], mod) {
			continue
		}
		from := layer(f[0])
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			checked++
			for _, bad := range forbidden[from] {
				if layer(imp) == bad {
					t.Errorf("%s imports %s: against cmd -> milter/* -> {policy, keyring}", strings.TrimPrefix(f[0], mod), strings.TrimPrefix(imp, mod))
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d imports inside the module checked: go list output not understood", checked)
	}
}

// TestOneOpener: the site config, the state store and the passphrase are
// opened in one place, keyring/site (site.Open), which every main and
// the milter daemon use. Test fixtures (milterfix, storetest) build
// their own sites.
func TestOneOpener(t *testing.T) {
	opener := regexp.MustCompile(`\b(config\.Load|store\.Open|keyring\.LoadPassphrase|keyring\.NewCache)\(`)
	allowed := []string{"keyring/site/", "keyring/store/storetest/", "milter/milterfix/"}
	found := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(path, "../"))
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(src), "\n") {
			m := opener.FindString(line)
			if m == "" {
				continue
			}
			found++
			ok := false
			for _, a := range allowed {
				ok = ok || strings.HasPrefix(rel, a)
			}
			if !ok {
				t.Errorf("%s:%d calls %s): open the site with keyring/site instead", rel, i+1, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("no opener call found at all, not even in keyring/site: the pattern is stale")
	}
}
