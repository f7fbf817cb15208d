// Package doctor checks whether this host can run a warren node, and says
// for each thing it needs what is wrong and how to fix it.
package doctor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/warrenhq/warren/internal/agentbin"
	"github.com/warrenhq/warren/internal/serve"
)

// Status of one check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // warren runs, with something missing or weaker
	Fail Status = "fail" // warren serve will not start, or sandboxes will not
)

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Options are the settings of the node to check, as warren serve takes them.
type Options struct {
	// NodeID is serve's --node-id: a node with one has a lock of its own.
	NodeID  string
	DataDir string
	Listen  string
	Runtime string
	Runsc   string
	Runc    string
	// NoProbe skips booting a sandbox with runsc (about a second).
	NoProbe bool
}

// Run checks the host. Checks are independent; each one that cannot tell
// says so rather than passing.
func Run(ctx context.Context, o Options) []Check {
	var out []Check
	add := func(c Check) { out = append(out, c) }
	add(checkRoot())
	add(checkKernel())
	add(checkFilesystem("overlay", "overlayfs", "sandboxes' root filesystems are overlays", "modprobe overlay"))
	add(checkUserNS())
	add(checkNetNS())
	add(checkNftables())
	add(checkForwarding())
	add(checkCgroups())
	gvisor := checkRunsc(ctx, o)
	add(gvisor)
	runc := checkRunc(ctx, o)
	add(runc)
	if runc.Status == OK {
		add(checkRuncUserNS(o.DataDir))
	}
	add(checkDefault(o.Runtime, gvisor, runc))
	add(checkAgent(ctx))
	add(checkTool("mkfs.ext4", Fail, "e2fsprogs", "gives each sandbox its own disk with a size limit"))
	add(checkTool("lxcfs", Warn, "lxcfs", "shows runc sandboxes their own memory in /proc/meminfo"))
	add(checkTool("busybox", Warn, "busybox-static", "makes the busybox image"))
	add(checkTool("debootstrap", Warn, "debootstrap", "builds the base image"))
	add(checkDataDir(o.DataDir))
	add(checkListen(ctx, o.Listen))
	add(checkOtherNode(o.NodeID))
	return out
}

// Failed reports whether any check failed.
func Failed(checks []Check) bool {
	for _, c := range checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

func checkRoot() Check {
	c := Check{Name: "root"}
	if os.Geteuid() != 0 {
		c.Status, c.Detail = Fail, "warren serve needs root: it mounts filesystems, creates network namespaces and cgroups, and runs runsc and runc"
		c.Fix = "run it as root (sudo)"
		return c
	}
	eff, err := effectiveCaps()
	if err != nil {
		c.Status, c.Detail = Warn, "cannot read this process's capabilities: "+err.Error()
		return c
	}
	var missing []string
	for _, cp := range neededCaps {
		if eff&(1<<cp.bit) == 0 {
			missing = append(missing, cp.name)
		}
	}
	if len(missing) > 0 {
		c.Status, c.Detail = Fail, "root, but without "+strings.Join(missing, ", ")+" (a container that drops capabilities?)"
		c.Fix = "run warren on the host, or in a privileged container"
		return c
	}
	c.Status, c.Detail = OK, "root with the capabilities warren needs"
	return c
}

var neededCaps = []struct {
	name string
	bit  uint
}{
	{"CAP_CHOWN", 0}, {"CAP_DAC_OVERRIDE", 1}, {"CAP_FOWNER", 3}, {"CAP_KILL", 5}, {"CAP_SETGID", 6},
	{"CAP_SETUID", 7}, {"CAP_NET_ADMIN", 12}, {"CAP_SYS_CHROOT", 18}, {"CAP_SYS_PTRACE", 19},
	{"CAP_SYS_ADMIN", 21}, {"CAP_MKNOD", 27},
}

func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

func checkKernel() Check {
	c := Check{Name: "kernel"}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		c.Status, c.Detail = Warn, err.Error()
		return c
	}
	rel := unix.ByteSliceToString(u.Release[:])
	major, minor := kernelVersion(rel)
	switch {
	case major == 0:
		c.Status, c.Detail = Warn, "cannot read the kernel version from "+rel
	case major < 5 || (major == 5 && minor < 12):
		c.Status, c.Detail = Warn, rel+": runc sandboxes need 5.12 or later for a user namespace (idmapped mounts); they would run with root inside as root on the host"
		c.Fix = "use a kernel from 5.15 on, or gVisor only"
	default:
		c.Status, c.Detail = OK, rel
	}
	return c
}

func kernelVersion(rel string) (major, minor int) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	digits := func(s string) int {
		end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		if end >= 0 {
			s = s[:end]
		}
		n, _ := strconv.Atoi(s)
		return n
	}
	return digits(parts[0]), digits(parts[1])
}

func checkFilesystem(fs, name, why, fix string) Check {
	c := Check{Name: name}
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		c.Status, c.Detail = Warn, err.Error()
		return c
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(strings.TrimPrefix(line, "nodev")) == fs {
			c.Status, c.Detail = OK, "supported"
			return c
		}
	}
	// A module loads on first mount; say what to do if it does not.
	c.Status, c.Detail, c.Fix = Warn, "not loaded yet; "+why, fix
	return c
}

func checkUserNS() Check {
	c := Check{Name: "user namespaces"}
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err != nil {
		c.Status, c.Detail = Warn, err.Error()
		return c
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n == 0 {
		c.Status, c.Detail = Warn, "disabled (user.max_user_namespaces = 0): runc sandboxes would run with root inside as root on the host"
		c.Fix = "sysctl -w user.max_user_namespaces=15000"
		return c
	}
	c.Status, c.Detail = OK, "enabled"
	return c
}

// checkNetNS makes a network namespace on a thread of its own, which then
// exits with it.
func checkNetNS() Check {
	c := Check{Name: "network namespaces"}
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread goes with the namespace
		done <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	if err := <-done; err != nil {
		c.Status, c.Detail = Fail, "cannot create one: "+err.Error()
		c.Fix = "run as root on the host, or in a privileged container"
		return c
	}
	c.Status, c.Detail = OK, "can create them"
	return c
}

func checkNftables() Check {
	c := Check{Name: "nftables"}
	conn, err := nftables.New()
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, err.Error(), "a kernel with nf_tables (every current distribution's)"
		return c
	}
	tables, err := conn.ListTables()
	if err != nil {
		c.Status, c.Detail = Fail, "cannot list tables: "+err.Error()
		c.Fix = "modprobe nf_tables; run as root"
		return c
	}
	c.Status, c.Detail = OK, "available"
	for _, t := range tables {
		if t.Name == "warren" {
			c.Detail += "; warren's tables are loaded (a node runs, or ran, here)"
			break
		}
	}
	return c
}

func checkForwarding() Check {
	c := Check{Name: "ip forwarding"}
	const path = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(path)
	if err != nil {
		c.Status, c.Detail = Warn, err.Error()
		return c
	}
	if strings.TrimSpace(string(b)) == "1" {
		c.Status, c.Detail = OK, "on"
		return c
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		c.Status, c.Detail = Fail, "off, and warren cannot turn it on: "+err.Error()
		c.Fix = "sysctl -w net.ipv4.ip_forward=1"
		return c
	}
	f.Close()
	c.Status, c.Detail = OK, "off; warren turns it on when it starts"
	return c
}

func checkCgroups() Check {
	return CheckCgroups("/sys/fs/cgroup", "/proc/cgroups")
}

// CheckCgroups reads the cgroup hierarchy mounted at root: v2's unified
// tree, or v1's controllers (listed in procCgroups).
func CheckCgroups(root, procCgroups string) Check {
	c := Check{Name: "cgroups"}
	need := []string{"cpu", "memory", "pids"}
	if b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers")); err == nil {
		have := strings.Fields(string(b))
		var missing []string
		for _, n := range need {
			if !contains(have, n) {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			c.Status, c.Detail = Fail, "v2 without the "+strings.Join(missing, ", ")+" controller(s)"
			c.Fix = "enable them (systemd: a recent version does by default; kernel: cgroup_enable=memory)"
			return c
		}
		c.Status, c.Detail = OK, "v2 (unified) with "+strings.Join(have, " ")
		return c
	}
	b, err := os.ReadFile(procCgroups)
	if err != nil {
		c.Status, c.Detail = Fail, "no cgroup v2 tree at "+root+" and no "+procCgroups+": "+err.Error()
		return c
	}
	enabled := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[3] == "1" {
			enabled[f[0]] = true
		}
	}
	var missing []string
	for _, n := range need {
		if _, err := os.Stat(filepath.Join(root, n)); !enabled[n] || err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		c.Status, c.Detail = Fail, "v1 without the "+strings.Join(missing, ", ")+" controller(s) mounted under "+root
		c.Fix = "mount them, or boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1)"
		return c
	}
	c.Status, c.Detail = OK, "v1 with cpu, memory and pids"
	if _, err := os.Stat(filepath.Join(root, "memory", "memory.memsw.limit_in_bytes")); err != nil {
		c.Status = Warn
		c.Detail += "; no swap accounting, so a sandbox's memory limit does not cover swap"
		c.Fix = "boot with swapaccount=1, or run without swap"
	}
	return c
}

// findRuntime locates a runtime binary and asks its version: a check
// with path and version in its detail, or one that says what is wrong
// (missing), with a path of "".
func findRuntime(ctx context.Context, name, given, label string, missing Status, fix string) (Check, string) {
	c := Check{Name: label}
	path, looked := serve.Locate(given, name)
	if path == "" {
		c.Status, c.Detail, c.Fix = missing, "not found (looked in "+strings.Join(looked, ", ")+")", fix
		return c, ""
	}
	version, err := versionOf(ctx, path)
	if err != nil {
		c.Status, c.Detail, c.Fix = missing, path+": "+err.Error(), fix
		return c, ""
	}
	c.Status, c.Detail = OK, path+" ("+version+")"
	return c, path
}

func checkRunsc(ctx context.Context, o Options) Check {
	c, path := findRuntime(ctx, "runsc", o.Runsc, "runsc (gVisor)", Fail, "make install (or make deps), or --runsc PATH")
	if path == "" {
		return c
	}
	if o.NoProbe {
		c.Detail += "; not probed"
		return c
	}
	if err := probeRunsc(ctx, path); err != nil {
		c.Status = Fail
		c.Detail += "; cannot boot a sandbox with its own network: " + err.Error()
		c.Fix = "build a current runsc with CGO_ENABLED=0: make deps"
		return c
	}
	c.Detail += "; booted a networked sandbox"
	return c
}

func checkRunc(ctx context.Context, o Options) Check {
	c, path := findRuntime(ctx, "runc", o.Runc, "runc", Warn, "apt-get install runc")
	if path == "" {
		c.Detail += "; sandboxes can run under gVisor only"
	}
	return c
}

// checkRuncUserNS runs the probe warren serve runs before it gives runc
// sandboxes a user namespace, in a scratch image dir.
func checkRuncUserNS(dataDir string) Check {
	c := Check{Name: "runc user namespace"}
	scratch, err := os.MkdirTemp("", "warren-doctor-images-")
	if err != nil {
		c.Status, c.Detail = Warn, err.Error()
		return c
	}
	defer os.RemoveAll(scratch)
	if r, why := serve.ProbeUserNS(dataDir, scratch); r == nil {
		c.Status, c.Detail = Warn, "runc sandboxes would run WITHOUT one (root inside = root on this host): "+why
		c.Fix = "a kernel from 5.19 on with idmapped overlay lower layers; see the reason"
		return c
	}
	c.Status, c.Detail = OK, "root in runc sandboxes is an unprivileged user of this host"
	return c
}

func checkDefault(choice string, gvisor, runc Check) Check {
	c := Check{Name: "default runtime"}
	switch choice {
	case "", "auto", "gvisor":
		if gvisor.Status == Fail {
			c.Status, c.Detail = Fail, "gVisor, which cannot run here; warren does not fall back to a weaker runtime by itself"
			c.Fix = "fix runsc (above), or choose --runtime runc to accept runc's weaker isolation"
			return c
		}
		c.Status, c.Detail = OK, "gVisor"
	case "runc":
		if runc.Status != OK {
			c.Status, c.Detail, c.Fix = Fail, "runc, which cannot run here", "apt-get install runc"
			return c
		}
		c.Status, c.Detail = Warn, "runc, chosen by name: sandboxes share this host's kernel (weaker than gVisor)"
	case "process":
		c.Status, c.Detail = Warn, "process: NO ISOLATION, for development only"
	default:
		c.Status, c.Detail, c.Fix = Fail, "unknown runtime "+strconv.Quote(choice), "auto, gvisor, runc or process"
	}
	return c
}

// checkAgent checks that this binary can go into sandboxes as their agent.
func checkAgent(ctx context.Context) Check {
	c := Check{Name: "agent binary"}
	self, err := os.Executable()
	if err != nil {
		c.Status, c.Detail = Fail, err.Error()
		return c
	}
	dir, err := os.MkdirTemp("", "warren-doctor-agent-")
	if err != nil {
		c.Status, c.Detail = Warn, err.Error()
		return c
	}
	defer os.RemoveAll(dir)
	a, err := agentbin.Install(ctx, self, dir)
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, err.Error(), "build warren with CGO_ENABLED=0 (make build)"
		return c
	}
	c.Status, c.Detail = OK, "static"
	if a.Libs != "" {
		entries, _ := os.ReadDir(a.Libs)
		c.Detail = fmt.Sprintf("dynamically linked; sandboxes get its loader and %d libraries with it", len(entries)-1)
	}
	return c
}

func checkTool(name string, missing Status, pkg, why string) Check {
	c := Check{Name: name}
	p, err := exec.LookPath(name)
	if err != nil {
		c.Status, c.Detail, c.Fix = missing, "not found; it "+why, "apt-get install "+pkg
		return c
	}
	c.Status, c.Detail = OK, p
	return c
}

func checkDataDir(dir string) Check {
	c := Check{Name: "data dir"}
	// The nearest directory that exists: the data dir may not yet.
	probe := dir
	for {
		if _, err := os.Stat(probe); err == nil || probe == "/" || probe == "." {
			break
		}
		probe = filepath.Dir(probe)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(probe, &st); err != nil {
		c.Status, c.Detail = Fail, dir+": "+err.Error()
		return c
	}
	if st.Type == unix.OVERLAYFS_SUPER_MAGIC {
		c.Status, c.Detail = Fail, dir+" is on overlayfs, which cannot hold sandboxes' overlay layers"
		c.Fix = "put the data dir on ext4, xfs or btrfs (--data-dir, or a volume in a container)"
		return c
	}
	free := st.Bavail * uint64(st.Bsize)
	detail := fmt.Sprintf("%s: %.1f GiB free", dir, float64(free)/(1<<30))
	switch {
	case free < 2<<30:
		c.Status, c.Detail, c.Fix = Fail, detail+"; images and sandboxes need more", "free space, or --data-dir elsewhere"
	case free < 20<<30:
		c.Status, c.Detail, c.Fix = Warn, detail+"; a sandbox's disk may grow to 10 GiB by default", "free space, or smaller resources.disk_mb"
	default:
		c.Status, c.Detail = OK, detail
	}
	return c
}

func checkListen(ctx context.Context, addr string) Check {
	c := Check{Name: "listen address"}
	if addr == "" {
		c.Status, c.Detail = OK, "none (no API)"
		return c
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		c.Status, c.Detail = OK, addr+" is free"
		return c
	}
	c.Status = Fail
	if v := warrenAt(ctx, addr); v != "" {
		c.Detail, c.Fix = addr+" is in use by a warren ("+v+")", "stop it, use its API, or --listen elsewhere"
		return c
	}
	c.Detail, c.Fix = addr+": "+err.Error(), "--listen another address"
	return c
}

// warrenAt returns the version of a warren answering at addr, or "".
func warrenAt(ctx context.Context, addr string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var h struct {
		Version string `json:"version"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&h) != nil || h.Version == "" {
		return ""
	}
	return "version " + h.Version
}

func checkOtherNode(nodeID string) Check {
	c := Check{Name: "other warren"}
	tag, err := serve.NodeTag(nodeID)
	if err != nil {
		c.Status, c.Detail = Fail, err.Error()
		return c
	}
	holder, err := serve.NodeLockHolder(tag)
	switch {
	case err != nil:
		c.Status, c.Detail = Warn, err.Error()
	case holder != "":
		c.Status, c.Detail = Fail, "a warren node runs on this host ("+holder+"); one node runs per host"
		c.Fix = "stop it (systemctl stop warren, or warren stop), or use its API"
	default:
		c.Status, c.Detail = OK, "none running"
	}
	return c
}

func versionOf(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("--version: %v", err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
