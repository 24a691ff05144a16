package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"reflect"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Request bodies that are read whole (JSON, a session's file) are read
// into one buffer of their exact length, under a deadline, and count
// against a budget of bytes held at once by all requests: a client cannot
// make the daemon hold more than the budget, nor hold a connection by
// sending slowly. Bodies that stream (a running program's stdin, an image
// archive) are not read whole and have neither.

// bodyBudget bounds the bytes of request bodies held in memory at once.
// Waiters are served in order of arrival.
type bodyBudget struct {
	size int64
	sem  *semaphore.Weighted
	held atomic.Int64
}

func newBodyBudget(size int64) *bodyBudget {
	return &bodyBudget{size: size, sem: semaphore.NewWeighted(size)}
}

// acquireBytes takes n bytes of the budget, all of it for a body larger than
// the budget, waiting up to wait. It returns what to release.
func (b *bodyBudget) acquireBytes(ctx context.Context, n int64, wait time.Duration) (*bodyHold, error) {
	n = min(n, b.size)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := b.sem.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, api.Errorf(api.CodeResourceExhausted,
			"sandboxd holds %d bytes of request bodies, its maximum (server.max_body_memory), and this body of %d bytes waited %v for room: try again later",
			b.held.Load(), n, wait)
	}
	b.held.Add(n)
	return &bodyHold{b: b, n: n}, nil
}

// bodyHold is a part of the budget a request holds.
type bodyHold struct {
	b  *bodyBudget
	mu sync.Mutex
	n  int64
}

// shrink gives back what is held over n.
func (h *bodyHold) shrink(n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n < h.n {
		h.b.sem.Release(h.n - n)
		h.b.held.Add(n - h.n)
		h.n = n
	}
}

func (h *bodyHold) release() { h.shrink(0) }

func nothing() {}

// readBody reads a request body whole, of at most limit bytes. A
// Content-Length over the limit is refused before anything is read; the
// rest is read into one buffer of its exact length, within the body
// deadline, once the budget has room. The caller calls release once it no
// longer needs what it decoded from the body.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) (data []byte, release func(), err error) {
	l := s.limits()
	rc := http.NewResponseController(w)
	// Set before anything else: net/http discards what is left of a
	// refused body after the handler, and a slow client must not hold it
	// there either. Cleared once the body is in, so that a long handler
	// keeps its connection.
	rc.SetReadDeadline(time.Now().Add(l.BodyTimeout))
	if r.ContentLength > limit {
		s.metrics.bodiesRefused.WithLabelValues("too_large").Inc()
		w.Header().Set("Connection", "close")
		return nil, nothing, &http.MaxBytesError{Limit: limit}
	}
	// A body of unknown length (chunked) holds the most it may weigh
	// while it is read, then what it weighs.
	want := r.ContentLength
	if want < 0 {
		want = limit
	}
	hold, err := s.bodies.acquireBytes(r.Context(), want, l.BodyWait)
	if err != nil {
		if apiError(err).Code == api.CodeResourceExhausted {
			s.metrics.bodiesRefused.WithLabelValues("budget").Inc()
		}
		return nil, nothing, err
	}
	if want >= largeBody {
		// What the body before left is collected, and its pages given
		// back, before this one's bytes are allocated.
		debug.FreeOSMemory()
	}
	// The deadline runs from when the daemon is ready to read.
	rc.SetReadDeadline(time.Now().Add(l.BodyTimeout))
	if r.ContentLength >= 0 {
		data = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, data)
	} else {
		data, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		hold.shrink(int64(cap(data)))
	}
	if err != nil {
		hold.release()
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			s.metrics.bodiesRefused.WithLabelValues("too_large").Inc()
			return nil, nothing, err
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The connection is broken now, and the request's context
			// cancelled; the client learns why before it is closed.
			s.metrics.bodiesRefused.WithLabelValues("timeout").Inc()
			w.Header().Set("Connection", "close")
			return nil, nothing, errorf(errBodyTimeout, "request body: not received within %v (server.body_timeout)", l.BodyTimeout)
		}
		return nil, nothing, invalid("request body: %v", err)
	}
	rc.SetReadDeadline(time.Time{})
	return data, hold.release, nil
}

// readJSON decodes a request body strictly: JSON content type, bounded
// size, no unknown fields, nothing after the object. It holds the body's
// part of the budget until release is called.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) (release func(), err error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nothing, errorf(errUnsupportedType, "content type %q is not application/json", ct)
		}
	} else {
		return nothing, errorf(errUnsupportedType, "content type is missing; send application/json")
	}
	data, release, err := s.readBody(w, r, limit)
	if err != nil {
		return nothing, err
	}
	if len(data) >= largeBody {
		// Decoding makes garbage about as large as the body (json
		// unquotes each escaped string into a buffer of its quoted
		// size) beside the body and what is decoded from it: it is
		// collected as it comes.
		defer tightenGC()()
	}
	if err := decodeStrict(data, v); err != nil {
		release()
		return nothing, err
	}
	if len(data) >= largeBody {
		// Its bytes are garbage now that they are decoded: collected
		// before what is decoded from them is decoded further (a file's
		// base64), rather than beside it, and their pages given back,
		// so that what the execution allocates next does not sit beside
		// them either.
		data = nil
		debug.FreeOSMemory()
	}
	return release, nil
}

// largeBody is the size from which a body's garbage is collected at once,
// its pages given back, and its decoding's garbage collected as it comes:
// the collector's own pace lets the heap grow to twice what is live, which
// for the largest bodies is the daemon's peak, and freed pages that are
// not given back still count in its RSS.
const largeBody = 8 << 20

// tightGCPercent is the collector's pace while a large body is decoded:
// the heap may grow by a tenth of what is live rather than by all of it
// (GOGC=100), so that the peak follows what is live then (the body and
// what is decoded from it), and not twice that, the daemon's idle heap
// included.
const tightGCPercent = 10

// gcPace counts the large bodies being decoded, which hold the collector
// at tightGCPercent, and keeps the pace to go back to.
var gcPace struct {
	mu      sync.Mutex
	n       int
	lowered bool
	old     int
}

// tightenGC holds the collector at tightGCPercent until the returned
// function is called, unless it is off (GOGC=off) or already as tight.
func tightenGC() (restore func()) {
	gcPace.mu.Lock()
	defer gcPace.mu.Unlock()
	if gcPace.n == 0 {
		gcPace.old = gcPercent()
		if gcPace.lowered = gcPace.old > tightGCPercent; gcPace.lowered {
			debug.SetGCPercent(tightGCPercent)
		}
	}
	gcPace.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			gcPace.mu.Lock()
			defer gcPace.mu.Unlock()
			if gcPace.n--; gcPace.n == 0 && gcPace.lowered {
				debug.SetGCPercent(gcPace.old)
			}
		})
	}
}

// gcPercent is the collector's pace as GOGC or debug.SetGCPercent set it:
// -1 when it is off.
func gcPercent() int {
	sample := []rtmetrics.Sample{{Name: "/gc/gogc:percent"}}
	rtmetrics.Read(sample)
	if sample[0].Value.Kind() != rtmetrics.KindUint64 {
		return 100
	}
	return int(int64(sample[0].Value.Uint64()))
}

// decodeStrict unmarshals one JSON value, refusing what follows it and
// object keys that no field takes, as json.Decoder with
// DisallowUnknownFields does, without the decoder's copy of the input.
func decodeStrict(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) && syn.Offset > 1 && json.Valid(data[:syn.Offset-1]) {
			return invalid("request body: data after the JSON object")
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return invalid("request body: empty; send a JSON object")
		}
		return invalid("request body: %v", err)
	}
	if key := unknownField(data, reflect.TypeOf(v)); key != "" {
		return invalid("request body: json: unknown field %q", key)
	}
	return nil
}

// rawJSON keeps a value's bytes, a slice of the input: no copy.
type rawJSON []byte

func (r *rawJSON) UnmarshalJSON(b []byte) error {
	*r = b
	return nil
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// unknownField returns a key of an object in data that no field of the
// struct decoded from it takes, at any depth, or "". data decoded without
// error into a value of type t.
func unknownField(data []byte, t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if !holdsStruct(t) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return ""
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]rawJSON
		if json.Unmarshal(data, &obj) != nil {
			return "" // null
		}
		fields := jsonFields(t)
		for k, raw := range obj {
			ft, ok := fields[k]
			if !ok {
				for name, f := range fields {
					if strings.EqualFold(name, k) {
						ft, ok = f, true
						break
					}
				}
			}
			if !ok {
				return k
			}
			if key := unknownField(raw, ft); key != "" {
				return key
			}
		}
	case reflect.Slice, reflect.Array:
		var elems []rawJSON
		if json.Unmarshal(data, &elems) != nil {
			return ""
		}
		for _, e := range elems {
			if key := unknownField(e, t.Elem()); key != "" {
				return key
			}
		}
	case reflect.Map:
		var m map[string]rawJSON
		if json.Unmarshal(data, &m) != nil {
			return ""
		}
		for _, e := range m {
			if key := unknownField(e, t.Elem()); key != "" {
				return key
			}
		}
	}
	return ""
}

var (
	fieldsCache sync.Map // reflect.Type → map[string]reflect.Type
	structCache sync.Map // reflect.Type → bool
)

// jsonFields maps the JSON names of a struct's fields, those of embedded
// structs included, to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldsCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			for k, v := range jsonFields(ft) {
				if _, ok := fields[k]; !ok {
					fields[k] = v
				}
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	fieldsCache.Store(t, fields)
	return fields
}

// holdsStruct reports whether values of t may contain JSON objects that
// decode into structs.
func holdsStruct(t reflect.Type) bool {
	if v, ok := structCache.Load(t); ok {
		return v.(bool)
	}
	structCache.Store(t, false) // a recursive type meets itself as false
	var holds bool
	switch t.Kind() {
	case reflect.Struct:
		holds = true
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		holds = holdsStruct(t.Elem())
	}
	structCache.Store(t, holds)
	return holds
}
