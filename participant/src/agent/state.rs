//! The agent's state directory: its long-term identity (participant id, study, credential, coordinator URL) and its
//! privacy ledger. The directory is created 0700 and every file in it 0600: the credential is a bearer secret and
//! the ledger describes what was released about the site's records. A lock file keeps two agents from sharing one
//! directory (they would share one identity and one ledger).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use confide_common::secagg::IdentityKey;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

/// File holding the identity (JSON).
pub const IDENTITY_FILE: &str = "identity.json";
/// File holding the long-term Ed25519 identity key's 32-byte secret seed (0600; never logged).
pub const IDENTITY_KEY_FILE: &str = "identity.key";
const LOCK_FILE: &str = "agent.lock";

#[derive(Debug, Error)]
pub enum StateError {
    #[error("state directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: unreadable identity ({detail}); move it away to enrol again")]
    BadIdentity { file: String, detail: String },
    #[error(
        "state directory {0} is in use by another confide-participant (it holds {LOCK_FILE}); each agent needs its own"
    )]
    Locked(String),
}

/// Who this agent is, as the coordinator enrolled it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub participant_id: i64,
    pub study_id: i64,
    /// Bearer credential (secret).
    pub credential: String,
    /// The coordinator that enrolled this agent.
    pub coordinator_url: String,
    /// Display name given at enrolment.
    pub name: String,
    pub enrolled_at_ms: i64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("participant_id", &self.participant_id)
            .field("study_id", &self.study_id)
            .field("coordinator_url", &self.coordinator_url)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An opened (and locked) state directory.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates the directory if needed (0700; an existing one is tightened to 0700) and takes its lock.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Path of a file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The stored identity, if this agent has enrolled.
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        read_identity(&self.dir)
    }

    /// Stores the identity durably: written to a 0600 temporary file, fsynced, renamed into place, directory fsynced.
    pub fn save_identity(&self, identity: &Identity) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            dir: self.dir.display().to_string(),
            source,
        };
        let json = serde_json::to_vec_pretty(identity).map_err(|e| io(std::io::Error::other(e)))?;
        write_private_file(&self.dir, IDENTITY_FILE, &json).map_err(io)
    }
}

impl StateDir {
    /// The site's long-term identity key, created (and stored 0600, durably) on first use.
    pub fn identity_key_or_create(&self) -> Result<IdentityKey, StateError> {
        if let Some(key) = read_identity_key(&self.dir)? {
            return Ok(key);
        }
        let mut rng =
            ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng).map_err(|e| StateError::Io {
                dir: self.dir.display().to_string(),
                source: std::io::Error::other(format!("OS randomness unavailable: {e}")),
            })?;
        let key = IdentityKey::generate(&mut rng);
        write_private_file(&self.dir, IDENTITY_KEY_FILE, &key.to_seed()[..]).map_err(|source| {
            StateError::Io {
                dir: self.dir.display().to_string(),
                source,
            }
        })?;
        Ok(key)
    }
}

/// Reads `dir/identity.key` (the 32-byte seed) without locking (e.g. for `identity`); `None` if there is none.
pub fn read_identity_key(dir: &Path) -> Result<Option<IdentityKey>, StateError> {
    let path = dir.join(IDENTITY_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let seed: &[u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StateError::BadIdentity {
                        file: path.display().to_string(),
                        detail: format!("{} bytes, an identity key has 32", bytes.len()),
                    })?;
            Ok(Some(IdentityKey::from_seed(seed)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            dir: dir.display().to_string(),
            source,
        }),
    }
}

/// Reads `dir/identity.json` without locking (e.g. for `budget`).
pub fn read_identity(dir: &Path) -> Result<Option<Identity>, StateError> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateError::BadIdentity {
                    file: path.display().to_string(),
                    detail: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            dir: dir.display().to_string(),
            source,
        }),
    }
}

pub use confide_runtime::write_private_file;

/// Tightens every regular file in the directory to 0600 (the SQLite ledger creates its own files).
pub fn restrict_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trip_private_and_locked() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        let state = StateDir::open(&dir).unwrap();
        assert!(state.identity().unwrap().is_none());
        let id = Identity {
            participant_id: 3,
            study_id: 1,
            credential: "secret".into(),
            coordinator_url: "http://x".into(),
            name: "h".into(),
            enrolled_at_ms: 5,
        };
        state.save_identity(&id).unwrap();
        assert_eq!(state.identity().unwrap(), Some(id.clone()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(IDENTITY_FILE)), 0o600);
        assert!(
            !format!("{id:?}").contains("secret"),
            "Debug hides the credential"
        );
        // The identity key: created once, 0600, the same on every later read.
        let key = state.identity_key_or_create().unwrap();
        assert_eq!(mode(&dir.join(IDENTITY_KEY_FILE)), 0o600);
        assert_eq!(
            state.identity_key_or_create().unwrap().public(),
            key.public()
        );
        assert_eq!(
            read_identity_key(&dir).unwrap().unwrap().public(),
            key.public()
        );
        assert!(!format!("{key:?}").contains(&hex::encode(&key.to_seed()[..])));
        // A second agent on the same directory is refused.
        assert!(matches!(StateDir::open(&dir), Err(StateError::Locked(_))));
        drop(state);
        assert!(StateDir::open(&dir).is_ok());
    }
}
