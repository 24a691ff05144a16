package ctl

import (
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// stateLostNote is what sandboxctl says when a result reports that the
// interpreter was restarted since the caller's last result.
const stateLostNote = "sandboxctl: the interpreter was restarted: earlier state is gone"

// tailWriter remembers whether what was written last ended a line, so
// that a cell's value goes on a line of its own after the program's
// output, as a REPL shows it.
type tailWriter struct {
	w io.Writer
	// midLine is shared by writers to one terminal: stdout and stderr
	// of the REPL.
	midLine *bool
}

// tailWriters wraps stdout and stderr; shared says they are one
// terminal, whose last line either may have left open.
func tailWriters(stdout, stderr io.Writer, shared bool) (*tailWriter, *tailWriter) {
	out, err := &tailWriter{w: stdout, midLine: new(bool)}, &tailWriter{w: stderr, midLine: new(bool)}
	if shared {
		err.midLine = out.midLine
	}
	return out, err
}

func (t *tailWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if n > 0 {
		*t.midLine = p[n-1] != '\n'
	}
	return n, err
}

// endLine ends the line the output left open, if any.
func (t *tailWriter) endLine() {
	if *t.midLine {
		t.Write([]byte("\n"))
	}
}

// cellPrint says how printCell shows the parts of a result that only an
// interpreter session's cells have.
type cellPrint struct {
	// outputsDir, when set, is where rich outputs are written as files.
	outputsDir string
	// nameFiles says on stderr which file each output went to.
	nameFiles bool
	// hint says how to get the outputs that text cannot show.
	hint string
}

// printCell prints, in text, what a cell's result adds to the program's
// output (already written to stdout and stderr): that the interpreter's
// state was lost, the value of the last expression on stdout, the
// exception on stderr, and the rich outputs (text/plain ones on stdout,
// the others written to files, or counted).
func printCell(res *api.ExecuteResult, stdout, stderr *tailWriter, p cellPrint) error {
	if res.StateLost {
		stderr.endLine()
		fmt.Fprintln(stderr, stateLostNote)
	}
	for _, o := range res.Outputs {
		if o.MIME == "text/plain" && p.outputsDir == "" {
			stdout.endLine()
			io.WriteString(stdout, o.Data)
			stdout.endLine()
		}
	}
	if res.Value != "" {
		stdout.endLine()
		fmt.Fprintln(stdout, res.Value)
	}
	if e := res.Error; e != nil {
		stderr.endLine()
		switch {
		case e.Traceback != "":
			io.WriteString(stderr, e.Traceback)
		case e.Message != "":
			fmt.Fprintf(stderr, "%s: %s", e.Name, e.Message)
		default:
			io.WriteString(stderr, e.Name)
		}
		stderr.endLine()
	}
	if len(res.Outputs) == 0 {
		return nil
	}
	if p.outputsDir != "" {
		return saveOutputs(p.outputsDir, res, stderr, p.nameFiles)
	}
	var unshown []string
	for _, o := range res.Outputs {
		if o.MIME != "text/plain" {
			unshown = append(unshown, o.MIME)
		}
	}
	if len(unshown) > 0 {
		s := "s"
		if len(unshown) == 1 {
			s = ""
		}
		fmt.Fprintf(stderr, "sandboxctl: %d output%s not shown (%s): %s\n", len(unshown), s, strings.Join(unshown, ", "), p.hint)
	}
	return nil
}

// saveOutputs writes the result's outputs to dir and, if name, says on
// stderr where each went.
func saveOutputs(dir string, res *api.ExecuteResult, stderr io.Writer, name bool) error {
	files, err := writeOutputs(dir, res.ID, res.Outputs)
	if err != nil {
		return fmt.Errorf("--outputs-dir: %w", err)
	}
	for i, f := range files {
		if name {
			fmt.Fprintf(stderr, "sandboxctl: %s written to %s\n", res.Outputs[i].MIME, f)
		}
	}
	return nil
}

// outputExtensions name the files rich outputs are written to.
var outputExtensions = map[string]string{
	"image/png":        "png",
	"image/svg+xml":    "svg",
	"text/html":        "html",
	"application/json": "json",
	"text/plain":       "txt",
}

// writeOutputs writes each output to dir as <id>-<n>.<ext>, n counting
// from 1, and returns the files' paths. Data is text but for image/png,
// which the API sends in base64.
func writeOutputs(dir, id string, outputs []api.Output) ([]string, error) {
	if len(outputs) == 0 {
		return nil, nil
	}
	if id == "" || !filepath.IsLocal(id) || strings.ContainsAny(id, `/\`) {
		// The daemon's ids are hex; anything else must not pick a path.
		return nil, fmt.Errorf("execution id %q cannot name a file", id)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var names []string
	for i, o := range outputs {
		ext, ok := outputExtensions[o.MIME]
		if !ok {
			ext = "bin"
		}
		data := []byte(o.Data)
		if o.MIME == "image/png" {
			var err error
			if data, err = base64.StdEncoding.DecodeString(o.Data); err != nil {
				return names, fmt.Errorf("output %d (%s): %w", i+1, o.MIME, err)
			}
		}
		name := filepath.Join(dir, fmt.Sprintf("%s-%d.%s", id, i+1, ext))
		if err := os.WriteFile(name, data, 0o644); err != nil {
			return names, err
		}
		names = append(names, name)
	}
	return names, nil
}
