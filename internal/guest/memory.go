package guest

import (
	"bytes"
	"context"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/warrenhq/warren/internal/cgroups"
)

// How the agent learns about memory (set in its environment by the
// runtime).
const (
	// MemoryLimitEnv is the sandbox's requested memory, in bytes.
	MemoryLimitEnv = "WARREN_MEMORY_LIMIT"
	// OOMModeEnv is "enforce" where the sandbox's kernel has no OOM killer
	// for its workload (gVisor): the agent kills the biggest process at
	// the limit. It is "kernel" where the host kernel does that (runc):
	// the agent only tells which commands lost a process to it.
	OOMModeEnv = "WARREN_OOM"
)

// MemoryState is what the agent knows of the sandbox's memory.
type MemoryState struct {
	LimitBytes int64 `json:"limit_bytes"`
	UsedBytes  int64 `json:"used_bytes"`
	PeakBytes  int64 `json:"peak_bytes"`
	OOMKills   int64 `json:"oom_kills"`
	// Enforced: the agent kills at the limit (its kills are OOMKills);
	// otherwise the kernel does and OOMKills is the kernel's count.
	Enforced bool `json:"enforced"`
}

// memoryGuard kills the workload's biggest process when the sandbox's
// memory reaches its limit (enforce mode), and tells which commands lost
// a process to an OOM kill (both modes).
//
// It does not poll while memory is low: the host signals when its charge
// for the sandbox crosses half the limit (POST /memory/pressure), and the
// guard then looks every 10 ms until usage has stayed below 40% for two
// seconds. Where the host cannot signal, it is told to look always.
type memoryGuard struct {
	limit   int64
	enforce bool
	poke    chan struct{}
	cgroup  cgroups.Memory // the sandbox's own, as its cgroup namespace shows it (kernel mode)
	self    int

	mu     sync.Mutex
	always bool
	kills  int64
	peak   int64
	killed map[int]time.Time // process group → when a member was killed
}

// Timing of the guard's watch.
const (
	watchEvery = 10 * time.Millisecond
	watchCalm  = 2 * time.Second
	// alwaysEvery is the look interval where the host cannot signal.
	alwaysEvery = 100 * time.Millisecond
	// victimWait bounds the wait for a killed process to go.
	victimWait = 10 * time.Second
)

func newMemoryGuard() *memoryGuard {
	limit, _ := strconv.ParseInt(os.Getenv(MemoryLimitEnv), 10, 64)
	_ = os.Unsetenv(MemoryLimitEnv)
	mode := os.Getenv(OOMModeEnv)
	_ = os.Unsetenv(OOMModeEnv)
	return &memoryGuard{
		limit: limit, enforce: mode == "enforce" && limit > 0, poke: make(chan struct{}, 1),
		cgroup: cgroups.MemoryOf(cgroups.Root, ""), self: os.Getpid(), killed: map[int]time.Time{},
	}
}

// run watches memory until ctx ends (enforce mode only). It sleeps until
// the host signals pressure; a guard told to look always never sleeps
// long.
func (g *memoryGuard) run(ctx context.Context) {
	if !g.enforce {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.poke:
		}
		g.watch(ctx)
	}
}

func (g *memoryGuard) isAlways() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.always
}

// watch looks at memory closely until it has been calm for a while (or,
// for a guard told to look always, until ctx ends, slowly while calm).
func (g *memoryGuard) watch(ctx context.Context) {
	var calmSince time.Time
	for ctx.Err() == nil {
		used, err := g.usage()
		if err != nil {
			return
		}
		g.notePeak(used)
		if used >= g.limit {
			if victim := g.killBiggest(); victim != 0 {
				// Give the kill time to free its memory before judging
				// again, or a second process dies for the first one's
				// pages.
				g.settle(ctx, victim)
				continue
			}
		}
		every := watchEvery
		if used < g.limit*2/5 {
			if calmSince.IsZero() {
				calmSince = time.Now()
			}
			if g.isAlways() {
				every = alwaysEvery
			} else if time.Since(calmSince) > watchCalm {
				return
			}
		} else {
			calmSince = time.Time{}
		}
		select {
		case <-ctx.Done():
		case <-time.After(every):
		case <-g.poke:
		}
	}
}

func (g *memoryGuard) notePeak(used int64) {
	g.mu.Lock()
	g.peak = max(g.peak, used)
	g.mu.Unlock()
}

// usage is the memory the sandbox's processes use now, as the sandbox's
// own kernel accounts it: its total less what is free.
func (g *memoryGuard) usage() (int64, error) {
	if !g.enforce {
		return g.cgroup.Usage()
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	total, free := meminfoKB(b, "MemTotal:"), meminfoKB(b, "MemFree:")
	return (total - free) << 10, nil
}

// meminfoKB reads one "Key:   N kB" line of /proc/meminfo.
func meminfoKB(b []byte, key string) int64 {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+len(key):])
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(string(f[0]), 10, 64)
	return n
}

// settle waits for a killed process to be gone (up to victimWait) and
// then, up to a second, for its memory to be back under the limit.
func (g *memoryGuard) settle(ctx context.Context, victim int) {
	// First the victim must be gone, however long a loaded machine takes
	// to end it: judging again before that kills a second process for
	// the first one's pages.
	for gone := time.Now().Add(victimWait); time.Now().Before(gone) && ctx.Err() == nil; time.Sleep(watchEvery) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(victim)); err != nil {
			break
		}
	}
	// Then its memory must come back.
	for back := time.Now().Add(time.Second); time.Now().Before(back) && ctx.Err() == nil; time.Sleep(watchEvery) {
		if used, err := g.usage(); err != nil || used < g.limit {
			return
		}
	}
}

// killBiggest kills the process with the most resident memory, never
// the agent or the sandbox's init, and records it. It returns the pid it
// killed, or 0.
func (g *memoryGuard) killBiggest() int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	victim, victimRSS, victimGroup := 0, int64(-1), 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || pid == g.self {
			continue
		}
		rss, group, ok := processMemory(pid)
		if ok && rss > victimRSS {
			victim, victimRSS, victimGroup = pid, rss, group
		}
	}
	if victim == 0 {
		return 0
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		return 0
	}
	g.mu.Lock()
	g.kills++
	g.killed[victimGroup] = time.Now()
	g.mu.Unlock()
	log.Printf("warren agent: out of memory (limit %d MB): killed pid %d (%d MB resident)", g.limit>>20, victim, victimRSS>>20)
	return victim
}

// processMemory reads a process's resident bytes and process group.
func processMemory(pid int) (rss int64, group int, ok bool) {
	statm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, 0, false
	}
	f := bytes.Fields(statm)
	if len(f) < 2 {
		return 0, 0, false
	}
	pages, _ := strconv.ParseInt(string(f[1]), 10, 64)
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name may hold spaces and parentheses: fields count
	// from the last ')'.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	sf := bytes.Fields(rest)
	if len(sf) < 3 {
		return 0, 0, false
	}
	group, _ = strconv.Atoi(string(sf[2]))
	return pages * int64(os.Getpagesize()), group, true
}

// oomMark is taken when a command starts, to tell afterwards whether it
// lost a process to an OOM kill.
type oomMark struct {
	start    time.Time
	oomKills int64 // the kernel's count (kernel mode)
}

func (g *memoryGuard) mark() oomMark {
	m := oomMark{start: time.Now()}
	if !g.enforce {
		m.oomKills = g.kernelKills()
	}
	return m
}

// lostToOOM says whether the command of process group group, started at
// m and ended with code, lost a process to an OOM kill. In enforce mode
// the agent knows which group it killed in. In kernel mode it knows only
// that the kernel killed something meanwhile, and says so for a command
// that ended by SIGKILL.
func (g *memoryGuard) lostToOOM(m oomMark, group, code int) bool {
	if g.enforce {
		g.mu.Lock()
		defer g.mu.Unlock()
		at, ok := g.killed[group]
		delete(g.killed, group)
		return ok && !at.Before(m.start)
	}
	return code == 128+int(syscall.SIGKILL) && g.kernelKills() > m.oomKills
}

// kernelKills is the OOM kill count of the sandbox's memory cgroup.
func (g *memoryGuard) kernelKills() int64 { return g.cgroup.OOMKills() }

// state reports the sandbox's memory.
func (g *memoryGuard) state() MemoryState {
	used, _ := g.usage()
	g.notePeak(used)
	g.mu.Lock()
	st := MemoryState{LimitBytes: g.limit, UsedBytes: used, PeakBytes: g.peak, OOMKills: g.kills, Enforced: g.enforce}
	g.mu.Unlock()
	if !g.enforce {
		st.OOMKills = g.kernelKills()
		if peak, err := g.cgroup.Peak(); err == nil {
			st.PeakBytes = peak
		}
	}
	return st
}

func (a *Agent) handleMemory(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.memory.state())
}

// handlePressure is the host saying memory is getting tight (or, with
// always=true, that it cannot say so and the guard must look by itself).
func (a *Agent) handlePressure(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("always") == "true" {
		a.memory.mu.Lock()
		a.memory.always = true
		a.memory.mu.Unlock()
	}
	select {
	case a.memory.poke <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}
