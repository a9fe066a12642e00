//! `confide model download`: a published model version (safetensors) to a file, its sha256 checked against the
//! coordinator's before the file appears (written beside it and renamed, so a failed download leaves nothing).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

use super::{OpsArgs, OpsError, OpsResult, connect, print_json, table, time};

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Download a model version of a study as safetensors.
    Download {
        /// The study's id.
        #[arg(long)]
        study: i64,
        /// The version: a number (0 is the initial model) or `latest`.
        #[arg(long, default_value = "latest")]
        version: String,
        /// Where to write it.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// List a study's model versions.
    List {
        /// The study's id.
        #[arg(long)]
        study: i64,
    },
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(subcommand)]
    pub cmd: ModelCommand,
}

pub async fn run(args: ModelArgs) -> OpsResult<()> {
    let ops = connect(&args.ops)?;
    match args.cmd {
        ModelCommand::List { study } => {
            let versions = ops
                .client
                .list_model_versions(study)
                .await
                .map_err(|e| ops.explain(e, &format!("study {study}")))?;
            if ops.json {
                return print_json(&versions);
            }
            let mut t = table(["VERSION", "ROUND", "BYTES", "SHA256", "CREATED"]);
            for v in &versions {
                t.add_row(vec![
                    v.version.to_string(),
                    v.round_id.map_or("-".into(), |r| r.to_string()),
                    v.size_bytes.to_string(),
                    v.sha256.clone(),
                    time(v.created_at_ms),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        ModelCommand::Download {
            study,
            version,
            output,
        } => {
            let versions = ops
                .client
                .list_model_versions(study)
                .await
                .map_err(|e| ops.explain(e, &format!("study {study}")))?;
            let wanted = match version.as_str() {
                "latest" => versions.iter().max_by_key(|v| v.version),
                v => {
                    let n: i64 = v.parse().map_err(|_| {
                        OpsError::Usage(format!(
                            "--version must be a number or `latest`, got {v:?}"
                        ))
                    })?;
                    versions.iter().find(|m| m.version == n)
                }
            }
            .ok_or_else(|| {
                OpsError::NotFound(format!(
                    "study {study} has no model version {version} (`confide model list --study {study}` shows them)"
                ))
            })?;
            let download = ops
                .client
                .download_model_version(study, wanted.version)
                .await
                .map_err(|e| {
                    ops.explain(
                        e,
                        &format!("model version {} of study {study}", wanted.version),
                    )
                })?;
            let digest = hex::encode(Sha256::digest(&download.bytes));
            if digest != wanted.sha256 || digest != download.sha256 {
                return Err(OpsError::Coordinator(format!(
                    "the downloaded model's sha256 {digest} differs from the coordinator's ({}); nothing written, try again",
                    wanted.sha256
                )));
            }
            let tmp = output.with_extension("download.tmp");
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&download.bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &output)
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                OpsError::local(format!("cannot write {}: {e}", output.display()))
            })?;
            if ops.json {
                return print_json(&serde_json::json!({
                    "study_id": study, "version": wanted.version, "round_id": wanted.round_id,
                    "sha256": digest, "bytes": download.bytes.len(), "path": output,
                }));
            }
            println!(
                "model version {} of study {study} ({} bytes, sha256 {digest}) written to {}",
                wanted.version,
                download.bytes.len(),
                output.display()
            );
            Ok(())
        }
    }
}
