//go:build integration

package main_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// endsInsideCharacter reports whether b ends with the start of a UTF-8
// sequence that lacks its last bytes.
func endsInsideCharacter(b []byte) bool {
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		if utf8.RuneStart(b[i]) {
			return b[i] >= 0xc0 && !utf8.FullRune(b[i:])
		}
	}
	return false
}

type timedEvent struct {
	at   time.Duration
	ev   api.StreamEvent
	line []byte
}

// streamEvents runs req streamed and returns its events with their times.
func streamEvents(t *testing.T, req api.ExecuteRequest) []timedEvent {
	t.Helper()
	body, _ := json.Marshal(req)
	client := unixClient(socket, true)
	hreq, _ := http.NewRequest("POST", "http://sandboxd/v1/execute", bytes.NewReader(body))
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", api.NDJSON)
	start := time.Now()
	resp, err := client.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != api.NDJSON {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var out []timedEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var ev api.StreamEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("event %q: %v", sc.Bytes(), err)
		}
		out = append(out, timedEvent{time.Since(start), ev, bytes.Clone(sc.Bytes())})
	}
	return out
}

func chunkData(t *testing.T, ev api.StreamEvent) []byte {
	if ev.Encoding == api.EncodingBase64 {
		b, err := base64.StdEncoding.DecodeString(ev.Data)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return []byte(ev.Data)
}

func TestStreamingOutputComesAsWritten(t *testing.T) {
	evs := streamEvents(t, api.ExecuteRequest{Language: "python", Code: `
import sys, time
print("first", flush=True)
time.sleep(2)
print("second", flush=True)`})
	if len(evs) < 3 || evs[0].ev.Type != api.EventStart || evs[len(evs)-1].ev.Type != api.EventResult {
		t.Fatalf("events: %+v", evs)
	}
	var first, last time.Duration
	for _, e := range evs {
		if e.ev.Type == api.EventStdout && strings.Contains(e.ev.Data, "first") {
			first = e.at
		}
	}
	last = evs[len(evs)-1].at
	if first == 0 || last-first < 1500*time.Millisecond {
		t.Errorf("the first chunk came at %v, the result at %v: not streamed", first, last)
	}
}

func TestStreamingOrderAndResult(t *testing.T) {
	req := api.ExecuteRequest{Language: "python", Code: `
import sys, time
for i in range(3):
    print("out", i, flush=True); time.sleep(0.05)
    print("err", i, file=sys.stderr, flush=True); time.sleep(0.05)
sys.stdout.buffer.write(bytes([0xe2, 0x82]))
sys.stdout.flush(); time.sleep(0.05)
sys.stdout.buffer.write(bytes([0xac, 0xff, 0x0a]))
sys.exit(4)`}
	evs := streamEvents(t, req)
	var order []string
	var stdout, stderr []byte
	var res api.ExecuteResult
	for _, e := range evs {
		switch e.ev.Type {
		case api.EventStdout:
			chunk := chunkData(t, e.ev)
			// A character cut by a write's end is held back for the next
			// chunk: no chunk ends inside one.
			if endsInsideCharacter(chunk) {
				t.Errorf("a chunk ends inside a character: %q", chunk)
			}
			stdout = append(stdout, chunk...)
			if len(order) == 0 || order[len(order)-1] != "out" { // a print may take several writes
				order = append(order, "out")
			}
		case api.EventStderr:
			stderr = append(stderr, chunkData(t, e.ev)...)
			if len(order) == 0 || order[len(order)-1] != "err" {
				order = append(order, "err")
			}
		case api.EventResult:
			json.Unmarshal(e.line, &res)
		}
	}
	if got := strings.Join(order[:6], " "); got != "out err out err out err" {
		t.Errorf("order: %s", got)
	}
	wantOut := "out 0\nout 1\nout 2\n\u20ac\xff\n"
	if string(stdout) != wantOut || string(stderr) != "err 0\nerr 1\nerr 2\n" {
		t.Errorf("chunks: %q %q", stdout, stderr)
	}
	// The streamed result is the one a plain request gets.
	plain := execute(t, req)
	if res.Status != plain.Status || res.ExitCode != 4 || res.Stdout != plain.Stdout || res.StdoutEncoding != plain.StdoutEncoding || res.Stderr != plain.Stderr {
		t.Errorf("streamed %+v\nplain %+v", res, plain)
	}
}

func TestStreamingDisconnectCleansUp(t *testing.T) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"language":"bash","code":"echo started; sleep 4262"}`
	conn.Write([]byte("POST /v1/execute HTTP/1.1\r\nHost: sandboxd\r\nContent-Type: application/json\r\nAccept: application/x-ndjson\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body))
	r := bufio.NewReader(conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn.SetReadDeadline(deadline)
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no output before the end: %v", err)
		}
		if strings.Contains(line, `"started\n"`) {
			break
		}
	}
	id := sandboxOf(t, stateDir, "sandboxd")
	conn.Close()
	deadline = time.Now().Add(5 * time.Second)
	for pgrep("sleep 4262") || containerExistsIn(t, containerdAddr, "sandboxd", id) {
		if time.Now().After(deadline) {
			t.Fatal("the execution or its sandbox outlived the client by 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestCLIStreams(t *testing.T) {
	cmd := cli{}.command("--socket", socket, "execute", "-l", "bash", "-c", "echo first; sleep 2; echo second >&2; exit 5")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := startProc(cmd); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	first := time.Since(start)
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	err = cmd.Wait()
	total := time.Since(start)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 || stderr.String() != "second\n" {
		t.Fatalf("exit %v, stderr %q", err, stderr.String())
	}
	if total-first < 1500*time.Millisecond {
		t.Errorf("the first line came at %v of %v: not streamed", first, total)
	}
	// --no-stream and -o ndjson.
	out, _, code := sandboxctl(t, "", "execute", "--no-stream", "-l", "bash", "-c", "echo whole")
	if code != 0 || out != "whole\n" {
		t.Errorf("--no-stream: %d %q", code, out)
	}
	out, _, code = sandboxctl(t, "", "execute", "-o", "ndjson", "-l", "bash", "-c", "echo ev")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.Contains(lines[0], `"type":"start"`) || !strings.Contains(lines[2], `"type":"result"`) {
		t.Errorf("-o ndjson: %d %q", code, out)
	}
}

// TestInteractiveStdin: `-i -` forwards input while the program runs, so a
// program that answers line by line answers each line as it is sent.
func TestInteractiveStdin(t *testing.T) {
	for _, lang := range []struct{ name, code string }{
		{"python", "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\nprint('bye')"},
		{"bash", "while read -r l; do echo \"got $l\"; done; echo bye"},
	} {
		t.Run(lang.name, func(t *testing.T) {
			cmd := cli{}.command("--socket", socket, "execute", "-l", lang.name, "-c", lang.code, "-i", "-")
			in, _ := cmd.StdinPipe()
			outPipe, _ := cmd.StdoutPipe()
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := startProc(cmd); err != nil {
				t.Fatal(err)
			}
			out := bufio.NewReader(outPipe)
			for _, word := range []string{"alpha", "beta", "gamma"} {
				if _, err := in.Write([]byte(word + "\n")); err != nil {
					t.Fatal(err)
				}
				got := make(chan string, 1)
				go func() { line, _ := out.ReadString('\n'); got <- line }()
				select {
				case line := <-got:
					want := strings.ToUpper(word) + "\n"
					if lang.name == "bash" {
						want = "got " + word + "\n"
					}
					if line != want {
						t.Fatalf("answer to %q: %q (stderr %q)", word, line, stderr.String())
					}
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					t.Fatalf("no answer to %q while the program runs (stderr %q)", word, stderr.String())
				}
			}
			in.Close()
			rest, _ := io.ReadAll(out)
			if err := cmd.Wait(); err != nil || string(rest) != "bye\n" {
				t.Fatalf("after EOF: %v, %q, stderr %q", err, rest, stderr.String())
			}
		})
	}
	// Only with a streamed execution.
	status, body := request(socket, "POST", "/v1/execute", `{"language":"bash","code":"cat","stdin_stream":true}`, nil)
	if status != 400 {
		t.Errorf("stdin_stream without streaming: %d %s", status, body)
	}
	if status, _ := request(socket, "POST", "/v1/executions/0123/stdin", "x", nil); status != 404 {
		t.Errorf("stdin for no execution: %d", status)
	}
}
