package ctl

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/daemon/api"
)

type replOptions struct {
	language, session, outputsDir string
	keep                          bool
	timeout                       float64
}

func replFlags(fs *flag.FlagSet) runFunc {
	o := &replOptions{}
	for _, n := range []string{"l", "language"} {
		fs.StringVar(&o.language, n, "", "python or javascript")
	}
	for _, n := range []string{"session", "session-id"} {
		fs.StringVar(&o.session, n, "", "use this interpreter session (see session create --interpreter), which is kept at the end")
	}
	fs.BoolVar(&o.keep, "keep", false, "keep the session at the end, instead of deleting it")
	fs.StringVar(&o.outputsDir, "outputs-dir", "", "write the cells' rich outputs (figures, HTML…) to files in this directory")
	for _, n := range []string{"t", "timeout"} {
		fs.Float64Var(&o.timeout, n, 0, "each cell's timeout in seconds (default: sandboxctl -t's, else the daemon's)")
	}
	return func(c *cli, ctx context.Context, args []string) error {
		if len(args) > 0 {
			return &usageError{err: fmt.Errorf("repl takes no arguments, got %q", args), usage: fs.Usage}
		}
		if !given(fs, "t", "timeout") {
			o.timeout = c.timeout
		}
		return c.repl(ctx, o)
	}
}

// repl is one run of `sandboxctl repl`.
type repl struct {
	c  *cli
	cl *client.Client
	o  *replOptions
	// interactive: standard input is a terminal, which gets a banner
	// and prompts.
	interactive    bool
	session        *api.Session
	language       string // the canonical name, which picks the input's rules
	stdout, stderr *tailWriter
	sigc           chan os.Signal
}

// replLine is a line read from standard input, with its newline, or the
// error that ended the input (io.EOF, after the last line).
type replLine struct {
	text string
	err  error
}

// repl runs `sandboxctl repl`: an interpreter session driven one input
// at a time from standard input, each input run as a cell.
func (c *cli) repl(ctx context.Context, o *replOptions) error {
	if c.format != "text" {
		return &usageError{err: errors.New("repl prints text: for JSON, run cells with execute --session")}
	}
	if o.timeout < 0 {
		return fmt.Errorf("-t %v: the timeout must be positive", o.timeout)
	}
	r := &repl{c: c, cl: client.New(c.socket), o: o, interactive: isTerminal(c.stdin)}
	r.stdout, r.stderr = tailWriters(c.stdout, c.stderr, r.interactive)
	created, err := r.start(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return exitStatus(130) // Ctrl-C while the session was made
		}
		return err
	}
	// From here Ctrl-C interrupts a cell or clears the input, and never
	// ends the REPL: it takes SIGINT itself, and leaves ctx, which main
	// cancels on SIGINT. SIGTERM and SIGHUP end it as Ctrl-D does.
	r.sigc = make(chan os.Signal, 1)
	signal.Notify(r.sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(r.sigc)
	ctx = context.WithoutCancel(ctx)
	status, loopErr := r.loop(ctx)
	if created && !o.keep {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := r.cl.DeleteSession(dctx, r.session.ID); err != nil && !hasCode(err, api.CodeNotFound) {
			return fmt.Errorf("delete session %s: %w", r.session.ID, err)
		}
	} else if created {
		fmt.Fprintf(c.stderr, "sandboxctl: session %s kept: sandboxctl repl --session %s comes back to it\n", r.session.ID, r.session.ID)
	}
	if loopErr != nil {
		return loopErr
	}
	if status != 0 {
		return exitStatus(status)
	}
	return nil
}

// start creates the session, or finds the one --session names, and
// prints the banner. created says the REPL made the session.
func (r *repl) start(ctx context.Context) (created bool, err error) {
	if r.o.session != "" {
		if r.o.language != "" {
			return false, &usageError{err: errors.New("-l and --session are exclusive: the session has its language")}
		}
		if r.session, err = r.cl.Session(ctx, r.o.session); err != nil {
			return false, err
		}
		if r.session.Interpreter == nil {
			return false, fmt.Errorf("session %s has no interpreter: create one with sandboxctl session create -l LANG --interpreter", r.session.ID)
		}
	} else {
		if r.o.language == "" {
			return false, &usageError{err: errors.New("no language: pass -l python or -l javascript")}
		}
		if r.session, err = r.cl.CreateSession(ctx, &api.CreateSessionRequest{Language: r.o.language, Interpreter: true}); err != nil {
			return false, err
		}
		if r.session.Interpreter == nil {
			// A daemon that predates interpreter sessions makes a session
			// of files only, whose executions would each start afresh.
			r.cl.DeleteSession(context.WithoutCancel(ctx), r.session.ID)
			return false, fmt.Errorf("sandboxd %s made session %s without an interpreter: it has no interpreter sessions", r.cl.ServerVersion(), r.session.ID)
		}
		created = true
	}
	r.language = r.session.Language
	version := ""
	// The version is for the banner only: a daemon that does not list
	// languages still runs cells.
	if langs, err := r.cl.Languages(ctx); err == nil {
		for _, l := range langs {
			if l.Name == r.language || slices.Contains(l.Aliases, r.language) {
				r.language, version = l.Name, l.Version
			}
		}
	}
	if r.interactive {
		name := r.language
		if version != "" {
			name += " " + version
		}
		leave := "Ctrl-D leaves and deletes the session"
		if !created || r.o.keep {
			leave = "Ctrl-D leaves, keeping the session"
		}
		fmt.Fprintf(r.c.stderr, "%s in sandboxd session %s\n%s; Ctrl-C interrupts a cell.\n", name, r.session.ID, leave)
	}
	return created, nil
}

// loop reads inputs and runs them until the input ends or a signal other
// than SIGINT comes. It returns the exit status: 0 at a terminal, the
// last cell's otherwise, so that a script piped in can be checked.
func (r *repl) loop(ctx context.Context) (int, error) {
	lines := make(chan replLine)
	done := make(chan struct{})
	defer close(done)
	go func() {
		in := bufio.NewReader(r.c.stdin)
		for {
			text, err := in.ReadString('\n')
			select {
			case lines <- replLine{text, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	primary := ">>> "
	if r.language == "javascript" {
		primary = "> "
	}
	var input []string
	status := 0
	for {
		if r.interactive {
			r.stdout.endLine()
			prompt := primary
			if len(input) > 0 {
				prompt = "... "
			}
			io.WriteString(r.stderr, prompt)
		}
		var l replLine
		select {
		case sig := <-r.sigc:
			if sig != os.Interrupt {
				return signalStatus(sig), nil
			}
			// Ctrl-C at the prompt: the terminal dropped the line being
			// typed; the lines before it go too.
			input = nil
			r.keyboardInterrupt()
			continue
		case l = <-lines:
		}
		// The user's newline, echoed by the terminal, ended the prompt's
		// line.
		*r.stdout.midLine = false
		if l.err != nil && l.err != io.EOF {
			return 1, fmt.Errorf("read input: %w", l.err)
		}
		if l.text != "" {
			input = append(input, strings.TrimRight(strings.TrimSuffix(l.text, "\n"), "\r"))
		}
		src := strings.Join(input, "\n") + "\n"
		if l.err == nil && !inputComplete(r.language, src) {
			continue
		}
		code := cellCode(input)
		input = nil
		if code != "" {
			s, sig, err := r.runCell(ctx, code)
			if err != nil {
				if hasCode(err, api.CodeNotFound) {
					// The session is gone (deleted, expired): no cell can run.
					return 1, err
				}
				r.stderr.endLine()
				fmt.Fprintln(r.stderr, "sandboxctl:", err)
				s = 1
			}
			if sig != nil {
				return signalStatus(sig), nil
			}
			status = s
		}
		if l.err != nil {
			// The end of the input: Ctrl-D, or the end of a script.
			if r.interactive {
				r.stdout.endLine()
				fmt.Fprintln(r.stderr)
				return 0, nil
			}
			return status, nil
		}
	}
}

// cellCode is the input's code, without the empty lines that ended it;
// "" when there is nothing to run.
func cellCode(input []string) string {
	for len(input) > 0 && strings.TrimSpace(input[len(input)-1]) == "" {
		input = input[:len(input)-1]
	}
	if len(input) == 0 {
		return ""
	}
	return strings.Join(input, "\n") + "\n"
}

// runCell runs code as a cell, its output streamed, then prints its value,
// exception and outputs. A signal ends the request, which interrupts the
// cell in the daemon; sig is one that should end the REPL too. status is
// the cell's exit status as execute's.
func (r *repl) runCell(ctx context.Context, code string) (status int, sig os.Signal, err error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &api.ExecuteRequest{SessionID: r.session.ID, Language: r.language, Code: code, TimeoutMS: int64(r.o.timeout * 1000)}
	type result struct {
		res *api.ExecuteResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := r.cl.ExecuteStream(cctx, req, func(ev api.StreamEvent) error {
			return writeEvent(ev, r.stdout, r.stderr)
		})
		done <- result{res, err}
	}()
	var d result
	select {
	case d = <-done:
	case sig = <-r.sigc:
		// Closing the connection interrupts the cell in the daemon; what
		// happened to its state, the next result says.
		cancel()
		<-done
		r.keyboardInterrupt()
		if sig == os.Interrupt {
			sig = nil
		}
		return 130, sig, nil
	}
	if d.err != nil {
		return 0, nil, d.err
	}
	res := d.res
	err = printCell(res, r.stdout, r.stderr, cellPrint{outputsDir: r.o.outputsDir, nameFiles: true,
		hint: "start the REPL with --outputs-dir DIR to save them"})
	if err != nil {
		return 1, nil, err
	}
	note := ""
	switch {
	case res.Message != "":
		note = res.Message
	case res.Status == api.StatusTimedOut:
		note = "the cell reached its timeout"
	case res.Status == api.StatusOOMKilled:
		note = "the cell ran out of memory"
	}
	if res.StdoutTruncated || res.StderrTruncated {
		r.stderr.endLine()
		fmt.Fprintln(r.stderr, "sandboxctl: output truncated at the daemon's cap")
	}
	if note != "" {
		r.stderr.endLine()
		fmt.Fprintln(r.stderr, "sandboxctl: "+note)
	}
	return ExitCode(res), nil, nil
}

// keyboardInterrupt says, as python does, that Ctrl-C interrupted what
// was typed or running.
func (r *repl) keyboardInterrupt() {
	if r.interactive {
		// After the ^C the terminal echoed.
		io.WriteString(r.stderr, "\n")
	} else {
		r.stderr.endLine()
	}
	io.WriteString(r.stderr, "KeyboardInterrupt\n")
}

// signalStatus is the exit status of a process that a signal ended.
func signalStatus(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

// hasCode reports whether err is the daemon's error with code.
func hasCode(err error, code string) bool {
	e, ok := errors.AsType[*api.Error](err)
	return ok && e.Code == code
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
