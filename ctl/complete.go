package ctl

import (
	"slices"
	"strings"
)

// inputComplete reports whether src, the lines typed at the REPL so far
// (each ended by a newline), make an input to run as a cell, or whether
// the REPL should ask for another line. It follows what python's and
// node's own REPLs accept, closely enough for typing and pasting; an input
// that can never be valid (an unmatched bracket, a string left open at a
// line's end) is complete: the interpreter reports the error.
func inputComplete(language, src string) bool {
	switch language {
	case "python":
		return pythonInputComplete(src)
	case "javascript":
		return javascriptInputComplete(src)
	}
	return true
}

// pythonCompound are the keywords that open a compound statement: one
// that starts the input continues until an empty line, even when its body
// is on the same line (if x: print(x)), since an else or except may follow.
var pythonCompound = []string{"if", "for", "while", "def", "class", "with", "try", "async"}

// pythonInputComplete: brackets left open, a triple-quoted string left
// open and a line ending with a backslash continue the input; a line
// ending with ':', a compound statement or a decorator opens a block that
// continues until an empty line.
func pythonInputComplete(src string) bool {
	var (
		depth     int
		quote     string // the open string's quote: ', ", ''' or """
		block     bool
		continued bool // the last line ended with a backslash
		logical   strings.Builder
	)
	endLogical := func() {
		line := strings.TrimSpace(logical.String())
		logical.Reset()
		if strings.HasSuffix(line, ":") || strings.HasPrefix(line, "@") {
			block = true
		}
		for _, kw := range pythonCompound {
			if rest, ok := strings.CutPrefix(line, kw); ok && (rest == "" || !isIdentChar(rest[0])) {
				block = true
			}
		}
	}
	for i := 0; i < len(src); i++ {
		ch := src[i]
		continued = false
		switch {
		case quote != "":
			switch {
			case ch == '\\' && i+1 < len(src):
				i++
			case ch == '\n' && len(quote) == 1:
				// A one-line string left open: a syntax error.
				return true
			case strings.HasPrefix(src[i:], quote):
				i += len(quote) - 1
				quote = ""
				logical.WriteString("''")
			}
		case ch == '#':
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
			}
		case ch == '\'' || ch == '"':
			quote = string(ch)
			if strings.HasPrefix(src[i:], strings.Repeat(quote, 3)) {
				quote = strings.Repeat(quote, 3)
				i += 2
			}
		case ch == '\\' && i+1 < len(src) && src[i+1] == '\n':
			i++
			continued = true
		case ch == '\n':
			if depth == 0 {
				endLogical()
			}
		default:
			switch ch {
			case '(', '[', '{':
				depth++
			case ')', ']', '}':
				depth--
			}
			logical.WriteByte(ch)
		}
	}
	switch {
	case quote != "" || continued:
		return false
	case depth != 0:
		return depth < 0
	case logical.Len() > 0:
		// The last line has no newline yet.
		endLogical()
		return !block
	case block:
		lines := strings.Split(strings.TrimSuffix(src, "\n"), "\n")
		// An empty line, not one of spaces: python's REPL takes those
		// for part of the block.
		return len(lines) > 1 && lines[len(lines)-1] == ""
	}
	return true
}

func isIdentChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// jsRegexAfter are the keywords after which a slash starts a regular
// expression rather than a division.
var jsRegexAfter = []string{"return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw", "instanceof", "yield", "await"}

// javascriptInputComplete: the input continues while brackets, braces or
// parentheses are open outside strings, template literals, comments and
// regular expressions, or while a template literal or a block comment is
// open, as node's REPL does.
func javascriptInputComplete(src string) bool {
	const templateMark = '`' // on the stack: the ${ of a template literal
	closes := map[byte]byte{')': '(', ']': '[', '}': '{'}
	var (
		stack []byte // open brackets, and template literals' ${
		// inTemplate: inside a template literal's text.
		inTemplate bool
		// value says the last token was a value (a name, a number, a
		// string, a closing bracket), after which a slash divides;
		// elsewhere it starts a regular expression. lastWord is the
		// last name, for return /x/ and the like.
		value    bool
		lastWord string
		word     strings.Builder
	)
	for i := 0; i < len(src); i++ {
		ch := src[i]
		if inTemplate {
			switch {
			case ch == '\\':
				i++
			case ch == '`':
				inTemplate, value = false, true
			case ch == '$' && i+1 < len(src) && src[i+1] == '{':
				i++
				stack = append(stack, templateMark)
				inTemplate, value = false, false
			}
			continue
		}
		if isIdentChar(ch) || ch == '$' {
			word.WriteByte(ch)
			value = true
			continue
		}
		if word.Len() > 0 {
			lastWord = word.String()
			word.Reset()
		}
		switch {
		case ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n':
			continue
		case ch == '/' && i+1 < len(src) && src[i+1] == '/':
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
			}
			continue
		case ch == '/' && i+1 < len(src) && src[i+1] == '*':
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return false
			}
			i += 2 + end + 1
			continue
		case ch == '/' && (!value || slices.Contains(jsRegexAfter, lastWord)):
			// A regular expression: its brackets count for nothing.
			inClass := false
		regex:
			for i++; i < len(src); i++ {
				switch c := src[i]; {
				case c == '\\':
					i++
				case c == '\n':
					return true // a regex left open: a syntax error
				case c == '[':
					inClass = true
				case c == ']':
					inClass = false
				case c == '/' && !inClass:
					break regex
				}
			}
			value, lastWord = true, ""
			continue
		case ch == '\'' || ch == '"':
			for i++; i < len(src) && src[i] != ch; i++ {
				switch {
				case src[i] == '\\':
					i++ // an escape, or a newline that continues the string
				case src[i] == '\n':
					return true // a string left open at a line's end
				}
			}
			if i >= len(src) {
				return false
			}
			value, lastWord = true, ""
			continue
		case ch == '`':
			inTemplate = true
			continue
		case ch == '(' || ch == '[' || ch == '{':
			stack = append(stack, ch)
		case ch == ')' || ch == ']' || ch == '}':
			if len(stack) == 0 {
				return true // unbalanced: a syntax error
			}
			open := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			switch {
			case open == templateMark && ch == '}':
				inTemplate = true
				continue
			case open != closes[ch]:
				return true
			}
			value, lastWord = ch != '}', ""
			continue
		}
		value, lastWord = false, ""
	}
	return !inTemplate && len(stack) == 0
}
