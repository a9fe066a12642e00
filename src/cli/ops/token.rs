//! `confide token create|list|revoke`: one-time enrolment tokens for hospitals, printed once and optionally
//! written to a compose `.env` file as `<LABEL>_ENROLMENT_TOKEN=…` (the names docker-compose.yml reads, e.g.
//! `HOSPITAL_A_ENROLMENT_TOKEN` for the label `hospital-a`). The API stores tokens hashed: `list` shows each
//! token's label, validity and use, never the secret; `revoke` makes an unused one useless.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use confide_common::api::{
    CreateEnrolmentTokenRequest, EnrolmentTokenInfo, EnrolmentTokenResponse,
};

use super::{OpsArgs, OpsError, OpsResult, connect, print_json, table, time};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create enrolment tokens for a study (each enrols one participant, once).
    Create(CreateArgs),
    /// List a study's enrolment tokens: label, expiry, whether used (by whom) or revoked; never the secrets.
    List {
        /// The study's id.
        #[arg(long)]
        study: i64,
    },
    /// Revoke an unused enrolment token (by its id from `token list`): it can no longer enrol anyone.
    Revoke {
        /// The study's id.
        #[arg(long)]
        study: i64,
        /// The token's id.
        token: i64,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The study's id.
    #[arg(long)]
    study: i64,
    /// The token's label (with --count N: LABEL-1 … LABEL-N), e.g. the hospital's name.
    #[arg(long)]
    label: String,
    /// How many tokens to create.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    count: u32,
    /// Validity in seconds (the coordinator's default: 7 days).
    #[arg(long)]
    expires_in_secs: Option<u64>,
    /// Also write `<LABEL>_ENROLMENT_TOKEN=<token>` lines to this file (mode 0600; other lines are kept, lines with
    /// the same keys replaced), for docker compose.
    #[arg(long)]
    env_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(subcommand)]
    pub cmd: TokenCommand,
}

/// A label as an environment variable name: upper case, every other character `_`, then `_ENROLMENT_TOKEN`.
pub fn env_key(label: &str) -> String {
    let mut key: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        key.insert(0, '_');
    }
    key + "_ENROLMENT_TOKEN"
}

/// The labels of `count` tokens named after `label`.
fn labels(label: &str, count: u32) -> Vec<String> {
    if count == 1 {
        vec![label.to_string()]
    } else {
        (1..=count).map(|i| format!("{label}-{i}")).collect()
    }
}

/// Writes `entries` into the env file: earlier lines kept unless they set one of these keys; mode 0600.
fn write_env_file(path: &Path, entries: &[(String, String)]) -> OpsResult<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(OpsError::local(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let mut text = String::new();
    for line in old.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        if key.is_some_and(|k| entries.iter().any(|(e, _)| e == k)) {
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    for (k, v) in entries {
        text.push_str(&format!("{k}={v}\n"));
    }
    let (dir, name) = super::profile::split_path(path)?;
    let write = || confide_runtime::write_private_file(dir, name, text.as_bytes());
    write().map_err(|e| OpsError::local(format!("cannot write {}: {e}", path.display())))
}

/// A token's state: `unused`, `used by participant 4`, `revoked`, `expired`.
fn token_state(t: &EnrolmentTokenInfo, now: i64) -> String {
    match (t.used_at_ms, t.participant_id, t.revoked_at_ms) {
        (Some(_), Some(p), _) => format!("used by participant {p}"),
        (Some(_), None, _) => "used".into(),
        (None, _, Some(_)) => "revoked".into(),
        _ if t.expires_at_ms <= now => "expired".into(),
        _ => "unused".into(),
    }
}

fn print_tokens(tokens: &[EnrolmentTokenInfo]) {
    let now = confide_runtime::now_ms();
    let mut t = table(["ID", "LABEL", "STATE", "CREATED", "EXPIRES"]);
    for tok in tokens {
        t.add_row(vec![
            tok.id.to_string(),
            tok.label.clone(),
            token_state(tok, now),
            time(tok.created_at_ms),
            time(tok.expires_at_ms),
        ]);
    }
    println!("{t}");
}

pub async fn run(args: TokenArgs) -> OpsResult<()> {
    let ops = connect(&args.ops)?;
    let a = match args.cmd {
        TokenCommand::Create(a) => a,
        TokenCommand::List { study } => {
            let tokens = ops
                .client
                .list_enrolment_tokens(study)
                .await
                .map_err(|e| ops.explain(e, &format!("study {study}")))?;
            if ops.json {
                return print_json(&tokens);
            }
            if tokens.is_empty() {
                println!(
                    "no enrolment tokens in study {study}: `confide token create --study {study} --label <hospital>`"
                );
                return Ok(());
            }
            print_tokens(&tokens);
            return Ok(());
        }
        TokenCommand::Revoke { study, token } => {
            let info = ops
                .client
                .revoke_enrolment_token(study, token)
                .await
                .map_err(|e| {
                    ops.explain(e, &format!("enrolment token {token} of study {study}"))
                })?;
            if ops.json {
                return print_json(&info);
            }
            print_tokens(std::slice::from_ref(&info));
            return Ok(());
        }
    };
    let mut made: Vec<(String, EnrolmentTokenResponse)> = Vec::new();
    for label in labels(&a.label, a.count) {
        let req = CreateEnrolmentTokenRequest {
            label: label.clone(),
            expires_in_secs: a.expires_in_secs,
        };
        let token = ops
            .client
            .create_enrolment_token(a.study, &req)
            .await
            .map_err(|e| ops.explain(e, &format!("study {}", a.study)))?;
        made.push((label, token));
    }
    if let Some(path) = &a.env_file {
        let entries: Vec<(String, String)> = made
            .iter()
            .map(|(label, t)| (env_key(label), t.token.clone()))
            .collect();
        write_env_file(path, &entries)?;
    }
    if ops.json {
        let out: Vec<serde_json::Value> = made
            .iter()
            .map(|(label, t)| {
                serde_json::json!({
                    "label": label, "token": t.token, "study_id": t.study_id,
                    "expires_at_ms": t.expires_at_ms, "env_key": env_key(label),
                })
            })
            .collect();
        return print_json(&out);
    }
    let mut t = table(["LABEL", "TOKEN", "EXPIRES", "ENV KEY"]);
    for (label, tok) in &made {
        t.add_row(vec![
            label.clone(),
            tok.token.clone(),
            time(tok.expires_at_ms),
            env_key(label),
        ]);
    }
    println!("{t}");
    println!(
        "each token enrols one participant once (CONFIDE_ENROLMENT_TOKEN of `confide-participant run`); it is not shown again"
    );
    if let Some(path) = &a.env_file {
        println!("written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn env_keys_match_the_compose_file() {
        assert_eq!(env_key("hospital-a"), "HOSPITAL_A_ENROLMENT_TOKEN");
        assert_eq!(env_key("3rd site"), "_3RD_SITE_ENROLMENT_TOKEN");
        assert_eq!(labels("h", 2), vec!["h-1", "h-2"]);
    }

    #[test]
    fn the_env_file_keeps_other_lines_and_replaces_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "OTHER=1\nH_ENROLMENT_TOKEN=old\n").unwrap();
        write_env_file(&path, &[("H_ENROLMENT_TOKEN".into(), "new".into())]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "OTHER=1\nH_ENROLMENT_TOKEN=new\n"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
