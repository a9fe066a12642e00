//! `confide bench transport`: the cost of TLS on the coordinator's API. Two real `confide-coordinator` processes on
//! loopback, one plain HTTP and one HTTPS (rustls, the certificate of a throw-away CA), each receiving the same
//! uploads of `--bytes` (default 4 MB) as operator requests, alternated one at a time so that both see the same
//! machine load. Each upload is a JSON body `{"x": "aaa…"}` to `POST /v1/studies`: the coordinator authenticates the
//! operator, reads the whole body and refuses the unknown field (400), so the time is the upload, not the study.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use confide_client::TlsOptions;
use serde::Serialize;

use super::demo::processes::{Children, Tools, default_bin_dir, find_binary, start_coordinator};

#[derive(clap::Args)]
pub struct TransportArgs {
    /// Bytes per upload.
    #[arg(long, default_value_t = 4_000_000)]
    bytes: usize,
    /// Timed uploads per protocol (after 2 untimed ones each).
    #[arg(long, default_value_t = 20)]
    uploads: usize,
    /// Folder with `confide-coordinator` (default: beside this executable).
    #[arg(long, env = "CONFIDE_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
pub struct TransportReport {
    bytes: usize,
    uploads: usize,
    http_median_seconds: f64,
    https_median_seconds: f64,
    http_mb_per_second: f64,
    https_mb_per_second: f64,
    /// HTTPS median ÷ HTTP median.
    https_over_http: f64,
    /// First request on a fresh HTTPS connection (TCP + TLS handshake + a `/healthz`).
    https_first_request_seconds: f64,
    http_first_request_seconds: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Target {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Target {
    /// Times one upload of `body` (copied before the clock starts).
    async fn upload(&self, body: Vec<u8>) -> anyhow::Result<f64> {
        let request = self
            .http
            .post(format!("{}/v1/studies", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body);
        let t = Instant::now();
        let resp = request.send().await?;
        let status = resp.status();
        let _ = resp.bytes().await?;
        let secs = t.elapsed().as_secs_f64();
        ensure!(
            status.as_u16() == 400 || status.as_u16() == 422,
            "upload answered {status}, expected the refusal of the unknown field"
        );
        Ok(secs)
    }

    async fn first_request(&self, tls: &TlsOptions) -> anyhow::Result<f64> {
        let fresh = confide_client::transport::http_client(tls, Duration::from_secs(10))?;
        let t = Instant::now();
        fresh
            .get(format!("{}/healthz", self.url))
            .send()
            .await?
            .error_for_status()?;
        Ok(t.elapsed().as_secs_f64())
    }
}

pub fn run(args: TransportArgs) -> anyhow::Result<TransportReport> {
    let runtime = confide_runtime::tokio_runtime().context("starting the async runtime")?;
    runtime.block_on(bench(args))
}

async fn bench(args: TransportArgs) -> anyhow::Result<TransportReport> {
    ensure!(
        args.bytes >= 16 && args.uploads >= 1,
        "--bytes ≥ 16 and --uploads ≥ 1"
    );
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => default_bin_dir()?,
    };
    let tools = Tools {
        coordinator: find_binary(&bin_dir, "confide-coordinator")?,
        participant: PathBuf::new(),
    };
    let work = tempfile::Builder::new()
        .prefix("confide-bench-transport-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut children = Children::new();
    let mut targets = Vec::new();
    let mut firsts = Vec::new();
    for tls in [false, true] {
        let dir = work.path().join(if tls { "https" } else { "http" });
        std::fs::create_dir_all(&dir)?;
        let (url, token, options) = start_coordinator(&tools, &dir, &mut children, tls)?;
        let options = if tls { options } else { TlsOptions::default() };
        let http = confide_client::transport::http_client(&options, Duration::from_secs(10))?;
        let target = Target { http, url, token };
        firsts.push(target.first_request(&options).await?);
        targets.push(target);
    }
    let mut text = Vec::with_capacity(args.bytes);
    text.extend_from_slice(b"{\"x\":\"");
    text.resize(args.bytes - 2, b'a');
    text.extend_from_slice(b"\"}");
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..args.uploads + 2 {
        for (k, target) in targets.iter().enumerate() {
            let secs = target.upload(text.clone()).await?;
            if i >= 2 {
                times[k].push(secs);
            }
        }
    }
    children.stop_all();
    let [http, https] = times.map(median);
    let mb = args.bytes as f64 / 1e6;
    Ok(TransportReport {
        bytes: args.bytes,
        uploads: args.uploads,
        http_median_seconds: http,
        https_median_seconds: https,
        http_mb_per_second: mb / http,
        https_mb_per_second: mb / https,
        https_over_http: https / http,
        http_first_request_seconds: firsts[0],
        https_first_request_seconds: firsts[1],
    })
}

/// Prints the report (pretty or one JSON line).
pub fn print(report: &TransportReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(())
}

/// Whether `--json` was asked for.
pub fn wants_json(args: &TransportArgs) -> bool {
    args.json
}
