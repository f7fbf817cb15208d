// Package bench measures warren against the runtimes it drives, in one
// run, on the same images: how long until a new sandbox prints, how long
// an exec round trip takes, how creates behave under concurrency, pause
// and resume, and idle memory per sandbox. Ratios are warren/peer: below
// 1 means warren is faster.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warrenhq/warren/client"
)

// Options configures a run.
type Options struct {
	Client     *client.Client
	Image      string   // busybox or base
	Runtimes   []string // warren runtimes to measure: gvisor, runc
	Runs       int      // samples per latency figure
	Concurrent int      // creates started at once
	Idle       int      // sandboxes for the idle-memory figure
	// Peers: raw runtime binaries, and the image's root filesystem.
	Runsc, Runc string
	Rootfs      string
	// Docker is the docker CLI, compared when its engine answers.
	Docker   string
	Progress io.Writer
}

// Stat summarizes samples in milliseconds.
type Stat struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
}

func summarize(d []time.Duration) Stat {
	if len(d) == 0 {
		return Stat{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	q := func(p float64) float64 {
		i := int(float64(len(d)-1) * p)
		return float64(d[i].Microseconds()) / 1000
	}
	return Stat{N: len(d), P50: q(0.5), P95: q(0.95), P99: q(0.99)}
}

// Row is one measured figure for warren and its peers.
type Row struct {
	Metric string          `json:"metric"`
	Warren Stat            `json:"warren"`
	Peers  map[string]Stat `json:"peers,omitempty"`
	// Ratio is warren p50 / peer p50.
	Ratio map[string]float64 `json:"ratio,omitempty"`
	Note  string             `json:"note,omitempty"`
}

// Report is a whole run.
type Report struct {
	Image   string    `json:"image"`
	Runs    int       `json:"runs"`
	Rows    []Row     `json:"rows"`
	Memory  []Memory  `json:"idle_memory,omitempty"`
	Started time.Time `json:"started"`
}

// Memory is the idle cost of sandboxes of one runtime.
type Memory struct {
	Runtime         string  `json:"runtime"`
	Sandboxes       int     `json:"sandboxes"`
	PerSandboxMB    float64 `json:"per_sandbox_mb"`
	FitIn24GiB      int     `json:"fit_in_24gib"`
	HostAvailableMB float64 `json:"host_available_mb_before"`
}

func (o *Options) logf(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// Run measures everything and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	rep := &Report{Image: o.Image, Runs: o.Runs, Started: time.Now().UTC()}
	for _, rt := range o.Runtimes {
		peerBin := map[string]string{"gvisor": o.Runsc, "runc": o.Runc}[rt]
		peerName := map[string]string{"gvisor": "runsc", "runc": "runc"}[rt]

		o.logf("%s: create to first output (warren)", rt)
		created, byPath, err := o.createToOutput(ctx, rt)
		if err != nil {
			return nil, err
		}
		row := Row{Metric: rt + " create→first output", Warren: summarize(created), Note: describe(byPath)}
		if peerBin != "" {
			o.logf("%s: create to first output (%s run)", rt, peerName)
			raw, err := o.rawRun(ctx, rt, peerBin)
			if err != nil {
				return nil, fmt.Errorf("%s run: %w", peerName, err)
			}
			row.addPeer(peerName+" run", summarize(raw))
		}
		rep.Rows = append(rep.Rows, row)

		o.logf("%s: exec round trip", rt)
		execs, err := o.execRoundTrip(ctx, rt)
		if err != nil {
			return nil, err
		}
		row = Row{Metric: rt + " exec round trip", Warren: summarize(execs)}
		if peerBin != "" {
			raw, err := o.rawExec(ctx, rt, peerBin)
			if err != nil {
				return nil, fmt.Errorf("%s exec: %w", peerName, err)
			}
			row.addPeer(peerName+" exec", summarize(raw))
		}
		rep.Rows = append(rep.Rows, row)

		o.logf("%s: %d concurrent creates", rt, o.Concurrent)
		total, err := o.concurrentCreates(ctx, rt)
		if err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, Row{Metric: fmt.Sprintf("%s %d concurrent creates (total)", rt, o.Concurrent), Warren: summarize([]time.Duration{total})})

		if rt == "gvisor" {
			o.logf("%s: pause and resume", rt)
			pauses, resumes, err := o.pauseResume(ctx, rt)
			if err != nil {
				return nil, err
			}
			rep.Rows = append(rep.Rows, Row{Metric: rt + " pause", Warren: summarize(pauses)}, Row{Metric: rt + " resume", Warren: summarize(resumes)})
		}
		if rt == "runc" && o.dockerReady(ctx) {
			o.logf("docker: run and exec")
			runs, execs, err := o.docker(ctx)
			if err != nil {
				return nil, fmt.Errorf("docker: %w", err)
			}
			for i := range rep.Rows {
				switch rep.Rows[i].Metric {
				case "runc create→first output":
					rep.Rows[i].addPeer("docker run", summarize(runs))
				case "runc exec round trip":
					rep.Rows[i].addPeer("docker exec", summarize(execs))
				}
			}
		}
		if o.Idle > 0 {
			o.logf("%s: idle memory of %d sandboxes", rt, o.Idle)
			mem, err := o.idleMemory(ctx, rt)
			if err != nil {
				return nil, err
			}
			rep.Memory = append(rep.Memory, *mem)
		}
	}
	return rep, nil
}

func (r *Row) addPeer(name string, s Stat) {
	if r.Peers == nil {
		r.Peers, r.Ratio = map[string]Stat{}, map[string]float64{}
	}
	r.Peers[name] = s
	if s.P50 > 0 {
		r.Ratio[name] = r.Warren.P50 / s.P50
	}
}

func describe(byPath map[string]int) string {
	var parts []string
	for p, n := range byPath {
		parts = append(parts, fmt.Sprintf("%s×%d", p, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func (o *Options) create(ctx context.Context, rt string) (*client.Sandbox, error) {
	return o.Client.CreateSandbox(ctx, &client.CreateRequest{Image: o.Image, Runtime: rt, Metadata: map[string]string{"warren-bench": "1"}})
}

func (o *Options) remove(ids ...string) {
	for _, id := range ids {
		_, _ = o.Client.DeleteSandbox(context.Background(), id)
	}
}

// createToOutput times a create followed by the first command's output.
func (o *Options) createToOutput(ctx context.Context, rt string) ([]time.Duration, map[string]int, error) {
	var out []time.Duration
	byPath := map[string]int{}
	for i := 0; i < o.Runs; i++ {
		start := time.Now()
		sb, err := o.create(ctx, rt)
		if err != nil {
			return nil, nil, err
		}
		res, err := o.Client.Exec(ctx, sb.ID, &client.ExecRequest{Argv: []string{"echo", "hi"}})
		took := time.Since(start)
		o.remove(sb.ID)
		if err != nil || res.Stdout != "hi\n" {
			return nil, nil, fmt.Errorf("first exec: %v %+v", err, res)
		}
		out = append(out, took)
		byPath[sb.BootPath]++
	}
	return out, byPath, nil
}

func (o *Options) execRoundTrip(ctx context.Context, rt string) ([]time.Duration, error) {
	sb, err := o.create(ctx, rt)
	if err != nil {
		return nil, err
	}
	defer o.remove(sb.ID)
	var out []time.Duration
	for i := 0; i < o.Runs*5; i++ {
		start := time.Now()
		if _, err := o.Client.Exec(ctx, sb.ID, &client.ExecRequest{Argv: []string{"true"}}); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

func (o *Options) concurrentCreates(ctx context.Context, rt string) (time.Duration, error) {
	var wg sync.WaitGroup
	ids := make([]string, o.Concurrent)
	errs := make([]error, o.Concurrent)
	start := time.Now()
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sb, err := o.create(ctx, rt)
			if err == nil {
				ids[i] = sb.ID
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	total := time.Since(start)
	o.remove(ids...)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return total, nil
}

func (o *Options) pauseResume(ctx context.Context, rt string) (pauses, resumes []time.Duration, err error) {
	sb, err := o.create(ctx, rt)
	if err != nil {
		return nil, nil, err
	}
	defer o.remove(sb.ID)
	for i := 0; i < o.Runs; i++ {
		start := time.Now()
		if _, err := o.Client.Pause(ctx, sb.ID); err != nil {
			return nil, nil, err
		}
		pauses = append(pauses, time.Since(start))
		start = time.Now()
		if _, err := o.Client.Resume(ctx, sb.ID); err != nil {
			return nil, nil, err
		}
		resumes = append(resumes, time.Since(start))
	}
	return pauses, resumes, nil
}

// idleMemory creates sandboxes, lets them settle, and sums what their
// memory cgroups charge (for gVisor that includes its kernel).
func (o *Options) idleMemory(ctx context.Context, rt string) (*Memory, error) {
	before := memAvailableMB()
	var ids []string
	defer func() { o.remove(ids...) }()
	for i := 0; i < o.Idle; i++ {
		sb, err := o.create(ctx, rt)
		if err != nil {
			return nil, err
		}
		ids = append(ids, sb.ID)
	}
	time.Sleep(2 * time.Second)
	var total float64
	for _, id := range ids {
		total += cgroupMemoryMB(id)
	}
	per := total / float64(o.Idle)
	m := &Memory{Runtime: rt, Sandboxes: o.Idle, PerSandboxMB: per, HostAvailableMB: before}
	if per > 0 {
		m.FitIn24GiB = int(24 * 1024 / per)
	}
	return m, nil
}

// cgroupMemoryMB reads a sandbox's memory cgroup usage (v1 or v2).
func cgroupMemoryMB(id string) float64 {
	for _, f := range []string{"/sys/fs/cgroup/memory/warren/" + id + "/memory.usage_in_bytes", "/sys/fs/cgroup/warren/" + id + "/memory.current"} {
		if b, err := os.ReadFile(f); err == nil {
			v, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
			return v / (1 << 20)
		}
	}
	return 0
}

func memAvailableMB() float64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// rawBundle writes a minimal OCI bundle on the image's rootfs (read-only,
// no network, like `runsc do`) running argv.
func (o *Options) rawBundle(dir string, argv []string) error {
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"args": argv, "cwd": "/", "env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"user": map[string]int{"uid": 0, "gid": 0},
		},
		"root":     map[string]any{"path": o.Rootfs, "readonly": true},
		"hostname": "bench",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
			{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "mode=755"}},
			{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
		},
		"linux": map[string]any{"namespaces": []map[string]string{{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}}},
	}
	b, _ := json.Marshal(spec)
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
}

func peerFlags(rt, state string) []string {
	f := []string{"--root", state}
	if rt == "gvisor" {
		f = append(f, "--platform=systrap", "--network=none")
	}
	return f
}

// rawRun times `runsc run`/`runc run` of echo to completion.
func (o *Options) rawRun(ctx context.Context, rt, bin string) ([]time.Duration, error) {
	dir, err := os.MkdirTemp("", "warren-bench-")
	if err != nil {
		return nil, err
	}
	defer cleanupPeer(rt, bin, dir)
	if err := o.rawBundle(dir, []string{"echo", "hi"}); err != nil {
		return nil, err
	}
	var out []time.Duration
	for i := 0; i < o.Runs; i++ {
		id := fmt.Sprintf("bench-run-%06d", i)
		args := append(peerFlags(rt, filepath.Join(dir, "state")), "run", "--bundle", dir, id)
		start := time.Now()
		b, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		took := time.Since(start)
		_ = exec.Command(bin, append(peerFlags(rt, filepath.Join(dir, "state")), "delete", "--force", id)...).Run()
		if err != nil || !strings.Contains(string(b), "hi") {
			return nil, fmt.Errorf("%v: %s", err, b)
		}
		out = append(out, took)
	}
	return out, nil
}

// rawExec times `runsc exec`/`runc exec` of true in a running container.
func (o *Options) rawExec(ctx context.Context, rt, bin string) ([]time.Duration, error) {
	dir, err := os.MkdirTemp("", "warren-bench-")
	if err != nil {
		return nil, err
	}
	defer cleanupPeer(rt, bin, dir)
	if err := o.rawBundle(dir, []string{"sleep", "3600"}); err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "state")
	id := "bench-exec-000001"
	// A detached container keeps its stdio: give it a file, not a pipe
	// that would never close.
	logf, err := os.Create(filepath.Join(dir, "run.log"))
	if err != nil {
		return nil, err
	}
	run := exec.CommandContext(ctx, bin, append(peerFlags(rt, state), "run", "--detach", "--bundle", dir, id)...)
	run.Stdout, run.Stderr = logf, logf
	err = run.Run()
	logf.Close()
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "run.log"))
		return nil, fmt.Errorf("%v: %s", err, b)
	}
	defer exec.Command(bin, append(peerFlags(rt, state), "delete", "--force", id)...).Run()
	var out []time.Duration
	for i := 0; i < o.Runs*5; i++ {
		start := time.Now()
		if b, err := exec.CommandContext(ctx, bin, append(peerFlags(rt, state), "exec", id, "true")...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%v: %s", err, b)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// cleanupPeer removes a peer's scratch dir, unmounting what runsc left.
func cleanupPeer(rt, bin, dir string) {
	_ = exec.Command("umount", "-l", filepath.Join(dir, "state", "null-netns")).Run()
	_ = os.RemoveAll(dir)
}

// Table renders a report for people.
func Table(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "image %s, %d runs per figure (ratios: warren p50 / peer p50; below 1 is faster)\n\n", rep.Image, rep.Runs)
	fmt.Fprintf(w, "%-40s %10s %10s %10s   %s\n", "metric", "p50 ms", "p95 ms", "p99 ms", "peers")
	for _, r := range rep.Rows {
		var peers []string
		for name, s := range r.Peers {
			peers = append(peers, fmt.Sprintf("%s p50 %.1f ms (ratio %.2f)", name, s.P50, r.Ratio[name]))
		}
		sort.Strings(peers)
		line := strings.Join(peers, "; ")
		if r.Note != "" {
			line = strings.TrimSpace(line + " [" + r.Note + "]")
		}
		fmt.Fprintf(w, "%-40s %10.1f %10.1f %10.1f   %s\n", r.Metric, r.Warren.P50, r.Warren.P95, r.Warren.P99, line)
	}
	for _, m := range rep.Memory {
		fmt.Fprintf(w, "\n%s idle memory: %.1f MB per sandbox over %d sandboxes; about %d fit in 24 GiB\n", m.Runtime, m.PerSandboxMB, m.Sandboxes, m.FitIn24GiB)
	}
}

// dockerReady reports whether a Docker engine answers.
func (o *Options) dockerReady(ctx context.Context) bool {
	if o.Docker == "" {
		return false
	}
	return exec.CommandContext(ctx, o.Docker, "info").Run() == nil
}

// docker times `docker run --rm IMAGE echo hi` and `docker exec` of true,
// on an image imported from the same root filesystem, without network.
func (o *Options) docker(ctx context.Context) (runs, execs []time.Duration, err error) {
	tag := "warren-bench-" + filepath.Base(filepath.Dir(o.Rootfs))
	imp := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("tar -C %q -c . | %q import - %s", o.Rootfs, o.Docker, tag))
	if b, err := imp.CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("import image: %v: %s", err, b)
	}
	for i := 0; i < o.Runs; i++ {
		start := time.Now()
		b, err := exec.CommandContext(ctx, o.Docker, "run", "--rm", "--network", "none", tag, "echo", "hi").CombinedOutput()
		if err != nil || !strings.Contains(string(b), "hi") {
			return nil, nil, fmt.Errorf("docker run: %v: %s", err, b)
		}
		runs = append(runs, time.Since(start))
	}
	name := fmt.Sprintf("warren-bench-%d", time.Now().UnixNano())
	if b, err := exec.CommandContext(ctx, o.Docker, "run", "-d", "--name", name, "--network", "none", tag, "sleep", "3600").CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("docker run -d: %v: %s", err, b)
	}
	defer exec.Command(o.Docker, "rm", "-f", name).Run()
	for i := 0; i < o.Runs*5; i++ {
		start := time.Now()
		if b, err := exec.CommandContext(ctx, o.Docker, "exec", name, "true").CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("docker exec: %v: %s", err, b)
		}
		execs = append(execs, time.Since(start))
	}
	return runs, execs, nil
}
