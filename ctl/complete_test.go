package ctl

import "testing"

// TestPythonInputComplete: the REPL asks for another line where python's
// own REPL shows "...", and runs the input where it runs it.
func TestPythonInputComplete(t *testing.T) {
	for _, tc := range []struct {
		src      string
		complete bool
	}{
		{"", true},
		{"\n", true},
		{"x = 1\n", true},
		{"print('a:')\n", true},
		{"x = {'a': 1}\n", true},
		{"x[1:]\n", true},
		{"# a comment:\n", true},
		{"x = 1  # then a colon:\n", true},
		// Blocks continue until an empty line.
		{"def f(x):\n", false},
		{"def f(x):\n    return x * 2\n", false},
		{"def f(x):\n    return x * 2\n\n", true},
		// A line of spaces is not empty, as in python's REPL.
		{"def f(x):\n    return x * 2\n   \n", false},
		{"def f(x):  # doubles\n", false},
		{"if x: print(x)\n", false},
		{"if x: print(x)\n\n", true},
		{"for i in range(3): print(i)\n", false},
		{"class A: pass\n", false},
		{"with open(f) as g: g.read()\n", false},
		{"try: f()\n", false},
		{"@cache\n", false},
		{"@cache\ndef f(): pass\n\n", true},
		{"iffy = 1\n", true},
		{"format = 'x'\n", true},
		{"while True:\n    if x:\n        break\n", false},
		{"while True:\n    if x:\n        break\n\n", true},
		// An empty line inside brackets or a string does not end a block.
		{"def f():\n    return (1,\n\n", false},
		{"def f():\n    '''doc\n\n", false},
		// Brackets, triple-quoted strings, backslashes.
		{"x = (1,\n", false},
		{"x = (1,\n     2)\n", true},
		{"d = {\n  'a': 1,\n", false},
		{"d = {\n  'a':\n", false},
		{"d = {\n  'a': 1,\n}\n", true},
		{"f(a,\n  b=[1,\n", false},
		{"s = '''one\n", false},
		{"s = '''one\ntwo'''\n", true},
		{"s = \"\"\"one\n", false},
		{"s = \"\"\"has ''' inside\n", false},
		{"s = '''it's'''\n", true},
		{"x = 1 + \\\n", false},
		{"x = 1 + \\\n    2\n", true},
		{"s = 'one \\\n", false},
		{"s = 'one \\\ntwo'\n", true},
		{"s = '(' + \"[\"\n", true},
		{"s = 'it\\'s ('\n", true},
		{"x = 1  # (\n", true},
		// Errors run, and the interpreter reports them.
		{"x = )\n", true},
		{"s = 'open\n", true},
	} {
		if got := pythonInputComplete(tc.src); got != tc.complete {
			t.Errorf("%q: complete %v, want %v", tc.src, got, tc.complete)
		}
	}
}

// TestJavascriptInputComplete: the input continues while brackets are
// open outside strings, template literals, comments and regexes.
func TestJavascriptInputComplete(t *testing.T) {
	for _, tc := range []struct {
		src      string
		complete bool
	}{
		{"", true},
		{"1 + 1\n", true},
		{"function f(x) {\n", false},
		{"function f(x) {\n  return x * 2\n", false},
		{"function f(x) {\n  return x * 2\n}\n", true},
		{"const o = {\n  a: [1,\n", false},
		{"const o = {\n  a: [1,\n  2],\n}\n", true},
		{"f(1,\n", false},
		{"if (x) {\n", false},
		{"if (x) {\n} else {\n", false},
		// Brackets in strings, templates, comments and regexes.
		{"s = '{'\n", true},
		{"s = \"(\"\n", true},
		{"s = 'it\\'s {'\n", true},
		{"x = 1 // {\n", true},
		{"x = 1 /* { */\n", true},
		{"/* a comment\n", false},
		{"/* a comment\n{ */\n", true},
		{"s = `a {\n", false},
		{"s = `a {\nb`\n", true},
		{"s = `${x}`\n", true},
		{"s = `${f({\n", false},
		{"s = `${f({a: 1})} {`\n", true},
		{"s = `a ${`b ${c}`} d`\n", true},
		{"s = `a ${`b ${c\n", false},
		{"s = `\\`{`\n", true},
		{"r = /[/{]/\n", true},
		{"r = /\\/[(]/g.test(s)\n", true},
		{"x = a / b / c\n", true},
		{"x = (a) / (b)\n", true},
		{"function g() { return /{/ }\n", true},
		{"s = 'one \\\n", false},
		// Errors run, and the interpreter reports them.
		{"x = )\n", true},
		{"f(]\n", true},
		{"s = 'open\n", true},
	} {
		if got := javascriptInputComplete(tc.src); got != tc.complete {
			t.Errorf("%q: complete %v, want %v", tc.src, got, tc.complete)
		}
	}
}
