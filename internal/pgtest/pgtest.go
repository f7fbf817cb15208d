// Package pgtest runs a throw-away PostgreSQL server for tests: the real
// one from the host's postgresql package (initdb and pg_ctl), listening
// only on a Unix socket in a temporary directory, with fsync off. Root
// runs it as the postgres (or nobody) user, since PostgreSQL refuses root.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// Server is a running PostgreSQL.
type Server struct {
	dir  string
	bin  string
	cred *syscall.Credential
	n    atomic.Int64
}

// find returns the directory holding initdb and pg_ctl: PATH first, then
// Debian's versioned directories, newest first.
func find() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server found (initdb and pg_ctl): install Debian's postgresql package (make deps does)")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start starts a server; Stop ends it.
func Start() (*Server, error) {
	bin, err := find()
	if err != nil {
		return nil, err
	}
	// Short: the socket's path must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "wpg")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			u, err = user.Lookup("nobody")
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("find a user to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := s.run("initdb", "-D", s.data(), "-A", "trust", "-U", "warren", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	opts := fmt.Sprintf("-k %s -c listen_addresses='' -F -c max_connections=300", dir)
	if err := s.run("pg_ctl", "start", "-w", "-D", s.data(), "-l", filepath.Join(dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	return s, nil
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) run(tool string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, tool), args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, out)
	}
	return nil
}

// URL is the address of database db on the server.
func (s *Server) URL(db string) string {
	return "postgres://warren@/" + db + "?host=" + url.QueryEscape(s.dir) + "&sslmode=disable"
}

// Database creates a new, empty database and returns its URL.
func (s *Server) Database(ctx context.Context) (string, error) {
	name := fmt.Sprintf("t%d", s.n.Add(1))
	db, err := sql.Open("pgx", s.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.URL(name), nil
}

// Stop ends the server at once and removes its files.
func (s *Server) Stop() {
	_ = s.run("pg_ctl", "stop", "-m", "immediate", "-D", s.data())
	os.RemoveAll(s.dir)
}

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
)

// Database returns the URL of a new database on a server shared by the
// test binary (started on first use; StopShared ends it). A missing
// PostgreSQL fails the test: a skip would count as a pass.
func Database(tb testing.TB) string {
	tb.Helper()
	sharedOnce.Do(func() { shared, sharedErr = Start() })
	if sharedErr != nil {
		tb.Fatalf("start PostgreSQL: %v", sharedErr)
	}
	u, err := shared.Database(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// StopShared stops the shared server, if it started; call it from
// TestMain after the tests ran.
func StopShared() {
	if shared != nil {
		shared.Stop()
	}
}
