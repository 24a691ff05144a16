// Package drivers: TEMPORARY stand-in until the real drivers land.
package drivers

import _ "embed"

//go:embed python.py
var python []byte

const Dir = "/.sandboxd/drivers"

func Files() map[string][]byte { return map[string][]byte{"python.py": python} }

func Command(language string) ([]string, bool) {
	switch language {
	case "python":
		return []string{"python3", "-u", Dir + "/python.py"}, true
	}
	return nil, false
}
