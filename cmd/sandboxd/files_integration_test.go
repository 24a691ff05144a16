//go:build integration

package main_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// The files tests run on each OCI runtime: the agent resolves paths in
// /workspace by openat2 where the kernel has it (runc) and by a walk of
// its own where it does not (Debian 12's gVisor), and both must place,
// collect and refuse the same things.

func TestMultiFileSubmissions(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		res := execute(t, api.ExecuteRequest{Language: "python", Entrypoint: "app/main.py", Runtime: rt, Files: []api.File{
			{Path: "app/main.py", Content: "from pkg.util import twice\nimport data\nprint(twice(data.N), open('app/blob.bin','rb').read()[0])"},
			{Path: "app/pkg/__init__.py"},
			{Path: "app/pkg/util.py", Content: "def twice(x):\n    return 2 * x\n"},
			{Path: "app/data.py", Content: "N = 21\n"},
			{Path: "app/blob.bin", Content: base64.StdEncoding.EncodeToString([]byte{0xff, 0}), Encoding: "base64"},
		}, Env: map[string]string{"PYTHONPATH": "/workspace/app"}})
		if res.Status != api.StatusOK || res.Stdout != "42 255\n" {
			t.Fatalf("python package: %+v", res)
		}
		res = execute(t, api.ExecuteRequest{Language: "c", Entrypoint: "main.c", Runtime: rt, Files: []api.File{
			{Path: "main.c", Content: "#include <stdio.h>\n#include \"inc/lib.h\"\nint main(void){printf(\"%d\\n\", answer());return 0;}"},
			{Path: "inc/lib.h", Content: "static int answer(void){return 42;}\n"},
		}})
		if res.Status != api.StatusOK || res.Stdout != "42\n" {
			t.Fatalf("c program: %+v", res)
		}
		// Files with code: the code runs, the files are beside it, with
		// their modes (python's stat: GNU stat fails on Debian 12's gVisor).
		res = execute(t, api.ExecuteRequest{Language: "bash", Runtime: rt,
			Code:  `cat notes/a.txt; python3 -c 'import os; print(oct(os.stat("run.sh").st_mode & 0o777), oct(os.stat("notes/a.txt").st_mode & 0o777))'`,
			Files: []api.File{{Path: "notes/a.txt", Content: "note\n"}, {Path: "run.sh", Content: "true", Mode: 0o755}}})
		if res.Stdout != "note\n0o755 0o644\n" {
			t.Fatalf("files beside code: %+v", res)
		}
		// In a session the files stay, and later ones go beside them.
		id := newSession(t, append([]string{"-l", "bash"}, ctl...)...)
		execute(t, api.ExecuteRequest{SessionID: id, Code: "true", Files: []api.File{{Path: "kept.txt", Content: "kept"}}})
		execute(t, api.ExecuteRequest{SessionID: id, Code: "true", Files: []api.File{{Path: "d/more.txt", Content: "+more"}}})
		if r := execute(t, api.ExecuteRequest{SessionID: id, Code: "cat kept.txt d/more.txt"}); r.Stdout != "kept+more" {
			t.Fatalf("files in a session: %+v", r)
		}
	})
}

func TestSubmissionPathsRefused(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		for _, p := range []string{"../x", "/etc/x", "", "a\x00b", "a/../../x"} {
			body, _ := json.Marshal(api.ExecuteRequest{Language: "bash", Code: "true", Runtime: rt, Files: []api.File{{Path: p, Content: "x"}}})
			status, resp := request(socket, "POST", "/v1/execute", string(body), nil)
			if status != 400 || !strings.Contains(string(resp), "invalid_argument") {
				t.Errorf("path %q: %d %s", p, status, resp)
			}
		}
		for _, req := range []api.ExecuteRequest{
			{Language: "bash", Entrypoint: "missing.sh", Files: []api.File{{Path: "x.sh"}}},
			{Language: "bash", Code: "x", Entrypoint: "x.sh", Files: []api.File{{Path: "x.sh"}}},
			{Language: "bash", Code: "x", Collect: []string{"../*"}},
			{Language: "bash", Code: "x", Collect: []string{"[bad"}},
			{Language: "bash", Code: "x", Files: []api.File{{Path: "b", Content: "%%%", Encoding: "base64"}}},
		} {
			req.Runtime = rt
			body, _ := json.Marshal(req)
			if status, resp := request(socket, "POST", "/v1/execute", string(body), nil); status != 400 {
				t.Errorf("%+v: %d %s", req, status, resp)
			}
		}
		// Symlinks that an earlier execution planted in a session: no
		// submitted file is placed through one, not even to a place inside
		// /workspace, and nothing outside is written.
		id := newSession(t, append([]string{"-l", "bash"}, ctl...)...)
		execute(t, api.ExecuteRequest{SessionID: id, Code: "echo sentinel > /tmp/sentinel; mkdir real; ln -s /tmp tmp; ln -s real alias; ln -s /tmp/sentinel s; ln -s /proc/self/root root"})
		for _, p := range []string{"tmp/sentinel", "tmp/new.txt", "alias/x.txt", "s", "root/tmp/sentinel", "root/tmp/new.txt"} {
			res := execute(t, api.ExecuteRequest{SessionID: id, Code: "true", Files: []api.File{{Path: p, Content: "owned"}}})
			if res.ExitCode != 127 || !strings.Contains(res.Stderr, "placing "+p+" in /workspace") || !strings.Contains(res.Stderr, "too many levels of symbolic links") {
				t.Errorf("placing %s through a symlink: %+v", p, res)
			}
		}
		res := execute(t, api.ExecuteRequest{SessionID: id, Code: "cat /tmp/sentinel; [ -e /tmp/new.txt ] || [ -e real/x.txt ] && echo placed; true"})
		if res.Stdout != "sentinel\n" {
			t.Fatalf("a file was placed through a symlink: %+v", res)
		}
	})
}

func TestCollect(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		res := execute(t, api.ExecuteRequest{Language: "bash", Runtime: rt, Code: `
mkdir -p out/deep
echo text > out/a.txt
printf '\377\000' > out/b.bin
echo deeper > out/deep/c.txt
ln -s /etc/passwd out/evil
ln -s ../.. out/up
ln -s /proc/1/root out/root
ln -s deep out/alias
echo skip > other.txt`, Collect: []string{"out/*", "out/*/*.txt", "out/up/*", "out/root/etc/*", "out/alias/*"}})
		got := map[string]api.File{}
		for _, f := range res.Files {
			got[f.Path] = f
		}
		if len(got) != 3 || got["out/a.txt"].Content != "text\n" || got["out/deep/c.txt"].Content != "deeper\n" {
			t.Fatalf("collected: %+v (%+v)", res.Files, res)
		}
		if b := got["out/b.bin"]; b.Encoding != api.EncodingBase64 || b.Content != base64.StdEncoding.EncodeToString([]byte{0xff, 0}) {
			t.Errorf("binary file: %+v", b)
		}
		// A matched file the agent cannot open is an error, not a file
		// silently left out: the program's user has no DAC override.
		body, _ := json.Marshal(api.ExecuteRequest{Language: "bash", Runtime: rt, Code: "mkdir out; echo a > out/a.txt; echo b > out/locked.txt; chmod 000 out/locked.txt", Collect: []string{"out/*"}})
		status, resp := request(socket, "POST", "/v1/execute", string(body), nil)
		if status != 500 || !strings.Contains(string(resp), "out/locked.txt") || !strings.Contains(string(resp), "permission denied") {
			t.Errorf("an unreadable matched file: %d %s", status, resp)
		}
		// Through the CLI, into a directory.
		dir := t.TempDir()
		_, errOut, code := sandboxctl(t, "", append(append([]string{"execute"}, ctl...), "-l", "python", "-c", "import os\nos.makedirs('r', exist_ok=True)\nopen('r/x.json','w').write('{}')",
			"--collect", "r/*.json", "--collect-dir", dir)...)
		data, err := os.ReadFile(filepath.Join(dir, "r", "x.json"))
		if code != 0 || err != nil || string(data) != "{}" {
			t.Fatalf("--collect-dir: %d %q %v", code, errOut, err)
		}
	})
}

func TestCLIFilesAndDirectories(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		run := func(args ...string) (string, string, int) {
			return sandboxctl(t, "", append(append([]string{"execute"}, ctl...), args...)...)
		}
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "proj", "lib"), 0o755)
		os.WriteFile(filepath.Join(dir, "proj", "main.py"), []byte("from lib.m import v\nprint(v)\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "proj", "lib", "__init__.py"), nil, 0o644)
		os.WriteFile(filepath.Join(dir, "proj", "lib", "m.py"), []byte("v = 'from a directory'\n"), 0o644)
		out, errOut, code := run("-d", filepath.Join(dir, "proj"), "--entrypoint", "main.py")
		if code != 0 || out != "from a directory\n" {
			t.Fatalf("-d: %d %q %q", code, out, errOut)
		}
		os.WriteFile(filepath.Join(dir, "run.sh"), []byte("source ./helper.sh; hello\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "helper.sh"), []byte("hello() { echo 'from -f'; }\n"), 0o644)
		out, errOut, code = run("-f", filepath.Join(dir, "run.sh"), "-f", filepath.Join(dir, "helper.sh"))
		if code != 0 || out != "from -f\n" {
			t.Fatalf("-f: %d %q %q", code, out, errOut)
		}
		// Files, an entrypoint and a collected output together.
		os.WriteFile(filepath.Join(dir, "main.py"), []byte("import util\nutil.write()\nprint('written')\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "util.py"), []byte("def write():\n    open('out.txt', 'w').write('from util\\n')\n"), 0o644)
		results := t.TempDir()
		out, errOut, code = run("-l", "python", "-f", filepath.Join(dir, "main.py"), "-f", filepath.Join(dir, "util.py"),
			"--entrypoint", "main.py", "--collect", "out.txt", "--collect-dir", results)
		data, _ := os.ReadFile(filepath.Join(results, "out.txt"))
		if code != 0 || out != "written\n" || string(data) != "from util\n" {
			t.Fatalf("-f, --entrypoint and --collect: %d %q %q, collected %q", code, out, errOut, data)
		}
	})
}
