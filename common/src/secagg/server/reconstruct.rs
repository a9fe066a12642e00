//! Closing the Unmasking stage: rebuild the self-mask secrets of U3 and the mask keys of U2 ∖ U3 from the revealed
//! shares, then strip every mask from the running sum (the heavy step: PRG expansion over all cores).
//!
//! Every secret is first rebuilt from the first t revealed shares and checked against its public commitment (β·B
//! or the mask public key); an honest round needs nothing more. Should that fail, malicious rounds reconstruct
//! robustly: every revealed share is checked against its dealer's commitment (in one batch per secret, share by
//! share only if the batch fails) and the revealer's three commitments against each other (W = V^β + γ·V^σ: the
//! degree test covered only W, so a holder colluding with the dealer could hold a commitment off the polynomial
//! that its own share matches — see `group`); invalid ones are ignored and their revealers recorded, and t valid
//! shares suffice — so up to |U4| − t lying revealers cannot stop the round. (A lying share that was not needed is
//! not looked at: it did no harm.) Semi-honest rounds have no per-share commitments: a failed check aborts.

use std::collections::BTreeMap;

use curve25519_dalek::ristretto::RistrettoPoint;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::super::crypto::{self, Secret32};
use super::super::group::{self, MaskKeyPair};
use super::super::shamir::{self, SecretScalar, Share};
use super::super::{ParticipantId, RoundStage};
use super::Round;
use super::record::{AbortReason, DropReason, contains};

/// Label of the Fiat–Shamir weights of the revealed-share batch check.
const LABEL_REVEALED_SHARES: &[u8] = b"confide/secagg/v2/revealed-shares";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    SelfMask,
    MaskKey,
}

/// One rebuilt secret, or why it could not be, with the revealers whose shares did not match.
struct Rebuilt {
    secret: Result<SecretScalar, AbortReason>,
    invalid_revealers: Vec<ParticipantId>,
}

/// A revealed share's commitment, compressed and as a point.
type Committed = ([u8; 32], RistrettoPoint);

/// The shares of `owner` that match their commitments, and the revealers of those that do not.
fn valid_shares(
    round: &Round,
    owner: ParticipantId,
    kind: Kind,
    shares: &[Share],
) -> (Vec<Share>, Vec<ParticipantId>) {
    let Some(dealing) = round.record.dealings.get(&owner) else {
        return (
            Vec::new(),
            shares.iter().map(|s| s.x.saturating_sub(1)).collect(),
        );
    };
    let gamma = dealing.challenge(&round.digest, round.params().round_id, owner);
    // Each revealer's commitment to this share, if its three commitments are consistent (decompressions: parallel).
    let checked: Vec<(&Share, Option<Committed>)> = shares
        .par_iter()
        .map(|s| {
            let committed = dealing.commitments_for(s.x.saturating_sub(1)).filter(|c| {
                gamma.is_some_and(|g| {
                    group::combined_relation_holds(&c.self_mask, &c.mask_key, &c.combined, &g)
                })
            });
            let c = committed.map(|c| match kind {
                Kind::SelfMask => c.self_mask,
                Kind::MaskKey => c.mask_key,
            });
            (s, c.and_then(|c| group::decode_point(&c).map(|p| (c, p))))
        })
        .collect();
    let mut invalid = Vec::new();
    let mut candidates: Vec<(&Share, [u8; 32], RistrettoPoint)> = Vec::with_capacity(shares.len());
    for (s, c) in checked {
        match c {
            Some((c, p)) => candidates.push((s, c, p)),
            None => invalid.push(s.x.saturating_sub(1)),
        }
    }
    let mut challenge = Sha256::new();
    challenge.update(LABEL_REVEALED_SHARES);
    challenge.update(round.digest);
    challenge.update(owner.to_le_bytes());
    challenge.update([kind as u8]);
    for (s, _, _) in &candidates {
        challenge.update(s.to_bytes());
    }
    let mut rng = group::challenge_rng(challenge.finalize().into());
    let items: Vec<_> = candidates.iter().map(|(s, _, p)| (s.y, *p)).collect();
    let valid = if group::batch_check(&items, &mut rng) {
        candidates.into_iter().map(|(s, _, _)| s.clone()).collect()
    } else {
        let mut valid = Vec::new();
        for (s, c, _) in candidates {
            if group::commit(&s.y) == c {
                valid.push(s.clone());
            } else {
                invalid.push(s.x.saturating_sub(1));
            }
        }
        valid
    };
    (valid, invalid)
}

/// Rebuilds `owner`'s secret of `kind` and checks it against its public commitment.
fn rebuild(round: &Round, owner: ParticipantId, kind: Kind, shares: &[Share]) -> Rebuilt {
    let t = round.threshold();
    let expected = match kind {
        Kind::SelfMask => round
            .record
            .dealings
            .get(&owner)
            .map(|d| d.self_mask_commitment),
        Kind::MaskKey => round
            .record
            .directory
            .get(&owner)
            .map(|k| k.mask_public_key),
    };
    let from = |usable: &mut Vec<Share>| {
        usable.sort_by_key(|s| s.x);
        shamir::reconstruct(&usable[..t.min(usable.len())], t)
            .ok()
            .filter(|s| expected.is_some() && expected == Some(group::commit(s.expose())))
    };
    // The honest case: the first t shares rebuild the committed secret.
    if shares.len() >= t
        && let Some(secret) = from(&mut shares.to_vec())
    {
        return Rebuilt {
            secret: Ok(secret),
            invalid_revealers: Vec::new(),
        };
    }
    if !round.malicious() {
        return Rebuilt {
            secret: Err(if shares.len() < t {
                AbortReason::NeighbourhoodTooSmall {
                    stage: RoundStage::Unmasking,
                    participant: owner,
                    members: shares.len() as u32,
                    threshold: t as u32,
                }
            } else {
                AbortReason::InconsistentShares { participant: owner }
            }),
            invalid_revealers: Vec::new(),
        };
    }
    let (mut usable, invalid_revealers) = valid_shares(round, owner, kind, shares);
    if usable.len() < t {
        let reason = if shares.len() >= t {
            AbortReason::TooFewValidShares {
                participant: owner,
                valid: usable.len() as u32,
                threshold: t as u32,
            }
        } else {
            AbortReason::NeighbourhoodTooSmall {
                stage: RoundStage::Unmasking,
                participant: owner,
                members: usable.len() as u32,
                threshold: t as u32,
            }
        };
        return Rebuilt {
            secret: Err(reason),
            invalid_revealers,
        };
    }
    let secret = from(&mut usable).ok_or(AbortReason::InconsistentShares { participant: owner });
    Rebuilt {
        secret,
        invalid_revealers,
    }
}

/// Rebuilds every needed secret and removes all masks from `sum`; records revealers of invalid shares.
pub(crate) fn unmask(
    round: &mut Round,
    self_mask_shares: &BTreeMap<ParticipantId, Vec<Share>>,
    mask_key_shares: &BTreeMap<ParticipantId, Vec<Share>>,
    sum: &mut [u32],
) -> Result<(), AbortReason> {
    let r = round.params().round_id;
    let u3 = round.record.u3.clone();
    let dropped: Vec<ParticipantId> = round
        .record
        .u2
        .iter()
        .copied()
        .filter(|v| !contains(&u3, *v))
        .collect();
    let shares_of =
        |m: &BTreeMap<ParticipantId, Vec<Share>>, v| m.get(&v).map_or(Vec::new(), |s| s.clone());
    let betas: Vec<(ParticipantId, Rebuilt)> = u3
        .par_iter()
        .map(|&v| {
            (
                v,
                rebuild(round, v, Kind::SelfMask, &shares_of(self_mask_shares, v)),
            )
        })
        .collect();
    let sigmas: Vec<(ParticipantId, Rebuilt)> = dropped
        .par_iter()
        .map(|&v| {
            (
                v,
                rebuild(round, v, Kind::MaskKey, &shares_of(mask_key_shares, v)),
            )
        })
        .collect();
    for (_, b) in betas.iter().chain(&sigmas) {
        for &revealer in &b.invalid_revealers {
            round.record.drop_participant(
                revealer,
                RoundStage::Unmasking,
                DropReason::InvalidRevealedShare,
            );
        }
    }
    // Self masks of the survivors.
    let mut sub: Vec<Secret32> = Vec::with_capacity(u3.len());
    for (v, b) in betas {
        sub.push(crypto::self_mask_seed(&b.secret?, r, v));
    }
    // Pairwise masks between dropped participants and their surviving neighbours.
    let mut keys = Vec::with_capacity(sigmas.len());
    for (v, s) in sigmas {
        keys.push((v, MaskKeyPair::from_secret(s.secret?)));
    }
    let round_ref = &*round;
    let pairwise: Vec<Result<Vec<(bool, Secret32)>, AbortReason>> = keys
        .par_iter()
        .map(|(v, key)| {
            u3.iter()
                .filter(|&&u| round_ref.graph.are_neighbours(u, *v))
                .map(|&u| {
                    let pk = round_ref
                        .record
                        .directory
                        .get(&u)
                        .and_then(|a| group::decode_point(&a.mask_public_key))
                        .ok_or(AbortReason::InconsistentShares { participant: u })?;
                    let seed = group::pairwise_mask_seed(key, *v, &pk, u, r)
                        .map_err(|_| AbortReason::InconsistentShares { participant: *v })?;
                    // u added +PRG(s_uv) when v > u and −PRG(s_uv) when v < u; undo it.
                    Ok((*v < u, seed))
                })
                .collect()
        })
        .collect();
    let mut add = Vec::new();
    for seeds in pairwise {
        for (is_add, seed) in seeds? {
            if is_add {
                add.push(seed)
            } else {
                sub.push(seed)
            }
        }
    }
    crypto::apply_masks(sum, &add, &sub);
    crypto::reduce_to_ring(sum, round.params().bits);
    Ok(())
}
