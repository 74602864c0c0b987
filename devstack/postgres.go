package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is returned (wrapped) when no PostgreSQL server binaries are
// installed; tests may skip on it.
var ErrNoPostgres = errors.New("devstack: no PostgreSQL binaries found (looked for /usr/lib/postgresql/*/bin/postgres and initdb)")

// postgresBinGlob is where Debian and Ubuntu install the server binaries.
const postgresBinGlob = "/usr/lib/postgresql/*/bin"

// PostgresBinDir returns the folder of the newest installed PostgreSQL
// server binaries (initdb and postgres), from /usr/lib/postgresql/*/bin, or
// an error wrapping ErrNoPostgres.
func PostgresBinDir() (string, error) {
	dirs, _ := filepath.Glob(postgresBinGlob)
	var found []string
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "postgres")) && isExecutable(filepath.Join(d, "initdb")) {
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return "", ErrNoPostgres
	}
	// The version is the folder above bin: "15", "16", or "9.6" on old ones.
	slices.SortFunc(found, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
	})
	return found[len(found)-1], nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// compareVersions compares dotted numeric versions ("9.6" < "15").
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return strings.Compare(a, b)
}

// Postgres is a private PostgreSQL server: its own data folder and port on
// 127.0.0.1, trust auth, for tests that stop and start a database. It never
// touches the machine's shared cluster. The server runs as a direct child
// (in its own process group, killed if this process dies), as the postgres
// OS user when this process is root (initdb and postgres refuse root).
type Postgres struct {
	Port    int
	URL     string // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
	Dir     string // the folder given to StartPostgres: pgdata/, pgsock/ and the logs
	LogPath string // the server's log (appended to across restarts)

	bin     string
	dataDir string
	sockDir string
	cred    *syscall.Credential // nil unless run as root

	mu   sync.Mutex
	proc *Process // nil while stopped
}

// StartPostgres starts a private server on 127.0.0.1:port with its data in
// dir/pgdata (created with initdb -A trust -U postgres when it has no
// cluster yet, reused otherwise) and its unix socket in dir/pgsock, and waits
// until it accepts connections. Durability is traded for speed (fsync off):
// a clean Stop keeps the data, a crash of the machine may not.
//
// When this process runs as root the server runs as the postgres OS user,
// so dir and every folder above it must let that user in (o+x); t.TempDir()
// makes 0700 folders, so a test chmods it and its parent first.
func StartPostgres(ctx context.Context, dir string, port int) (*Postgres, error) {
	binDir, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		Port:    port,
		URL:     fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		Dir:     dir,
		LogPath: filepath.Join(dir, "postgres.log"),
		bin:     binDir,
		dataDir: filepath.Join(dir, "pgdata"),
		sockDir: filepath.Join(dir, "pgsock"),
	}
	if os.Geteuid() == 0 {
		if p.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
		if err := checkTraversable(dir, p.cred); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{p.dataDir, p.sockDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, err
		}
		if p.cred != nil {
			if err := os.Chown(d, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := p.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// postgresCredential is the postgres OS user's uid and gid.
func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("devstack: running as root, PostgreSQL must run as the postgres user: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("devstack: postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// checkTraversable fails with a clear message when the postgres user cannot
// reach dir (a folder on the way is closed to it).
func checkTraversable(dir string, cred *syscall.Credential) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		if ok {
			switch {
			case st.Uid == cred.Uid && mode&0o100 != 0,
				st.Uid != cred.Uid && st.Gid == cred.Gid && mode&0o010 != 0,
				st.Uid != cred.Uid && st.Gid != cred.Gid && mode&0o001 != 0:
			default:
				return fmt.Errorf("devstack: the postgres user (uid %d) cannot enter %s (mode %v, owner %d:%d); chmod o+x it (and the folders above)",
					cred.Uid, d, mode, st.Uid, st.Gid)
			}
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// initdb creates the cluster: trust auth, superuser postgres, C locale.
func (p *Postgres) initdb(ctx context.Context) error {
	logPath := filepath.Join(p.Dir, "initdb.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, "initdb"),
		"-D", p.dataDir, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Dir = p.dataDir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	if err := cmd.Run(); err != nil {
		tail, _ := os.ReadFile(logPath)
		return fmt.Errorf("devstack: initdb %s: %v; the end of %s:\n%s", p.dataDir, err, logPath, lastLines(tail))
	}
	return nil
}

// Start starts the server again on the same data and port and waits until
// it accepts connections. It fails if the server is running.
func (p *Postgres) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil {
		select {
		case <-p.proc.Exited():
		default:
			return fmt.Errorf("devstack: postgres on port %d is already running", p.Port)
		}
	}
	proc, err := p.startServer()
	if err != nil {
		return err
	}
	err = waitFor(ctx, proc, p.LogPath, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.URL)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		return conn.Ping(ctx)
	})
	if err != nil {
		proc.Kill() // waitFor stopped it or it exited; make sure nothing is left
		return err
	}
	p.proc = proc
	return nil
}

// startServer runs postgres itself (not pg_ctl), so the server is this
// process's child: in its own process group, killed with this process
// (Pdeathsig, which Go sets after switching to the postgres user).
func (p *Postgres) startServer() (*Process, error) {
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"),
		"-D", p.dataDir,
		"-p", strconv.Itoa(p.Port),
		"-k", p.sockDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
	)
	cmd.Dir = p.dataDir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("devstack: start postgres: %w", err)
	}
	proc := &Process{Name: "postgres", cmd: cmd, done: make(chan struct{})}
	go func() {
		proc.err = cmd.Wait()
		logf.Close()
		close(proc.done)
	}()
	return proc, nil
}

// Stop stops the server with a fast shutdown (SIGINT: open sessions are
// ended, the data is kept), kills it if it is not gone in 30 seconds, and
// waits until its port is closed. Stopping a stopped server does nothing. It
// reports an error if the server had died by itself before Stop, or did not
// shut down cleanly.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	proc := p.proc
	if proc == nil {
		return nil
	}
	p.proc = nil
	var errs []error
	select {
	case <-proc.Exited():
		errs = append(errs, fmt.Errorf("devstack: postgres had exited before Stop (%v)", proc.err))
	default:
		syscall.Kill(proc.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-proc.Exited():
			if proc.err != nil {
				errs = append(errs, fmt.Errorf("devstack: postgres fast shutdown: %v", proc.err))
			}
		case <-time.After(30 * time.Second):
			proc.Kill()
			errs = append(errs, errors.New("devstack: postgres did not shut down in 30s; killed"))
		}
	}
	// The postmaster is gone; its listening socket closes with it. Check.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("devstack: %s still accepts connections after postgres stopped", addr))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(errs) > 0 {
		tail, _ := os.ReadFile(p.LogPath)
		errs = append(errs, fmt.Errorf("the end of %s:\n%s", p.LogPath, lastLines(tail)))
	}
	return errors.Join(errs...)
}

// CreateDatabase creates a database on the server and returns its URL.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", errors.New("devstack: CreateDatabase: empty name")
	}
	conn, err := pgx.Connect(ctx, p.URL)
	if err != nil {
		return "", fmt.Errorf("devstack: connect to postgres: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("devstack: create database %s: %w", name, err)
	}
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)),
		Path: "/" + name, RawQuery: "sslmode=disable"}
	return u.String(), nil
}
