package daemon

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// apiError alone picks statuses: each class of error gets its code,
// status and message.
func TestAPIError(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   string
		status int
		msg    string
	}{
		{api.Errorf(api.CodeFailedPrecondition, "dead"), api.CodeFailedPrecondition, 409, "dead"},
		{fmt.Errorf("wrapped: %w", api.Errorf(api.CodeNotFound, "gone")), api.CodeNotFound, 404, "gone"},
		{errorf(errMethodNotAllowed, "no PUT"), api.CodeInvalidArgument, http.StatusMethodNotAllowed, "no PUT"},
		{errorf(errBodyTimeout, "slow"), api.CodeInvalidArgument, http.StatusRequestTimeout, "slow"},
		{&http.MaxBytesError{Limit: 10}, api.CodeInvalidArgument, http.StatusRequestEntityTooLarge, "request body is larger than 10 bytes"},
		{errorf(errTooLarge, "big"), api.CodeInvalidArgument, http.StatusRequestEntityTooLarge, "big"},
		{errorf(errUnsupportedType, "xml"), api.CodeInvalidArgument, http.StatusUnsupportedMediaType, "xml"},
		{fmt.Errorf("create: %w", errorf(errDiskFull, "full")), api.CodeResourceExhausted, http.StatusInsufficientStorage, "full"},
		{&os.PathError{Op: "write", Path: "/x", Err: unix.ENOSPC}, api.CodeResourceExhausted, http.StatusInsufficientStorage, "the daemon's disk is full: write /x: no space left on device"},
		{&os.PathError{Op: "write", Path: "/x", Err: unix.EROFS}, api.CodeUnavailable, http.StatusServiceUnavailable, "the daemon cannot write its files: write /x: read-only file system"},
		{fmt.Errorf("x: %w", errdefs.ErrInvalidArgument), api.CodeInvalidArgument, 400, "x: invalid argument"},
		{errdefs.ErrNotFound, api.CodeNotFound, 404, "not found"},
		{errdefs.ErrPermissionDenied, api.CodePermissionDenied, 403, "permission denied"},
		{errdefs.ErrResourceExhausted, api.CodeResourceExhausted, 429, "resource exhausted"},
		{errdefs.ErrUnavailable, api.CodeUnavailable, 503, "unavailable"},
		{fmt.Errorf("boom"), api.CodeInternal, 500, "boom"},
	} {
		if e := apiError(tc.err); e.Code != tc.code || e.Status != tc.status || e.Message != tc.msg {
			t.Errorf("%v: %+v, want %s %d %q", tc.err, e, tc.code, tc.status, tc.msg)
		}
	}
}
