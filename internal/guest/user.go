package guest

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// account is who a command runs as.
type account struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

// lookupUser resolves a user as images name them (USER in a Dockerfile): a
// name from the sandbox's /etc/passwd, a uid, or either with ":group".
func lookupUser(spec string) (*account, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	a := &account{home: "/"}
	if uid, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		a.uid, a.gid = uint32(uid), uint32(uid)
		if e, ok := passwdEntry(func(f []string) bool { return f[2] == userPart }); ok {
			a.gid, a.home = parseID(e[3]), e[5]
		}
	} else {
		e, ok := passwdEntry(func(f []string) bool { return f[0] == userPart })
		if !ok {
			return nil, fmt.Errorf("%w: user %q is not in the sandbox's /etc/passwd", errBadRequest, userPart)
		}
		a.uid, a.gid, a.home = parseID(e[2]), parseID(e[3]), e[5]
	}
	if hasGroup {
		if gid, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			a.gid = uint32(gid)
		} else if g, ok := fileEntry("/etc/group", 3, func(f []string) bool { return f[0] == groupPart }); ok {
			a.gid = parseID(g[2])
		} else {
			return nil, fmt.Errorf("%w: group %q is not in the sandbox's /etc/group", errBadRequest, groupPart)
		}
	}
	a.groups = []uint32{a.gid}
	return a, nil
}

func parseID(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}

func passwdEntry(match func([]string) bool) ([]string, bool) {
	return fileEntry("/etc/passwd", 7, match)
}

// fileEntry finds a colon-separated line of at least n fields; at most a
// megabyte of the file is read.
func fileEntry(path string, n int, match func([]string) bool) ([]string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	sc := bufio.NewScanner(&limited{f, 1 << 20})
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= n && match(fields) {
			return fields, true
		}
	}
	return nil, false
}

type limited struct {
	f *os.File
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("file too long")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	k, err := l.f.Read(p)
	l.n -= int64(k)
	return k, err
}

// credential is the process credential for an account.
func (a *account) credential() *syscall.Credential {
	return &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
}
