package mcp

import (
	"testing"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// An agent reads from the summary whether to fix its code or raise a
// limit: a compile ended by a limit says so; a compile error shows the
// compiler's diagnostics. A cell's value and exception follow its output;
// a lost state is said first.
func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		res  api.ExecuteResult
		want string
	}{
		{api.ExecuteResult{Status: api.StatusOOMKilled, Phase: api.PhaseCompile, ExitCode: 137, Signal: "SIGKILL",
			Message: "the compiler reached the memory limit", Stderr: "g++: fatal error: Killed signal terminated program cc1plus\n"},
			"status: oom_killed, exit code 137, signal SIGKILL, while compiling\nthe compiler reached the memory limit\n--- stderr\ng++: fatal error: Killed signal terminated program cc1plus\n"},
		{api.ExecuteResult{Status: api.StatusCompileError, Phase: api.PhaseCompile, ExitCode: 1, Stderr: "main.c:1: error\n"},
			"status: compile_error, exit code 1\n--- stderr\nmain.c:1: error\n"},
		{api.ExecuteResult{Status: api.StatusOK, Phase: api.PhaseRun, Stdout: "42\n"},
			"status: ok, exit code 0\n--- stdout\n42\n"},
		// A cell: its output, value and exception; a restart first.
		{api.ExecuteResult{Status: api.StatusOK, Phase: api.PhaseRun, Stdout: "hi\n", Value: "42"},
			"status: ok, exit code 0\n--- stdout\nhi\n\n--- value\n42"},
		{api.ExecuteResult{Status: api.StatusFailed, Phase: api.PhaseRun, ExitCode: 1, StateLost: true,
			Error: &api.CellError{Name: "NameError", Message: "name 'df' is not defined", Traceback: "Traceback (most recent call last):\nNameError: name 'df' is not defined\n"}},
			"status: failed, exit code 1\nthe interpreter was restarted: the variables, imports and functions of earlier cells are gone\n--- error\nTraceback (most recent call last):\nNameError: name 'df' is not defined\n"},
		{api.ExecuteResult{Status: api.StatusFailed, ExitCode: 1, Error: &api.CellError{Name: "KeyError", Message: "'k'"}},
			"status: failed, exit code 1\n--- error\nKeyError: 'k'"},
	} {
		if got := summary(&tc.res); got != tc.want {
			t.Errorf("summary:\n%s\nwant:\n%s", got, tc.want)
		}
	}
}
