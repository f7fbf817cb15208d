// Package bench measures warren against the runtimes it drives, in one
// run, on the same images: how long until a new sandbox prints, how long
// an exec round trip takes, how creates behave under concurrency, pause
// and resume, idle memory per sandbox, image pulls and Dockerfile builds. Ratios are warren/peer: below
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
	"github.com/warrenhq/warren/wire"
)

// Options configures a run.
type Options struct {
	Client   *client.Client
	Image    string   // busybox or base
	Runtimes []string // warren runtimes to measure: gvisor, runc
	Runs     int      // samples per latency figure
	// Repeat measures each figure this many times: its p50 is the median
	// of the runs' medians, so one noisy run cannot decide it.
	Repeat     int
	Concurrent int // creates started at once
	Idle       int // sandboxes for the idle-density figure
	// IdleFor is how long the idle sandboxes sit before the host's load
	// and their memory are read.
	IdleFor time.Duration
	// Peers: raw runtime binaries, and the image's root filesystem.
	Runsc, Runc string
	Rootfs      string
	// Docker is the docker CLI, compared when its engine answers.
	Docker string
	// Images measures pulls from a registry on loopback and Dockerfile
	// builds.
	Images bool
	// Cluster measures only what reaching a sandbox through another node
	// of a cluster costs, against reaching its own node.
	Cluster  bool
	Progress io.Writer
}

// Stat summarizes samples in milliseconds.
type Stat struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	// Spread is the lowest and highest of the repeats' medians; P50 is
	// the median of them.
	Spread []float64 `json:"spread_ms,omitempty"`
}

// measure takes a figure's samples Repeat times (sample returns one
// series per figure it measures) and summarizes each figure over the
// repeats.
func (o *Options) measure(sample func() ([][]time.Duration, error)) ([]Stat, error) {
	var runs [][][]time.Duration
	for range max(o.Repeat, 1) {
		series, err := sample()
		if err != nil {
			return nil, err
		}
		runs = append(runs, series)
	}
	out := make([]Stat, len(runs[0]))
	for i := range out {
		var all []time.Duration
		var medians []float64
		for _, r := range runs {
			all = append(all, r[i]...)
			medians = append(medians, summarize(append([]time.Duration(nil), r[i]...)).P50)
		}
		st := summarize(all)
		sort.Float64s(medians)
		st.P50 = medians[len(medians)/2]
		if len(medians) > 1 {
			st.Spread = []float64{medians[0], medians[len(medians)-1]}
		}
		out[i] = st
	}
	return out, nil
}

// measure1 is measure of one figure.
func (o *Options) measure1(sample func() ([]time.Duration, error)) (Stat, error) {
	st, err := o.measure(func() ([][]time.Duration, error) {
		d, err := sample()
		return [][]time.Duration{d}, err
	})
	if err != nil {
		return Stat{}, err
	}
	return st[0], nil
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
	Image      string       `json:"image"`
	Runs       int          `json:"runs"`
	Repeat     int          `json:"repeat"`
	Rows       []Row        `json:"rows"`
	Memory     []Memory     `json:"idle_memory,omitempty"`
	Checkpoint []Checkpoint `json:"checkpoint,omitempty"`
	Started    time.Time    `json:"started"`
}

// Checkpoint is the size of a paused sandbox's checkpoint.
type Checkpoint struct {
	Runtime string  `json:"runtime"`
	MB      float64 `json:"mb"`
}

// Memory is the idle cost of sandboxes of one runtime.
type Memory struct {
	Runtime         string  `json:"runtime"`
	Sandboxes       int     `json:"sandboxes"`
	PerSandboxMB    float64 `json:"per_sandbox_mb"`
	FitIn24GiB      int     `json:"fit_in_24gib"`
	HostAvailableMB float64 `json:"host_available_mb_before"`
	// HostPerSandboxMB is the drop in the host's available memory per
	// sandbox: it also counts what the cgroups do not (page tables, the
	// runtime's helper processes, warren's own share).
	HostPerSandboxMB float64 `json:"host_per_sandbox_mb"`
	// IdleSeconds is how long they sat idle; LoadAvg1 is the host's
	// one-minute load average at the end, and LoadBefore before they
	// were made. Answering says every one answered an exec at the end.
	IdleSeconds float64 `json:"idle_seconds"`
	LoadAvg1    float64 `json:"load_avg_1m"`
	LoadBefore  float64 `json:"load_avg_1m_before"`
	Answering   int     `json:"answering"`
	// CPUPercent is the CPU the idle sandboxes used over the window, in
	// percent of one core (their cgroups' CPU time), all of them
	// together; HostBusy the host's busy share of all cores over it.
	CPUPercent  float64 `json:"cpu_percent_of_a_core"`
	HostBusyPct float64 `json:"host_busy_percent"`
	// HostTasksPerSandbox is how many host threads each sandbox adds
	// (they count against kernel.pid_max).
	HostTasksPerSandbox float64 `json:"host_tasks_per_sandbox"`
}

func (o *Options) logf(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// Run measures everything and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	rep := &Report{Image: o.Image, Runs: o.Runs, Repeat: max(o.Repeat, 1), Started: time.Now().UTC()}
	if o.Cluster {
		return rep, o.clusterFigures(ctx, rep)
	}
	for _, rt := range o.Runtimes {
		// --runs 0 leaves only the idle figure (and the images).
		if o.Runs > 0 {
			if err := o.figures(ctx, rt, rep); err != nil {
				return nil, err
			}
		}
		if o.Idle > 0 {
			o.logf("%s: %d idle sandboxes for %s", rt, o.Idle, o.IdleFor)
			mem, err := o.idleDensity(ctx, rt)
			if err != nil {
				return nil, err
			}
			rep.Memory = append(rep.Memory, *mem)
		}
	}
	if o.Images {
		rows, err := o.images(ctx)
		if err != nil {
			return nil, fmt.Errorf("images: %w", err)
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	return rep, nil
}

// figures measures one runtime's sampled figures into rep: create, exec,
// a request without a process, concurrent creates, pause and resume, and
// each against its peers.
func (o *Options) figures(ctx context.Context, rt string, rep *Report) error {
	peerBin := map[string]string{"gvisor": o.Runsc, "runc": o.Runc}[rt]
	peerName := map[string]string{"gvisor": "runsc", "runc": "runc"}[rt]

	o.logf("%s: exec round trip", rt)
	execs, err := o.measure1(func() ([]time.Duration, error) { return o.execRoundTrip(ctx, rt) })
	if err != nil {
		return err
	}

	o.logf("%s: create to first output (warren)", rt)
	byPath := map[string]int{}
	created, err := o.measure1(func() ([]time.Duration, error) { return o.createToOutput(ctx, rt, byPath) })
	if err != nil {
		return err
	}
	row := Row{Metric: rt + " create→first output", Warren: created, Note: describe(byPath)}
	if byPath[wire.BootPool] > 0 {
		// A pooled create's floor is the first command: the exec round
		// trip of a running sandbox.
		row.addPeer("warren exec round trip", execs)
	}
	if peerBin != "" {
		o.logf("%s: create to first output (%s run)", rt, peerName)
		raw, err := o.measure1(func() ([]time.Duration, error) { return o.rawRun(ctx, rt, peerBin) })
		if err != nil {
			return fmt.Errorf("%s run: %w", peerName, err)
		}
		row.addPeer(peerName+" run", raw)
	}
	rep.Rows = append(rep.Rows, row)

	row = Row{Metric: rt + " exec round trip", Warren: execs}
	o.logf("%s: process spawn inside a sandbox (the floor under exec)", rt)
	spawn, err := o.measure1(func() ([]time.Duration, error) { return o.spawnInside(ctx, rt) })
	if err != nil {
		return fmt.Errorf("spawn inside: %w", err)
	}
	row.addPeer("spawn inside", spawn)
	if peerBin != "" {
		raw, err := o.measure1(func() ([]time.Duration, error) { return o.rawExec(ctx, rt, peerBin) })
		if err != nil {
			return fmt.Errorf("%s exec: %w", peerName, err)
		}
		row.addPeer(peerName+" exec", raw)
	}
	rep.Rows = append(rep.Rows, row)

	o.logf("%s: a request that starts no process", rt)
	stats, err := o.measure1(func() ([]time.Duration, error) { return o.statRoundTrip(ctx, rt) })
	if err != nil {
		return err
	}
	rep.Rows = append(rep.Rows, Row{Metric: rt + " request without a process (file stat)", Warren: stats})

	o.logf("%s: %d concurrent creates", rt, o.Concurrent)
	byPath = map[string]int{}
	total, err := o.measure1(func() ([]time.Duration, error) { return o.concurrentCreates(ctx, rt, byPath) })
	if err != nil {
		return err
	}
	rep.Rows = append(rep.Rows, Row{Metric: fmt.Sprintf("%s %d concurrent creates (total)", rt, o.Concurrent), Warren: total, Note: describe(byPath)})

	if rt == "gvisor" {
		o.logf("%s: pause and resume", rt)
		var size int64
		pr, err := o.measure(func() ([][]time.Duration, error) {
			p, r, sz, err := o.pauseResume(ctx, rt)
			size = sz
			return [][]time.Duration{p, r}, err
		})
		if err != nil {
			return err
		}
		rep.Checkpoint = append(rep.Checkpoint, Checkpoint{Runtime: rt, MB: float64(size) / (1 << 20)})
		pause, resume := Row{Metric: rt + " pause", Warren: pr[0]}, Row{Metric: rt + " resume", Warren: pr[1]}
		if peerBin != "" {
			// warren restores with --background (pages load after the
			// restore returns), so the raw restore is measured with it too.
			for _, v := range []struct {
				name              string
				quota, background bool
			}{{" (1 CPU quota)", true, false}, {" (no CPU quota)", false, false}, {" --background (no CPU quota)", false, true}} {
				name := v.name
				o.logf("%s: checkpoint and restore (%s%s)", rt, peerName, name)
				cr, err := o.measure(func() ([][]time.Duration, error) {
					c, r, err := o.rawCheckpoint(ctx, peerBin, v.quota, v.background)
					return [][]time.Duration{c, r}, err
				})
				if err != nil {
					return fmt.Errorf("%s checkpoint: %w", peerName, err)
				}
				pause.addPeer(peerName+" checkpoint"+name, cr[0])
				resume.addPeer(peerName+" restore"+name, cr[1])
			}
		}
		rep.Rows = append(rep.Rows, pause, resume)
	}
	if rt == "runc" && o.dockerReady(ctx) {
		o.logf("docker: run and exec")
		de, err := o.measure(func() ([][]time.Duration, error) {
			r, e, err := o.docker(ctx)
			return [][]time.Duration{r, e}, err
		})
		if err != nil {
			return fmt.Errorf("docker: %w", err)
		}
		for i := range rep.Rows {
			switch rep.Rows[i].Metric {
			case "runc create→first output":
				rep.Rows[i].addPeer("docker run", de[0])
			case "runc exec round trip":
				rep.Rows[i].addPeer("docker exec", de[1])
			}
		}
	}
	return nil
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
func (o *Options) createToOutput(ctx context.Context, rt string, byPath map[string]int) ([]time.Duration, error) {
	o.waitForPool(ctx, rt)
	var out []time.Duration
	for i := 0; i < o.Runs; i++ {
		start := time.Now()
		sb, err := o.create(ctx, rt)
		if err != nil {
			return nil, err
		}
		res, err := o.Client.Exec(ctx, sb.ID, &client.ExecRequest{Argv: []string{"echo", "hi"}})
		took := time.Since(start)
		o.remove(sb.ID)
		if err != nil || res.Stdout != "hi\n" {
			return nil, fmt.Errorf("first exec: %v %+v", err, res)
		}
		out = append(out, took)
		byPath[sb.BootPath]++
		// A pool refills in the background: the next sample should meet
		// it full, as the first did.
		o.waitForPool(ctx, rt)
	}
	return out, nil
}

// statRoundTrip times a request the agent answers without starting a
// process: a file's stat.
func (o *Options) statRoundTrip(ctx context.Context, rt string) ([]time.Duration, error) {
	sb, err := o.create(ctx, rt)
	if err != nil {
		return nil, err
	}
	defer o.remove(sb.ID)
	var out []time.Duration
	for i := 0; i < o.Runs*5; i++ {
		start := time.Now()
		if _, err := o.Client.StatFile(ctx, sb.ID, "/"); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
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

// concurrentCreates starts Concurrent creates at once and times them all.
// When the server keeps a warm pool of the image, it first waits (a
// while) for the pool to be full, so the figure is what a full pool gives.
func (o *Options) concurrentCreates(ctx context.Context, rt string, byPath map[string]int) ([]time.Duration, error) {
	o.waitForPool(ctx, rt)
	var wg sync.WaitGroup
	ids := make([]string, o.Concurrent)
	paths := make([]string, o.Concurrent)
	errs := make([]error, o.Concurrent)
	start := time.Now()
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sb, err := o.create(ctx, rt)
			if err == nil {
				ids[i], paths[i] = sb.ID, sb.BootPath
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	total := time.Since(start)
	o.remove(ids...)
	for i, err := range errs {
		if err != nil {
			return nil, err
		}
		byPath[paths[i]]++
	}
	return []time.Duration{total}, nil
}

// waitForPool waits up to two minutes for the server's pool of this image
// and runtime, if it has one, to be full: figures are for a full pool, not
// for one refilling in the background.
func (o *Options) waitForPool(ctx context.Context, rt string) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		info, err := o.Client.Info(ctx)
		if err != nil {
			return
		}
		full := true
		for _, p := range info.Pools {
			if p.Image == o.Image && p.Runtime == rt && p.Ready < p.Size {
				full = false
				o.logf("%s: waiting for the %s pool (%d of %d ready)", rt, p.Image, p.Ready, p.Size)
			}
		}
		if full {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// spawnInside measures what starting one process costs inside a sandbox,
// with no warren in the loop: one exec runs a shell loop of spawns, and
// the per-spawn time is the difference to an empty loop. It is the floor
// under any exec round trip on that runtime.
func (o *Options) spawnInside(ctx context.Context, rt string) ([]time.Duration, error) {
	sb, err := o.create(ctx, rt)
	if err != nil {
		return nil, err
	}
	defer o.remove(sb.ID)
	const spawns = 100
	// The agent times each command it runs (duration_ms).
	loop := func(body string) (time.Duration, error) {
		script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done", spawns, body)
		res, err := o.Client.Exec(ctx, sb.ID, &client.ExecRequest{Argv: []string{"/bin/sh", "-c", script}})
		if err != nil {
			return 0, err
		}
		if res.ExitCode != 0 {
			return 0, fmt.Errorf("spawn loop: exit %d: %s", res.ExitCode, res.Stderr)
		}
		return time.Duration(res.DurationMs) * time.Millisecond, nil
	}
	var out []time.Duration
	for i := 0; i < max(o.Runs/4, 3); i++ {
		empty, err := loop(":")
		if err != nil {
			return nil, err
		}
		full, err := loop("/bin/true")
		if err != nil {
			return nil, err
		}
		out = append(out, max(full-empty, 0)/spawns)
	}
	return out, nil
}

func (o *Options) pauseResume(ctx context.Context, rt string) (pauses, resumes []time.Duration, size int64, err error) {
	// Pool refills compete for the CPU; measure once they are done.
	o.waitForPool(ctx, rt)
	sb, err := o.create(ctx, rt)
	if err != nil {
		return nil, nil, 0, err
	}
	defer o.remove(sb.ID)
	for i := 0; i < o.Runs; i++ {
		start := time.Now()
		p, err := o.Client.Pause(ctx, sb.ID)
		if err != nil {
			return nil, nil, 0, err
		}
		pauses = append(pauses, time.Since(start))
		size = p.CheckpointBytes
		start = time.Now()
		if _, err := o.Client.Resume(ctx, sb.ID); err != nil {
			return nil, nil, 0, err
		}
		resumes = append(resumes, time.Since(start))
	}
	return pauses, resumes, size, nil
}

// idleDensity creates Idle sandboxes, leaves them idle for IdleFor, and
// reads the host's load average and what their memory cgroups charge
// (for gVisor that includes its kernel); every one must still answer.
func (o *Options) idleDensity(ctx context.Context, rt string) (*Memory, error) {
	before := memAvailableMB()
	loadBefore, tasksBefore := loadAvg()
	ids := make([]string, o.Idle)
	defer func() { o.remove(ids...) }()
	// Made a few at a time: the figure is about sitting idle, not about
	// creating under load.
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sb, err := o.create(ctx, rt)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = err
				return
			}
			ids[i] = sb.ID
			if n := countSet(ids); n%100 == 0 {
				o.logf("%s: %d idle sandboxes made", rt, n)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	start := time.Now()
	cpuBefore := cgroupCPU(ids)
	busyBefore, totalBefore := hostCPU()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.IdleFor):
	}
	load, tasks := loadAvg()
	window := time.Since(start)
	cpuUsed := cgroupCPU(ids) - cpuBefore
	busyAfter, totalAfter := hostCPU()
	var total float64
	for _, id := range ids {
		total += cgroupMemoryMB(id)
	}
	after := memAvailableMB()
	// Every sandbox must still answer: idle is not the same as dead.
	answering := 0
	for _, id := range ids {
		if res, err := o.Client.Exec(ctx, id, &client.ExecRequest{Argv: []string{"true"}}); err == nil && res.ExitCode == 0 {
			answering++
		}
	}
	if answering < len(ids) {
		return nil, fmt.Errorf("%d of %d idle sandboxes did not answer", len(ids)-answering, len(ids))
	}
	per := total / float64(o.Idle)
	m := &Memory{Runtime: rt, Sandboxes: o.Idle, PerSandboxMB: per, HostAvailableMB: before,
		HostPerSandboxMB: (before - after) / float64(o.Idle), IdleSeconds: window.Seconds(),
		LoadAvg1: load, LoadBefore: loadBefore, Answering: answering,
		HostTasksPerSandbox: float64(tasks-tasksBefore) / float64(o.Idle),
		CPUPercent:          100 * cpuUsed.Seconds() / window.Seconds()}
	if d := totalAfter - totalBefore; d > 0 {
		m.HostBusyPct = 100 * (busyAfter - busyBefore) / d
	}
	if per > 0 {
		m.FitIn24GiB = int(24 * 1024 / per)
	}
	return m, nil
}

func countSet(ids []string) int {
	n := 0
	for _, id := range ids {
		if id != "" {
			n++
		}
	}
	return n
}

// cgroupCPU adds up the CPU time the sandboxes' cgroups have used.
func cgroupCPU(ids []string) time.Duration {
	var total time.Duration
	for _, id := range ids {
		if b, err := os.ReadFile("/sys/fs/cgroup/cpuacct/warren/" + id + "/cpuacct.usage"); err == nil {
			ns, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			total += time.Duration(ns)
			continue
		}
		if b, err := os.ReadFile("/sys/fs/cgroup/warren/" + id + "/cpu.stat"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
					us, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					total += time.Duration(us) * time.Microsecond
				}
			}
		}
	}
	return total
}

// hostCPU reads the host's busy and total CPU ticks (the first line of
// /proc/stat).
func hostCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// loadAvg is the host's one-minute load average, and how many threads
// (tasks) the host has.
func loadAvg() (load float64, tasks int) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0, 0
	}
	load, _ = strconv.ParseFloat(f[0], 64)
	_, all, _ := strings.Cut(f[3], "/")
	tasks, _ = strconv.Atoi(all)
	return load, tasks
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
	// runc refuses a root reached through a symlink (an image dir that
	// is a link, say).
	root, err := filepath.EvalSymlinks(o.Rootfs)
	if err == nil {
		// A bundle's relative root is relative to the bundle, not to
		// where --image-dir was given.
		root, err = filepath.Abs(root)
	}
	if err != nil {
		return fmt.Errorf("resolve the image's rootfs: %w", err)
	}
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"args": argv, "cwd": "/", "env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"user": map[string]int{"uid": 0, "gid": 0},
		},
		"root":     map[string]any{"path": root, "readonly": true},
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

// rawCheckpoint times `runsc checkpoint` (with the delete that frees the
// stopped container, as warren does) and `runsc restore` of a container
// running sleep, with warren's default limits (1 CPU, 1 GiB) and no network;
// background restores with --background.
func (o *Options) rawCheckpoint(ctx context.Context, bin string, quota, background bool) (checkpoints, restores []time.Duration, err error) {
	dir, err := os.MkdirTemp("", "warren-bench-")
	if err != nil {
		return nil, nil, err
	}
	defer cleanupPeer("gvisor", bin, dir)
	if err := o.rawBundle(dir, []string{"sleep", "3600"}); err != nil {
		return nil, nil, err
	}
	if err := limitBundle(dir, quota); err != nil {
		return nil, nil, err
	}
	flags := peerFlags("gvisor", filepath.Join(dir, "state"))
	id := "bench-ckpt-000001"
	logPath := filepath.Join(dir, "runsc.log")
	runsc := func(args ...string) error {
		// A detached container keeps the stdio it was started with: give
		// it a file, not a pipe that would never close.
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, bin, append(flags, args...)...)
		cmd.Stdout, cmd.Stderr = logf, logf
		err = cmd.Run()
		logf.Close()
		if err != nil {
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("runsc %s: %v: %s", args[0], err, b)
		}
		return nil
	}
	if err := runsc("run", "--detach", "--bundle", dir, id); err != nil {
		return nil, nil, err
	}
	defer exec.Command(bin, append(flags, "delete", "--force", id)...).Run()
	img := filepath.Join(dir, "checkpoint")
	for i := 0; i < o.Runs; i++ {
		_ = os.RemoveAll(img)
		start := time.Now()
		if err := runsc("checkpoint", "--image-path", img, id); err != nil {
			return nil, nil, err
		}
		if err := runsc("delete", "--force", id); err != nil {
			return nil, nil, err
		}
		checkpoints = append(checkpoints, time.Since(start))
		start = time.Now()
		args := []string{"restore", "--detach", "--image-path", img, "--bundle", dir, id}
		if background {
			args = append(args[:1], append([]string{"--background"}, args[1:]...)...)
		}
		if err := runsc(args...); err != nil {
			return nil, nil, err
		}
		restores = append(restores, time.Since(start))
	}
	return checkpoints, restores, nil
}

// limitBundle gives a raw bundle warren's default memory limit, and its
// CPU quota (1 CPU) if quota.
func limitBundle(dir string, quota bool) error {
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	linux := spec["linux"].(map[string]any)
	linux["cgroupsPath"] = "/warren-bench/" + filepath.Base(dir)
	res := map[string]any{"memory": map[string]any{"limit": 1 << 30}}
	if quota {
		res["cpu"] = map[string]any{"quota": 100000, "period": 100000}
	}
	linux["resources"] = res
	b, _ = json.Marshal(spec)
	return os.WriteFile(p, b, 0o600)
}

// cleanupPeer removes a peer's scratch dir, unmounting what runsc left.
func cleanupPeer(rt, bin, dir string) {
	_ = exec.Command("umount", "-l", filepath.Join(dir, "state", "null-netns")).Run()
	_ = os.RemoveAll(dir)
	// The runtime removes a container's cgroup, not the parent limitBundle
	// named; it goes once empty.
	_ = os.Remove("/sys/fs/cgroup/warren-bench")
	if ctrls, err := filepath.Glob("/sys/fs/cgroup/*/warren-bench"); err == nil {
		for _, d := range ctrls {
			_ = os.Remove(d)
		}
	}
}

// Table renders a report for people.
func Table(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "image %s, %d samples per figure, each figure measured %d times: p50 is the median of the runs' medians, [spread] the lowest and highest of them\n(ratios: warren p50 / peer p50; below 1 is faster)\n\n", rep.Image, rep.Runs, rep.Repeat)
	fmt.Fprintf(w, "%-44s %10s %16s %10s %10s   %s\n", "metric", "p50 ms", "spread", "p95 ms", "p99 ms", "peers")
	for _, r := range rep.Rows {
		var peers []string
		for name, s := range r.Peers {
			peers = append(peers, fmt.Sprintf("%s p50 %.1f ms%s (ratio %.2f)", name, s.P50, spread(s), r.Ratio[name]))
		}
		sort.Strings(peers)
		line := strings.Join(peers, "; ")
		if r.Note != "" {
			line = strings.TrimSpace(line + " [" + r.Note + "]")
		}
		fmt.Fprintf(w, "%-44s %10.1f %16s %10.1f %10.1f   %s\n", r.Metric, r.Warren.P50, strings.TrimSpace(spread(r.Warren)), r.Warren.P95, r.Warren.P99, line)
	}
	for _, c := range rep.Checkpoint {
		fmt.Fprintf(w, "\n%s checkpoint of an idle sandbox: %.1f MB\n", c.Runtime, c.MB)
	}
	for _, m := range rep.Memory {
		fmt.Fprintf(w, "\n%s idle: %d sandboxes for %.0f s, all answering; %.1f MB per sandbox charged to its cgroup (%.1f MB of host memory), about %d fit in 24 GiB; together they used %.1f%% of a core (the host was %.1f%% busy); load average %.2f (%.2f before); %.0f host threads each\n",
			m.Runtime, m.Sandboxes, m.IdleSeconds, m.PerSandboxMB, m.HostPerSandboxMB, m.FitIn24GiB, m.CPUPercent, m.HostBusyPct, m.LoadAvg1, m.LoadBefore, m.HostTasksPerSandbox)
	}
}

func spread(s Stat) string {
	if len(s.Spread) != 2 {
		return ""
	}
	return fmt.Sprintf(" [%.1f–%.1f]", s.Spread[0], s.Spread[1])
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
