package tomlx

import (
	"fmt"
	"reflect"
	"strings"
)

// A Table is one TOML table of a reference, as Walk finds it in the Go
// type of a file: the Markdown reference (Reference) and the man pages
// (contrib/man) are both written from it.
type Table struct {
	// Path is the table's dotted name; empty for the top level.
	Path []string
	// Doc is the table's TableDoc (Markdown inline text; paragraphs are
	// separated by a blank line), empty when it has none.
	Doc  string
	Keys []Key
}

// Name is the table's dotted name ("" for the top level).
func (t Table) Name() string { return strings.Join(t.Path, ".") }

// A Key is one key of a Table.
type Key struct {
	Name string
	// Type is the value's type in Markdown inline text: "string",
	// "integer", "size (`10MB`, `512KB`, bytes)", "list of strings"...
	Type string
	// Values are the allowed words (the field's `values` tag), if any.
	Values []string
	// Default is the default in TOML syntax (`"5m"`, `64`, `[]`); empty
	// when the default is the empty string (no value).
	Default string
	// Doc is the key's meaning (the field's `doc` tag).
	Doc string
}

// Walk reads the tables and keys of the TOML file whose Go type is that of
// defaults, with the defaults read from defaults (so a reference cannot
// drift from the code) and meanings from the fields' `doc` tags. Tables
// come in field order, depth first, after the keys of their parent; a
// table without keys of its own is left out.
func Walk(defaults any) []Table {
	v := reflect.ValueOf(defaults)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var out []Table
	walk(&out, v, nil)
	return out
}

func walk(out *[]Table, v reflect.Value, path []string) {
	t := v.Type()
	tab := Table{Path: path}
	if len(path) > 0 {
		tab.Doc = tableDoc(v)
	}
	var subs []int
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
		k := Key{Name: name, Type: typeName(f.Type), Default: defaultTOML(v.Field(i)), Doc: f.Tag.Get("doc")}
		if vals := f.Tag.Get("values"); vals != "" {
			k.Values = strings.Split(vals, "|")
		}
		tab.Keys = append(tab.Keys, k)
	}
	if len(tab.Keys) > 0 {
		*out = append(*out, tab)
	}
	for _, i := range subs {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		walk(out, v.Field(i), append(append([]string{}, path...), name))
	}
}

// Reference writes a Markdown reference of the TOML file whose Go type is
// that of defaults: one row per key with its type, default and meaning
// (see Walk; `values` lists allowed words).
func Reference(defaults any) string { return Markdown(Walk(defaults)) }

// Markdown writes tables as Markdown: a heading and the table's doc for
// each table but the top level, then a table of its keys.
func Markdown(tables []Table) string {
	var b strings.Builder
	for _, tab := range tables {
		if len(tab.Path) > 0 {
			fmt.Fprintf(&b, "\n### `[%s]`\n\n", tab.Name())
			if tab.Doc != "" {
				fmt.Fprintf(&b, "%s\n\n", tab.Doc)
			}
		}
		b.WriteString("| key | type | default | meaning |\n|---|---|---|---|\n")
		for _, k := range tab.Keys {
			typ := k.Type
			if len(k.Values) > 0 {
				typ = "one of " + strings.Join(quoteAll(k.Values), ", ")
			}
			def := "(none)"
			if k.Default != "" {
				def = "`" + k.Default + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", k.Name, typ, def, k.Doc)
		}
	}
	return b.String()
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
	case reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list of " + typeName(t.Elem()) + "s"
	}
	return t.String()
}

// defaultTOML is v in TOML syntax, or "" for the empty string.
func defaultTOML(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Size:
		return `"` + x.Raw + `"`
	case Duration:
		return `"` + x.Raw + `"`
	case string:
		if x == "" {
			return ""
		}
		return `"` + x + `"`
	case []string:
		return "[" + strings.Join(quoteAllPlain(x), ", ") + "]"
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprintf("%d.0", int64(x))
		}
		return fmt.Sprintf("%g", x)
	}
	return fmt.Sprintf("%v", v.Interface())
}

func quoteAllPlain(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = `"` + x + `"`
	}
	return out
}
