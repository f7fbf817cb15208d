package oci

import (
	"fmt"
	"golang.org/x/sys/unix"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/runtime"
)

// Default limits when a request leaves them out.
const (
	defaultPIDs = 1024
	cpuPeriodUs = 100000
	nofileLimit = 65536
	// sentryThreads is host-task headroom for gVisor's own threads.
	sentryThreads = 4096
)

// capabilities is the set a Docker container gets by default: enough for
// package managers and servers, nothing that reaches the host.
var capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func (r *Runtime) ociSpec(s runtime.Spec) *specs.Spec {
	caps := &specs.LinuxCapabilities{
		Bounding: capabilities, Effective: capabilities, Permitted: capabilities,
	}
	spec := &specs.Spec{
		Version:  specs.Version,
		Hostname: s.Hostname,
		Root:     &specs.Root{Path: s.Rootfs},
		Process: &specs.Process{
			Args:            []string{guest.AgentPath, "agent-init"},
			Env:             []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"},
			Cwd:             "/",
			User:            specs.User{UID: 0, GID: 0},
			Capabilities:    caps,
			NoNewPrivileges: true,
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofile(), Soft: nofile()}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: guest.AgentPath, Type: "bind", Source: s.Agent, Options: []string{"rbind", "ro", "nosuid", "nodev"}},
			{Destination: guest.RunDir, Type: "bind", Source: s.RunDir, Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/" + r.cfg.CgroupParent + "/" + s.ID,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: s.NetNS}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			Resources:     resources(s.Resources),
			MaskedPaths:   []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	for _, m := range s.Mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source, Options: []string{"rbind", mode, "nosuid", "nodev"}})
	}
	if s.AgentToken != "" {
		spec.Process.Env = append(spec.Process.Env, guest.TokenEnv+"="+s.AgentToken)
	}
	if r.cfg.Seccomp {
		spec.Linux.Seccomp = seccompProfile()
	}
	if r.cfg.PIDsInSandbox {
		// The host cgroup would count the sentry's own threads too, and
		// the sentry dies when it cannot make one. The agent limits the
		// processes it starts inside the sandbox's kernel instead (it
		// stays unlimited itself, so a fork bomb cannot starve it of
		// threads), and the host cgroup keeps a generous backstop.
		limit := *spec.Linux.Resources.Pids.Limit
		spec.Process.Env = append(spec.Process.Env, fmt.Sprintf("%s=%d", guest.NprocEnv, limit))
		backstop := limit + sentryThreads
		spec.Linux.Resources.Pids.Limit = &backstop
	}
	return spec
}

func resources(res runtime.Resources) *specs.LinuxResources {
	out := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	// The usual character devices: null, zero, full, random, urandom, tty,
	// console, ptmx and the pts.
	for _, d := range [][2]int64{{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, {5, 0}, {5, 1}, {5, 2}, {136, -1}} {
		major, minor := d[0], d[1]
		dev := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Access: "rwm"}
		if minor >= 0 {
			dev.Minor = &minor
		}
		out.Devices = append(out.Devices, dev)
	}
	if res.MemoryMB > 0 {
		limit := int64(res.MemoryMB) << 20
		out.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
	}
	pids := int64(res.PIDs)
	if pids <= 0 {
		pids = defaultPIDs
	}
	out.Pids = &specs.LinuxPids{Limit: &pids}
	if res.CPU > 0 {
		quota := int64(res.CPU * cpuPeriodUs)
		period := uint64(cpuPeriodUs)
		out.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	return out
}

// seccompProfile allows everything except syscalls a sandbox has no use
// for and that widen the kernel's attack surface: module loading, kexec,
// BPF, keyrings, perf, userfaultfd, namespace and mount changes.
func seccompProfile() *specs.LinuxSeccomp {
	denied := []string{
		"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
		"delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
		"get_kernel_syms", "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load",
		"kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
		"name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
		"perf_event_open", "pivot_root", "query_module", "quotactl", "reboot", "request_key", "setns",
		"settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl", "umount",
		"umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
	}
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32, specs.ArchAARCH64},
		Syscalls: []specs.LinuxSyscall{{
			Names:    denied,
			Action:   specs.ActErrno,
			ErrnoRet: ptr(uint(1)), // EPERM
		}},
	}
}

func ptr[T any](v T) *T { return &v }

// nofile is the open-files limit for sandboxes: nofileLimit, or less where
// warren's own hard limit is lower (the runtime may not raise it once it
// has dropped capabilities).
func nofile() uint64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Max < nofileLimit {
		return lim.Max
	}
	return nofileLimit
}
