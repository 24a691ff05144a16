package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// The labels that keep a session's record on its container, where a
// restarted daemon reads it back. Their names and formats are those of
// earlier versions, whose sessions an upgraded daemon adopts.
const (
	labelOwner      = "io.sandboxd.session.owner"
	labelLanguage   = "io.sandboxd.session.language"
	labelCreated    = "io.sandboxd.session.created"
	labelLastUsed   = "io.sandboxd.session.last-used"
	labelExecutions = "io.sandboxd.session.executions"
	labelLimits     = "io.sandboxd.session.limits"
	labelImage      = "io.sandboxd.session.image"
	labelRuntime    = "io.sandboxd.session.runtime"
	// labelInterpreter, on an interpreter session only, counts its
	// interpreter's restarts.
	labelInterpreter = "io.sandboxd.session.interpreter"
)

// recordLabels encodes a session's record as labels; times in
// milliseconds since the epoch.
func recordLabels(r sandbox.SessionRecord) map[string]string {
	limits, _ := json.Marshal(r.Limits)
	l := map[string]string{
		labelOwner:      strconv.FormatUint(uint64(r.Owner), 10),
		labelLanguage:   r.Language,
		labelCreated:    strconv.FormatInt(r.Created.UnixMilli(), 10),
		labelLastUsed:   strconv.FormatInt(r.LastUsed.UnixMilli(), 10),
		labelExecutions: strconv.FormatInt(r.Executions, 10),
		labelLimits:     string(limits),
		labelImage:      r.Image,
		labelRuntime:    r.Runtime,
	}
	if r.Interpreter {
		l[labelInterpreter] = strconv.FormatInt(r.Restarts, 10)
	}
	return l
}

// recordFromLabels reads a session's record back.
func recordFromLabels(l map[string]string) (sandbox.SessionRecord, error) {
	owner, err := strconv.ParseUint(l[labelOwner], 10, 32)
	if err != nil {
		return sandbox.SessionRecord{}, fmt.Errorf("owner: %w", err)
	}
	r := sandbox.SessionRecord{Owner: uint32(owner), Language: l[labelLanguage], Image: l[labelImage], Runtime: l[labelRuntime]}
	for _, f := range []struct {
		label string
		into  func(int64)
	}{
		{labelCreated, func(v int64) { r.Created = time.UnixMilli(v) }},
		{labelLastUsed, func(v int64) { r.LastUsed = time.UnixMilli(v) }},
		{labelExecutions, func(v int64) { r.Executions = v }},
	} {
		v, err := strconv.ParseInt(l[f.label], 10, 64)
		if err != nil {
			return sandbox.SessionRecord{}, fmt.Errorf("%s: %w", f.label, err)
		}
		f.into(v)
	}
	if err := json.Unmarshal([]byte(l[labelLimits]), &r.Limits); err != nil {
		return sandbox.SessionRecord{}, fmt.Errorf("limits: %w", err)
	}
	if v, ok := l[labelInterpreter]; ok {
		if r.Restarts, err = strconv.ParseInt(v, 10, 64); err != nil {
			return sandbox.SessionRecord{}, fmt.Errorf("%s: %w", labelInterpreter, err)
		}
		r.Interpreter = true
	}
	return r, nil
}

// SetRecord replaces the session record kept with the sandbox.
func (s *Sandbox) SetRecord(ctx context.Context, r sandbox.SessionRecord) error {
	_, err := s.ctr.SetLabels(s.c.ctx(ctx), recordLabels(r))
	return err
}
