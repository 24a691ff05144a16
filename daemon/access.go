package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Caller is the peer of a request, from the socket's credentials.
type Caller struct {
	UID, GID uint32
	PID      int32
	Known    bool
}

type callerKey struct{}

// ConnContext records the peer's credentials (SO_PEERCRED); use it as
// http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	var caller Caller
	if tc, ok := c.(*trackedConn); ok {
		caller = tc.caller
	} else {
		caller = peerCaller(c)
	}
	if !caller.Known {
		return ctx
	}
	return context.WithValue(ctx, callerKey{}, caller)
}

func callerOf(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// peerCaller reads the credentials of a Unix socket's peer (SO_PEERCRED).
func peerCaller(c net.Conn) Caller {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Caller{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Caller{}
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return Caller{}
	}
	return Caller{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, Known: true}
}

// formatUID is a uid for messages; unknown peers have none.
func formatUID(c Caller) string {
	if !c.Known {
		return "unknown"
	}
	return strconv.FormatUint(uint64(c.UID), 10)
}

// Access is who may use the API beyond the socket's permissions. Empty
// lists let everyone in who can open the socket; root always may.
type Access struct {
	UIDs, GIDs []uint32
}

// allows reports whether a caller may use the API: root always; others
// when no list is set, or their uid, primary gid or one of their groups is
// on one.
func (a Access) allows(c Caller) bool {
	if len(a.UIDs) == 0 && len(a.GIDs) == 0 {
		return true
	}
	if !c.Known {
		return false
	}
	if c.UID == 0 || slices.Contains(a.UIDs, c.UID) || slices.Contains(a.GIDs, c.GID) {
		return true
	}
	for _, g := range supplementaryGroups(c.PID) {
		if slices.Contains(a.GIDs, g) {
			return true
		}
	}
	return false
}

// supplementaryGroups reads a process's groups, which SO_PEERCRED lacks.
func supplementaryGroups(pid int32) []uint32 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var gids []uint32
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil {
					gids = append(gids, uint32(g))
				}
			}
			return gids
		}
	}
	return nil
}

// admit refuses a request from a browser, or from a caller the allow
// lists leave out, before it is routed.
func (s *Server) admit(r *http.Request) error {
	// A web page can make a browser send requests to a local socket through
	// a proxy; no legitimate caller of this API sends Origin.
	if r.Header.Get("Origin") != "" {
		return api.Errorf(api.CodePermissionDenied, "requests from browsers are refused")
	}
	if c := callerOf(r.Context()); !s.cfg.Load().access.allows(c) {
		s.log.Warn("caller refused by access control", "uid", c.UID, "gid", c.GID, "pid", c.PID, "route", r.Method+" "+r.URL.Path)
		return api.Errorf(api.CodePermissionDenied, "uid %d is not allowed to use sandboxd (see access in its configuration)", c.UID)
	}
	return nil
}

// requireRoot refuses image management to all but root: images become
// the root filesystem of everyone's sandboxes.
func requireRoot(r *http.Request, what string) error {
	if c := callerOf(r.Context()); !c.Known || c.UID != 0 {
		return api.Errorf(api.CodePermissionDenied, "%s is for root: images become the root of every user's sandboxes", what)
	}
	return nil
}
