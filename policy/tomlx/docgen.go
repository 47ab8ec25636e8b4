package tomlx

import (
	"fmt"
	"reflect"
	"strings"
)

// Reference writes a Markdown reference of the TOML file whose Go type is
// that of defaults: one row per key with its type, default (read from
// defaults, so the page cannot drift from the code) and meaning (the
// field's `doc` tag; `values` lists allowed words).
func Reference(defaults any) string {
	var b strings.Builder
	v := reflect.ValueOf(defaults)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	writeTable(&b, v, nil)
	return b.String()
}

func writeTable(b *strings.Builder, v reflect.Value, path []string) {
	t := v.Type()
	var subs []int
	header := false
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Size{}) && f.Type != reflect.TypeOf(Duration{}) {
			subs = append(subs, i)
			continue
		}
		if !header {
			if len(path) > 0 {
				fmt.Fprintf(b, "\n### `[%s]`\n\n", strings.Join(path, "."))
				if d := tableDoc(v); d != "" {
					fmt.Fprintf(b, "%s\n\n", d)
				}
			}
			b.WriteString("| key | type | default | meaning |\n|---|---|---|---|\n")
			header = true
		}
		typ := typeName(f.Type)
		if vals := f.Tag.Get("values"); vals != "" {
			typ = "one of " + strings.Join(quoteAll(strings.Split(vals, "|")), ", ")
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", name, typ, defaultText(v.Field(i)), f.Tag.Get("doc"))
	}
	for _, i := range subs {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		writeTable(b, v.Field(i), append(append([]string{}, path...), name))
	}
}

func tableDoc(v reflect.Value) string {
	if d, ok := v.Interface().(interface{ TableDoc() string }); ok {
		return d.TableDoc()
	}
	return ""
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = "`\"" + x + "\"`"
	}
	return out
}

func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeOf(Size{}):
		return "size (`10MB`, `512KB`, bytes)"
	case reflect.TypeOf(Duration{}):
		return "duration (`30d`, `72h`, `15m`)"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "list of " + typeName(t.Elem()) + "s"
	}
	return t.String()
}

func defaultText(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Size:
		return "`\"" + x.Raw + "\"`"
	case Duration:
		return "`\"" + x.Raw + "\"`"
	case string:
		if x == "" {
			return "(none)"
		}
		return "`\"" + x + "\"`"
	case []string:
		return "`[" + strings.Join(quoteAllPlain(x), ", ") + "]`"
	}
	return fmt.Sprintf("`%v`", v.Interface())
}

func quoteAllPlain(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = `"` + x + `"`
	}
	return out
}
