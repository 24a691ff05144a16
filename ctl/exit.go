package ctl

import (
	"errors"
	"flag"
	"fmt"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Exit statuses of execute beyond the program's own, as docker run and
// coreutils timeout have them.
const (
	ExitTimedOut = 124
	ExitFailed   = 125 // sandboxctl or the daemon failed
	ExitKilled   = 137
	exitUsage    = 2
)

// usageError is a mistake on the command line. Its err, if any, is
// reported in plain text whatever the output format, then its usage is
// shown, if any.
type usageError struct {
	err   error
	usage func()
}

func (e *usageError) Error() string {
	if e.err == nil {
		return "usage"
	}
	return e.err.Error()
}

func (e *usageError) Unwrap() error { return e.err }

// parseError is what a command returns for a flag set's parse error: none
// when help was asked for, else a usageError with nothing more to say (the
// flag package has reported the error and shown the usage).
func parseError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return &usageError{}
}

// exitStatus ends sandboxctl with a status and nothing more to say: that
// of the program execute ran, or a failure the command's output has shown.
type exitStatus int

func (s exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(s)) }

// exit turns what command cmd ("" before one is known) returned into
// sandboxctl's exit status, and reports the error: on stderr as
// "sandboxctl: err", or on stdout as an api.Error with -o json. Execute
// follows docker run, exiting 125 for any failure of its own, usage
// included, and otherwise with the program's status (124 and 137 for a
// timeout and a kill). Other commands exit 2 on a usage error and 1 on
// any other.
func (c *cli) exit(cmd string, err error) int {
	failed, usageFailed := 1, exitUsage
	if cmd == "execute" {
		failed, usageFailed = ExitFailed, ExitFailed
	}
	var status exitStatus
	var usage *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &status):
		return int(status)
	case errors.As(err, &usage):
		if usage.err != nil {
			fmt.Fprintln(c.stderr, "sandboxctl:", usage.err)
		}
		if usage.usage != nil {
			usage.usage()
		}
		return usageFailed
	case cmd == "mcp":
		// Standard output is the protocol's, whatever the format.
		fmt.Fprintln(c.stderr, "sandboxctl mcp:", err)
	case c.format == "json":
		e, ok := err.(*api.Error)
		if !ok {
			e = &api.Error{Code: api.CodeInvalidArgument, Message: err.Error()}
		}
		c.printJSON(e)
	default:
		fmt.Fprintln(c.stderr, "sandboxctl:", err)
	}
	return failed
}
