//! Real `confide-coordinator` processes (for crash, shutdown and two-process tests) and the `token create` command.

/// A real `confide-coordinator serve` process (for crash and multi-process tests).
pub struct CoordinatorProcess {
    pub child: std::process::Child,
    pub base_url: String,
    pub log: std::path::PathBuf,
}

impl CoordinatorProcess {
    /// Starts `serve` on a free loopback port against `url` (and `schema`), logging to `log`.
    pub fn start(url: &str, schema: Option<&str>, log: std::path::PathBuf) -> Self {
        Self::start_with(url, schema, log, &[])
    }

    /// Like [`CoordinatorProcess::start`], with more arguments (e.g. `--log-json`).
    pub fn start_with(
        url: &str,
        schema: Option<&str>,
        log: std::path::PathBuf,
        extra: &[&str],
    ) -> Self {
        use std::io::BufRead;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_confide-coordinator"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr);
        if let Some(s) = schema {
            cmd.args(["--database-schema", s]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().expect("spawn coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let base_url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self {
            child,
            base_url,
            log,
        }
    }

    /// A client of this process (no credentials; give it some with `with_token`).
    pub fn client(&self) -> confide_coordinator::client::CoordinatorClient {
        confide_coordinator::client::CoordinatorClient::new(&self.base_url, "")
    }

    /// SIGKILL: no graceful shutdown, no lease release.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `limit` for the process to exit; its exit status, or None if it did not exit.
    pub async fn terminate_within(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `confide-coordinator token create` against a database and returns the token.
pub fn create_operator_token(url: &str, schema: Option<&str>, name: &str) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_confide-coordinator"));
    cmd.args(["token", "create", "--name", name, "--database-url", url]);
    if let Some(s) = schema {
        cmd.args(["--database-schema", s]);
    }
    let out = cmd.output().expect("run token create");
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}
