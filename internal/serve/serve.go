// Package serve assembles and runs `warren serve`: the store, images,
// runtimes, the sandbox manager and the API, on one machine.
package serve

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/agentbin"
	"github.com/warrenhq/warren/internal/api"
	"github.com/warrenhq/warren/internal/apikey"
	"github.com/warrenhq/warren/internal/e2b"
	"github.com/warrenhq/warren/internal/egress"
	"github.com/warrenhq/warren/internal/idmap"
	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/internal/lxcfs"
	"github.com/warrenhq/warren/internal/metrics"
	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/overlay"
	"github.com/warrenhq/warren/internal/preview"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/runtime/oci"
	"github.com/warrenhq/warren/internal/runtime/process"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/internal/secrets"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/internal/volume"
	"github.com/warrenhq/warren/wire"
)

// Options configures a node.
type Options struct {
	Listen  string
	DataDir string
	// Store is where state is kept: "" for a SQLite file in DataDir, or
	// a postgres:// URL for a database several nodes share.
	Store    string
	ImageDir string // default DataDir/images
	// Runtime is auto, gvisor, runc or process.
	Runtime string
	Runsc   string // path of runsc; default: PATH
	Runc    string // path of runc; default: PATH
	// AdminKey, if set, is the bootstrap admin key (WARREN_ADMIN_KEY).
	AdminKey string
	// MasterKey, if set, seals secrets (WARREN_MASTER_KEY); else a key
	// file in the data dir does. PreviousMasterKeys still open what they
	// sealed; everything is resealed under the current key at start.
	MasterKey          string
	PreviousMasterKeys string
	// MetricsListen, if set, serves /metrics there without a key.
	MetricsListen string
	// EgressCAFile adds CAs (PEM) to the host's for verifying the servers
	// secrets are injected into (a corporate TLS proxy's, a test's).
	EgressCAFile string
	DebianMirror string
	// DockerConfig is the directory of a docker config.json with registry
	// credentials for pulls.
	DockerConfig string
	// DNSUpstream is where sandboxes' DNS queries go (host:port).
	DNSUpstream string
	// PublicURL is how clients reach this server, for preview URLs;
	// default http://LISTEN.
	PublicURL string
	// PreviewDomain enables host-based previews at {port}-{id}.{domain}.
	// Without one, a server reached on loopback uses "localhost" (browsers
	// resolve every *.localhost name to loopback, with no DNS).
	PreviewDomain string
	// Pools are warm pools to keep booted ("busybox:6,base:2").
	Pools string
	// NodeID names this node among those sharing a PostgreSQL store
	// (default: the hostname). Given, it also names this node's lock,
	// firewall table, namespaces, veths and cgroups, so that several
	// nodes can share one host.
	NodeID string
	// AdvertiseURL is where the other nodes reach this one; default
	// http://LISTEN when that is a specific, non-loopback address.
	AdvertiseURL string
	// Labels are this node's, KEY=VALUE,... (a create's placement.labels
	// pick nodes by them).
	Labels string
	// Capacity is what this node offers a cluster's placement: CPUs and
	// MB of memory and disk its sandboxes may ask for in total (their
	// limits). 0: CPUs 4 per core, memory 2 MB per MB of the host's,
	// disk no limit.
	CapacityCPU      float64
	CapacityMemoryMB int
	CapacityDiskMB   int
	// NodeLease is how long a heartbeat holds (default 15s).
	NodeLease time.Duration
	// Subnet holds the sandboxes' addresses (default 10.88.0.0/16);
	// nodes sharing a network need different ones.
	Subnet string
	// CORSOrigins lets web pages from these origins call the API
	// ("https://app.example.com,http://localhost:3000", or "*").
	CORSOrigins string
	Log         *slog.Logger
	// Ready, if set, is called once the API is listening, with the
	// isolation warnings the user must see.
	Ready func(url, adminKey string, keyIsNew bool, warnings []string)
	// Alongside, if set, runs with the node once it is up (the agent
	// host); when it returns, the node stops and Run returns its error.
	Alongside func(ctx context.Context, mgr *sandbox.Manager) error
}

// DefaultOrg owns everything until organizations arrive.
const DefaultOrg = wire.DefaultOrgID

// Run serves until ctx ends. Sandboxes keep running after it returns; the
// next Run adopts them.
func Run(ctx context.Context, o Options) error {
	log := o.Log
	cors, err := api.ParseCORS(o.CORSOrigins)
	if err != nil {
		return err
	}
	tag, err := NodeTag(o.NodeID)
	if err != nil {
		return err
	}
	labels, err := parseLabels(o.Labels)
	if err != nil {
		return err
	}
	subnet := network.DefaultSubnet
	if o.Subnet != "" {
		if subnet, err = netip.ParsePrefix(o.Subnet); err != nil || !subnet.Addr().Is4() || subnet.Bits() > 28 {
			return fmt.Errorf("--subnet: %q is not an IPv4 prefix of /28 or more addresses, like 10.89.0.0/16", o.Subnet)
		}
		subnet = subnet.Masked()
	}
	release, err := lockHost(o.DataDir, tag)
	if err != nil {
		return err
	}
	defer release()
	// Everything this node names on the host, named after it.
	network.UseNode(tag)
	if tag != "" {
		oci.CgroupParent = "warren-" + tag
	}
	// Parents as any directory; the data dir itself private.
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(o.DataDir)), 0o755); err != nil {
		return fmt.Errorf("create data dir %s: %w", o.DataDir, err)
	}
	if err := os.Mkdir(o.DataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create data dir %s: %w", o.DataDir, err)
	}
	if o.ImageDir == "" {
		o.ImageDir = filepath.Join(o.DataDir, "images")
	}
	target := o.Store
	if target == "" {
		target = filepath.Join(o.DataDir, "warren.db")
	} else if !store.IsPostgres(target) {
		return fmt.Errorf("--store: %q is neither empty (SQLite in the data dir) nor a postgres:// URL", store.Redact(target))
	}
	st, err := store.Open(ctx, target)
	if err != nil {
		return err
	}
	defer st.Close()
	shared := store.IsPostgres(target)
	if shared && o.MasterKey == "" {
		return errors.New("WARREN_MASTER_KEY: a node that shares its store needs the master key every node of the cluster uses (secrets are sealed under it); set the same one on each")
	}
	key, isNew, err := bootstrapKey(ctx, st, o.DataDir, o.AdminKey)
	if err != nil {
		return err
	}
	keys, err := secrets.Load(o.DataDir, o.MasterKey, o.PreviousMasterKeys)
	if err != nil {
		return err
	}
	vault := &secrets.Vault{Store: st, Keys: keys, NewID: func() string { return newID("sec_") }}
	if n, err := vault.Rotate(ctx); err != nil {
		return fmt.Errorf("reseal secrets under the current master key: %w", err)
	} else if n > 0 {
		log.Info("secrets resealed under the current master key", "count", n, "key.id", keys.CurrentID())
	}
	volumes := &volume.Manager{Dir: filepath.Join(o.DataDir, "volumes")}
	vols, err := st.ListVolumes(ctx, "")
	if err != nil {
		return err
	}
	sizes := map[string]int{}
	for _, v := range vols {
		// Another node's volume is on its disk, not here.
		if v.Node == "" || !shared || v.Node == nodeID(o) {
			sizes[v.ID] = v.SizeMB
		}
	}
	if err := volumes.Reconcile(ctx, sizes); err != nil {
		return err
	}
	images, err := image.NewStore(o.ImageDir, image.Options{DebianMirror: o.DebianMirror, DockerConfig: o.DockerConfig})
	if err != nil {
		return err
	}
	found, err := Runtimes(o.Runtime, o.Runsc, o.Runc, o.DataDir, o.ImageDir, log)
	if err != nil {
		return err
	}
	runtimes, def := found.Runtimes, found.Default
	if err := openForUserNS(o.DataDir, runtimes); err != nil {
		return err
	}
	agent, err := installAgent(ctx, o.DataDir, log)
	if err != nil {
		return err
	}
	// An empty Listen serves no API: the agent host drives the node
	// in-process.
	var ln net.Listener
	url := ""
	if o.Listen != "" {
		if ln, err = net.Listen("tcp", o.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", o.Listen, err)
		}
		defer ln.Close()
		url = "http://" + ln.Addr().String()
	}
	if o.PublicURL == "" {
		o.PublicURL = url
	}
	secret, err := previewSecret(o.DataDir)
	if err != nil {
		return err
	}
	var node *clusterNode
	if shared {
		// Previews and E2B's envd tokens verify on whichever node a
		// request reaches: every node signs with the same key.
		shared, err := st.Setting(ctx, "preview_secret", store.RandomHex(32))
		if err != nil {
			return err
		}
		if secret, err = hex.DecodeString(shared); err != nil || len(secret) != 32 {
			return errors.New("the store's preview_secret setting is not 32 bytes of hex")
		}
		if node, err = newClusterNode(ctx, o, st, ln, labels, log); err != nil {
			return err
		}
	}
	proxy := &preview.Proxy{Secret: secret, Domain: previewDomain(o.PreviewDomain, o.PublicURL), Base: o.PublicURL}
	// The egress proxy takes sandboxes' HTTPS redirected to it (only from
	// their own addresses; anything else is closed at once).
	egressLn, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		return fmt.Errorf("listen for the egress proxy: %w", err)
	}
	defer egressLn.Close()
	nets, err := network.New(network.Config{StateDir: filepath.Join(o.DataDir, "network"), Upstream: o.DNSUpstream, Log: log, Subnet: subnet,
		InterceptPort: uint16(egressLn.Addr().(*net.TCPAddr).Port)})
	if err != nil {
		return err
	}
	defer nets.Close()
	roots, err := egressRoots(o.EgressCAFile)
	if err != nil {
		return err
	}
	outbound := &egress.Proxy{Dir: filepath.Join(o.DataDir, "egress"), Keys: keys, Network: nets, Roots: roots, Log: log}
	go func() { _ = outbound.Serve(egressLn) }()
	meter := metrics.New()
	mgr, err := sandbox.New(sandbox.Config{
		Node: node.id(), Labels: labels, NodeState: node.state(),
		DataDir: o.DataDir, Store: st, Images: images, Runtimes: runtimes,
		DefaultRuntime: def, Warnings: found.Warnings, Agent: agent.Path, AgentLibs: agent.Libs, Network: nets, PreviewURL: proxy.URL, PreviewPathURL: proxy.PathURL, Log: log,
		HostRestarted: hostRestarted(o.DataDir), Secrets: vault, Volumes: volumes, Metrics: meter, Egress: outbound,
	})
	if err != nil {
		return err
	}
	meter.Watch(mgr)
	if err := mgr.Reconcile(ctx); err != nil {
		return err
	}
	pools, err := sandbox.ParsePools(o.Pools)
	if err != nil {
		return err
	}
	defer mgr.Shutdown()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go mgr.Run(runCtx)
	if err := mgr.StartPools(runCtx, pools); err != nil {
		return err
	}
	if node != nil {
		if err := node.join(ctx, mgr); err != nil {
			return err
		}
		go node.cluster.Run(runCtx)
		// Deferred first, so it runs last: once this node answers nothing.
		defer func() {
			lctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
			defer stop()
			node.cluster.Leave(lctx)
		}()
	}
	// Warm sandboxes belong to no one: they go when warren does.
	defer mgr.DrainPools(context.Background())
	defer cancel()

	handler := api.New(st, mgr, images, log)
	proxy.Targets, proxy.Org = mgr, handler.OrgOf
	handler.Preview = proxy
	handler.CORS = cors
	handler.Secrets, handler.Volumes, handler.Metrics = vault, volumes, meter
	if node != nil {
		handler.Cluster = node.cluster
	}
	handler.E2B = e2b.New(e2b.Config{Sandboxes: mgr, Secret: secret, Domain: e2bDomain(proxy.Domain, o.PublicURL), Log: log,
		Authorize: func(r *http.Request, scopes ...string) (string, int, string) {
			c, status, msg := handler.Authorize(r, scopes...)
			return c.Org, status, msg
		}})
	if o.MetricsListen != "" {
		mln, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			return fmt.Errorf("listen for metrics on %s: %w", o.MetricsListen, err)
		}
		msrv := &http.Server{Handler: meter.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = msrv.Serve(mln) }()
		defer msrv.Close()
		log.Info("metrics served", "url", "http://"+mln.Addr().String()+"/metrics")
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	if ln != nil {
		log.Info("warren serving", "url", url, "data_dir", o.DataDir, "runtimes", mgr.Runtimes(), "default_runtime", def)
		if o.Ready != nil {
			o.Ready(url, key, isNew, found.Warnings)
		}
		go func() { errc <- fmt.Errorf("serve API: %w", srv.Serve(ln)) }()
	}
	alongside := make(chan error, 1)
	if o.Alongside != nil {
		go func() { alongside <- o.Alongside(runCtx, mgr) }()
	}
	select {
	case err := <-errc:
		return err
	case err := <-alongside:
		if ln == nil {
			return err
		}
		shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		_ = srv.Shutdown(shutdownCtx)
		return err
	case <-ctx.Done():
	}
	if o.Alongside != nil {
		// It saw ctx end too; let it finish stopping what it runs.
		cancel()
		<-alongside
	}
	if ln == nil {
		return nil
	}
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = srv.Shutdown(shutdownCtx)
	log.Info("warren stopped; sandboxes keep running and are adopted on the next start")
	return nil
}

// previewDomain is the domain host-based previews use: the one given, or
// "localhost" for a server reached on loopback. Host-based previews give
// each preview an origin of its own; path-based ones share the API's.
func previewDomain(given, publicURL string) string {
	if given != "" {
		return strings.ToLower(given)
	}
	u, err := url.Parse(publicURL)
	if err != nil {
		return ""
	}
	if h := u.Hostname(); h == "localhost" {
		return "localhost"
	} else if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return "localhost"
	}
	return ""
}

// e2bDomain is the domain E2B's SDKs are told their sandboxes are under:
// the preview domain, with the port the server is reached on, since the
// SDKs build {port}-{id}.{domain} hosts from it.
func e2bDomain(domain, publicURL string) string {
	if domain == "" {
		return ""
	}
	if u, err := url.Parse(publicURL); err == nil && u.Port() != "" {
		return domain + ":" + u.Port()
	}
	return domain
}

// hostRestarted says whether the host booted since warren last ran here,
// by the kernel's boot id, and records this boot's.
func hostRestarted(dataDir string) bool {
	now, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return false
	}
	path := filepath.Join(dataDir, "boot_id")
	last, err := os.ReadFile(path)
	_ = os.WriteFile(path, now, 0o600)
	return err == nil && string(last) != string(now)
}

// previewSecret loads (or makes, once) the key that signs preview tokens,
// so tokens stay valid across restarts.
func previewSecret(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, "preview.secret")
	if b, err := os.ReadFile(path); err == nil && len(b) == 32 {
		return b, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("write preview secret: %w", err)
	}
	return b, nil
}

// bootstrapKey makes sure an admin key exists. A new key is written to
// DataDir/admin.key (0600) and returned so it can be shown once.
func bootstrapKey(ctx context.Context, st *store.Store, dataDir, given string) (key string, isNew bool, err error) {
	path := filepath.Join(dataDir, "admin.key")
	if given != "" {
		if !apikey.Valid(given) {
			return "", false, errors.New("WARREN_ADMIN_KEY must be 16 to 256 characters without spaces")
		}
		if _, err := st.APIKeyByHash(ctx, apikey.Hash(given)); errors.Is(err, store.ErrNotFound) {
			err := st.InsertAPIKey(ctx, store.APIKey{ID: apikey.ID(given), Org: DefaultOrg, Name: "admin (WARREN_ADMIN_KEY)", Hash: apikey.Hash(given),
				Prefix: apikey.VisiblePrefix(given), Scopes: []string{wire.ScopeAdmin}, Bootstrap: true, CreatedAt: time.Now()})
			if err != nil {
				return "", false, err
			}
		} else if err != nil {
			return "", false, err
		}
		// The given key is the admin key: one set before it (rotated
		// away) or made at first start stops working now.
		if _, err := st.DeleteBootstrapKeysExcept(ctx, apikey.Hash(given)); err != nil {
			return "", false, err
		}
		return given, false, writeKeyFile(path, given)
	}
	n, err := st.CountAPIKeys(ctx)
	if err != nil {
		return "", false, err
	}
	if n > 0 {
		b, _ := os.ReadFile(path)
		return string(b), false, nil
	}
	key, id := apikey.New()
	if err := writeKeyFile(path, key); err != nil {
		return "", false, err
	}
	if err := st.InsertAPIKey(ctx, store.APIKey{ID: id, Org: DefaultOrg, Name: "admin", Hash: apikey.Hash(key), Prefix: apikey.VisiblePrefix(key),
		Scopes: []string{wire.ScopeAdmin}, Bootstrap: true, CreatedAt: time.Now()}); err != nil {
		return "", false, err
	}
	return key, true, nil
}

func writeKeyFile(path, key string) error {
	if err := os.WriteFile(path, []byte(key), 0o600); err != nil {
		return fmt.Errorf("write admin key: %w", err)
	}
	return os.Chmod(path, 0o600)
}

// Found is what Runtimes found on this host.
type Found struct {
	Runtimes map[string]runtime.Runtime
	// Default serves requests that name no runtime.
	Default string
	// Warnings say where isolation is weaker than warren's default, for
	// every place a user looks: the log, the CLI, /v1/info, /status.
	Warnings []string
}

// Runtimes finds the backends this host can run and picks the default.
// "auto" means gVisor and never falls back: a host without a working
// runsc must choose runc by name, so isolation is never silently weaker
// than a user expects.
func Runtimes(choice, runsc, runc, dataDir, imageDir string, log *slog.Logger) (*Found, error) {
	stateDir := filepath.Join(dataDir, "runtime")
	found := &Found{Runtimes: map[string]runtime.Runtime{}}
	out := found.Runtimes
	var problems []error
	if p, looked := Locate(runsc, "runsc"); p != "" {
		if rt, err := oci.GVisor(p, filepath.Join(stateDir, "runsc")); err == nil {
			out["gvisor"] = rt
		} else {
			problems = append(problems, err)
		}
	} else {
		problems = append(problems, fmt.Errorf("gvisor: runsc not found (looked in %s)", strings.Join(looked, ", ")))
	}
	if p, looked := Locate(runc, "runc"); p != "" {
		userNS, why := ProbeUserNS(dataDir, imageDir)
		if userNS == nil {
			found.Warnings = append(found.Warnings, "runc sandboxes run WITHOUT a user namespace: root inside them is root on this host ("+why+")")
		}
		procFiles := map[string]string{}
		if dir, err := lxcfs.Ensure(); err == nil {
			for _, f := range lxcfs.Files {
				procFiles[f] = filepath.Join(dir, "proc", f)
			}
		} else {
			log.Warn("runc sandboxes see the host's /proc/meminfo, not their own memory limit", "reason", err.Error())
		}
		if rt, err := oci.Runc(p, filepath.Join(stateDir, "runc"), userNS, why, procFiles); err == nil {
			out["runc"] = rt
		} else {
			problems = append(problems, err)
		}
	} else {
		problems = append(problems, fmt.Errorf("runc: runc not found (looked in %s)", strings.Join(looked, ", ")))
	}
	switch choice {
	case "process":
		rt, err := process.New(filepath.Join(stateDir, "process"))
		if err != nil {
			return nil, err
		}
		out["process"] = rt
		found.Default = "process"
		found.Warnings = append(found.Warnings, "RUNTIME process GIVES NO ISOLATION: sandboxed code runs directly on this host. Development only.")
	case "", "auto", "gvisor":
		if _, ok := out["gvisor"]; !ok {
			hint := ""
			if _, ok := out["runc"]; ok {
				hint = "; or choose --runtime runc (WARREN_RUNTIME=runc) to run sandboxes under runc, which shares this host's kernel"
			}
			return nil, fmt.Errorf("gVisor is not available, and warren does not fall back to weaker isolation by itself: %w\n"+
				"install runsc beside warren (make install), give its path with --runsc (WARREN_RUNSC), or run `warren doctor`%s",
				errors.Join(problems...), hint)
		}
		found.Default = "gvisor"
	case "runc":
		if _, ok := out["runc"]; !ok {
			return nil, fmt.Errorf("runtime runc is not available: %w", errors.Join(problems...))
		}
		found.Default = "runc"
	default:
		return nil, fmt.Errorf("unknown runtime %q: choose auto, gvisor, runc or process", choice)
	}
	for _, w := range found.Warnings {
		log.Warn(w)
	}
	return found, nil
}

// Locate finds a runtime's binary: the path given (a flag or environment
// variable), else one beside warren's own binary (where `make build` and
// `make install` put runsc), else PATH. Without one, it says where it
// looked.
func Locate(given, name string) (path string, looked []string) {
	if given != "" {
		return given, nil
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), name)
		if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return beside, nil
		}
		looked = append(looked, filepath.Dir(self))
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", append(looked, "PATH")
}

// ProbeUserNS checks that this kernel can give runc sandboxes a user
// namespace the way warren does it: an idmapped mount of an image
// directory as the lower layer of an overlay.
func ProbeUserNS(dataDir, imageDir string) (*runtime.IDRange, string) {
	r := idmap.Default
	// runc mounts a sandbox's root as root of the sandbox: an
	// unprivileged uid, which must be able to walk to it.
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err.Error()
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if errors.Is(err, os.ErrNotExist) {
			continue // made at start, searchable
		}
		if err != nil {
			return nil, err.Error()
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return nil, fmt.Sprintf("the data dir's parent %s is not searchable by other users (mode %04o); chmod o+x it, or put the data dir elsewhere", d, fi.Mode().Perm())
		}
		if d == "/" {
			break
		}
	}
	if err := os.MkdirAll(imageDir, 0o755); err != nil {
		return nil, err.Error()
	}
	dir, err := os.MkdirTemp(imageDir, ".userns-probe-")
	if err != nil {
		return nil, err.Error()
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"lower", "view", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err.Error()
		}
	}
	ns, err := r.Userns()
	if err != nil {
		return nil, err.Error()
	}
	defer ns.Close()
	view := filepath.Join(dir, "view")
	if err := idmap.Mount(filepath.Join(dir, "lower"), view, ns, false); err != nil {
		return nil, err.Error()
	}
	defer idmap.Unmount(view)
	merged := filepath.Join(dir, "merged")
	if err := overlay.MountDirs(view, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), merged); err != nil {
		return nil, "an overlay on an idmapped image: " + err.Error()
	}
	_ = overlay.UnmountDir(merged)
	return &runtime.IDRange{HostID: r.HostID, Size: r.Size}, ""
}

// openForUserNS lets the root of runc's user namespace walk from the data
// dir to sandboxes' roots, and no further: the data dir and the
// sandboxes dir become searchable by its group (mode 0710), and every
// file in them that is not meant for it stays 0600 or 0700.
func openForUserNS(dataDir string, runtimes map[string]runtime.Runtime) error {
	for _, rt := range runtimes {
		un, ok := rt.(runtime.UserNamespaced)
		if !ok {
			continue
		}
		if r, _ := un.UserNamespace(); r != nil {
			if err := os.Chown(dataDir, 0, int(r.HostID)); err != nil {
				return fmt.Errorf("open the data dir to sandboxes' root group: %w", err)
			}
			return os.Chmod(dataDir, 0o710)
		}
	}
	return os.Chmod(dataDir, 0o700)
}

// installAgent installs the agent (see agentBinary) in the data dir,
// where runtimes bind it into sandboxes.
func installAgent(ctx context.Context, dataDir string, log *slog.Logger) (agentbin.Agent, error) {
	self, err := os.Executable()
	if err != nil {
		return agentbin.Agent{}, fmt.Errorf("find own binary: %w", err)
	}
	return agentbin.Install(ctx, agentBinary(ctx, self, log), filepath.Join(dataDir, "agent"))
}

// agentBinary is the agent sandboxes run: warren-agent beside warren
// when it is of warren's own version (smaller, so sandboxes boot faster
// and idle smaller), else warren itself.
func agentBinary(ctx context.Context, self string, log *slog.Logger) string {
	agent := filepath.Join(filepath.Dir(self), "warren-agent")
	if _, err := os.Stat(agent); err != nil {
		return self
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(vctx, agent, "version").Output()
	if v := strings.TrimSpace(string(out)); err != nil || v != api.Version {
		log.Warn("warren-agent beside warren is of another version; warren is its own agent (sandboxes boot slower)", "agent", agent, "agent.version", v, "version", api.Version)
		return self
	}
	return agent
}

// egressRoots are the CAs upstream servers are verified against: the
// host's, and those in file.
func egressRoots(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if file == "" {
		return pool, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--egress-ca-file: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--egress-ca-file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// newID is prefix and 20 random base32 letters.
func newID(prefix string) string {
	b := make([]byte, 13)
	_, _ = rand.Read(b)
	return prefix + strings.ToLower(base32.StdEncoding.EncodeToString(b))[:20]
}
