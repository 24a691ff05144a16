package systemd

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	sent, err := Notify(Ready, Status("serving"))
	if !sent || err != nil {
		t.Fatalf("sent %v, err %v", sent, err)
	}
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=serving" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Errorf("outside systemd: sent %v, err %v", sent, err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "2000000")
	if d := WatchdogInterval(); d != time.Second {
		t.Errorf("interval %v, want half of 2s", d)
	}
	t.Setenv("WATCHDOG_USEC", "")
	if d := WatchdogInterval(); d != 0 {
		t.Errorf("without a watchdog: %v", d)
	}
}

func TestJournalField(t *testing.T) {
	for in, want := range map[string]string{"session_id": "SESSION_ID", "route": "ROUTE", "_x": "X", "a.b-c": "A_B_C", "message": "X_MESSAGE", "9": "X_"} {
		if got := journalField(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	if strings.Contains(journalField("é"), "é") {
		t.Error("non-ASCII kept")
	}
}
