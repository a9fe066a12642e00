//! Whom this site aggregates with. The cohort of a round is not the coordinator's word alone: before it trains or
//! sends anything, the agent checks the round's roster (the identity key at every secure-aggregation index, with the
//! coordinator's participant id of each) against what it knows:
//!
//! - **allow-list** (`[security] accepted_peers`, fingerprints exchanged out of band): every other index must hold
//!   one of the listed keys;
//! - otherwise **trust on first use**: the first key seen for a participant id is pinned (`peers.json` in the state
//!   directory, 0600) and a round that shows another key for a pinned id, or a pinned key under another id, is
//!   declined;
//! - either way, its own index must hold its own key, and the round must have at least `min_cohort` other sites
//!   (distinct keys: the core's roster refuses repeats, so n − 1 distinct identities).
//!
//! A semi-honest round carries no identity keys: only its size (the coordinator's word) can be checked, and an
//! allow-listing site declines it.

use std::collections::BTreeMap;
use std::path::Path;

use confide_common::api::RoundTask;
use confide_common::secagg::{IdentityPublicKey, ThreatModel};
use serde::{Deserialize, Serialize};

use super::config::SecurityConfig;
use super::state::{StateError, write_private_file};

/// File of the pinned peer identities (JSON).
pub const PEERS_FILE: &str = "peers.json";

/// Peers' identity keys, pinned on first use, by the coordinator's participant id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedPeers {
    pub peers: BTreeMap<i64, IdentityPublicKey>,
}

impl PinnedPeers {
    /// The pins stored in `dir` (none yet: empty).
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(PEERS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::BadIdentity {
                file: path.display().to_string(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Io {
                dir: dir.display().to_string(),
                source,
            }),
        }
    }

    /// Stores the pins durably (0600).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        write_private_file(dir, PEERS_FILE, &json).map_err(io)
    }
}

/// Checks a round's cohort (see the module docs) for the site `own_id` holding `own_key`. `Ok` with the pins to add
/// (peers seen for the first time) if the round is acceptable; `Err` with the reason to decline it.
pub fn check_cohort(
    task: &RoundTask,
    own_id: i64,
    own_key: &IdentityPublicKey,
    security: &SecurityConfig,
    pins: &PinnedPeers,
) -> Result<Vec<(i64, IdentityPublicKey)>, String> {
    let p = &task.protocol;
    let min = security.min_cohort;
    if p.threat_model == ThreatModel::SemiHonest {
        if security.accepted_peers.is_some() {
            return Err(
                "this site accepts only listed peers, and a semi-honest round carries no identity keys to check \
                 them by (ask for a study with threat_model malicious)"
                    .into(),
            );
        }
        let others = p.participants.saturating_sub(1);
        if others < min {
            return Err(format!(
                "the round has {others} other site(s), this site's minimum cohort is {min}"
            ));
        }
        return Ok(Vec::new());
    }
    let roster = p.roster.keys();
    let ids = &task.participant_ids;
    if roster.len() != p.participants as usize || ids.len() != roster.len() {
        return Err(format!(
            "the round lists {} identity keys and {} participant ids for {} participants",
            roster.len(),
            ids.len(),
            p.participants
        ));
    }
    let me = task.participant_index as usize;
    if roster.get(me) != Some(own_key) || ids.get(me) != Some(&own_id) {
        return Err(format!(
            "the round does not hold this site's own identity ({}) at its index {me}",
            own_key.fingerprint()
        ));
    }
    let mut distinct_ids = ids.clone();
    distinct_ids.sort_unstable();
    distinct_ids.dedup();
    if distinct_ids.len() != ids.len() {
        return Err("the round lists one participant id at several indices".into());
    }
    let mut new_pins = Vec::new();
    for (i, (&pid, key)) in ids.iter().zip(roster).enumerate() {
        if i == me {
            continue;
        }
        let fp = key.fingerprint();
        if let Some(accepted) = &security.accepted_peers {
            if !accepted.contains(&fp) {
                return Err(format!(
                    "participant {pid} has identity {fp}, which is not among this site's accepted peers"
                ));
            }
            continue;
        }
        match pins.peers.get(&pid) {
            Some(pinned) if pinned != key => {
                return Err(format!(
                    "participant {pid}'s identity key changed from the pinned {} to {fp}: refusing the round (a \
                     coordinator substituting keys would look like this); if that site really changed its key, \
                     check the new fingerprint with it out of band and remove participant {pid} from {PEERS_FILE}",
                    pinned.fingerprint()
                ));
            }
            Some(_) => {}
            None => {
                if let Some((other, _)) = pins.peers.iter().find(|(_, k)| *k == key) {
                    return Err(format!(
                        "identity {fp}, pinned for participant {other}, is shown as participant {pid}"
                    ));
                }
                new_pins.push((pid, *key));
            }
        }
    }
    let others = roster.len() - 1;
    if (others as u64) < u64::from(min) {
        return Err(format!(
            "the round has {others} other site(s), this site's minimum cohort is {min}"
        ));
    }
    Ok(new_pins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::round_plan::tests::task;
    use confide_common::secagg::{IdentityKey, Roster};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// A malicious round of `keys.len()` sites with ids 10, 11, …; this site is index 0.
    fn malicious(keys: &[IdentityPublicKey]) -> RoundTask {
        let mut t = task(Vec::new());
        t.protocol.threat_model = ThreatModel::Malicious;
        t.protocol.participants = keys.len() as u32;
        t.protocol.roster = Roster::new(keys.to_vec()).unwrap();
        t.participant_ids = (10..10 + keys.len() as i64).collect();
        t
    }

    fn keys(n: usize, seed: u64) -> Vec<IdentityPublicKey> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| IdentityKey::generate(&mut rng).public())
            .collect()
    }

    #[test]
    fn first_use_pins_and_a_changed_key_is_refused() {
        let k = keys(5, 1);
        let sec = SecurityConfig::default();
        let t = malicious(&k[..4]);
        let mut pins = PinnedPeers::default();
        let new = check_cohort(&t, 10, &k[0], &sec, &pins).unwrap();
        assert_eq!(new.len(), 3);
        pins.peers.extend(new);
        assert!(check_cohort(&t, 10, &k[0], &sec, &pins).unwrap().is_empty());
        // Participant 12 now shows another key.
        let mut swapped = k[..4].to_vec();
        swapped[2] = k[4];
        let e = check_cohort(&malicious(&swapped), 10, &k[0], &sec, &pins).unwrap_err();
        assert!(e.contains("participant 12's identity key changed"), "{e}");
        // A pinned key moved to another participant id.
        let mut moved = malicious(&k[..4]);
        moved.participant_ids = vec![10, 11, 12, 99];
        let e = check_cohort(&moved, 10, &k[0], &sec, &pins).unwrap_err();
        assert!(e.contains("is shown as participant 99"), "{e}");
        // Its own index must hold its own key and id.
        let e = check_cohort(&t, 10, &k[1], &sec, &pins).unwrap_err();
        assert!(e.contains("own identity"), "{e}");
        let e = check_cohort(&t, 11, &k[0], &sec, &pins).unwrap_err();
        assert!(e.contains("own identity"), "{e}");
        // Pins survive a restart.
        let dir = tempfile::tempdir().unwrap();
        pins.save(dir.path()).unwrap();
        assert_eq!(PinnedPeers::load(dir.path()).unwrap(), pins);
    }

    #[test]
    fn the_minimum_cohort_and_the_allow_list_decide() {
        let k = keys(4, 2);
        let pins = PinnedPeers::default();
        let three = malicious(&k[..3]);
        let e = check_cohort(&three, 10, &k[0], &SecurityConfig::default(), &pins).unwrap_err();
        assert!(
            e.contains("2 other site(s)") && e.contains("minimum cohort is 3"),
            "{e}"
        );
        let two = SecurityConfig {
            min_cohort: 2,
            accepted_peers: None,
        };
        assert!(check_cohort(&three, 10, &k[0], &two, &pins).is_ok());
        // Allow-list: every peer must be listed; nothing is pinned.
        let listed = SecurityConfig {
            min_cohort: 2,
            accepted_peers: Some(vec![k[1].fingerprint(), k[3].fingerprint()]),
        };
        let e = check_cohort(&three, 10, &k[0], &listed, &pins).unwrap_err();
        assert!(
            e.contains(&k[2].fingerprint()) && e.contains("not among"),
            "{e}"
        );
        let ok = malicious(&[k[0], k[1], k[3]]);
        assert_eq!(check_cohort(&ok, 10, &k[0], &listed, &pins), Ok(Vec::new()));
        // Semi-honest rounds: only the size can be checked; an allow-listing site declines them.
        let semi = task(Vec::new());
        assert!(check_cohort(&semi, 10, &k[0], &two, &pins).is_ok());
        assert!(check_cohort(&semi, 10, &k[0], &SecurityConfig::default(), &pins).is_err());
        assert!(check_cohort(&semi, 10, &k[0], &listed, &pins).is_err());
    }
}
