// Package systemd is sandboxd's glue to systemd: socket activation,
// sd_notify readiness, status and watchdog, and native journal logging.
// Outside systemd every function is a no-op that says so.
package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/coreos/go-systemd/v22/journal"
)

// States sent with Notify.
const (
	Ready     = sddaemon.SdNotifyReady
	Stopping  = sddaemon.SdNotifyStopping
	Reloading = sddaemon.SdNotifyReloading
	Watchdog  = sddaemon.SdNotifyWatchdog
)

// Status is the STATUS= line systemctl status shows.
func Status(s string) string { return "STATUS=" + s }

// Listener returns the socket systemd passed by socket activation, or nil
// when sandboxd was not socket-activated.
func Listener() (net.Listener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	switch len(ls) {
	case 0:
		return nil, nil
	case 1:
		return ls[0], nil
	}
	return nil, fmt.Errorf("socket activation: %d sockets passed, want one", len(ls))
}

// Notify sends states to systemd; false means not under systemd.
func Notify(states ...string) (bool, error) {
	return sddaemon.SdNotify(false, strings.Join(states, "\n"))
}

// WatchdogInterval is how often to ping the watchdog: half of its timeout,
// or 0 when it is off.
func WatchdogInterval() time.Duration {
	d, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// JournalStream reports whether stderr goes to the journal.
func JournalStream() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok
}

// JournalHandler is a slog handler that logs to the journal natively:
// journald keeps the time, the level becomes the priority, and attributes
// become fields (session_id → SESSION_ID).
type JournalHandler struct {
	level  slog.Leveler
	prefix string
	attrs  []slog.Attr
}

// NewJournalHandler returns a handler logging records at level or above.
func NewJournalHandler(level slog.Leveler) *JournalHandler { return &JournalHandler{level: level} }

func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "sandboxd"}
	var text strings.Builder
	text.WriteString(r.Message)
	add := func(a slog.Attr) {
		a.Value = a.Value.Resolve()
		key := h.prefix + a.Key
		vars[journalField(key)] = a.Value.String()
		fmt.Fprintf(&text, " %s=%v", key, a.Value)
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool { add(a); return true })
	return journal.Send(text.String(), priority(r.Level), vars)
}

func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	for _, a := range attrs {
		a.Key = h.prefix + a.Key
		c.attrs = append(append([]slog.Attr(nil), c.attrs...), a)
	}
	return &c
}

func (h *JournalHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.prefix += name + "."
	return &c
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}

// journalField turns a key into a journal field name: upper case letters,
// digits and underscores, not starting with an underscore.
func journalField(key string) string {
	b := []byte(strings.ToUpper(key))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	f := strings.TrimLeft(string(b), "_0123456789")
	if f == "" || f == "MESSAGE" || f == "PRIORITY" {
		f = "X_" + f
	}
	return f
}
