//go:build integration

package main_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Hostile clients: connections that stall, bodies that crawl or weigh too
// much. Each test runs a daemon of its own, with caps small enough to
// reach, and socket_mode 0666 so that clients of other uids (this test
// binary again, under another uid: see hostileHelper) can connect.

// hostileDaemon says how to start a daemon of the test's own with conf
// added to its configuration: socket_mode 0666, so that clients of other
// uids can connect. HOSTILE_DAEMON_ENV adds to its environment, to study
// its memory: GODEBUG=gctrace=1, GOMEMLIMIT=200MiB.
func hostileDaemon(conf string) daemonOpts {
	return daemonOpts{config: "socket_mode = '0666'\n" + conf, env: strings.Fields(os.Getenv("HOSTILE_DAEMON_ENV")), checkStop: true}
}

// The helper: this test binary run again under another uid, as a client.
// HOSTILE_HELPER=hold opens HOSTILE_N connections to HOSTILE_SOCKET, sends
// nothing on them, prints how many the daemon kept and how it answered the
// others, and keeps them until its stdin ends. HOSTILE_HELPER=get prints
// the status of GET /v1/health.
func init() {
	mode := os.Getenv("HOSTILE_HELPER")
	if mode == "" {
		return
	}
	sock := os.Getenv("HOSTILE_SOCKET")
	switch mode {
	case "get":
		status, _, err := send(sock, "GET", "/v1/health", nil, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			fmt.Println(0)
			os.Exit(0)
		}
		fmt.Println(status)
	case "hold":
		n, _ := strconv.Atoi(os.Getenv("HOSTILE_N"))
		var conns []net.Conn
		for range n {
			c, err := net.Dial("unix", sock)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			conns = append(conns, c)
		}
		// A refused connection is answered within half a second (the
		// daemon waits that long for a request); a kept one hears
		// nothing.
		var mu sync.Mutex
		res := heldConns{Refused: map[int]int{}}
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					var e api.Error
					b, _ := io.ReadAll(resp.Body)
					if json.Unmarshal(b, &e) != nil || e.Code != api.CodeOfStatus(resp.StatusCode) {
						res.Malformed++
					}
					res.Refused[resp.StatusCode]++
				case os.IsTimeout(err):
					res.Held++
				default:
					res.Malformed++
				}
			})
		}
		wg.Wait()
		json.NewEncoder(os.Stdout).Encode(res)
		io.Copy(io.Discard, os.Stdin)
	}
	os.Exit(0)
}

type heldConns struct {
	Held      int
	Refused   map[int]int // by status
	Malformed int
}

var helperOnce sync.Once
var helperPath string

// asUID runs the helper as uid.
func asUID(t *testing.T, uid uint32, sock string, env ...string) *exec.Cmd {
	t.Helper()
	// Where another uid may run it: the suite's directory.
	helperOnce.Do(func() {
		self, err := os.ReadFile("/proc/self/exe")
		if err == nil {
			helperPath = filepath.Join(suiteDir, "hostile-helper")
			err = os.WriteFile(helperPath, self, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	cmd := exec.Command(helperPath)
	cmd.Env = append(os.Environ(), append(env, "HOSTILE_SOCKET="+sock)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Stderr = os.Stderr
	return cmd
}

// getAs answers GET /v1/health's status for uid.
func getAs(t *testing.T, uid uint32, sock string) int {
	t.Helper()
	out, err := outputProc(asUID(t, uid, sock, "HOSTILE_HELPER=get"))
	if err != nil {
		t.Fatalf("helper as uid %d: %v", uid, err)
	}
	status, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return status
}

// holdAs opens n stalled connections as uid and keeps them until the
// test ends or release is called.
func holdAs(t *testing.T, uid uint32, sock string, n int) (heldConns, func()) {
	t.Helper()
	cmd := asUID(t, uid, sock, "HOSTILE_HELPER=hold", "HOSTILE_N="+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := startProc(cmd); err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(func() {
		stdin.Close()
		cmd.Wait()
	})
	t.Cleanup(release)
	var res heldConns
	if err := json.NewDecoder(stdout).Decode(&res); err != nil {
		t.Fatalf("helper as uid %d: %v", uid, err)
	}
	return res, release
}

// TestHostileStalledConnections fills the daemon with connections that
// send nothing, from uids other than root, and checks who is still served.
func TestHostileStalledConnections(t *testing.T) {
	conf := `
[server]
header_timeout = '2m'
idle_timeout = '1s'
max_connections = 24
max_connections_per_uid = 8
root_reserve = 4
[pool]
size = 0
`
	d := startDaemon(t, hostileDaemon(conf))
	sock := d.sock
	// One uid: its share, and 429 for the rest.
	got, _ := holdAs(t, 65534, sock, 30)
	if got.Held != 8 || got.Refused[429] != 22 || got.Malformed != 0 {
		t.Errorf("uid 65534's 30 connections: %+v, want 8 kept and 22 refused with 429", got)
	}
	if status, body, err := send(sock, "GET", "/v1/health", nil, nil); status != 200 {
		t.Errorf("root beside uid 65534's stalled connections: %d %s %v", status, body, err)
	}
	if status := getAs(t, 65533, sock); status != 200 {
		t.Errorf("uid 65533 beside uid 65534's stalled connections: %d", status)
	}

	// More uids, to the cap of all but root: 8 + 8 + 4 of 20, then 503.
	got, release := holdAs(t, 65532, sock, 8)
	if got.Held != 8 {
		t.Errorf("uid 65532's 8 connections: %+v, want 8 kept", got)
	}
	got, _ = holdAs(t, 65531, sock, 8)
	if got.Held != 4 || got.Refused[503] != 4 || got.Malformed != 0 {
		t.Errorf("uid 65531's 8 connections: %+v, want 4 kept and 4 refused with 503", got)
	}
	if status := getAs(t, 65530, sock); status != 503 {
		t.Errorf("uid 65530 with the daemon full: %d, want 503", status)
	}
	// Root has its reserve.
	if status, body, err := send(sock, "GET", "/v1/health", nil, nil); status != 200 {
		t.Errorf("root with the daemon full for others: %d %s %v", status, body, err)
	}
	// The connections of the requests above close a moment after their
	// answers (any left idle, at the idle timeout).
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		n := metricValue(t, sock, "sandboxd_connections")
		if n == 21 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("sandboxd_connections %v, want 21 (20 stalled and this scrape)", n)
			break
		}
	}
	if n := metricValue(t, sock, `sandboxd_connections_refused_total{reason="per_uid"}`); n != 22 {
		t.Errorf("refused per uid: %v, want 22", n)
	}
	if n := metricValue(t, sock, `sandboxd_connections_refused_total{reason="total"}`); n != 5 {
		t.Errorf("refused with the daemon full: %v, want 5", n)
	}

	// Stalled connections that go give their places back.
	release()
	deadline := time.Now().Add(5 * time.Second)
	for getAs(t, 65530, sock) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("uid 65530 still refused once uid 65532's connections closed")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A reload applies new caps to new connections.
	d.reload(t, "socket_mode = '0666'\n"+strings.Replace(conf, "max_connections_per_uid = 8", "max_connections_per_uid = 2", 1))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got, release := holdAs(t, 65529, sock, 3)
		release()
		if got.Held == 2 && got.Refused[429] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("3 connections of uid 65529 after a reload to 2 per uid: %+v", got)
		}
	}
}

// rawConn is a connection the test writes HTTP on by hand.
func rawConn(t *testing.T, sock string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// closedWithin waits for the daemon to close a connection, and says how
// long it took.
func closedWithin(t *testing.T, c net.Conn, br *bufio.Reader, what string, max time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(max))
	_, err := io.Copy(io.Discard, br)
	d := time.Since(start)
	if err != nil {
		t.Errorf("%s: still open after %v (%v)", what, d, err)
	}
	return d
}

// TestHostileSlowAndIdleConnectionsClosed checks that connections that
// send nothing, send slowly or stay idle are closed at their timeouts,
// while a stream of stdin outlives them all.
func TestHostileSlowAndIdleConnectionsClosed(t *testing.T) {
	const timeout = 2 * time.Second
	sock := startDaemon(t, hostileDaemon(`
[server]
header_timeout = '2s'
body_timeout = '2s'
idle_timeout = '2s'
`)).sock
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		c, br := rawConn(t, sock)
		fmt.Fprint(c, "GET /v1/health HTTP/1.1\r\nHost: sandboxd\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("health on a kept-alive connection: %v %v", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		if d := closedWithin(t, c, br, "an idle keep-alive connection", 3*timeout); d < timeout*3/4 {
			t.Errorf("an idle keep-alive connection closed after %v, before its idle timeout", d)
		}
	})
	t.Run("silent", func(t *testing.T) {
		t.Parallel()
		c, br := rawConn(t, sock)
		if d := closedWithin(t, c, br, "a connection that sends nothing", 3*timeout); d < timeout*3/4 {
			t.Errorf("a silent connection closed after %v, before the header timeout", d)
		}
	})
	t.Run("slow headers", func(t *testing.T) {
		t.Parallel()
		c, br := rawConn(t, sock)
		fmt.Fprint(c, "GET /v1/health HTTP/1.1\r\n")
		go func() {
			for range 20 {
				time.Sleep(timeout / 4)
				if _, err := c.Write([]byte("X-A: b\r\n")); err != nil {
					return
				}
			}
		}()
		closedWithin(t, c, br, "a connection sending its headers slowly", 3*timeout)
	})
	t.Run("slow body", func(t *testing.T) {
		t.Parallel()
		c, br := rawConn(t, sock)
		fmt.Fprint(c, "POST /v1/execute HTTP/1.1\r\nHost: sandboxd\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"language\":")
		go func() {
			for range 40 {
				time.Sleep(timeout / 4)
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}()
		start := time.Now()
		c.SetReadDeadline(start.Add(3 * timeout))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("a slow body: no answer after %v: %v", time.Since(start), err)
		}
		b, _ := io.ReadAll(resp.Body)
		var e api.Error
		json.Unmarshal(b, &e)
		if d := time.Since(start); resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(e.Message, "body_timeout") || d < timeout*3/4 {
			t.Errorf("a slow body: %d %s after %v, want 408 after %v", resp.StatusCode, b, d, timeout)
		}
		closedWithin(t, c, br, "a slow body's connection after its 408", timeout)
	})
	t.Run("stdin streams past the timeouts", func(t *testing.T) {
		t.Parallel()
		streamStdinSlowly(t, sock, 3*timeout)
	})
}

// streamStdinSlowly runs cat streamed, sends its stdin over span, and
// checks that all of it comes back: neither the execution's request nor
// its stdin's has a body deadline.
func streamStdinSlowly(t *testing.T, sock string, span time.Duration) {
	client := unixClient(sock, false)
	req, _ := http.NewRequest("POST", "http://sandboxd/v1/execute", strings.NewReader(`{"language":"bash","code":"cat","stdin_stream":true,"timeout_ms":60000}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", api.NDJSON)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := json.NewDecoder(resp.Body)
	var ev api.StreamEvent
	if err := events.Decode(&ev); err != nil || ev.Type != api.EventStart {
		t.Fatalf("start event: %+v %v", ev, err)
	}
	pr, pw := io.Pipe()
	var sent bytes.Buffer
	go func() {
		const lines = 8
		for i := range lines {
			line := fmt.Sprintf("line %d\n", i)
			sent.WriteString(line)
			pw.Write([]byte(line))
			time.Sleep(span / lines)
		}
		pw.Close()
	}()
	sreq, _ := http.NewRequest("POST", "http://sandboxd/v1/executions/"+ev.ID+"/stdin", pr)
	sresp, err := client.Do(sreq)
	if err != nil {
		t.Fatalf("stdin: %v", err)
	}
	b, _ := io.ReadAll(sresp.Body)
	sresp.Body.Close()
	if sresp.StatusCode != 200 {
		t.Fatalf("stdin sent over %v: %d %s", span, sresp.StatusCode, b)
	}
	var out strings.Builder
	var res api.ResultEvent
	for {
		var raw json.RawMessage
		if err := events.Decode(&raw); err != nil {
			t.Fatalf("events after stdin: %v", err)
		}
		json.Unmarshal(raw, &ev)
		if ev.Type == api.EventStdout {
			out.WriteString(ev.Data)
		}
		if ev.Type == api.EventResult {
			json.Unmarshal(raw, &res)
			break
		}
	}
	if out.String() != sent.String() || res.ExitCode != 0 || time.Since(start) < span {
		t.Errorf("cat of stdin sent over %v: %q exit %d after %v, want %q", span, out.String(), res.ExitCode, time.Since(start), sent.String())
	}
}

// TestHostileBigBodies sends bodies over the cap and bodies of the largest
// valid size at once: the former are refused by their length, unread, the
// latter served in turn within the budget, and the daemon's peak RSS stays
// bounded.
func TestHostileBigBodies(t *testing.T) {
	const n = 8
	d := startDaemon(t, hostileDaemon(`
[server]
body_wait = '2m'
[pool]
size = 0
`))
	sock, pid := d.sock, d.pid()
	// The largest valid body: code and stdin at their maxima (1 MiB)
	// escaped six bytes a byte, and files at theirs (32 MiB) in base64.
	const maxCode, maxStdin, maxFiles = 1 << 20, 1 << 20, 32 << 20
	code := "#" + strings.Repeat("\x01", maxCode-len("#\ncat >/dev/null\n")) + "\ncat >/dev/null\n"
	files := make([]api.File, 4)
	for i := range files {
		files[i] = api.File{Path: fmt.Sprintf("f%d.bin", i), Encoding: api.EncodingBase64,
			Content: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{byte(i)}, maxFiles/len(files)))}
	}
	valid, _ := json.Marshal(api.ExecuteRequest{Language: "bash", Code: code, Stdin: strings.Repeat("\x01", maxStdin), Files: files, TimeoutMS: 60000})
	largest := int64(len(valid))
	// The cap of a body by the default limits: server.go's bodyLimit.
	const limit = 6*(maxCode+maxStdin) + 2*maxFiles + 6*(64<<10) + 6*(64<<10) + 256<<10
	if largest > limit {
		t.Fatalf("the largest valid body is %d bytes, over the cap of %d", largest, limit)
	}

	// Idle: after one execution, so that what a first one sets up is there.
	if status, body, err := send(sock, "POST", "/v1/execute", strings.NewReader(`{"language":"bash","code":"true"}`), map[string]string{"Content-Type": "application/json"}); status != 200 {
		t.Fatalf("warm-up: %d %s %v", status, body, err)
	}
	idle := procStatusKB(t, pid, "VmRSS")
	idlePeak := procStatusKB(t, pid, "VmHWM")

	type answer struct {
		big    bool
		status int
		body   []byte
		err    error
	}
	answers := make(chan answer, 2*n)
	for i := range 2 * n {
		go func() {
			h := map[string]string{"Content-Type": "application/json"}
			if i%2 == 0 {
				// Over the cap by its Content-Length; the body would be
				// sent if the daemon read it. The answer is read while
				// it is sent: the daemon answers 413 and closes before
				// taking the body, which a client that only reads once
				// it has written all would lose to a broken pipe.
				status, body := requestEarlyFrom(sock, "POST", "/v1/execute", io.LimitReader(zeros{}, int64(limit+1)), int64(limit+1))
				answers <- answer{true, status, body, nil}
				return
			}
			status, body, err := send(sock, "POST", "/v1/execute", bytes.NewReader(valid), h)
			answers <- answer{false, status, body, err}
		}()
	}
	served := 0
	for range 2 * n {
		a := <-answers
		var e api.Error
		json.Unmarshal(a.body, &e)
		switch {
		case a.big && (a.status != 413 || e.Message != fmt.Sprintf("request body is larger than %d bytes", limit)):
			t.Errorf("a body over the cap: %d %.200s %v, want 413", a.status, a.body, a.err)
		case !a.big && a.status == 200:
			served++
			var res api.ExecuteResult
			if json.Unmarshal(a.body, &res) != nil || res.ExitCode != 0 {
				t.Errorf("a valid body: %.300s", a.body)
			}
		case !a.big && a.status != 429:
			t.Errorf("a valid body: %d %.300s %v, want 200 or 429", a.status, a.body, a.err)
		}
	}
	if served == 0 {
		t.Errorf("none of %d valid bodies was served", n)
	}
	peak := procStatusKB(t, pid, "VmHWM")
	// The budget (max_body_memory, by default the cap of one body) lets
	// one of these bodies in at a time, and a body over the cap costs
	// nothing. What one body keeps live at its worst moment is about
	// 2.5 times its size: its bytes and the strings decoded from them
	// (2x, until the bytes are collected), or later the files decoded
	// from base64 and the runtime's JSON of them for the sandbox's agent,
	// base64 again, in json's growing buffer. Go's collector lets the
	// heap reach twice what was live at its last cycle (GOGC=100; the
	// daemon decodes a body of 8 MiB or more at GOGC=10, which keeps it
	// lower still), and a body's garbage is collected while the next one
	// is read: 2 x 2.5 and some for the timing of cycles, 8 x the body.
	// Two bodies at a time go over it (docs/performance.md has the
	// figures).
	bound := idle + 8*largest
	t.Logf("largest valid body %.1f MiB; daemon RSS idle %.1f MiB (peak so far %.1f MiB); peak with %d bodies over the cap and %d of the largest valid size at once (%d served): %.1f MiB (+%.1f MiB), bound %.1f MiB",
		mib(largest), mib(idle), mib(idlePeak), n, n, served, mib(peak), mib(peak-idle), mib(bound))
	// The race detector's shadow memory is 5 to 10 times the heap: a
	// daemon built with it (make test-race) has no bound of ours.
	if peak > bound && !raceDaemon {
		t.Errorf("peak RSS %.1f MiB over the bound of %.1f MiB (idle + 8 x the largest body)", mib(peak), mib(bound))
	}
	if v := metricValue(t, sock, `sandboxd_request_bodies_refused_total{reason="too_large"}`); v != n {
		t.Errorf("%v bodies counted as too large, want %d", v, n)
	}
	if v := metricValue(t, sock, "sandboxd_request_body_bytes"); v != 0 {
		t.Errorf("%v bytes of bodies held once every request is answered", v)
	}
}

// zeros is an endless body.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
