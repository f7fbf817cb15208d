package oci

import (
	"fmt"
	"golang.org/x/sys/unix"
	"sort"

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
	// agentThreads is headroom for the agent's threads under runc,
	// where it shares the host cgroup with the workload.
	agentThreads = 64
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
			Resources:     resources(s.Resources, r.cfg.BootCPU),
			MaskedPaths:   []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	if s.AgentLibs != "" {
		// A dynamically linked agent runs with the host's loader and
		// libraries, never the sandbox's.
		spec.Process.Args = append([]string{guest.LoaderPath, "--library-path", guest.LibDir}, spec.Process.Args...)
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: guest.LibDir, Type: "bind", Source: s.AgentLibs, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
	}
	for _, m := range s.Mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		if m.Tmpfs {
			// Small, and never on the host's disk: it holds secrets.
			spec.Mounts = append(spec.Mounts, specs.Mount{Destination: m.Target, Type: "tmpfs", Source: "tmpfs",
				Options: []string{mode, "nosuid", "nodev", "noexec", "mode=0755", "size=1m"}})
			continue
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source, Options: []string{"rbind", mode, "nosuid", "nodev"}})
	}
	if s.Sysfs != "" {
		for i, m := range spec.Mounts {
			if m.Destination == "/sys" {
				spec.Mounts[i] = specs.Mount{Destination: "/sys", Type: "bind", Source: s.Sysfs, Options: []string{"rbind", "ro", "nosuid", "noexec", "nodev"}}
			}
		}
	}
	if u := s.UserNS; u != nil {
		// Root inside is an unprivileged uid of the host.
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: u.HostID, Size: u.Size}}
		spec.Linux.UIDMappings, spec.Linux.GIDMappings = m, m
	}
	if s.AgentToken != "" {
		spec.Process.Env = append(spec.Process.Env, guest.TokenEnv+"="+s.AgentToken)
	}
	// The agent enforces the memory limit where the sandbox's kernel has
	// no OOM killer for its workload, and reports the kernel's otherwise.
	mode := "kernel"
	if r.cfg.GuardMemory {
		mode = "enforce"
	}
	if s.Resources.MemoryMB > 0 {
		spec.Process.Env = append(spec.Process.Env, fmt.Sprintf("%s=%d", guest.MemoryLimitEnv, int64(s.Resources.MemoryMB)<<20), guest.OOMModeEnv+"="+mode)
	}
	if r.cfg.Seccomp {
		spec.Linux.Seccomp = seccompProfile()
	}
	for _, name := range sortedKeys(r.cfg.ProcFiles) {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/proc/" + name, Type: "bind", Source: r.cfg.ProcFiles[name], Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}})
	}
	if r.cfg.CgroupInside {
		// The sandbox sees its own cgroup (read-only, in a cgroup
		// namespace of its own): its limits, for runtimes that size
		// themselves, and its OOM kill count, for the agent.
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}})
	}
	// The agent is PID 1 and a Go program: when it cannot make a thread
	// it dies, and the sandbox with it. So the workload's limit is one
	// the agent sets on every process it starts (RLIMIT_NPROC, which
	// their children inherit), while the agent stays unlimited and the
	// host cgroup keeps a backstop with headroom for the agent's
	// threads (and, under gVisor, the sentry's).
	// Under runc, RLIMIT_NPROC binds root only inside a user namespace
	// (the host's root is exempt); without one the cgroup limit is all
	// there is.
	switch {
	case r.cfg.PIDsInSandbox:
		nprocLimit(spec, sentryThreads)
	case s.UserNS != nil:
		nprocLimit(spec, agentThreads)
		// Set before each command runs, not just after it started:
		// see guest.NprocExecEnv.
		spec.Process.Env = append(spec.Process.Env, guest.NprocExecEnv+"=1")
	}
	return spec
}

// nprocLimit moves the spec's process limit from the host cgroup to the
// agent, leaving the cgroup that much headroom.
func nprocLimit(spec *specs.Spec, headroom int64) {
	limit := *spec.Linux.Resources.Pids.Limit
	spec.Process.Env = append(spec.Process.Env, fmt.Sprintf("%s=%d", guest.NprocEnv, limit))
	backstop := limit + headroom
	spec.Linux.Resources.Pids.Limit = &backstop
}

// resources are the cgroup limits of the spec; the CPU quota is at least
// bootCPU (see Config.BootCPU).
func resources(res runtime.Resources, bootCPU float64) *specs.LinuxResources {
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
		quota := int64(max(res.CPU, bootCPU) * cpuPeriodUs)
		period := uint64(cpuPeriodUs)
		out.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	return out
}

// seccompProfile is an allow-list, as strict as Docker's default: the
// syscalls ordinary programs use, and nothing that only privileged ones
// need (mount, namespaces, modules, kexec, BPF, keyrings, perf,
// userfaultfd) or that widens the kernel's attack surface for little use
// (io_uring). clone may not create namespaces; clone3, whose flags sit
// where a filter cannot read them, answers ENOSYS so libc falls back to
// clone. Everything else answers EPERM.
func seccompProfile() *specs.LinuxSeccomp {
	allow := func(names ...string) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: names, Action: specs.ActAllow}
	}
	p := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: ptr(uint(unix.EPERM)),
		Architectures:   []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls:        []specs.LinuxSyscall{allow(allowedSyscalls...)},
	}
	// clone without any CLONE_NEW* flag (on x86 the flags are argument 0).
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
		Names: []string{"clone"}, Action: specs.ActAllow,
		Args: []specs.LinuxSeccompArg{{Index: 0, Value: namespaceFlags, ValueTwo: 0, Op: specs.OpMaskedEqual}},
	})
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: ptr(uint(unix.ENOSYS))})
	// personality: only the personas programs ask for (and the query).
	for _, persona := range []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff} {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{"personality"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: persona, Op: specs.OpEqualTo}},
		})
	}
	return p
}

// namespaceFlags are clone's CLONE_NEW* flags.
const namespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// allowedSyscalls are allowed without conditions.
var allowedSyscalls = []string{
	// Files and directories.
	"access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range", "creat",
	"dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
	"fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
	"fdatasync", "flock", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
	"ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "lchown", "lchown32", "link", "linkat",
	"_llseek", "lseek", "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open",
	"openat", "openat2", "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read",
	"readahead", "readlink", "readlinkat", "readv", "rename", "renameat", "renameat2", "rmdir", "sendfile",
	"sendfile64", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
	"sync_file_range", "syncfs", "tee", "truncate", "truncate64", "umask", "unlink", "unlinkat", "utime",
	"utimensat", "utimensat_time64", "utimes", "vmsplice", "write", "writev", "chroot", "cachestat",
	// Extended attributes.
	"fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "lgetxattr", "listxattr",
	"llistxattr", "lremovexattr", "lsetxattr", "removexattr", "setxattr",
	// Waiting for events.
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
	"epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "inotify_add_watch", "inotify_init",
	"inotify_init1", "inotify_rm_watch", "_newselect", "poll", "ppoll", "ppoll_time64", "pselect6",
	"pselect6_time64", "select", "signalfd", "signalfd4", "timerfd_create", "timerfd_gettime",
	"timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "fanotify_mark",
	// Asynchronous I/O (not io_uring).
	"io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit",
	// Memory.
	"brk", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mlock",
	"mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap",
	"pkey_alloc", "pkey_free", "pkey_mprotect", "remap_file_pages", "process_mrelease",
	// Processes, threads and signals.
	"arch_prctl", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "vfork",
	"get_robust_list", "set_robust_list", "get_thread_area", "set_thread_area", "set_tid_address", "getcpu",
	"getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
	"getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getresgid", "getresgid32", "getresuid",
	"getresuid32", "getrlimit", "getrusage", "getsid", "gettid", "getuid", "getuid32", "ioprio_get",
	"ioprio_set", "kill", "pause", "pidfd_getfd", "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64",
	"ptrace", "process_vm_readv", "process_vm_writev", "restart_syscall", "rseq", "rt_sigaction",
	"rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
	"rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
	"sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
	"sched_setscheduler", "sched_yield", "seccomp", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
	"setgid", "setgid32", "setgroups", "setgroups32", "setpgid", "setpriority", "setregid", "setregid32",
	"setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid",
	"setuid", "setuid32", "sigaltstack", "sigprocmask", "sigreturn", "tgkill", "tkill", "ugetrlimit",
	"wait4", "waitid", "waitpid", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
	// Futexes.
	"futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
	// Time.
	"alarm", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
	"clock_nanosleep_time64", "getitimer", "gettimeofday", "nanosleep", "setitimer", "time", "timer_create",
	"timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
	"timer_settime64", "times",
	// Sockets.
	"accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen", "recv",
	"recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg", "sendto",
	"setsockopt", "shutdown", "socket", "socketcall", "socketpair",
	// System V and POSIX IPC (in the sandbox's own IPC namespace).
	"ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
	"mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd", "semctl",
	"semget", "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
	// Devices and the rest.
	"ioctl", "getrandom", "pipe", "pipe2", "sysinfo", "uname",
}

func ptr[T any](v T) *T { return &v }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

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
