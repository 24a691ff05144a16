package sandboxd_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoLargeTrackedFiles keeps build outputs and other large files out of
// the repository: no tracked file is over 1 MiB, test data aside.
func TestNoLargeTrackedFiles(t *testing.T) {
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	files := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	if len(files) < 10 {
		t.Fatalf("git ls-files listed %d files: not the repository?", len(files))
	}
	for _, f := range files {
		if strings.Contains(f, "testdata/") {
			continue
		}
		fi, err := os.Lstat(f)
		if err != nil {
			continue // deleted in the work tree
		}
		if fi.Size() > 1<<20 {
			t.Errorf("%s is tracked and weighs %d bytes: a build output? (git rm --cached it and add it to .gitignore)", f, fi.Size())
		}
	}
}
