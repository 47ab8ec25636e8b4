package milter_test

import (
	"bufio"
	"bytes"
	"os/exec"
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
