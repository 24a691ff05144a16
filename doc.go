// Package sandboxd is the root of the sandboxd module: a daemon that runs
// untrusted code in containerd sandboxes (cmd/sandboxd) and its CLI
// (cmd/sandboxctl). See README.md.
package sandboxd
