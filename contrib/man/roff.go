package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/listcrypt/listcrypt/policy/tomlx"
)

// roff.go turns the Markdown the docs are written in (inline code,
// emphasis, links, paragraphs, tables, headings) into man(7) roff.

var (
	codeSpan = regexp.MustCompile("`([^`]*)`")
	strong   = regexp.MustCompile(`\*\*([^\s*](?:[^*]*[^\s*])?)\*\*`)
	emphasis = regexp.MustCompile(`\*([^\s*](?:[^*]*[^\s*])?)\*`)
	link     = regexp.MustCompile(`\[([^\]]+)\]\(([^)]+)\)`)
)

// manLinks are the Markdown pages that have a man page of their own.
var manLinks = map[string]string{
	"config.md":         "listcrypt.toml(5)",
	"../docs/config.md": "listcrypt.toml(5)",
	"policy.md":         "listcrypt-policy(5)",
	"../docs/policy.md": "listcrypt-policy(5)",
	"responder.md":      "listcrypt-responder(8)",
}

// escape makes plain text safe inside a roff text line.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "→", `\(->`)
	s = strings.ReplaceAll(s, "—", `\(em`)
	s = strings.ReplaceAll(s, "–", `\(en`)
	return s
}

// inline converts Markdown inline text to roff: `code` in bold (its
// hyphens as minus signs, so flags copy and paste), **strong** in bold,
// *emphasis* in italics, links as their text, and an escaped pipe (inside
// a Markdown table) as a pipe.
func inline(md string) string {
	md = strings.ReplaceAll(md, `\|`, "|")
	md = link.ReplaceAllStringFunc(md, func(l string) string {
		m := link.FindStringSubmatch(l)
		if page, ok := manLinks[m[2]]; ok {
			return page
		}
		return m[1]
	})
	var b strings.Builder
	last := 0
	for _, m := range codeSpan.FindAllStringSubmatchIndex(md, -1) {
		b.WriteString(plainInline(md[last:m[0]]))
		code := escape(md[m[2]:m[3]])
		b.WriteString(`\fB\%` + strings.ReplaceAll(code, "-", `\-`) + `\fR`)
		last = m[1]
	}
	b.WriteString(plainInline(md[last:]))
	return b.String()
}

func plainInline(s string) string {
	s = strong.ReplaceAllString(escape(s), `\fB$1\fR`)
	return emphasis.ReplaceAllString(s, `\fI$1\fR`)
}

// textLine makes s one roff text line: no line breaks, and a leading
// period or apostrophe (a control character) protected.
func textLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s + "\n"
}

// paragraphs writes Markdown prose (paragraphs separated by blank lines)
// as roff paragraphs.
func paragraphs(b *strings.Builder, md string) {
	for i, p := range strings.Split(strings.TrimSpace(md), "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		b.WriteString(textLine(inline(p)))
	}
}

// literal writes text as a no-fill block.
func literal(b *strings.Builder, text string) {
	b.WriteString(".PP\n.nf\n")
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		l = escape(l)
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") || l == "" {
			l = `\&` + l
		}
		b.WriteString(l + "\n")
	}
	b.WriteString(".fi\n")
}

// keys writes the tables Walk found as the page's key reference: a
// subsection per table, a tagged paragraph per key.
func keys(b *strings.Builder, tables []tomlx.Table) {
	for _, tab := range tables {
		if len(tab.Path) == 0 {
			b.WriteString(".SS Top level\n")
		} else {
			fmt.Fprintf(b, ".SS [%s]\n", escape(tab.Name()))
			if tab.Doc != "" {
				paragraphs(b, tab.Doc)
			}
		}
		for _, k := range tab.Keys {
			fmt.Fprintf(b, ".TP\n.B %s\n", escape(k.Name))
			typ := inline(k.Type)
			if len(k.Values) > 0 {
				vals := make([]string, len(k.Values))
				for i, v := range k.Values {
					vals[i] = `\fB"` + escape(v) + `"\fR`
				}
				typ = "one of " + strings.Join(vals, ", ")
			}
			def := "none"
			if k.Default != "" {
				def = `\fB` + escape(k.Default) + `\fR`
			}
			b.WriteString(textLine(inline(k.Doc)))
			b.WriteString(".br\n")
			b.WriteString(textLine("Type: " + typ + ". Default: " + def + "."))
		}
	}
}

// markdown writes a Markdown section (paragraphs, tables, ### headings,
// fenced code) as roff. A table row becomes a tagged paragraph: the first
// cell is the tag, each further cell a paragraph led by its column's
// header unless the header is the first word of the first column.
func markdown(b *strings.Builder, md string) {
	lines := strings.Split(md, "\n")
	var para []string
	flush := func() {
		if len(para) > 0 {
			b.WriteString(".PP\n" + textLine(inline(strings.Join(para, " "))))
			para = nil
		}
	}
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case l == "":
			flush()
		case strings.HasPrefix(l, "```"):
			flush()
			var code []string
			for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
				code = append(code, lines[i])
			}
			literal(b, strings.Join(code, "\n"))
		case strings.HasPrefix(l, "#"):
			flush()
			b.WriteString(".SS " + inline(strings.TrimSpace(strings.TrimLeft(l, "#"))) + "\n")
		case strings.HasPrefix(l, "|"):
			flush()
			header := cells(l)
			i++ // the |---| line
			for i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "|") {
				i++
				row := cells(strings.TrimSpace(lines[i]))
				b.WriteString(".TP\n" + textLine(inline(row[0])))
				for j := 1; j < len(row) && j < len(header); j++ {
					if j > 1 {
						b.WriteString(".br\n")
					}
					b.WriteString(textLine(inline(strings.ToUpper(header[j][:1]) + header[j][1:] + ": " + row[j])))
				}
			}
		default:
			para = append(para, l)
		}
	}
	flush()
}

// cells splits a Markdown table row, keeping escaped pipes ("\|").
func cells(row string) []string {
	row = strings.TrimSuffix(strings.TrimPrefix(row, "|"), "|")
	var out []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		if row[i] == '\\' && i+1 < len(row) && row[i+1] == '|' {
			cur.WriteString(`\|`)
			i++
			continue
		}
		if row[i] == '|' {
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteByte(row[i])
	}
	return append(out, strings.TrimSpace(cur.String()))
}

// stripComments drops the end-of-line comments of TOML text (a "#" outside
// a string), keeping the lines that are only a comment: a sample whose
// comments run past the page's width still reads in 80 columns.
func stripComments(toml string) string {
	lines := strings.Split(toml, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		inString := false
		for j := 0; j < len(l); j++ {
			switch {
			case l[j] == '\\' && inString:
				j++
			case l[j] == '"':
				inString = !inString
			case l[j] == '#' && !inString:
				lines[i] = strings.TrimRight(l[:j], " \t")
				j = len(l)
			}
		}
	}
	return strings.Join(lines, "\n")
}
