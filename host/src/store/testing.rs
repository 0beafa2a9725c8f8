//! Throw-away PostgreSQL servers for tests of the PostgreSQL task store
//! (the unit tests here and the integration tests in `tests/`).
//!
//! A [`PgServer`] is one `postgres` of the installed PostgreSQL (found
//! through `SKILLBOX_PG_BINDIR`, `/usr/lib/postgresql/*/bin` or
//! `pg_config --bindir`), with its data directory, log and unix socket in a
//! fresh directory under the temp dir, listening on a free loopback port,
//! with `fsync` off (`SKILLBOX_TEST_PG_OPTIONS` adds settings, as
//! `postgres` takes them: `-c name=value …`, e.g. for a benchmark to try
//! one). PostgreSQL refuses to run as root: as root, the
//! directory is given to user `postgres` and the server's commands run
//! through `runuser -u postgres`. Each test takes a database of its own
//! ([`PgServer::create_database`]), so tests sharing a server stay
//! independent.
//!
//! Nothing outlives the test process: dropping the server stops it
//! (`pg_ctl stop -m immediate`) and deletes its directory; the
//! [`shared`] server is stopped by an `atexit` hook; and a watchdog shell
//! started with each server does the same if the test process is killed.
//!
//! No PostgreSQL installed: with `CI=true` the tests fail, saying so;
//! otherwise they are skipped with a message on stderr.
//!
//! An integration test in `tests/` uses it the same way:
//!
//! ```no_run
//! use skillbox::store::{PgStore, testing};
//!
//! let Some(server) = testing::shared("my test") else { return };
//! let store = PgStore::connect(&server.create_database().unwrap()).unwrap();
//! ```
//!
//! (`testing::server_or_skip` gives a server of its own, for tests that
//! restart or stop it.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running throw-away PostgreSQL server; stopped and deleted on drop.
pub struct PgServer {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// Run the server's commands as user `postgres` (we are root).
    as_postgres: bool,
    /// Preload `pg_stat_statements` (see [`PgServer::statements`]).
    count_statements: bool,
    watchdog: Mutex<Option<Child>>,
}

/// The directory of the installed PostgreSQL's programs.
pub fn bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SKILLBOX_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if dir.join("postgres").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "SKILLBOX_PG_BINDIR={} has no `postgres`",
                dir.display()
            ))
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|_| "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin, no pg_config)")?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && bin.join("postgres").is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "pg_config --bindir gave {}, which has no `postgres` server",
            bin.display()
        ))
    }
}

/// A fresh server for `test`; `None` (after saying why on stderr) when
/// PostgreSQL is not installed, unless `CI=true`, where that fails the
/// test. A server that is installed but does not start always fails it.
pub fn server_or_skip(test: &str) -> Option<PgServer> {
    let bin = skip_unless_installed(test)?;
    Some(PgServer::start_with(bin, false).unwrap_or_else(|e| panic!("{test}: {e}")))
}

/// The server all tests of this process share (started on first use,
/// stopped at exit); `None` as in [`server_or_skip`]. Tests that stop or
/// restart their server must take their own.
pub fn shared(test: &str) -> Option<&'static PgServer> {
    static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();
    extern "C" fn stop_shared() {
        if let Some(Ok(s)) = SHARED.get() {
            s.shutdown();
        }
    }
    let bin = skip_unless_installed(test)?;
    let server = SHARED.get_or_init(|| {
        let server = PgServer::start_with(bin, false)?;
        // SAFETY: registers a plain function; it runs once, at exit.
        unsafe { libc::atexit(stop_shared) };
        Ok(server)
    });
    match server {
        Ok(s) => Some(s),
        Err(e) => panic!("{test}: {e}"),
    }
}

fn skip_unless_installed(test: &str) -> Option<PathBuf> {
    match bindir() {
        Ok(bin) => Some(bin),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: PostgreSQL is required when CI=true: {why}")
        }
        Err(why) => {
            // Past the test harness's capture of `eprintln!`: a skip is
            // shown even when the test "passes".
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {why}; install postgresql (or set SKILLBOX_PG_BINDIR) to run it"
            );
            None
        }
    }
}

impl PgServer {
    /// Starts a server of the installed PostgreSQL.
    pub fn start() -> Result<PgServer, String> {
        PgServer::start_with(bindir()?, false)
    }

    /// [`start`](Self::start)s a server that counts the statements it runs
    /// ([`statements`](Self::statements)); it needs the server's contrib
    /// module `pg_stat_statements`, and counting costs the server CPU time,
    /// so measure time without it.
    pub fn start_counting_statements() -> Result<PgServer, String> {
        PgServer::start_with(bindir()?, true)
    }

    fn start_with(bindir: PathBuf, count_statements: bool) -> Result<PgServer, String> {
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = std::env::temp_dir().join(format!(
            "sbx-pg-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut server = PgServer {
            dir,
            bindir,
            port: 0,
            as_postgres,
            count_statements,
            watchdog: Mutex::new(None),
        };
        if as_postgres {
            // Root's files are out of the server's reach: the directory is
            // postgres's own.
            run(Command::new("chown").arg("postgres:").arg(&server.dir))?;
        }
        server.watch();
        let data = server.data();
        run(server
            .server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]))?;
        // A free port may be taken between our probe and the server's bind.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The URL of database `db` (connect as superuser `postgres`).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// [`url`](Self::url)'s database reached through the server's Unix
    /// socket instead of loopback TCP (a client on the database's host).
    pub fn socket_url(&self, url: &str) -> String {
        let db = url.rsplit('/').next().unwrap_or_default();
        format!(
            "postgres://postgres@/{db}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// The server's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's data, log and socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates an empty database with a fresh name; returns its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let name = format!("t_{:016x}", fastrand::u64(..));
        run(Command::new(self.bindir.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` with `psql` as the superuser on the database of `url`
    /// (one [`create_database`](Self::create_database) gave); its output.
    pub fn sql(&self, url: &str, sql: &str) -> Result<String, String> {
        let db = url.rsplit('/').next().unwrap_or_default();
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-d", db, "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// How many statements the server has run on the database of `url`
    /// since the last call (for benchmarks); `None` unless the server was
    /// [started counting](Self::start_counting_statements) them.
    pub fn statements(&self, url: &str) -> Option<u64> {
        self.statements_with(url, false).map(|(n, _)| n)
    }

    /// As [`PgServer::statements`], with a table of the statements run
    /// most often when `table`: calls, plans (counted when the server runs
    /// with `pg_stat_statements.track_planning=on`), mean execution time
    /// in µs and the statement's start, `|`-separated.
    pub fn statements_with(&self, url: &str, table: bool) -> Option<(u64, String)> {
        self.sql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .ok()?;
        let n = self
            .sql(
                url,
                "SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .ok()?;
        let top = if table {
            self.sql(
                url,
                "SELECT calls, plans, round(total_exec_time::numeric * 1000 / greatest(calls, 1)),
                        regexp_replace(left(query, 100), '\\s+', ' ', 'g')
                 FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 ORDER BY calls DESC LIMIT 20",
            )
            .ok()?
        } else {
            String::new()
        };
        self.sql(url, "SELECT pg_stat_statements_reset()").ok()?;
        Some((n.trim().parse().ok()?, top))
    }

    /// Restarts the server (`pg_ctl restart -m fast`: every connection is
    /// closed), on the same port and data.
    pub fn restart(&self) -> Result<(), String> {
        run(self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "30", "restart"])
            .arg("-l")
            .arg(self.dir.join("postgres.log")))
    }

    /// Turns TLS on with the certificate and key (PEM) given, and makes
    /// TCP connections without TLS refused (`hostssl` only in
    /// `pg_hba.conf`); then restarts the server.
    pub fn require_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let write = |name: &str, text: &str, mode: u32| -> Result<PathBuf, String> {
            let path = self.dir.join(name);
            let err = |e: std::io::Error| format!("{}: {e}", path.display());
            std::fs::write(&path, text).map_err(err)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
            if self.as_postgres {
                run(Command::new("chown").arg("postgres:").arg(&path))?;
            }
            Ok(path)
        };
        let cert = write("server.crt", cert_pem, 0o644)?;
        // PostgreSQL refuses a key others may read.
        let key = write("server.key", key_pem, 0o600)?;
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
        text.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        ));
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let hba = self.data().join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        let only_tls: Vec<String> = text
            .lines()
            .map(|l| match l.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}"),
                None => l.to_string(),
            })
            .collect();
        std::fs::write(&hba, only_tls.join("\n") + "\n").map_err(|e| e.to_string())?;
        self.restart()
    }

    /// Stops the server (fast) without deleting anything.
    pub fn stop(&self) -> Result<(), String> {
        run(self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "30", "stop"]))
    }

    /// Starts a server [`stop`](Self::stop)ped before, on the same port.
    pub fn resume(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn postmaster(&self) -> Result<i32, String> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .ok_or_else(|| "the server is not running (no postmaster.pid)".to_string())
    }

    /// The CPU time the server has used, in seconds: the postmaster, its
    /// live backends and those that ended (for benchmarks: the difference
    /// between two readings is what the server spent in between).
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        let pm = self.postmaster()?;
        // utime, stime, cutime, cstime: fields 14-17, in clock ticks.
        let ticks = |pid: i32, fields: usize| -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(") ")?.1.split(' ').collect::<Vec<_>>();
                    Some(
                        rest[11..11 + fields]
                            .iter()
                            .filter_map(|f| f.parse::<u64>().ok())
                            .sum(),
                    )
                })
                .unwrap_or(0)
        };
        let total = ticks(pm, 4)
            + children_of(pm)
                .into_iter()
                .map(|c| ticks(c, 2))
                .sum::<u64>();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(total as f64 / hz)
    }

    /// Runs the server (and the backends it starts from now on) on the
    /// CPUs `cpus` (as `taskset -c` takes them, e.g. `"1"`).
    pub fn pin(&self, cpus: &str) -> Result<(), String> {
        let pm = self.postmaster()?;
        for pid in std::iter::once(pm).chain(children_of(pm)) {
            run(Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid.to_string()]))?;
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        if self.count_statements {
            options.push_str(" -c shared_preload_libraries=pg_stat_statements");
        }
        if let Ok(more) = std::env::var("SKILLBOX_TEST_PG_OPTIONS") {
            options.push(' ');
            options.push_str(&more);
        }
        run(self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"]))
        .map_err(|e| format!("{e}\n--- postgres.log ---\n{}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `program` of the server's bindir, as user `postgres` when we are root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // Our working directory may be out of user postgres's reach.
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Starts the watchdog: a shell, in a process group of its own (a
    /// Ctrl-C of the tests does not reach it), that stops the server and
    /// deletes its directory once this process is gone.
    fn watch(&self) {
        let pg_ctl = self.bindir.join("pg_ctl");
        let stop = if self.as_postgres {
            "runuser -u postgres -- \"$3\" -D \"$2/data\" -m immediate stop"
        } else {
            "\"$3\" -D \"$2/data\" -m immediate stop"
        };
        let script =
            format!("while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; {stop}; rm -rf \"$2\"");
        use std::os::unix::process::CommandExt;
        let child = Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(pg_ctl)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        if let Ok(child) = child {
            *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        }
    }

    /// Stops the server at once, makes sure its postmaster is gone, deletes
    /// its directory and ends the watchdog. Safe to repeat.
    fn shutdown(&self) {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // The postmaster and its backends: `pg_ctl stop` returns when
            // the postmaster is gone, a moment before the last backend.
            let mut pids = children_of(pid);
            pids.push(pid);
            let _ = run(self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "-t", "10", "stop"]));
            let alive = |p: &i32| Path::new(&format!("/proc/{p}")).exists();
            let deadline = Instant::now() + Duration::from_secs(5);
            while pids.iter().any(alive) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            for p in pids.iter().filter(|p| alive(p)) {
                // SAFETY: signals a process of the server we started (its
                // pid file names the postmaster; the rest are its children),
                // only if it survived `pg_ctl stop`.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut child) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            // SAFETY: signals the watchdog's own process group (its shell
            // and its `sleep`), which we started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The pids whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            let child: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Field 4, after the parenthesised command name, is the parent.
            let ppid: i32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Runs `cmd`; its output is the error when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} {:?} failed ({}): {}{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
