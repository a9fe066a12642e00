//! The coordinator processes a federation benchmark runs against: started on a fresh database (an SQLite file in a
//! temporary folder, or a fresh schema on a loopback Postgres) and free loopback ports, measured from `/proc`, and
//! cleaned up however the benchmark ends (processes stopped, schema dropped, folder removed).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Where the coordinators keep their state.
#[derive(Debug, Clone)]
pub enum Database {
    /// An SQLite file (created by the first coordinator).
    Sqlite { path: PathBuf },
    /// A schema of its own on a Postgres server on this machine, dropped at the end.
    Postgres { url: String, schema: String },
}

impl Database {
    /// A fresh database: an SQLite file in `dir`, or a new schema on the Postgres server at `postgres_url`, which
    /// must be on this machine (the benchmark stays on loopback).
    pub fn fresh(postgres_url: Option<&str>, dir: &Path) -> Result<Self> {
        let Some(url) = postgres_url else {
            return Ok(Self::Sqlite {
                path: dir.join("coordinator.db"),
            });
        };
        ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--database-url must be a postgres:// URL (SQLite is the default)"
        );
        ensure!(
            is_loopback_url(url),
            "--database-url must name a Postgres server on this machine (localhost, 127.0.0.1 or ::1)"
        );
        let suffix: [u8; 4] = rand::random();
        let schema = format!(
            "confide_bench_{}_{}",
            std::process::id(),
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(Self::Postgres {
            url: url.to_string(),
            schema,
        })
    }

    /// `--database-url` (and `--database-schema`) arguments for `confide-coordinator`.
    fn args(&self) -> Vec<String> {
        match self {
            Self::Sqlite { path } => vec![
                "--database-url".into(),
                format!("sqlite:{}", path.display()),
            ],
            Self::Postgres { url, schema } => vec![
                "--database-url".into(),
                url.clone(),
                "--database-schema".into(),
                schema.clone(),
            ],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }

    /// Bytes of the SQLite file and its write-ahead log (None on Postgres: the coordinator reports that size).
    pub fn sqlite_bytes(&self) -> Option<u64> {
        let Self::Sqlite { path } = self else {
            return None;
        };
        let size = |suffix: &str| {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        };
        Some(size("") + size("-wal"))
    }
}

/// Whether a postgres:// URL's host is this machine (a Unix socket path counts).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    matches!(host, "" | "localhost" | "127.0.0.1" | "::1")
        || host.starts_with("127.")
        || host.starts_with('/')
}

/// One `confide-coordinator serve` process.
pub struct Process {
    child: Child,
    pub url: String,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resource use now, from `/proc`.
    pub fn sample(&self) -> Option<ProcSample> {
        ProcSample::read(self.pid())
    }

    /// Resets the kernel's peak-RSS counter (`VmHWM`) so that the next read is the peak since now.
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// SIGTERM, up to 10 s for a graceful exit, then SIGKILL.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        super::super::demo::terminate(&self.child);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time and memory of a process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// User + system CPU seconds of all its threads so far (exited ones included).
    pub cpu_seconds: f64,
    /// Resident set size now.
    pub rss_bytes: u64,
    /// Peak resident set size since start or the last [`Process::reset_peak_rss`].
    pub peak_rss_bytes: u64,
}

impl ProcSample {
    fn read(pid: u32) -> Option<Self> {
        let at = Instant::now();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start at field 3; utime and stime are 14 and 15.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100)
            .max(1) as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v * 1024)
        };
        Some(Self {
            at,
            cpu_seconds: ticks as f64 / hz,
            rss_bytes: kb("VmRSS:")?,
            peak_rss_bytes: kb("VmHWM:")?,
        })
    }
}

/// Samples the coordinators' CPU and RSS every 10 ms on a thread of its own, for per-stage figures.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Vec<ProcSample>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pids: Vec<u32>) -> Self {
        let samples = Arc::new(Mutex::new(vec![Vec::new(); pids.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let now: Vec<Option<ProcSample>> =
                    pids.iter().map(|p| ProcSample::read(*p)).collect();
                if let Ok(mut all) = s.lock() {
                    for (series, sample) in all.iter_mut().zip(now) {
                        series.extend(sample);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Takes the samples gathered so far (one series per process) and starts new series.
    pub fn take(&self) -> Vec<Vec<ProcSample>> {
        match self.samples.lock() {
            Ok(mut all) => all.iter_mut().map(std::mem::take).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The coordinators of one benchmark run and everything they need; cleaned up on drop.
pub struct Coordinators {
    pub processes: Vec<Process>,
    pub database: Database,
    pub operator_token: String,
    binary: PathBuf,
    /// Removed after the processes stopped (fields drop after `Drop::drop`); None when kept.
    _dir: Option<tempfile::TempDir>,
}

impl Coordinators {
    /// Starts `count` coordinator processes of `binary` on `database`, each on a free loopback port, logging to
    /// files in `dir` (kept when `keep`), and creates an operator token.
    pub fn start(
        binary: &Path,
        database: Database,
        count: usize,
        dir: tempfile::TempDir,
        keep: bool,
    ) -> Result<Self> {
        let path = dir.path().to_path_buf();
        let dir = if keep {
            eprintln!("logs and database kept in {}", dir.keep().display());
            None
        } else {
            Some(dir)
        };
        let mut this = Self {
            processes: Vec::new(),
            database,
            operator_token: String::new(),
            binary: binary.to_path_buf(),
            _dir: dir,
        };
        this.start_all(count, &path)?;
        Ok(this)
    }

    fn start_all(&mut self, count: usize, dir: &Path) -> Result<()> {
        let out = Command::new(&self.binary)
            .args(self.database.args())
            .args(["token", "create", "--name", "bench-operator"])
            .stdin(Stdio::null())
            .output()
            .context("running confide-coordinator token create")?;
        ensure!(
            out.status.success(),
            "creating the operator token: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.operator_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        for i in 0..count {
            let log = std::fs::File::create(dir.join(format!("coordinator-{i}.log")))?;
            let mut child = Command::new(&self.binary)
                .args(self.database.args())
                .args(["serve", "--listen", "127.0.0.1:0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .context("starting confide-coordinator")?;
            let stdout = child.stdout.take().context("coordinator stdout")?;
            // Registered first, so that it is stopped even if its address never comes.
            self.processes.push(Process {
                child,
                url: String::new(),
            });
            let url = read_listen_url(stdout)?;
            if let Some(p) = self.processes.last_mut() {
                p.url = url;
            }
        }
        Ok(())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(Process::pid).collect()
    }
}

/// Reads `listening on http://ADDR` from a starting coordinator (within 60 s: migrations may take a while).
fn read_listen_url(stdout: std::process::ChildStdout) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(read.map(|_| line));
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the coordinator did not say where it listens within 60 s")??;
    match line.trim().strip_prefix("listening on ") {
        Some(url) => Ok(url.to_string()),
        None => bail!("the coordinator did not start (first line {line:?}; see its log)"),
    }
}

impl Drop for Coordinators {
    fn drop(&mut self) {
        for p in &mut self.processes {
            p.stop();
        }
        if let Database::Postgres { .. } = &self.database {
            let dropped = Command::new(&self.binary)
                .args(self.database.args())
                .arg("drop-schema")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output();
            match dropped {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "warning: could not drop the benchmark's Postgres schema: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("warning: could not drop the benchmark's Postgres schema: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_on_this_machine_is_accepted() {
        for (url, ok) in [
            ("postgres://postgres@127.0.0.1:5432/test", true),
            ("postgres://u:p@localhost/test", true),
            ("postgresql://[::1]:5432/db", true),
            ("postgres:///db?host=/var/run/postgresql", true),
            ("postgres://postgres@db.example.org:5432/test", false),
            ("postgres://10.0.0.5/test", false),
        ] {
            assert_eq!(is_loopback_url(url), ok, "{url}");
        }
    }
}
