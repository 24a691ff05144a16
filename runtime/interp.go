package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"

	"github.com/sandboxd/sandboxd/runtime/drivers"
)

// The drivers of interpreter sessions (runtime/drivers) are in every
// sandbox's root, beside the agent, read-only.

// writeDrivers puts the drivers into a sandbox root being built.
func writeDrivers(root string) error {
	dir := filepath.Join(root, drivers.Dir)
	if err := mkdirAllMode(dir, 0o755); err != nil {
		return fmt.Errorf("drivers: %w", err)
	}
	for name, data := range drivers.Files() {
		if err := writeFileAtomic(filepath.Join(dir, name), data, 0o444); err != nil {
			return fmt.Errorf("drivers: %w", err)
		}
	}
	return nil
}

// baseHash names what sandboxd puts into an image's root, the agent at
// init and the drivers: a base made with others is made again.
func baseHash(init string) (string, error) {
	f, err := os.Open(init)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	files := drivers.Files()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "\x00%s\x00%d\x00", name, len(files[name]))
		h.Write(files[name])
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// driverArgs is the command line of a language's driver in a sandbox.
func driverArgs(language string) ([]string, error) {
	_, args, ok := drivers.For(language)
	if !ok {
		return nil, fmt.Errorf("no interpreter sessions for %s: %w", language, errdefs.ErrInvalidArgument)
	}
	return args, nil
}
