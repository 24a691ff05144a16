// Package daemon is sandboxd's API server: it validates requests, runs them
// in sandboxes through the Runtime it is given, and answers in the wire
// types of package api.
package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Limits are the daemon's defaults and maxima.
type Limits struct {
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	DefaultMemory  int64
	MaxMemory      int64
	CPUs           float64
	Pids           int64
	TmpfsBytes     int64
	OutputBytes    int64 // per stream
	MaxCodeBytes   int64
	MaxStdinBytes  int64
	MaxConcurrent  int
	MaxQueued      int
	// MaxConcurrentPerUID bounds one uid's running and waiting executions;
	// 0 is no quota.
	MaxConcurrentPerUID int
	// PoolSize is how many ready sandboxes wait for one-shot executions;
	// 0 turns the pool off.
	PoolSize int
	// CellReuse is how many one-shot executions of one uid a cell serves,
	// each in a fresh jail; 1 gives each execution a sandbox of its own.
	// CellIdle and CellMaxAge bound how long a cell waits for the next,
	// and lives.
	CellReuse  int
	CellIdle   time.Duration
	CellMaxAge time.Duration

	SessionIdleTimeout time.Duration // default idle timeout
	SessionMaxLifetime time.Duration // default maximum lifetime
	MaxSessionLifetime time.Duration // maximum of both
	MaxSessions        int
	MaxSessionsPerUser int
	MaxFileBytes       int64 // one file in or out of a session

	// BodyTimeout is how long a client has to send a body that is read
	// whole (JSON, a session's file); bodies that stream have none.
	BodyTimeout time.Duration
	// BodyWait is how long a body waits for room in the budget of bodies
	// held at once before it is refused with 429.
	BodyWait time.Duration
}

// DefaultLimits returns the built-in limits for a host with cpus CPUs.
func DefaultLimits(cpus int) Limits {
	return Limits{
		DefaultTimeout: 30 * time.Second,
		MaxTimeout:     300 * time.Second,
		DefaultMemory:  256 << 20,
		MaxMemory:      4 << 30,
		CPUs:           1,
		Pids:           128,
		TmpfsBytes:     64 << 20,
		OutputBytes:    1 << 20,
		MaxCodeBytes:   1 << 20,
		MaxStdinBytes:  1 << 20,
		MaxConcurrent:  2 * cpus,
		MaxQueued:      8 * cpus,
		PoolSize:       2 * cpus,
		CellReuse:      200,
		CellIdle:       30 * time.Second,
		CellMaxAge:     10 * time.Minute,

		SessionIdleTimeout: 10 * time.Minute,
		SessionMaxLifetime: time.Hour,
		MaxSessionLifetime: 24 * time.Hour,
		MaxSessions:        32,
		MaxSessionsPerUser: 8,
		MaxFileBytes:       32 << 20,

		BodyTimeout: 30 * time.Second,
		BodyWait:    10 * time.Second,
	}
}

// MaxBodyBytes is the largest request body the limits allow, that of an
// execution: code and stdin at their maxima, JSON-escaped (up to 6 bytes a
// byte), files at theirs in base64, and room for the rest.
func (l Limits) MaxBodyBytes() int64 {
	return 6*(l.MaxCodeBytes+l.MaxStdinBytes) + 2*l.MaxFileBytes + maxArgsBytes*6 + maxEnvBytes*6 + 256<<10
}

// Config configures a Server. All fields are required but Access.
type Config struct {
	Runtime Runtime
	// OCIRuntimes are the OCI runtimes configured besides runc.
	OCIRuntimes []string
	// PullImages lets the daemon pull a language's missing image.
	PullImages bool
	// Languages are every defined language; those with a tool Missing
	// are listed but not run.
	Languages []Language
	Limits    Limits
	Access    Access
	// BodyBudget is how many bytes of request bodies are held at once
	// (0: Limits.MaxBodyBytes); a body larger than it waits for all of it.
	BodyBudget int64
	Version    string
	Logger     *slog.Logger
}

// live is what a reload replaces.
type live struct {
	lim   Limits
	langs []Language
	// missing are the languages whose tools the host lacks: listed, and
	// refused with the reason, but never run.
	missing []Language
	access  Access
}

// newLive is what a configuration makes live: the languages that can run
// apart from those that cannot.
func newLive(lim Limits, langs []Language, access Access) *live {
	l := &live{lim: lim, access: access}
	for _, lang := range langs {
		if lang.Missing != "" {
			l.missing = append(l.missing, lang)
		} else {
			l.langs = append(l.langs, lang)
		}
	}
	return l
}

// Server serves the API.
type Server struct {
	rt      Runtime
	cfg     atomic.Pointer[live]
	version string
	log     *slog.Logger
	slots   *slots
	running activity // programs running, whom pool refills yield to
	started time.Time
	mux     *http.ServeMux
	wg      sync.WaitGroup

	metrics *metrics
	bodies  *bodyBudget
	// pools hold ready sandboxes, one pool per class that a language
	// runs in by default.
	pmu         sync.Mutex
	pools       map[sandboxClass]*pool
	poolCtx     context.Context
	ociRuntimes []string
	pullImages  bool
	pulling     sync.Map // image ref → struct{}: pulls under way
	// cells are the used cells, by uid; cellsClosed is set once Close
	// began: no cell is kept after it.
	cells       cellPool
	cellsClosed atomic.Bool
	// closing is closed by Close: writes that wait for their time
	// (session records) go at once.
	closing     chan struct{}
	closingOnce sync.Once
	// rootGen counts the changes of the host paths in sandboxes' roots.
	rootGen atomic.Uint64
	stdins  sync.Map // execution id → *liveStdin
	// known holds the ids of the containers this daemon uses now, from
	// before each is created until it is deleted, to tell leaked ones from
	// them.
	known sync.Map
	// undeleted holds the sandboxes whose deletion failed, by id, to be
	// deleted once containerd is back.
	undeleted sync.Map

	// drain counts new work under way and, once a drain began, refuses
	// more (serve_drain.go).
	drain drainState

	smu      sync.Mutex
	sessions map[string]*session
	creating map[uint32]int // sessions being created, by owner
}

// New returns a Server.
func New(cfg Config) *Server {
	s := &Server{
		rt:          cfg.Runtime,
		version:     cfg.Version,
		log:         cfg.Logger,
		slots:       newSlots(cfg.Limits),
		started:     time.Now(),
		mux:         http.NewServeMux(),
		sessions:    map[string]*session{},
		creating:    map[uint32]int{},
		pools:       map[sandboxClass]*pool{},
		cells:       cellPool{idle: map[cellKey][]*cell{}, busy: map[cellKey]int{}},
		closing:     make(chan struct{}),
		ociRuntimes: cfg.OCIRuntimes,
		pullImages:  cfg.PullImages,
	}
	s.cfg.Store(newLive(cfg.Limits, cfg.Languages, cfg.Access))
	if cfg.BodyBudget <= 0 {
		cfg.BodyBudget = cfg.Limits.MaxBodyBytes()
	}
	s.bodies = newBodyBudget(cfg.BodyBudget)
	s.metrics = newMetrics(s)
	s.routes()
	return s
}

func (s *Server) limits() Limits        { return s.cfg.Load().lim }
func (s *Server) languages() []Language { return s.cfg.Load().langs }

// missingLanguages are the defined languages whose tools the host lacks.
func (s *Server) missingLanguages() []Language { return s.cfg.Load().missing }

// Reload replaces the limits, languages and access control. Executions and
// sessions under way keep what they started with.
func (s *Server) Reload(l Limits, langs []Language, access Access) {
	hostPathsChanged := !slices.Equal(HostPaths(s.languages()), HostPaths(langs))
	s.cfg.Store(newLive(l, langs, access))
	s.slots.resize(l)
	if hostPathsChanged {
		// Ready sandboxes, and those being made, lack the new paths: the
		// pools make new ones.
		s.rootGen.Add(1)
		s.drainPools()
		s.expireCells(true)
	}
	s.syncPools(l.PoolSize)
	s.pullMissing()
}

// Start fills the pools of ready sandboxes until Close, and pulls the
// languages' missing images.
func (s *Server) Start(ctx context.Context) {
	s.pmu.Lock()
	s.poolCtx = ctx
	s.pmu.Unlock()
	s.syncPools(s.limits().PoolSize)
	s.pullMissing()
}

// Close stops the pools and destroys their sandboxes.
func (s *Server) Close(ctx context.Context) {
	s.pmu.Lock()
	pools := s.pools
	s.pools = map[sandboxClass]*pool{}
	s.poolCtx = nil
	s.pmu.Unlock()
	for _, p := range pools {
		p.stop(ctx)
	}
	s.cellsClosed.Store(true)
	s.expireCells(true)
	s.closingOnce.Do(func() { close(s.closing) })
}

// Status is a summary of what the daemon is doing.
type Status struct {
	Running, Queued, Sessions int
	ContainerdUp              bool
}

// Status summarizes the daemon's work, for systemd's STATUS= line.
func (s *Server) Status(ctx context.Context) Status {
	r, q := s.slots.counts()
	s.smu.Lock()
	n := len(s.sessions)
	s.smu.Unlock()
	return Status{Running: r, Queued: q, Sessions: n, ContainerdUp: s.rt.Info(ctx).Serving}
}

// Wait waits for the requests under way, and their clean-up, to end. Call
// it once the HTTP server no longer accepts requests.
func (s *Server) Wait() { s.wg.Wait() }
