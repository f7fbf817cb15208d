package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/warrenhq/warren/internal/disk"
	"github.com/warrenhq/warren/internal/egress"
	"github.com/warrenhq/warren/internal/failpoint"
	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/internal/inroot"
	"github.com/warrenhq/warren/internal/metrics"
	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/overlay"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/internal/volume"
	"github.com/warrenhq/warren/wire"
)

// Config wires a Manager.
type Config struct {
	// Node is this node's id when several share the store ("" when it
	// is alone): its sandboxes are recorded as its, and it looks after
	// only those.
	Node string
	// Labels are this node's (a create's placement.labels must match).
	Labels map[string]string
	// NodeState, if set, says what state a node is in, so that the
	// sandboxes of a lost node show as lost.
	NodeState func(node string) string
	// DataDir holds one directory per sandbox under sandboxes/.
	DataDir string
	Store   *store.Store
	Images  *image.Store
	// Runtimes are the backends available on this node, by name.
	Runtimes map[string]runtime.Runtime
	// DefaultRuntime is used when a request names none.
	DefaultRuntime string
	// Warnings say where this node's isolation is weaker than warren's
	// default (shown by /v1/info and the agent host).
	Warnings []string
	// Agent is the host path of the agent binary.
	Agent string
	// AgentLibs holds the loader and libraries of a dynamically linked
	// agent; empty for a static one.
	AgentLibs string
	// Network wires sandboxes to the host and enforces egress policy.
	Network *network.Manager
	// PreviewURL gives the URL an exposed port is served at, and
	// PreviewPathURL the same under the API's address.
	PreviewURL     func(id string, port int) string
	PreviewPathURL func(id string, port int) string
	// AgentTimeout bounds how long a new sandbox's agent may take to dial.
	AgentTimeout time.Duration
	// HostRestarted says the host booted since warren last ran: running
	// sandboxes did not survive, and the first reconcile says so.
	HostRestarted bool
	Log           *slog.Logger
	// Secrets opens the secrets sandboxes name; nil: none can.
	Secrets Secrets
	// Volumes keeps volumes' storage; nil: none can be mounted.
	Volumes *volume.Manager
	// Egress substitutes secrets with allowed hosts into sandboxes'
	// outgoing requests; nil: such secrets are given as they are.
	Egress Egress
	// Metrics counts creates, deletes, execs and resumes (may be nil).
	Metrics *metrics.Metrics
}

// Egress is what the manager needs of the egress proxy.
type Egress interface {
	// Placeholder is what a sandbox sees instead of a secret's value.
	Placeholder(sandboxID, secretID string) (string, error)
	// Attach sends a sandbox's HTTPS through the proxy with these
	// substitutions; it answers the CA the sandbox must trust.
	Attach(sandboxID string, subs []egress.Substitution) ([]byte, error)
	// Detach forgets a sandbox that has ended.
	Detach(sandboxID string)
}

// Manager runs the sandboxes of one node.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	idmapMu  sync.Mutex
	userns   *os.File // the user namespace idmapped images are made for
	live     map[string]*live
	creating map[string]bool // creates under way in this process
	ending   map[string]bool // deletes, pauses and resumes under way in this process
	checking map[string]bool // liveness checks after a dropped agent, one per sandbox
	pools    []*pool
	// fillers are the pools' refill loops, waited for before the pools
	// are drained: a boot under way when warren stops finishes its own
	// cleanup first.
	fillers sync.WaitGroup
}

// live is what the manager holds in memory for a sandbox it runs.
type live struct {
	id    string
	org   string // owner; "" while in a warm pool (guarded by mu)
	rt    runtime.Runtime
	agent *guest.Client

	// Set before the sandbox goes live, and by a pool claim under mu.
	env       map[string]string
	secretEnv []string      // the names in env that hold secrets
	workdir   string        // the image's, for execs that name none
	user      string        // the image's, for execs that name none
	expiresAt time.Time     // zero: no deadline
	idle      time.Duration // zero: never idle out
	idlePause bool          // pause rather than delete when idle

	mu      sync.Mutex
	lastUse time.Time
	flushed time.Time // lastUse as last written to the store
	streams int       // open exec streams and terminals
	ops     int       // agent calls in flight, at most MaxOperations
	// stopGuard ends the memory guard (see guardMemory).
	stopGuard func()
}

func (l *live) owner() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.org
}

func (l *live) touch() {
	l.mu.Lock()
	l.lastUse = time.Now()
	l.mu.Unlock()
}

// hold marks a long-lived stream open; the sandbox is not idle while any
// is. The returned func releases it.
func (l *live) hold() func() {
	l.mu.Lock()
	l.streams++
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.streams--
			l.lastUse = time.Now()
			l.mu.Unlock()
		})
	}
}

// New returns a Manager. Call Reconcile before serving requests.
func New(cfg Config) (*Manager, error) {
	if len(cfg.Runtimes) == 0 {
		return nil, errors.New("no sandbox runtime is available")
	}
	if _, ok := cfg.Runtimes[cfg.DefaultRuntime]; !ok {
		return nil, fmt.Errorf("default runtime %q is not available", cfg.DefaultRuntime)
	}
	if cfg.AgentTimeout == 0 {
		cfg.AgentTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	dir := filepath.Join(cfg.DataDir, "sandboxes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create sandboxes dir: %w", err)
	}
	// Searchable by the root group of runc's user namespace, if any (see
	// prepareUserNS); by no one else.
	gid, mode := 0, os.FileMode(0o700)
	for _, rt := range cfg.Runtimes {
		if r := userNS(rt, &spec{}); r != nil {
			gid, mode = owner(r), 0o710
		}
	}
	if gid != 0 {
		if err := os.Chown(dir, 0, gid); err != nil {
			return nil, fmt.Errorf("set the sandboxes dir's group: %w", err)
		}
	}
	if err := os.Chmod(dir, mode); err != nil {
		return nil, fmt.Errorf("set the sandboxes dir's mode: %w", err)
	}
	return &Manager{cfg: cfg, log: cfg.Log, live: map[string]*live{}, creating: map[string]bool{}, ending: map[string]bool{}, checking: map[string]bool{}}, nil
}

// Runtimes lists the available backend names.
func (m *Manager) Runtimes() []string {
	var names []string
	for n := range m.cfg.Runtimes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// DefaultRuntime is the backend used when a request names none.
func (m *Manager) DefaultRuntime() string { return m.cfg.DefaultRuntime }

// Warnings say where this node's isolation is weaker than warren's default.
func (m *Manager) Warnings() []string { return append([]string{}, m.cfg.Warnings...) }

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns "sbx_" and 20 random characters. Ids all have one length
// because runsc resolves container ids by prefix.
func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "sbx_" + idEncoding.EncodeToString(b)
}

// runtimeStartTimeout bounds a backend's start, so a wedged runtime fails
// the create instead of leaving it in creating.
const runtimeStartTimeout = 2 * time.Minute

func (m *Manager) sandboxDir(id string) string {
	return filepath.Join(m.cfg.DataDir, "sandboxes", id)
}

// layout is where a sandbox's files are; sandboxes from before disks have
// no disk image.
func (m *Manager) layout(id string) overlay.Layout {
	l := overlay.Layout{Dir: m.sandboxDir(id)}
	_, err := os.Stat(l.DiskImage())
	l.Disk = err == nil
	return l
}

// mountFiles mounts a sandbox's files: its disk (made first when fresh is
// set and the sandbox has one) and the overlay of its writable layer on
// the image. Whatever is mounted already stays. uid, unless -1, is root
// of the sandbox's user namespace: its writable layer is given to it
// before the overlay is mounted (the overlay's root takes its owner from
// there, once).
func (m *Manager) mountFiles(ctx context.Context, id, lower string, sp *spec, fresh bool, uid int) (overlay.Layout, error) {
	lay := overlay.Layout{Dir: m.sandboxDir(id), Disk: sp.Resources.DiskMB > 0}
	if !fresh {
		lay = m.layout(id)
	}
	if lay.Disk {
		if err := os.MkdirAll(lay.Dir, 0o700); err != nil {
			return lay, fmt.Errorf("create sandbox dir: %w", err)
		}
		if fresh {
			if err := disk.Create(ctx, lay.DiskImage(), sp.Resources.DiskMB); err != nil {
				return lay, err
			}
		}
		if mounted, _ := overlay.IsMounted(lay.DiskDir()); !mounted {
			if err := disk.Mount(lay.DiskImage(), lay.DiskDir()); err != nil {
				return lay, err
			}
		}
	}
	if uid >= 0 {
		for _, d := range []string{lay.Upper(), lay.Work()} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return lay, fmt.Errorf("create %s: %w", d, err)
			}
		}
		if err := os.Chown(lay.Upper(), uid, uid); err != nil {
			return lay, fmt.Errorf("give the writable layer to the sandbox's root: %w", err)
		}
	}
	if lower == "" {
		return lay, nil
	}
	return lay, overlay.Mount(lower, lay)
}

func (m *Manager) runDir(id string) string { return filepath.Join(m.sandboxDir(id), "run") }

// Create boots a sandbox and returns it running. On failure nothing is left
// behind but a row in state failed that says why.
func (m *Manager) Create(ctx context.Context, org string, req *CreateRequest) (*wire.Sandbox, error) {
	start := time.Now()
	sb, err := m.create(ctx, org, req, start)
	if err != nil {
		m.countRefusal(err)
		m.cfg.Metrics.Created("", outcome(err), 0)
		return nil, err
	}
	m.cfg.Metrics.Created(sb.BootPath, "ok", time.Since(start))
	return sb, nil
}

// outcome names how a call ended, for metrics: ok, or its error's kind.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	kind, _ := KindOf(err)
	return [...]string{"internal", "bad_request", "not_found", "conflict", "unavailable", "too_many_requests", "no_space", "too_large", "quota_exceeded"}[kind]
}

// countRefusal counts a refusal by a quota.
func (m *Manager) countRefusal(err error) {
	if kind, field := KindOf(err); kind == KindQuota {
		m.cfg.Metrics.QuotaRefusal(field)
	}
}

func (m *Manager) create(ctx context.Context, org string, req *CreateRequest, start time.Time) (*wire.Sandbox, error) {
	sp, img, rtName, err := m.validate(req)
	if err != nil {
		return nil, err
	}
	if err := m.validateTenancy(ctx, org, rtName, req, sp); err != nil {
		return nil, err
	}
	rt := m.cfg.Runtimes[rtName]
	row, l, err := m.claimPooled(ctx, org, img, rtName, sp, req)
	if err != nil {
		return nil, err
	}
	if row != nil {
		m.cfg.Metrics.PoolClaim(true)
		return m.finishClaim(ctx, row, l, req, sp, start)
	}
	if m.hasPool(img) {
		m.cfg.Metrics.PoolClaim(false)
	}
	specJSON, _ := json.Marshal(sp)
	now := time.Now().UTC()
	row = &store.Sandbox{
		ID: newID(), Org: org, State: StateCreating, Runtime: rtName, Image: img,
		Spec: specJSON, Metadata: req.Metadata, CreatedAt: now, UpdatedAt: now, LastActiveAt: now,
		CPU: sp.Resources.CPU, MemoryMB: sp.Resources.MemoryMB, DiskMB: sp.Resources.DiskMB,
	}
	for _, v := range sp.Volumes {
		row.Mounts = append(row.Mounts, store.Mount{VolumeID: v.ID, ReadOnly: v.ReadOnly})
	}
	if row.Metadata == nil {
		row.Metadata = map[string]string{}
	}
	done, err := m.beginCreate(ctx, row)
	if err != nil {
		return nil, err
	}
	defer done()
	failpoint.Hit("create.recorded")
	log := m.log.With("sandbox.id", row.ID, "runtime", rtName, "image", img)
	log.Info("creating sandbox")
	// The boot belongs to warren once the row exists: a client that hangs
	// up must not leave a half-built sandbox behind.
	bootCtx := context.WithoutCancel(ctx)
	var sec *openedSecrets
	timings, l, err := m.boot(bootCtx, row.ID, img, rt, sp)
	if err == nil {
		sec, err = m.applySecrets(bootCtx, l, org, sp)
		if err == nil {
			err = m.writeSecretFiles(bootCtx, l, sec.files)
		}
		if err == nil {
			err = m.runStartup(bootCtx, l, req, timings)
		}
		if err != nil {
			l.close()
		}
	}
	if err != nil {
		var values []string
		if sec != nil {
			values = sec.values
		}
		msg := redactSecrets(redact(err.Error()), values)
		log.Error("create failed", "err", msg)
		m.teardown(bootCtx, row.ID, rt)
		reason := "create failed: " + msg
		_, _ = m.cfg.Store.Transition(bootCtx, row.ID, []string{StateCreating}, StateFailed, store.Change{Reason: &reason, Ended: true})
		m.releaseVolumes(bootCtx, sp)
		var e *Error
		if errors.As(err, &e) {
			return nil, &Error{Kind: e.Kind, Field: e.Field, Message: redactSecrets(e.Message, values)}
		}
		return nil, &Error{Kind: KindInternal, Message: reason}
	}
	timings["total_ms"] = time.Since(start).Milliseconds()
	boot := BootCold
	change := store.Change{BootPath: &boot, Timings: timings}
	if sp.TimeoutSeconds > 0 {
		exp := time.Now().Add(time.Duration(sp.TimeoutSeconds) * time.Second).UTC()
		change.ExpiresAt = &exp
		l.expiresAt = exp
	}
	m.goLive(l, org)
	failpoint.Hit("create.before-running")
	row2, err := m.cfg.Store.Transition(bootCtx, row.ID, []string{StateCreating}, StateRunning, change)
	if err != nil {
		m.teardown(bootCtx, row.ID, rt)
		return nil, fmt.Errorf("record sandbox %s running: %w", row.ID, err)
	}
	log.Info("sandbox running", "total_ms", timings["total_ms"])
	return m.view(row2), nil
}

// storeError turns the store's refusals of a new sandbox into the API's.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrInUse):
		return &Error{Kind: KindConflict, Message: err.Error(), Err: err}
	case errors.Is(err, store.ErrNotFound):
		// A volume went between the check and the insert.
		return &Error{Kind: KindBadRequest, Field: "volumes", Message: err.Error(), Err: err}
	case errors.Is(err, store.ErrNoRoom):
		return &Error{Kind: KindUnavailable, Message: err.Error(), Err: err}
	}
	return err
}

// beginCreate records a new sandbox in state creating. Its id is marked
// as a create under way first, so no reconcile pass takes what it builds
// for an orphan; done clears the mark.
func (m *Manager) beginCreate(ctx context.Context, row *store.Sandbox) (done func(), err error) {
	m.mu.Lock()
	m.creating[row.ID] = true
	m.mu.Unlock()
	done = func() {
		m.mu.Lock()
		delete(m.creating, row.ID)
		m.mu.Unlock()
	}
	row.Node = m.cfg.Node
	if err := m.cfg.Store.InsertSandbox(ctx, row); err != nil {
		done()
		return nil, storeError(err)
	}
	return done, nil
}

// finishClaim runs a create's startup in a sandbox taken from a pool.
func (m *Manager) finishClaim(ctx context.Context, row *store.Sandbox, l *live, req *CreateRequest, sp *spec, start time.Time) (*wire.Sandbox, error) {
	ctx = context.WithoutCancel(ctx)
	timings := map[string]int64{"claim_ms": time.Since(start).Milliseconds()}
	sec, err := m.applySecrets(ctx, l, row.Org, sp)
	if err == nil {
		err = m.runStartup(ctx, l, req, timings)
	}
	if err != nil {
		var values []string
		if sec != nil {
			values = sec.values
		}
		m.failRow(ctx, row, l.rt, redactSecrets(redact("create failed: "+err.Error()), values))
		var e *Error
		if errors.As(err, &e) {
			return nil, &Error{Kind: e.Kind, Field: e.Field, Message: redactSecrets(e.Message, values)}
		}
		return nil, &Error{Kind: KindInternal, Message: redactSecrets("create failed: "+err.Error(), values)}
	}
	timings["total_ms"] = time.Since(start).Milliseconds()
	out, err := m.cfg.Store.Transition(ctx, row.ID, []string{StateRunning}, StateRunning, store.Change{Timings: timings})
	if err != nil {
		return nil, err
	}
	m.log.Info("sandbox running", "sandbox.id", row.ID, "boot_path", BootHotPool, "total_ms", timings["total_ms"])
	return m.view(out), nil
}

// boot does the work of a create: image, overlay, agent socket, network,
// runtime. The network does not depend on the files, so it is set up
// while they are mounted. timings records each step: image_ms, files_ms
// and network_ms (side by side), runtime_ms, agent_ms, and boot_ms from
// the files to the runtime started.
func (m *Manager) boot(ctx context.Context, id, img string, rt runtime.Runtime, sp *spec) (map[string]int64, *live, error) {
	timings := map[string]int64{}
	t := time.Now()
	lower, err := m.cfg.Images.Ensure(ctx, img, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("prepare image %s: %w", img, err)
	}
	timings["image_ms"] = time.Since(t).Milliseconds()

	t = time.Now()
	network := m.startNetwork(id, sp)
	lay, err := m.prepareFiles(ctx, id, img, lower, rt, sp)
	timings["files_ms"] = time.Since(t).Milliseconds()
	netns, netMs, nerr := network()
	timings["network_ms"] = netMs
	if err = errors.Join(err, nerr); err != nil {
		return nil, nil, err
	}
	if netns != "" {
		if info := m.cfg.Network.Get(id); info != nil {
			if err := writeNetworkFiles(lay.Merged(), hostname(id), info, owner(userNS(rt, sp))); err != nil {
				return nil, nil, err
			}
		}
	}
	if _, err := m.newAgentToken(id); err != nil {
		return nil, nil, err
	}
	agent, err := m.listenAgent(id, owner(userNS(rt, sp)))
	if err != nil {
		return nil, nil, err
	}
	l := newLive(id, rt, agent, sp, time.Now())
	tr := time.Now()
	// gVisor takes the addresses off the interface it adopts, so a start
	// that failed half way cannot simply be run again: wire the network
	// afresh for the second try.
	for attempt := 1; ; attempt++ {
		err = m.startRuntime(ctx, id, lay, rt, sp, netns)
		if err == nil {
			break
		}
		if attempt == 2 || ctx.Err() != nil {
			agent.Close()
			return nil, nil, err
		}
		m.log.Warn("runtime start failed; retrying once", "sandbox.id", id, "err", err)
		if m.cfg.Network != nil {
			if terr := m.cfg.Network.Teardown(id); terr != nil {
				agent.Close()
				return nil, nil, errors.Join(err, terr)
			}
		}
		if netns, err = m.setupNetwork(id, lay, sp, owner(userNS(rt, sp))); err != nil {
			agent.Close()
			return nil, nil, err
		}
	}
	timings["runtime_ms"] = time.Since(tr).Milliseconds()
	timings["boot_ms"] = time.Since(t).Milliseconds()
	failpoint.Hit("create.runtime-started")

	t = time.Now()
	if err := m.waitAgent(ctx, l); err != nil {
		agent.Close()
		return nil, nil, err
	}
	timings["agent_ms"] = time.Since(t).Milliseconds()
	if err := m.limitCPU(rt, id, sp); err != nil {
		agent.Close()
		return nil, nil, err
	}
	m.guardMemory(l, sp)
	return timings, l, nil
}

// limitCPU holds a sandbox that booted with CPU to spare (see
// runtime.CPUHeadroom) to its own limit.
func (m *Manager) limitCPU(rt runtime.Runtime, id string, sp *spec) error {
	if h, ok := rt.(runtime.CPUHeadroom); ok {
		return h.LimitCPU(id, sp.Resources.CPU)
	}
	return nil
}

// prepareFiles gives a sandbox its files: its disk and overlay (through
// an idmapped view of the image in a user namespace), its run directory.
func (m *Manager) prepareFiles(ctx context.Context, id, img, lower string, rt runtime.Runtime, sp *spec) (overlay.Layout, error) {
	userns := userNS(rt, sp)
	if userns != nil {
		var err error
		if lower, err = m.idmappedImage(img, lower, userns); err != nil {
			return overlay.Layout{}, fmt.Errorf("prepare image %s for a user namespace: %w", img, err)
		}
	}
	lay, err := m.mountFiles(ctx, id, lower, sp, true, owner(userns))
	if err != nil {
		return lay, err
	}
	failpoint.Hit("create.files-mounted")
	if err := os.MkdirAll(m.runDir(id), 0o700); err != nil {
		return lay, fmt.Errorf("create run dir: %w", err)
	}
	if err := os.Chmod(lay.Dir, 0o700); err != nil {
		return lay, fmt.Errorf("close the sandbox dir: %w", err)
	}
	if userns != nil {
		if err := m.prepareUserNS(id, userns); err != nil {
			return lay, err
		}
	}
	return lay, nil
}

// startNetwork sets up a sandbox's network in the background; the
// returned func waits for it and answers the namespace ("" without a
// network) and how long it took.
func (m *Manager) startNetwork(id string, sp *spec) func() (string, int64, error) {
	if sp.Network == nil {
		return func() (string, int64, error) { return "", 0, nil }
	}
	type result struct {
		netns string
		ms    int64
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		t := time.Now()
		_, err := m.cfg.Network.Setup(id, sp.Network)
		if err != nil {
			err = fmt.Errorf("set up network: %w", err)
		}
		failpoint.Hit("create.network")
		ch <- result{network.NSPath(id), time.Since(t).Milliseconds(), err}
	}()
	return func() (string, int64, error) {
		r := <-ch
		if r.err != nil {
			return "", r.ms, r.err
		}
		return r.netns, r.ms, nil
	}
}

// startRuntime starts a sandbox's runtime in its network namespace.
func (m *Manager) startRuntime(ctx context.Context, id string, lay overlay.Layout, rt runtime.Runtime, sp *spec, netns string) error {
	startCtx, cancel := context.WithTimeout(ctx, runtimeStartTimeout)
	defer cancel()
	rs := m.runtimeSpec(id, lay, netns, sp)
	rs.UserNS = userNS(rt, sp)
	vols, err := m.volumeMounts(sp, rs.UserNS)
	if err != nil {
		return err
	}
	rs.Mounts = append(rs.Mounts, vols...)
	if rs.UserNS != nil && netns != "" {
		rs.Sysfs = filepath.Join(m.sandboxDir(id), "sys")
		if mounted, _ := overlay.IsMounted(rs.Sysfs); !mounted {
			if err := network.MountSysfs(id, rs.Sysfs); err != nil {
				return err
			}
		}
	}
	return rt.Start(startCtx, rs)
}

// waitAgent waits for a sandbox's agent to dial in, failing early if the
// sandbox dies first.
func (m *Manager) waitAgent(ctx context.Context, l *live) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.AgentTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.agent.WaitReady(ctx) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("agent did not connect within %s: %w%s", m.cfg.AgentTimeout, err, m.initLogTail(l.id))
			}
			return nil
		case <-tick.C:
			// Off the fast path: only a slow boot gets here.
			if st, err := l.rt.Status(ctx, l.id); err == nil && st != runtime.StatusRunning {
				return fmt.Errorf("sandbox exited during boot (%s)%s", st, m.initLogTail(l.id))
			}
		}
	}
}

func (m *Manager) initLogTail(id string) string {
	if tail := runtime.LogTail(filepath.Join(m.sandboxDir(id), runtime.InitLogName), 5); tail != "" {
		return ": " + tail
	}
	return ""
}

func hostname(id string) string { return strings.ReplaceAll(id, "_", "-") }

// Node is this node's id ("" when it is alone).
func (m *Manager) Node() string { return m.cfg.Node }

// Serves says whether this node runs sandbox id now.
func (m *Manager) Serves(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live[id] != nil
}

// Defaults are the resources a create that names none gets.
func (m *Manager) Defaults() wire.Resources { return DefaultResources }

// row reads a sandbox of org, answering a missing one with the API's 404.
func (m *Manager) row(ctx context.Context, org, id string) (*store.Sandbox, error) {
	row, err := m.cfg.Store.GetSandbox(ctx, org, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(id)
	}
	return row, err
}

// goLive makes a booted sandbox reachable for exec, files and PTY on
// behalf of org ("" for a warm-pool sandbox no one owns yet).
func (m *Manager) goLive(l *live, org string) {
	l.mu.Lock()
	l.org = org
	l.mu.Unlock()
	m.mu.Lock()
	m.live[l.id] = l
	m.mu.Unlock()
}

// detach forgets a sandbox's live state and drops its agent connection,
// leaving the sandbox itself alone.
func (m *Manager) detach(id string) {
	m.mu.Lock()
	l := m.live[id]
	delete(m.live, id)
	m.mu.Unlock()
	if l != nil {
		l.close()
	}
}

// listenAgent opens the host end of a sandbox's agent socket, replacing
// a socket file a previous listener left. Only an agent that greets with
// the sandbox's token is served.
//
// uid, unless -1, is the host uid of root inside the sandbox (a user
// namespace): the socket becomes its, so the agent may connect.
func (m *Manager) listenAgent(id string, uid int) (*guest.Client, error) {
	token, err := m.agentToken(id)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(m.runDir(id), guest.SocketName)
	_ = os.Remove(sock)
	c, err := guest.Listen(sock, guest.Options{Token: token, OnDisconnect: m.agentLost(id), Log: m.log.With("sandbox.id", id)})
	if err == nil && uid >= 0 {
		if err = os.Chown(sock, uid, uid); err != nil {
			c.Close()
			return nil, fmt.Errorf("give the agent socket to the sandbox's root: %w", err)
		}
	}
	return c, err
}

// tokenFile keeps a sandbox's agent token on the host, outside anything
// the sandbox can reach.
func (m *Manager) tokenFile(id string) string { return filepath.Join(m.sandboxDir(id), "agent.token") }

// newAgentToken makes and records the token a new sandbox's agent will
// greet with.
func (m *Manager) newAgentToken(id string) (string, error) {
	token := guest.NewToken()
	if err := os.WriteFile(m.tokenFile(id), []byte(token), 0o600); err != nil {
		return "", fmt.Errorf("record agent token: %w", err)
	}
	return token, nil
}

// agentToken reads a sandbox's agent token. A sandbox started by a warren
// from before tokens has none; its agent is served without a greeting.
func (m *Manager) agentToken(id string) (string, error) {
	b, err := os.ReadFile(m.tokenFile(id))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read agent token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// setupNetwork gives a sandbox its network and points its resolver and
// hosts file at it; it returns the namespace for the runtime, "" without
// a network.
//
// uid, unless -1, owns the files it writes (root of a user namespace).
func (m *Manager) setupNetwork(id string, lay overlay.Layout, sp *spec, uid int) (string, error) {
	if sp.Network == nil {
		return "", nil
	}
	info, err := m.cfg.Network.Setup(id, sp.Network)
	if err != nil {
		return "", fmt.Errorf("set up network: %w", err)
	}
	if err := writeNetworkFiles(lay.Merged(), hostname(id), info, uid); err != nil {
		return "", err
	}
	return network.NSPath(id), nil
}

// runtimeSpec is what a backend needs to start or restore a sandbox.
func (m *Manager) runtimeSpec(id string, lay overlay.Layout, netns string, sp *spec) runtime.Spec {
	token, _ := m.agentToken(id)
	return runtime.Spec{
		ID: id, Dir: m.sandboxDir(id), Rootfs: lay.Merged(), RunDir: m.runDir(id), NetNS: netns,
		Agent: m.cfg.Agent, AgentLibs: m.cfg.AgentLibs, AgentToken: token, Hostname: hostname(id), Resources: runtimeResources(sp.Resources), Mounts: sp.Mounts,
	}
}

// teardown frees everything a sandbox holds on this host: the runtime's
// processes and cgroups, the agent socket, the overlay mount and the
// sandbox directory. It is idempotent and safe on half-built sandboxes.
func (m *Manager) teardown(ctx context.Context, id string, rt runtime.Runtime) error {
	m.detach(id)
	if m.cfg.Egress != nil {
		m.cfg.Egress.Detach(id)
	}
	var errs []error
	if rt != nil {
		if err := rt.Stop(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	if m.cfg.Network != nil && len(errs) == 0 {
		if err := m.cfg.Network.Teardown(id); err != nil {
			errs = append(errs, fmt.Errorf("remove network: %w", err))
		}
	}
	if err := overlay.UnmountAll(m.sandboxDir(id)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(m.sandboxDir(id)); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox dir: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		m.log.Error("teardown incomplete", "sandbox.id", id, "err", err)
		return err
	}
	return nil
}

// Get returns a sandbox of org, with its memory use when it runs.
func (m *Manager) Get(ctx context.Context, org, id string) (*wire.Sandbox, error) {
	row, err := m.row(ctx, org, id)
	if err != nil {
		return nil, err
	}
	v := m.view(row)
	switch row.State {
	case StateRunning:
		v.Memory = m.memory(ctx, id)
	case StatePaused:
		v.CheckpointBytes = dirSize(m.checkpointDir(id))
	}
	return v, nil
}

// List lists sandboxes of org.
func (m *Manager) List(ctx context.Context, f store.Filter) ([]*wire.Sandbox, error) {
	rows, err := m.cfg.Store.ListSandboxes(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]*wire.Sandbox, 0, len(rows))
	for _, r := range rows {
		out = append(out, m.view(r))
	}
	return out, nil
}

// Delete ends a sandbox and frees everything it held.
func (m *Manager) Delete(ctx context.Context, org, id string) (*wire.Sandbox, error) {
	row, err := m.row(ctx, org, id)
	if err != nil {
		return nil, err
	}
	sb, err := m.end(ctx, row, "deleted by request")
	m.cfg.Metrics.Deleted(outcome(err))
	return sb, err
}

// end moves a sandbox through deleting to deleted, tearing it down.
func (m *Manager) end(ctx context.Context, row *store.Sandbox, reason string) (*wire.Sandbox, error) {
	switch row.State {
	case StateDeleted:
		return m.view(row), nil
	case StateCreating:
		return nil, conflict("sandbox %s is still being created", row.ID)
	}
	ctx = context.WithoutCancel(ctx)
	release, err := m.claim(row.ID)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := m.cfg.Store.Transition(ctx, row.ID, []string{StateRunning, StatePaused, StateFailed, StateDeleting}, StateDeleting, store.Change{}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, conflict("sandbox %s changed state while deleting; try again", row.ID)
		}
		return nil, err
	}
	failpoint.Hit("delete.deleting")
	if err := m.teardown(ctx, row.ID, m.cfg.Runtimes[row.Runtime]); err != nil {
		// Stays in deleting; the reconciler retries.
		return nil, fmt.Errorf("delete sandbox %s: %w", row.ID, err)
	}
	failpoint.Hit("delete.torn-down")
	change := store.Change{Ended: true}
	if row.State != StateFailed {
		change.Reason = &reason
	}
	out, err := m.cfg.Store.Transition(ctx, row.ID, []string{StateDeleting}, StateDeleted, change)
	if err != nil {
		return nil, err
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	m.releaseVolumes(ctx, &sp)
	m.log.Info("sandbox deleted", "sandbox.id", row.ID, "reason", reason)
	return m.view(out), nil
}

func (m *Manager) view(r *store.Sandbox) *wire.Sandbox {
	var sp spec
	_ = json.Unmarshal(r.Spec, &sp)
	v := &wire.Sandbox{
		ID: r.ID, State: wire.State(r.State), Node: r.Node, Runtime: r.Runtime, Image: r.Image, Resources: sp.Resources,
		Metadata: r.Metadata, TimeoutSeconds: sp.TimeoutSeconds, IdleTimeoutSeconds: sp.IdleTimeoutSeconds,
		Network:   sp.Network,
		CreatedAt: r.CreatedAt, BootPath: r.BootPath, Timings: r.Timings, Reason: r.Reason,
		Secrets: sp.Secrets, SecretFiles: sp.SecretFiles,
	}
	for _, vs := range sp.Volumes {
		v.Volumes = append(v.Volumes, wire.VolumeMount{Name: vs.Name, Path: vs.Path, ReadOnly: vs.ReadOnly})
	}
	if !r.ExpiresAt.IsZero() {
		t := r.ExpiresAt
		v.ExpiresAt = &t
	}
	if !r.EndedAt.IsZero() {
		t := r.EndedAt
		v.EndedAt = &t
	}
	if len(v.Timings) == 0 {
		v.Timings = nil
	}
	if r.Node != "" && r.Node != m.cfg.Node && m.cfg.NodeState != nil && m.cfg.NodeState(r.Node) == wire.NodeLost && r.State != StateDeleted && r.State != StateFailed {
		v.State = wire.StateLost
	}
	for _, p := range sp.Ports {
		v.Ports = append(v.Ports, m.port(r.ID, p))
	}
	if m.cfg.Network != nil && r.State == StateRunning {
		if info := m.cfg.Network.Get(r.ID); info != nil {
			v.Address = info.Address.String()
		}
	}
	return v
}

// port describes an exposed port with its preview URLs.
func (m *Manager) port(id string, p int) wire.Port {
	out := wire.Port{Port: p}
	if m.cfg.PreviewURL != nil {
		out.URL = m.cfg.PreviewURL(id, p)
	}
	if m.cfg.PreviewPathURL != nil {
		if u := m.cfg.PreviewPathURL(id, p); u != out.URL {
			out.PathURL = u
		}
	}
	return out
}

// writeNetworkFiles points the sandbox's resolver at its gateway, where
// warren answers DNS by the sandbox's policy, and names the sandbox in
// /etc/hosts. The tree is the sandbox's own, so every path in it is
// resolved inside it: a symlink it planted at /etc cannot lead the host
// anywhere else.
func writeNetworkFiles(rootfs, host string, info *network.Info, uid int) error {
	files := map[string]string{
		"etc/resolv.conf": "nameserver " + info.Gateway.String() + "\n",
		"etc/hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost\n" + info.Address.String() + "\t" + host + "\n",
		"etc/hostname":    host + "\n",
	}
	if err := inroot.MkdirAll(rootfs, "etc", 0o755); err != nil {
		return fmt.Errorf("prepare /etc: %w", err)
	}
	for name, content := range files {
		if err := inroot.WriteFile(rootfs, name, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write /%s: %w", name, err)
		}
		if uid >= 0 {
			if err := inroot.Chown(rootfs, name, uid, uid); err != nil {
				return fmt.Errorf("give /%s to the sandbox's root: %w", name, err)
			}
		}
	}
	return nil
}

func newLive(id string, rt runtime.Runtime, agent *guest.Client, sp *spec, lastUse time.Time) *live {
	return &live{id: id, rt: rt, agent: agent, env: sp.Env, workdir: sp.Workdir, user: sp.User, lastUse: lastUse, flushed: lastUse,
		idle: time.Duration(sp.IdleTimeoutSeconds) * time.Second, idlePause: sp.IdleAction == wire.IdlePause}
}
