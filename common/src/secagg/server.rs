//! The coordinator's side of a round, as a state machine.
//!
//! The coordinator calls the `handle_*` method for each participant message of the current stage (each either
//! accepts the message or returns a typed error and changes nothing), [`SecAggServer::close_stage`] when
//! [`SecAggServer::ready_to_close`] says everyone expected has answered or when the stage deadline passes, and
//! publishes the broadcast of the new stage: [`SecAggServer::key_directory`], [`SecAggServer::routed_shares`] per
//! recipient, [`SecAggServer::unmasking_request`]. Closing a stage with fewer than t answers aborts the round.
//! Masked inputs are added into one running sum on arrival; no per-client vector is kept. [`SecAggServer::encode`]
//! gives a compact versioned binary snapshot to persist at every stage boundary; [`SecAggServer::decode`] resumes.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::client::SHARE_CIPHERTEXT_LEN;
use super::crypto::{self, KeyPair, Secret32};
use super::error::{Result, SecAggError};
use super::messages::{
    AdvertiseKeys, AdvertisedKeys, EncryptedShares, KeyDirectory, MASKED_INPUT_HEADER_LEN,
    MaskedInput, MaskedInputHeader, RoutedShare, RoutedShares, ShareKeys, UnmaskingRequest,
    UnmaskingResponse, WIRE_VERSION,
};
use super::shamir::{self, Share};
use super::{NeighbourGraph, ParticipantId, RoundStage, SecAggParams};

/// Why a round ended without an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AbortReason {
    /// A stage closed with fewer participants than the threshold.
    TooFewParticipants {
        stage: RoundStage,
        survivors: u32,
        threshold: u32,
    },
    /// Some participant's neighbourhood kept fewer than t members, so its secrets could not be rebuilt.
    NeighbourhoodTooSmall {
        stage: RoundStage,
        participant: ParticipantId,
        members: u32,
        threshold: u32,
    },
    /// A participant's secret rebuilt from shares did not match its commitment or public key.
    InconsistentShares { participant: ParticipantId },
    /// The coordinator aborted the round.
    Coordinator { reason: String },
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortReason::TooFewParticipants {
                stage,
                survivors,
                threshold,
            } => {
                write!(
                    f,
                    "stage {stage:?} closed with {survivors} participants, threshold is {threshold}"
                )
            }
            AbortReason::NeighbourhoodTooSmall {
                stage,
                participant,
                members,
                threshold,
            } => write!(
                f,
                "after stage {stage:?}, participant {participant}'s neighbourhood has {members} members, threshold is {threshold}"
            ),
            AbortReason::InconsistentShares { participant } => {
                write!(
                    f,
                    "shares of participant {participant} do not rebuild its committed secret"
                )
            }
            AbortReason::Coordinator { reason } => {
                write!(f, "aborted by the coordinator: {reason}")
            }
        }
    }
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// The exact sum (mod 2^bits) of the inputs of U3.
    Completed(Vec<u32>),
    /// No aggregate; nothing about any input is released.
    Aborted { reason: AbortReason },
}

/// Result of [`SecAggServer::close_stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageTransition {
    pub from: RoundStage,
    pub to: RoundStage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredShareKeys {
    self_mask_commitment: [u8; 32],
    encrypted_shares: Vec<EncryptedShares>,
}

/// Everything but the running sum; serialised with postcard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ServerState {
    params: SecAggParams,
    stage: RoundStage,
    advertised: BTreeMap<ParticipantId, AdvertisedKeys>,
    u1: Vec<ParticipantId>,
    share_keys: BTreeMap<ParticipantId, StoredShareKeys>,
    u2: Vec<ParticipantId>,
    masked_received: BTreeSet<ParticipantId>,
    u3: Vec<ParticipantId>,
    self_mask_shares: BTreeMap<ParticipantId, Vec<Share>>,
    mask_key_shares: BTreeMap<ParticipantId, Vec<Share>>,
    unmask_responders: BTreeSet<ParticipantId>,
    u4: Vec<ParticipantId>,
    abort_reason: Option<AbortReason>,
}

/// Magic bytes of a persisted server state.
pub const STATE_MAGIC: [u8; 4] = *b"CFSS";
/// Version of the persisted server-state format.
pub const STATE_VERSION: u16 = 1;

/// The server of one secure-aggregation round.
pub struct SecAggServer {
    state: ServerState,
    graph: NeighbourGraph,
    /// Running sum of masked inputs (allocated when MaskedInputCollection opens); the aggregate once Completed.
    sum: Vec<u32>,
}

impl std::fmt::Debug for SecAggServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggServer")
            .field("round_id", &self.state.params.round_id)
            .field("stage", &self.state.stage)
            .finish_non_exhaustive()
    }
}

fn contains(sorted: &[ParticipantId], id: ParticipantId) -> bool {
    sorted.binary_search(&id).is_ok()
}

/// Rebuilds one secret; too few shares means the neighbourhood shrank below t, garbage shares are inconsistent.
fn rebuild(
    shares: &[Share],
    t: usize,
    owner: ParticipantId,
) -> std::result::Result<Secret32, AbortReason> {
    if shares.len() < t {
        return Err(AbortReason::NeighbourhoodTooSmall {
            stage: RoundStage::Unmasking,
            participant: owner,
            members: shares.len() as u32,
            threshold: t as u32,
        });
    }
    shamir::reconstruct(shares, t)
        .map_err(|_| AbortReason::InconsistentShares { participant: owner })
}

impl SecAggServer {
    /// A new round in stage AdvertiseKeys.
    pub fn new(params: SecAggParams) -> Result<Self> {
        params.validate()?;
        let graph = params.neighbour_graph()?;
        Ok(SecAggServer {
            state: ServerState {
                params,
                stage: RoundStage::AdvertiseKeys,
                advertised: BTreeMap::new(),
                u1: Vec::new(),
                share_keys: BTreeMap::new(),
                u2: Vec::new(),
                masked_received: BTreeSet::new(),
                u3: Vec::new(),
                self_mask_shares: BTreeMap::new(),
                mask_key_shares: BTreeMap::new(),
                unmask_responders: BTreeSet::new(),
                u4: Vec::new(),
                abort_reason: None,
            },
            graph,
            sum: Vec::new(),
        })
    }

    /// The round parameters.
    pub fn params(&self) -> &SecAggParams {
        &self.state.params
    }

    /// The current stage.
    pub fn stage(&self) -> RoundStage {
        self.state.stage
    }

    /// U1: participants that advertised keys (set when AdvertiseKeys closes).
    pub fn u1(&self) -> &[ParticipantId] {
        &self.state.u1
    }
    /// U2: participants that shared keys (set when ShareKeys closes).
    pub fn u2(&self) -> &[ParticipantId] {
        &self.state.u2
    }
    /// U3: participants whose masked input is in the sum (set when MaskedInputCollection closes).
    pub fn u3(&self) -> &[ParticipantId] {
        &self.state.u3
    }
    /// U4: participants that revealed shares (set when Unmasking closes).
    pub fn u4(&self) -> &[ParticipantId] {
        &self.state.u4
    }

    /// Participants allowed to send a message in the current stage.
    pub fn expected(&self) -> Vec<ParticipantId> {
        match self.state.stage {
            RoundStage::AdvertiseKeys => (0..self.state.params.participants).collect(),
            RoundStage::ShareKeys => self.state.u1.clone(),
            RoundStage::MaskedInputCollection => self.state.u2.clone(),
            RoundStage::Unmasking => self.state.u3.clone(),
            RoundStage::Completed | RoundStage::Aborted => Vec::new(),
        }
    }

    /// Participants that already answered in the current stage.
    pub fn responded(&self) -> Vec<ParticipantId> {
        match self.state.stage {
            RoundStage::AdvertiseKeys => self.state.advertised.keys().copied().collect(),
            RoundStage::ShareKeys => self.state.share_keys.keys().copied().collect(),
            RoundStage::MaskedInputCollection => {
                self.state.masked_received.iter().copied().collect()
            }
            RoundStage::Unmasking => self.state.unmask_responders.iter().copied().collect(),
            RoundStage::Completed | RoundStage::Aborted => Vec::new(),
        }
    }

    /// Whether every expected participant has answered, so the stage can close without waiting for the deadline.
    pub fn ready_to_close(&self) -> bool {
        let expected = self.expected().len();
        expected > 0 && self.responded().len() == expected
    }

    fn check(
        &self,
        stage: RoundStage,
        round: u64,
        sender: ParticipantId,
        members: Option<&[ParticipantId]>,
    ) -> Result<()> {
        if matches!(
            self.state.stage,
            RoundStage::Completed | RoundStage::Aborted
        ) {
            return Err(SecAggError::RoundEnded);
        }
        if self.state.stage != stage {
            return Err(SecAggError::WrongStage {
                current: self.state.stage,
                got: stage,
            });
        }
        if round != self.state.params.round_id {
            return Err(SecAggError::WrongRound {
                expected: self.state.params.round_id,
                got: round,
            });
        }
        let member = match members {
            Some(m) => contains(m, sender),
            None => sender < self.state.params.participants,
        };
        if !member {
            return Err(SecAggError::NotMember {
                participant: sender,
                stage,
            });
        }
        Ok(())
    }

    /// AdvertiseKeys: records a participant's public keys.
    pub fn handle_advertise_keys(&mut self, msg: &AdvertiseKeys) -> Result<()> {
        self.check(RoundStage::AdvertiseKeys, msg.round_id, msg.sender, None)?;
        if self.state.advertised.contains_key(&msg.sender) {
            return Err(SecAggError::Duplicate(msg.sender));
        }
        if msg.cipher_public_key == msg.mask_public_key
            || self.state.advertised.values().any(|k| {
                [k.cipher_public_key, k.mask_public_key]
                    .iter()
                    .any(|p| *p == msg.cipher_public_key || *p == msg.mask_public_key)
            })
        {
            return Err(SecAggError::Malformed(
                "public key already in use in this round".into(),
            ));
        }
        self.state.advertised.insert(
            msg.sender,
            AdvertisedKeys {
                participant: msg.sender,
                cipher_public_key: msg.cipher_public_key,
                mask_public_key: msg.mask_public_key,
            },
        );
        Ok(())
    }

    /// ShareKeys: records a participant's encrypted shares; there must be exactly one well-sized ciphertext per
    /// neighbour in U1.
    pub fn handle_share_keys(&mut self, msg: &ShareKeys) -> Result<()> {
        self.check(
            RoundStage::ShareKeys,
            msg.round_id,
            msg.sender,
            Some(&self.state.u1),
        )?;
        if self.state.share_keys.contains_key(&msg.sender) {
            return Err(SecAggError::Duplicate(msg.sender));
        }
        let expected: Vec<ParticipantId> = self
            .state
            .u1
            .iter()
            .copied()
            .filter(|&v| self.graph.are_neighbours(msg.sender, v))
            .collect();
        let got: Vec<ParticipantId> = msg.encrypted_shares.iter().map(|e| e.recipient).collect();
        if got != expected {
            return Err(SecAggError::Malformed(format!(
                "expected one ciphertext for each of the {} neighbours in U1, sorted by recipient",
                expected.len()
            )));
        }
        if let Some(e) = msg
            .encrypted_shares
            .iter()
            .find(|e| e.ciphertext.len() != SHARE_CIPHERTEXT_LEN)
        {
            return Err(SecAggError::Malformed(format!(
                "ciphertext for {} has {} bytes, expected {SHARE_CIPHERTEXT_LEN}",
                e.recipient,
                e.ciphertext.len()
            )));
        }
        self.state.share_keys.insert(
            msg.sender,
            StoredShareKeys {
                self_mask_commitment: msg.self_mask_commitment,
                encrypted_shares: msg.encrypted_shares.clone(),
            },
        );
        Ok(())
    }

    fn check_masked_header(&self, round: u64, sender: ParticipantId, len: usize) -> Result<()> {
        self.check(
            RoundStage::MaskedInputCollection,
            round,
            sender,
            Some(&self.state.u2),
        )?;
        if self.state.masked_received.contains(&sender) {
            return Err(SecAggError::Duplicate(sender));
        }
        let expected = self.state.params.vector_len as usize;
        if len != expected {
            return Err(SecAggError::WrongVectorLength { expected, got: len });
        }
        Ok(())
    }

    /// MaskedInputCollection: adds a decoded masked input into the running sum.
    pub fn handle_masked_input(&mut self, msg: &MaskedInput) -> Result<()> {
        self.check_masked_header(msg.round_id, msg.sender, msg.values.len())?;
        let bits = self.state.params.bits;
        if bits < 32
            && let Some(index) = msg.values.iter().position(|&v| v >> bits != 0)
        {
            return Err(SecAggError::ValueOutOfRange { index, bits });
        }
        self.sum
            .par_iter_mut()
            .zip(msg.values.par_iter())
            .for_each(|(s, v)| *s = s.wrapping_add(*v));
        self.state.masked_received.insert(msg.sender);
        Ok(())
    }

    /// MaskedInputCollection: checks a binary masked input ([`MaskedInput::encode`]) and adds it into the running
    /// sum straight from the bytes, without building an intermediate vector.
    pub fn handle_masked_input_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let h = MaskedInputHeader::parse(bytes)?;
        self.check_masked_header(h.round_id, h.sender, h.len as usize)?;
        let payload = &bytes[MASKED_INPUT_HEADER_LEN..];
        let word = |w: &[u8]| u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let bits = self.state.params.bits;
        if bits < 32
            && let Some(index) = payload.chunks_exact(4).position(|w| word(w) >> bits != 0)
        {
            return Err(SecAggError::ValueOutOfRange { index, bits });
        }
        const CHUNK: usize = 1 << 16;
        self.sum
            .par_chunks_mut(CHUNK)
            .zip(payload.par_chunks(CHUNK * 4))
            .for_each(|(s, p)| {
                for (s, w) in s.iter_mut().zip(p.chunks_exact(4)) {
                    *s = s.wrapping_add(word(w));
                }
            });
        self.state.masked_received.insert(h.sender);
        Ok(())
    }

    /// Unmasking: records a survivor's revealed shares. It must reveal, for each neighbour in U2 and itself, the
    /// self-mask share if that participant is in U3 and the mask-key share otherwise, each exactly once.
    pub fn handle_unmasking_response(&mut self, msg: &UnmaskingResponse) -> Result<()> {
        self.check(
            RoundStage::Unmasking,
            msg.round_id,
            msg.sender,
            Some(&self.state.u3),
        )?;
        if self.state.unmask_responders.contains(&msg.sender) {
            return Err(SecAggError::Duplicate(msg.sender));
        }
        let sender = msg.sender;
        let bad = |owner: ParticipantId, reason: &str| SecAggError::BadShare {
            sender,
            owner,
            reason: reason.into(),
        };
        let owners: Vec<ParticipantId> = self
            .state
            .u2
            .iter()
            .copied()
            .filter(|&v| v == sender || self.graph.are_neighbours(sender, v))
            .collect();
        let (want_self, want_key): (Vec<ParticipantId>, Vec<ParticipantId>) =
            owners.iter().partition(|&&v| contains(&self.state.u3, v));
        let x = u64::from(sender) + 1;
        for (shares, want, kind) in [
            (&msg.self_mask_shares, &want_self, "self-mask"),
            (&msg.mask_key_shares, &want_key, "mask-key"),
        ] {
            let got: BTreeSet<ParticipantId> = shares.iter().map(|s| s.owner).collect();
            if got.len() != shares.len() {
                let owner = shares.first().map_or(sender, |s| s.owner);
                return Err(bad(
                    owner,
                    &format!("{kind} share revealed twice for one owner"),
                ));
            }
            if let Some(&owner) = got.iter().find(|o| !want.contains(o)) {
                return Err(bad(
                    owner,
                    &format!("{kind} share not expected for this participant"),
                ));
            }
            if let Some(&owner) = want.iter().find(|o| !got.contains(o)) {
                return Err(bad(owner, &format!("{kind} share missing")));
            }
            for s in shares {
                s.share
                    .validate()
                    .map_err(|e| bad(s.owner, &e.to_string()))?;
                if s.share.x != x {
                    return Err(bad(s.owner, "share evaluation point is not the sender's"));
                }
            }
        }
        for s in &msg.self_mask_shares {
            self.state
                .self_mask_shares
                .entry(s.owner)
                .or_default()
                .push(s.share.clone());
        }
        for s in &msg.mask_key_shares {
            self.state
                .mask_key_shares
                .entry(s.owner)
                .or_default()
                .push(s.share.clone());
        }
        self.state.unmask_responders.insert(sender);
        Ok(())
    }

    /// Aborts the round (e.g. the operator cancelled it). No aggregate will be released.
    pub fn abort(&mut self, reason: impl Into<String>) {
        self.abort_with(AbortReason::Coordinator {
            reason: reason.into(),
        });
    }

    fn abort_with(&mut self, reason: AbortReason) {
        self.state.stage = RoundStage::Aborted;
        self.state.abort_reason = Some(reason);
        self.state.share_keys.clear();
        self.state.self_mask_shares.clear();
        self.state.mask_key_shares.clear();
        self.sum = Vec::new();
    }

    /// The first member of `owners` whose neighbourhood (self included) within `alive` is smaller than t.
    /// Why a stage cannot close with `alive`: fewer than t survivors, or a neighbourhood (of an owner) below t.
    fn shortfall(
        &self,
        stage: RoundStage,
        owners: &[ParticipantId],
        alive: &[ParticipantId],
    ) -> Option<AbortReason> {
        let threshold = self.state.params.threshold;
        if alive.len() < threshold as usize {
            return Some(AbortReason::TooFewParticipants {
                stage,
                survivors: alive.len() as u32,
                threshold,
            });
        }
        self.thin_neighbourhood(owners, alive)
            .map(
                |(participant, members)| AbortReason::NeighbourhoodTooSmall {
                    stage,
                    participant,
                    members,
                    threshold,
                },
            )
    }

    fn thin_neighbourhood(
        &self,
        owners: &[ParticipantId],
        alive: &[ParticipantId],
    ) -> Option<(ParticipantId, u32)> {
        let t = self.state.params.threshold;
        owners.iter().find_map(|&v| {
            let members = alive
                .iter()
                .filter(|&&u| u == v || self.graph.are_neighbours(u, v))
                .count() as u32;
            (members < t).then_some((v, members))
        })
    }

    /// Closes the current stage with whoever answered (call when everyone has, or when the deadline passes) and
    /// opens the next, or aborts the round when fewer than t answered. Closing Unmasking rebuilds the secrets,
    /// removes the masks and completes the round; it is the heavy step (PRG expansion over all cores).
    pub fn close_stage(&mut self) -> Result<StageTransition> {
        let from = self.state.stage;
        let t = self.state.params.threshold;
        let too_few = |stage, n: usize| AbortReason::TooFewParticipants {
            stage,
            survivors: n as u32,
            threshold: t,
        };
        match from {
            RoundStage::Completed | RoundStage::Aborted => return Err(SecAggError::RoundEnded),
            RoundStage::AdvertiseKeys => {
                let u1: Vec<ParticipantId> = self.state.advertised.keys().copied().collect();
                if let Some(reason) = self.shortfall(from, &u1, &u1) {
                    self.abort_with(reason);
                } else {
                    self.state.u1 = u1;
                    self.state.stage = RoundStage::ShareKeys;
                }
            }
            RoundStage::ShareKeys => {
                let u2: Vec<ParticipantId> = self.state.share_keys.keys().copied().collect();
                if let Some(reason) = self.shortfall(from, &u2, &u2) {
                    self.abort_with(reason);
                } else {
                    self.state.u2 = u2;
                    self.sum = vec![0u32; self.state.params.vector_len as usize];
                    self.state.stage = RoundStage::MaskedInputCollection;
                }
            }
            RoundStage::MaskedInputCollection => {
                let u3: Vec<ParticipantId> = self.state.masked_received.iter().copied().collect();
                if let Some(reason) = self.shortfall(from, &self.state.u2, &u3) {
                    self.abort_with(reason);
                } else {
                    self.state.u3 = u3;
                    // The ciphertexts have been delivered; keep only the commitments.
                    for s in self.state.share_keys.values_mut() {
                        s.encrypted_shares.clear();
                    }
                    self.state.stage = RoundStage::Unmasking;
                }
            }
            RoundStage::Unmasking => {
                let u4: Vec<ParticipantId> = self.state.unmask_responders.iter().copied().collect();
                if u4.len() < t as usize {
                    self.abort_with(too_few(from, u4.len()));
                } else {
                    self.state.u4 = u4;
                    match self.unmask() {
                        Ok(()) => {
                            self.state.stage = RoundStage::Completed;
                            self.state.share_keys.clear();
                            self.state.self_mask_shares.clear();
                            self.state.mask_key_shares.clear();
                        }
                        Err(reason) => self.abort_with(reason),
                    }
                }
            }
        }
        Ok(StageTransition {
            from,
            to: self.state.stage,
        })
    }

    /// Rebuilds every needed secret and removes all masks from the running sum.
    fn unmask(&mut self) -> std::result::Result<(), AbortReason> {
        let p = &self.state.params;
        let t = p.threshold as usize;
        let round = p.round_id;
        let u3 = &self.state.u3;
        let dropped: Vec<ParticipantId> = self
            .state
            .u2
            .iter()
            .copied()
            .filter(|v| !contains(u3, *v))
            .collect();
        // Self-mask seeds of the survivors, checked against their commitments.
        let self_masks: Vec<std::result::Result<Secret32, AbortReason>> = u3
            .par_iter()
            .map(|&v| {
                let shares = self
                    .state
                    .self_mask_shares
                    .get(&v)
                    .map_or(&[][..], |s| &s[..]);
                let seed = rebuild(shares, t, v)?;
                let commitment = self
                    .state
                    .share_keys
                    .get(&v)
                    .map(|s| s.self_mask_commitment);
                if commitment != Some(crypto::self_mask_commitment(&seed, round, v)) {
                    return Err(AbortReason::InconsistentShares { participant: v });
                }
                Ok(seed)
            })
            .collect();
        let mut sub: Vec<Secret32> = Vec::with_capacity(u3.len());
        for s in self_masks {
            sub.push(s?);
        }
        // Pairwise masks between dropped clients and their surviving neighbours.
        let pairwise: Vec<std::result::Result<Vec<(bool, Secret32)>, AbortReason>> = dropped
            .par_iter()
            .map(|&v| {
                let shares = self
                    .state
                    .mask_key_shares
                    .get(&v)
                    .map_or(&[][..], |s| &s[..]);
                let sk = rebuild(shares, t, v)?;
                let keys = KeyPair::from_secret_bytes(*sk.as_bytes());
                let advertised = self.state.advertised.get(&v);
                if advertised.map(|a| a.mask_public_key) != Some(keys.public_bytes()) {
                    return Err(AbortReason::InconsistentShares { participant: v });
                }
                u3.iter()
                    .filter(|&&u| self.graph.are_neighbours(u, v))
                    .map(|&u| {
                        let pk = self
                            .state
                            .advertised
                            .get(&u)
                            .map(|a| a.mask_public_key)
                            .unwrap_or_default();
                        let seed = crypto::pairwise_mask_seed(&keys, v, &pk, u, round)
                            .map_err(|_| AbortReason::InconsistentShares { participant: v })?;
                        // u added +PRG(s_uv) when v > u and −PRG(s_uv) when v < u; undo it.
                        Ok((v < u, seed))
                    })
                    .collect()
            })
            .collect();
        let mut add = Vec::new();
        for r in pairwise {
            for (is_add, seed) in r? {
                if is_add {
                    add.push(seed)
                } else {
                    sub.push(seed)
                }
            }
        }
        crypto::apply_masks(&mut self.sum, &add, &sub);
        crypto::reduce_to_ring(&mut self.sum, self.state.params.bits);
        Ok(())
    }

    /// Number of mask vectors the unmasking step expands (survivors' self masks plus dropped clients' pairwise
    /// masks with surviving neighbours); available from stage Unmasking on.
    pub fn unmask_vector_count(&self) -> usize {
        let u3 = &self.state.u3;
        let dropped = self.state.u2.iter().filter(|v| !contains(u3, **v));
        u3.len()
            + dropped
                .map(|&v| {
                    u3.iter()
                        .filter(|&&u| self.graph.are_neighbours(u, v))
                        .count()
                })
                .sum::<usize>()
    }

    /// The ShareKeys broadcast: U1 with everyone's public keys (from stage ShareKeys on).
    pub fn key_directory(&self) -> Option<KeyDirectory> {
        if self.state.u1.is_empty() {
            return None;
        }
        Some(KeyDirectory {
            version: WIRE_VERSION,
            round_id: self.state.params.round_id,
            participants: self
                .state
                .u1
                .iter()
                .filter_map(|u| self.state.advertised.get(u).cloned())
                .collect(),
        })
    }

    /// The MaskedInputCollection broadcast for one recipient in U2: the ciphertexts its neighbours in U2 sent it.
    pub fn routed_shares(&self, recipient: ParticipantId) -> Result<RoutedShares> {
        if self.state.stage != RoundStage::MaskedInputCollection {
            return Err(SecAggError::WrongStage {
                current: self.state.stage,
                got: RoundStage::MaskedInputCollection,
            });
        }
        if !contains(&self.state.u2, recipient) {
            return Err(SecAggError::NotMember {
                participant: recipient,
                stage: RoundStage::MaskedInputCollection,
            });
        }
        let shares = self
            .state
            .share_keys
            .iter()
            .filter_map(|(&sender, s)| {
                let i = s
                    .encrypted_shares
                    .binary_search_by_key(&recipient, |e| e.recipient)
                    .ok()?;
                Some(RoutedShare {
                    sender,
                    ciphertext: s.encrypted_shares[i].ciphertext.clone(),
                })
            })
            .collect();
        Ok(RoutedShares {
            version: WIRE_VERSION,
            round_id: self.state.params.round_id,
            recipient,
            shares,
        })
    }

    /// The Unmasking broadcast: U3 (from stage Unmasking on).
    pub fn unmasking_request(&self) -> Option<UnmaskingRequest> {
        if self.state.u3.is_empty() {
            return None;
        }
        Some(UnmaskingRequest {
            version: WIRE_VERSION,
            round_id: self.state.params.round_id,
            survivors: self.state.u3.clone(),
        })
    }

    /// The outcome once the round has ended.
    pub fn outcome(&self) -> Option<RoundOutcome> {
        match self.state.stage {
            RoundStage::Completed => Some(RoundOutcome::Completed(self.sum.clone())),
            RoundStage::Aborted => Some(RoundOutcome::Aborted {
                reason: self
                    .state
                    .abort_reason
                    .clone()
                    .unwrap_or(AbortReason::Coordinator {
                        reason: "unknown".into(),
                    }),
            }),
            _ => None,
        }
    }

    /// The aggregate (sum of U3's inputs mod 2^bits) once Completed, without copying it.
    pub fn aggregate(&self) -> Option<&[u32]> {
        (self.state.stage == RoundStage::Completed).then_some(&self.sum[..])
    }

    /// Versioned binary snapshot: magic `CFSS`, version (u16 LE), length (u32 LE) of the postcard-encoded state,
    /// that state, then the running sum as a u32 LE count and little-endian u32 elements.
    pub fn encode(&self) -> Vec<u8> {
        // postcard serialisation of these plain types into a Vec cannot fail.
        let state = postcard::to_stdvec(&self.state).unwrap_or_default();
        let mut out = Vec::with_capacity(14 + state.len() + 4 * self.sum.len());
        out.extend_from_slice(&STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&(state.len() as u32).to_le_bytes());
        out.extend_from_slice(&state);
        out.extend_from_slice(&(self.sum.len() as u32).to_le_bytes());
        for v in &self.sum {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Restores a snapshot made by [`SecAggServer::encode`], checking its structure.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let err = |m: &str| SecAggError::Decode(m.into());
        if bytes.len() < 10 || bytes[..4] != STATE_MAGIC {
            return Err(err("not a Confide secure-aggregation state"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != STATE_VERSION {
            return Err(SecAggError::Decode(format!(
                "unsupported state version {version}"
            )));
        }
        let state_len = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
        let rest = &bytes[10..];
        if rest.len() < state_len + 4 {
            return Err(err("truncated state"));
        }
        let state: ServerState = postcard::from_bytes(&rest[..state_len])
            .map_err(|e| SecAggError::Decode(e.to_string()))?;
        let rest = &rest[state_len..];
        let sum_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let payload = &rest[4..];
        if payload.len() != sum_len * 4 {
            return Err(err("running sum length does not match its header"));
        }
        let expected_len = match state.stage {
            RoundStage::MaskedInputCollection | RoundStage::Unmasking | RoundStage::Completed => {
                state.params.vector_len as usize
            }
            _ => 0,
        };
        if sum_len != expected_len {
            return Err(err("running sum has the wrong length for the stage"));
        }
        state
            .params
            .validate()
            .map_err(|e| SecAggError::Decode(e.to_string()))?;
        let graph = state.params.neighbour_graph()?;
        let sum = payload
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        Ok(SecAggServer { state, graph, sum })
    }
}
