package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// prepareOCIRuntimes returns the runc shim's options for each runtime. A
// runtime with flags is run through a small script that adds them: the
// shim passes a runtime no flags of its own choosing.
func prepareOCIRuntimes(stateDir string, rts map[string]OCIRuntime) (map[string]*options.Options, error) {
	out := map[string]*options.Options{}
	for name, rt := range rts {
		if name == sandbox.DefaultOCIRuntime && rt.Binary == "" && len(rt.Flags) == 0 {
			continue
		}
		bin, err := exec.LookPath(rt.Binary)
		if err != nil {
			// Not fatal: sandboxes that name it fail with this reason, and
			// doctor reports it.
			bin = rt.Binary
		}
		flags := rt.Flags
		if isGVisor(rt.Binary) {
			// gVisor brings its own network stack and would set it up from
			// the sandbox's namespace; sandboxes have no network, so it is
			// told so, last, whatever the configured flags say.
			// Its kernel applies the sandbox's seccomp profile to the
			// programs too, as a second filter behind its own.
			flags = append(slices.Clone(flags), "--network=none", "--oci-seccomp")
		}
		if len(flags) > 0 {
			dir := filepath.Join(stateDir, "runtimes")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			script := "#!/bin/sh\nexec " + shellQuote(bin)
			for _, f := range flags {
				script += " " + shellQuote(f)
			}
			script += ` "$@"` + "\n"
			wrapper := filepath.Join(dir, name)
			if err := writeFileAtomic(wrapper, []byte(script), 0o700); err != nil {
				return nil, err
			}
			bin = wrapper
		}
		// Its state apart from runc's, as runc's is under /run/containerd/runc.
		out[name] = &options.Options{BinaryName: bin, Root: filepath.Join("/run/containerd", name)}
	}
	return out, nil
}

// OCIRuntimeReady returns nil when a runtime's binary is there to run, or
// why not.
func (c *Client) OCIRuntimeReady(name string) error {
	if name == "" || name == sandbox.DefaultOCIRuntime {
		return nil
	}
	rt, ok := c.cfg.OCIRuntimes[name]
	if !ok {
		return fmt.Errorf("OCI runtime %q is not configured: %w", name, errdefs.ErrInvalidArgument)
	}
	if _, err := exec.LookPath(rt.Binary); err != nil {
		hint := ""
		if isGVisor(rt.Binary) {
			hint = " (Debian and Ubuntu: apt-get install runsc)"
		}
		return fmt.Errorf("%s is not installed%s: %w", rt.Binary, hint, errdefs.ErrNotFound)
	}
	return nil
}

// runtimeOptions returns the shim's options for a sandbox's OCI runtime.
func (c *Client) runtimeOptions(name string) (*options.Options, error) {
	if name == "" || name == sandbox.DefaultOCIRuntime {
		if o, ok := c.ociRuntimes[sandbox.DefaultOCIRuntime]; ok {
			return o, nil
		}
		return nil, nil
	}
	if err := c.OCIRuntimeReady(name); err != nil {
		return nil, err
	}
	return c.ociRuntimes[name], nil
}

// OCIRuntimeBinary returns the binary a runtime runs as ("" for the shim's
// default runc), for checks such as doctor's.
func (c *Client) OCIRuntimeBinary(name string) (string, error) {
	o, err := c.runtimeOptions(name)
	if err != nil || o == nil {
		return "", err
	}
	return o.BinaryName, nil
}

// isGVisor tells gVisor's runsc by its binary's name.
func isGVisor(binary string) bool { return filepath.Base(binary) == "runsc" }

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
