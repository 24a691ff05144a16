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

func TestMultiFileSubmissions(t *testing.T) {
	res := execute(t, api.ExecuteRequest{Language: "python", Entrypoint: "app/main.py", Files: []api.File{
		{Path: "app/main.py", Content: "from pkg.util import twice\nimport data\nprint(twice(data.N), open('app/blob.bin','rb').read()[0])"},
		{Path: "app/pkg/__init__.py"},
		{Path: "app/pkg/util.py", Content: "def twice(x):\n    return 2 * x\n"},
		{Path: "app/data.py", Content: "N = 21\n"},
		{Path: "app/blob.bin", Content: base64.StdEncoding.EncodeToString([]byte{0xff, 0}), Encoding: "base64"},
	}, Env: map[string]string{"PYTHONPATH": "/workspace/app"}})
	if res.Status != api.StatusOK || res.Stdout != "42 255\n" {
		t.Fatalf("python package: %+v", res)
	}
	res = execute(t, api.ExecuteRequest{Language: "c", Entrypoint: "main.c", Files: []api.File{
		{Path: "main.c", Content: "#include <stdio.h>\n#include \"inc/lib.h\"\nint main(void){printf(\"%d\\n\", answer());return 0;}"},
		{Path: "inc/lib.h", Content: "static int answer(void){return 42;}\n"},
	}})
	if res.Status != api.StatusOK || res.Stdout != "42\n" {
		t.Fatalf("c program: %+v", res)
	}
	// Files with code: the code runs, the files are beside it.
	res = execute(t, api.ExecuteRequest{Language: "bash", Code: "cat notes/a.txt; stat -c %a run.sh", Files: []api.File{
		{Path: "notes/a.txt", Content: "note\n"}, {Path: "run.sh", Content: "true", Mode: 0o755}}})
	if res.Stdout != "note\n755\n" {
		t.Fatalf("files beside code: %+v", res)
	}
	// In a session the files stay.
	id := newSession(t, "-l", "bash")
	execute(t, api.ExecuteRequest{SessionID: id, Code: "true", Files: []api.File{{Path: "kept.txt", Content: "kept"}}})
	if r := execute(t, api.ExecuteRequest{SessionID: id, Code: "cat kept.txt"}); r.Stdout != "kept" {
		t.Fatalf("files in a session: %+v", r)
	}
}

func TestSubmissionPathsRefused(t *testing.T) {
	for _, p := range []string{"../x", "/etc/x", "", "a\x00b", "a/../../x"} {
		body, _ := json.Marshal(api.ExecuteRequest{Language: "bash", Code: "true", Files: []api.File{{Path: p, Content: "x"}}})
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
		body, _ := json.Marshal(req)
		if status, resp := request(socket, "POST", "/v1/execute", string(body), nil); status != 400 {
			t.Errorf("%+v: %d %s", req, status, resp)
		}
	}
}

func TestCollect(t *testing.T) {
	res := execute(t, api.ExecuteRequest{Language: "bash", Code: `
mkdir -p out/deep
echo text > out/a.txt
printf '\377\000' > out/b.bin
echo deeper > out/deep/c.txt
ln -s /etc/passwd out/evil
ln -s ../.. out/up
ln -s /proc/1/root out/root
echo skip > other.txt`, Collect: []string{"out/*", "out/*/*.txt", "out/up/*", "out/root/etc/*"}})
	got := map[string]api.File{}
	for _, f := range res.Files {
		got[f.Path] = f
	}
	if len(got) != 3 || got["out/a.txt"].Content != "text\n" || got["out/deep/c.txt"].Content != "deeper\n" {
		t.Fatalf("collected: %+v", res.Files)
	}
	if b := got["out/b.bin"]; b.Encoding != api.EncodingBase64 || b.Content != base64.StdEncoding.EncodeToString([]byte{0xff, 0}) {
		t.Errorf("binary file: %+v", b)
	}
	// Through the CLI, into a directory.
	dir := t.TempDir()
	_, errOut, code := sandboxctl(t, "", "execute", "-l", "python", "-c", "import os\nos.makedirs('r', exist_ok=True)\nopen('r/x.json','w').write('{}')",
		"--collect", "r/*.json", "--collect-dir", dir)
	data, err := os.ReadFile(filepath.Join(dir, "r", "x.json"))
	if code != 0 || err != nil || string(data) != "{}" {
		t.Fatalf("--collect-dir: %d %q %v", code, errOut, err)
	}
}

func TestCLIFilesAndDirectories(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "proj", "lib"), 0o755)
	os.WriteFile(filepath.Join(dir, "proj", "main.py"), []byte("from lib.m import v\nprint(v)\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "proj", "lib", "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "proj", "lib", "m.py"), []byte("v = 'from a directory'\n"), 0o644)
	out, errOut, code := sandboxctl(t, "", "execute", "-d", filepath.Join(dir, "proj"), "--entrypoint", "main.py")
	if code != 0 || out != "from a directory\n" {
		t.Fatalf("-d: %d %q %q", code, out, errOut)
	}
	os.WriteFile(filepath.Join(dir, "run.sh"), []byte("source ./helper.sh; hello\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "helper.sh"), []byte("hello() { echo 'from -f'; }\n"), 0o644)
	out, errOut, code = sandboxctl(t, "", "execute", "-f", filepath.Join(dir, "run.sh"), "-f", filepath.Join(dir, "helper.sh"))
	if code != 0 || out != "from -f\n" {
		t.Fatalf("-f: %d %q %q", code, out, errOut)
	}
}
