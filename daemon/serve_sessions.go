package daemon

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/sandboxd/sandboxd/daemon/api"
)

func (s *Server) serveCreateSession(w http.ResponseWriter, r *http.Request) error {
	if err := s.admitWork(w); err != nil {
		return err
	}
	defer s.drain.leave()
	var req api.CreateSessionRequest
	release, err := s.readJSON(w, r, maxEnvBytes*6+64<<10, &req)
	if err != nil {
		return err
	}
	defer release()
	sess, err := s.createSession(r.Context(), &req, callerOf(r.Context()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, sess)
	return nil
}

func (s *Server) serveListSessions(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, api.SessionsResponse{Sessions: s.listSessions(r.Context(), callerOf(r.Context()))})
	return nil
}

func (s *Server) serveShowSession(w http.ResponseWriter, r *http.Request) error {
	x, err := s.sessionFor(r.PathValue("id"), callerOf(r.Context()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.sessionInfo(r.Context(), x, true))
	return nil
}

func (s *Server) serveDeleteSession(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r.Context())
	x, err := s.sessionFor(r.PathValue("id"), c)
	if err != nil {
		return err
	}
	if err := s.deleteSession(r.Context(), x); err != nil {
		return fmt.Errorf("delete session %s: %w", x.id, err)
	}
	s.log.Info("session deleted", "session_id", x.id, "uid", c.UID, "pid", c.PID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// serveRestartSession restarts an interpreter session's interpreter: its
// state goes, its files stay.
func (s *Server) serveRestartSession(w http.ResponseWriter, r *http.Request) error {
	x, err := s.sessionFor(r.PathValue("id"), callerOf(r.Context()))
	if err != nil {
		return err
	}
	info, err := s.restartInterpreter(r.Context(), x)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) serveGetFile(w http.ResponseWriter, r *http.Request) error {
	x, err := s.sessionFor(r.PathValue("id"), callerOf(r.Context()))
	if err != nil {
		return err
	}
	if r.PathValue("path") == "" {
		files, err := s.listFiles(r.Context(), x)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, api.FilesResponse{Files: files})
		return nil
	}
	p, err := checkFilePath(r.PathValue("path"))
	if err != nil {
		return err
	}
	data, err := s.getFile(r.Context(), x, p)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
	return nil
}

func (s *Server) servePutFile(w http.ResponseWriter, r *http.Request) error {
	x, err := s.sessionFor(r.PathValue("id"), callerOf(r.Context()))
	if err != nil {
		return err
	}
	p, err := checkFilePath(r.PathValue("path"))
	if err != nil {
		return err
	}
	mode := uint64(0o644)
	if m := r.URL.Query().Get("mode"); m != "" {
		if mode, err = strconv.ParseUint(m, 8, 32); err != nil || mode > 0o777 {
			return invalid("mode %q is not an octal permission such as 644", truncate(m, 20))
		}
	}
	body, release, err := s.readBody(w, r, s.limits().MaxFileBytes)
	if err != nil {
		return err
	}
	defer release()
	info, err := s.putFile(r.Context(), x, p, uint32(mode), body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}
