package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// ConnLimits cap the connections open on the API socket at once.
type ConnLimits struct {
	// Max is all clients' connections together.
	Max int
	// PerUID is one uid's, root's too; 0 is no cap.
	PerUID int
	// RootReserve is the part of Max that only root may use: other uids
	// together stay under Max-RootReserve, so that an administrator
	// always reaches /v1/health and /metrics.
	RootReserve int
}

// DefaultConnLimits are the built-in connection caps.
func DefaultConnLimits() ConnLimits {
	return ConnLimits{Max: 1024, PerUID: 128, RootReserve: 16}
}

// Fit lowers the caps to what a process allowed nofile open files can
// hold: connections get at most half of them, the rest being for
// containerd, the sandboxes' FIFOs and files. It reports whether it
// lowered anything.
func (l ConnLimits) Fit(nofile uint64) (ConnLimits, bool) {
	fit := l
	if half := nofile / 2; uint64(fit.Max) > half {
		fit.Max = int(half)
	}
	fit.Max = max(fit.Max, 1)
	if fit.RootReserve >= fit.Max {
		fit.RootReserve = fit.Max / 8
	}
	if fit.PerUID > fit.Max-fit.RootReserve {
		fit.PerUID = fit.Max - fit.RootReserve
	}
	return fit, fit != l
}

// A connection closed while its client may still be sending (one refused
// at once, or one whose request's body the daemon did not read) is closed
// gracefully: it is half-closed, and what the client sends is read for up
// to lingerTime, so that closing it does not reset the answer away before
// the client reads it (RFC 9112 section 9.6): on a loaded host a client
// may take a while to read it. At most maxLingering at once; the others
// are closed at once.
const (
	lingerTime   = 3 * time.Second
	maxLingering = 64
	// requestWait bounds the wait for a refused connection's request,
	// which its answer follows.
	requestWait = 500 * time.Millisecond
)

// ConnListener is a net.Listener that caps open connections, in total and
// per peer uid (SO_PEERCRED). A connection over a cap gets a complete
// HTTP/1.1 error once it has sent its request (or lingerTime has passed)
// and is closed: 429 when its uid is over its share, 503 when the daemon
// is full. Accept never waits on a refused client.
type ConnListener struct {
	net.Listener
	log *slog.Logger
	lim atomic.Pointer[ConnLimits]
	// peer reads a connection's credentials; tests replace it.
	peer func(net.Conn) Caller

	mu    sync.Mutex
	total int
	byUID map[uint32]int

	lingering            chan struct{}
	refusedUID, refusedN atomic.Uint64
	lastLog              atomic.Int64 // unix nanoseconds of the last refusal logged
}

// NewConnListener caps the connections accepted from ln.
func NewConnListener(ln net.Listener, lim ConnLimits, log *slog.Logger) *ConnListener {
	l := &ConnListener{Listener: ln, log: log, peer: peerCaller, byUID: map[uint32]int{}, lingering: make(chan struct{}, maxLingering)}
	l.lim.Store(&lim)
	return l
}

// SetLimits replaces the caps; connections open over new caps stay.
func (l *ConnListener) SetLimits(lim ConnLimits) { l.lim.Store(&lim) }

// Accept returns the next connection within the caps, answering and
// closing those over them.
func (l *ConnListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		caller := l.peer(c)
		if e := l.admit(caller); e != nil {
			l.refuse(c, caller, e)
			continue
		}
		return &trackedConn{Conn: c, l: l, caller: caller}, nil
	}
}

// admit counts a new connection in, or says why it may not come in.
func (l *ConnListener) admit(c Caller) *api.Error {
	lim := l.lim.Load()
	uid := callerUID(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim.PerUID > 0 && l.byUID[uid] >= lim.PerUID {
		l.refusedUID.Add(1)
		return api.Errorf(api.CodeResourceExhausted,
			"uid %s has %d connections open to sandboxd, its maximum (server.max_connections_per_uid): close some or reuse them", formatUID(c), l.byUID[uid])
	}
	root := c.Known && c.UID == 0
	if l.total >= lim.Max || (!root && l.total-l.byUID[0] >= lim.Max-lim.RootReserve) {
		l.refusedN.Add(1)
		return api.Errorf(api.CodeUnavailable,
			"sandboxd has %d connections open, its maximum (server.max_connections, of which server.root_reserve are root's): try again later", l.total)
	}
	l.total++
	l.byUID[uid]++
	return nil
}

func (l *ConnListener) leave(c Caller) {
	uid := callerUID(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byUID[uid]--; l.byUID[uid] <= 0 {
		delete(l.byUID, uid)
	}
}

// refuse answers a connection over a cap with e, then closes it.
func (l *ConnListener) refuse(c net.Conn, caller Caller, e *api.Error) {
	// One line at most every 10 s: a flood of refusals must not flood
	// the journal too.
	now := time.Now().UnixNano()
	if last := l.lastLog.Load(); now-last > int64(10*time.Second) && l.lastLog.CompareAndSwap(last, now) {
		l.log.Warn("connection refused", "uid", caller.UID, "pid", caller.PID, "status", e.Status, "err", e.Message,
			"refused_per_uid", l.refusedUID.Load(), "refused_full", l.refusedN.Load())
	}
	answer := refusal(e)
	select {
	case l.lingering <- struct{}{}:
		go func() {
			defer func() { <-l.lingering }()
			// The answer follows the request, or what the client sends of
			// it within requestWait: HTTP clients drop answers that come
			// before their request.
			c.SetDeadline(time.Now().Add(requestWait))
			c.Read(make([]byte, 4<<10))
			c.SetWriteDeadline(time.Now().Add(requestWait))
			if _, err := c.Write(answer); err == nil {
				linger(c)
			}
			c.Close()
		}()
	default:
		// A fresh socket's buffer takes the answer at once; the deadline
		// is only a bound.
		c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		c.Write(answer)
		c.Close()
	}
}

// linger half-closes c, then reads what its client sends until it closes
// its end or lingerTime has passed.
func linger(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, c)
}

// unreadInput reports whether the client has sent what the daemon has not
// read: a client still sending.
func unreadInput(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	raw.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return err == nil && n > 0
}

// refusal is the whole HTTP/1.1 answer to a refused connection.
func refusal(e *api.Error) []byte {
	body, _ := json.Marshal(e)
	body = append(body, '\n')
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s",
		e.Status, http.StatusText(e.Status), len(body), body)
}

// ConnStats are a ConnListener's counts.
type ConnStats struct {
	Open                      int
	RefusedPerUID, RefusedAll uint64
}

// Stats returns the connections open and those refused so far.
func (l *ConnListener) Stats() ConnStats {
	l.mu.Lock()
	open := l.total
	l.mu.Unlock()
	return ConnStats{Open: open, RefusedPerUID: l.refusedUID.Load(), RefusedAll: l.refusedN.Load()}
}

var (
	connsDesc   = prometheus.NewDesc("sandboxd_connections", "Connections open on the API socket.", nil, nil)
	refusedDesc = prometheus.NewDesc("sandboxd_connections_refused_total", "Connections refused over a cap: per_uid (429) or total (503).", []string{"reason"}, nil)
)

func (l *ConnListener) Describe(ch chan<- *prometheus.Desc) {
	ch <- connsDesc
	ch <- refusedDesc
}

func (l *ConnListener) Collect(ch chan<- prometheus.Metric) {
	st := l.Stats()
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(st.Open))
	ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(st.RefusedPerUID), "per_uid")
	ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(st.RefusedAll), "total")
}

// trackedConn is an admitted connection: it carries its peer's
// credentials, and leaves the counts when closed.
type trackedConn struct {
	net.Conn
	l      *ConnListener
	caller Caller
	once   sync.Once
}

// Close closes the connection, gracefully when its client is still
// sending; the connection keeps its place in the counts until it is
// closed.
func (c *trackedConn) Close() error {
	var err error
	c.once.Do(func() {
		if unreadInput(c.Conn) {
			select {
			case c.l.lingering <- struct{}{}:
				go func() {
					defer func() { <-c.l.lingering }()
					linger(c.Conn)
					c.Conn.Close()
					c.l.leave(c.caller)
				}()
				return
			default:
			}
		}
		err = c.Conn.Close()
		c.l.leave(c.caller)
	})
	return err
}

// CloseWrite lets net/http half-close a connection before it closes it,
// as it does for the connections it gives up reading.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// LimitConns caps the connections ln accepts, and reports their counts
// among the server's metrics.
func (s *Server) LimitConns(ln net.Listener, lim ConnLimits) *ConnListener {
	l := NewConnListener(ln, lim, s.log)
	s.metrics.reg.MustRegister(l)
	return l
}
