//! The operator's profile: the coordinator URL and operator token `confide login` checked and saved, so that every
//! other command can run without flags. It holds a secret, so it is written with mode 0600 in a folder of mode
//! 0700, and reading a file that others can read draws a warning.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Args;
use etcetera::BaseStrategy;
use serde::{Deserialize, Serialize};

use super::{Connection, OpsError, OpsResult, client_for, explain, print_json};

/// What `confide login` stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub coordinator_url: String,
    pub operator_token: String,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The profile's path: the one given, or `<config dir>/confide/profile.toml`.
pub fn path(given: Option<&Path>) -> OpsResult<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let base = etcetera::choose_base_strategy().map_err(|e| {
        OpsError::Usage(format!(
            "no home folder to keep the profile in ({e}); give --profile or CONFIDE_PROFILE"
        ))
    })?;
    Ok(base.config_dir().join("confide").join("profile.toml"))
}

/// The saved profile, if there is one. A file that exists but cannot be read or parsed is an error (never ignored:
/// the commands would otherwise fail later with a confusing message).
pub fn load(given: Option<&Path>) -> OpsResult<Option<Profile>> {
    let path = match path(given) {
        Ok(p) => p,
        // No home and no explicit profile: flags and environment must do.
        Err(_) if given.is_none() => return Ok(None),
        Err(e) => return Err(e),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && given.is_none() => return Ok(None),
        Err(e) => {
            return Err(OpsError::local(format!(
                "cannot read the profile {}: {e}",
                path.display()
            )));
        }
    };
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} holds an operator token and others can read it: chmod 600 it",
            path.display()
        );
    }
    toml::from_str(&text).map(Some).map_err(|e| {
        OpsError::local(format!(
            "the profile {} is not valid ({e}); run `confide login` again",
            path.display()
        ))
    })
}

/// The folder and file name of `path` (a bare name is in the current folder).
pub(super) fn split_path(path: &Path) -> OpsResult<(&Path, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| OpsError::local(format!("{} names no file", path.display())))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

/// Writes the profile with mode 0600 (the folder 0700), replacing any previous one.
fn save(path: &Path, profile: &Profile) -> OpsResult<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| OpsError::local(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = toml::to_string(profile).map_err(OpsError::local)?;
    let (dir, name) = split_path(path)?;
    // Written beside the target and renamed, so a failure never leaves half a profile.
    let write = || confide_runtime::write_private_file(dir, name, text.as_bytes());
    write().map_err(|e| OpsError::local(format!("cannot write {}: {e}", path.display())))
}

/// `confide login`: checks the URL and token against the coordinator (listing the studies), then saves them.
pub async fn login(args: LoginArgs) -> OpsResult<()> {
    let tls = args.conn.tls();
    let url = args.conn.coordinator_url.ok_or_else(|| {
        OpsError::Usage("give --coordinator-url (or CONFIDE_COORDINATOR_URL)".into())
    })?;
    let token = args.conn.operator_token.ok_or_else(|| {
        OpsError::Usage(
            "give --operator-token (or CONFIDE_OPERATOR_TOKEN): an operator token from `confide-coordinator \
             token create`"
                .into(),
        )
    })?;
    let client = client_for(&url, &token, &tls)?;
    let studies = client
        .list_studies()
        .await
        .map_err(|e| explain(client.base_url(), e, "the study list"))?;
    let path = path(args.conn.profile.as_deref())?;
    save(
        &path,
        &Profile {
            coordinator_url: client.base_url().to_string(),
            operator_token: token,
        },
    )?;
    if args.json {
        return print_json(&serde_json::json!({
            "profile": path,
            "coordinator_url": client.base_url(),
            "studies": studies.len(),
        }));
    }
    println!(
        "logged in to {} ({} studies); profile saved to {} (mode 0600)",
        client.base_url(),
        studies.len(),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_profile_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("profile.toml");
        let p = Profile {
            coordinator_url: "http://127.0.0.1:8080".into(),
            operator_token: "secret".into(),
        };
        save(&path, &p).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(Some(&path)).unwrap(), Some(p));
    }

    #[test]
    fn a_named_profile_that_is_missing_or_broken_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.toml");
        assert!(matches!(load(Some(&path)), Err(OpsError::Local(_))));
        std::fs::write(&path, "coordinator_url = 3").unwrap();
        assert!(matches!(load(Some(&path)), Err(OpsError::Local(_))));
    }
}
