//! The coordinator's side of a round: one state type per stage (`r0_advertise_keys` … `r5_unmasking`, then
//! Completed or Aborted), each handling its one kind of participant message and closing into the next.
//!
//! The coordinator feeds each participant message of the current stage to the matching `handle_*` method (or to
//! [`SecAggServer::handle_message`], which parses by stage); each either accepts the message or returns a typed error
//! and changes nothing. It calls [`SecAggServer::close_stage`] when [`SecAggServer::ready_to_close`] says everyone
//! expected has answered or when the stage deadline passes, then publishes [`SecAggServer::broadcasts`] (the
//! messages that open the new stage). Closing a stage with fewer than t members (or a valid complaint at share
//! verification) aborts the round. Masked inputs are added into one running sum on arrival; no per-client vector is
//! kept. [`SecAggServer::status`] tells where each participant stands and why it left. [`SecAggServer::encode`]
//! gives a compact versioned snapshot to persist at every stage boundary; [`SecAggServer::decode`] resumes.

mod broadcasts;
mod r0_advertise_keys;
mod r1_share_keys;
mod r2_share_verification;
mod r3_masked_input;
mod r4_consistency_check;
mod r5_unmasking;
mod reconstruct;
mod record;
mod snapshot;
mod status;

use serde::{Deserialize, Serialize};

use super::error::{Result, SecAggError};
use super::identity::SignatureBytes;
use super::messages::{
    AdvertiseKeys, ConsistencySignature, ControlMessage, MaskedInput, ShareKeys, ShareVerification,
    UnmaskingResponse,
};
use super::{NeighbourGraph, ParticipantId, RoundStage, SecAggParams, ThreatModel};
use r0_advertise_keys::AdvertiseKeysState;
use r1_share_keys::ShareKeysState;
use r2_share_verification::ShareVerificationState;
use r3_masked_input::MaskedInputState;
use r4_consistency_check::ConsistencyCheckState;
use r5_unmasking::UnmaskingState;
use record::{Record, contains};

pub use record::{AbortReason, ClientStatus, DropReason, Dropout, RoundOutcome, StageTransition};
pub use snapshot::{STATE_MAGIC, STATE_VERSION};

/// Where a stage's close leads: the next state, or an abort.
pub(crate) type Next = std::result::Result<ServerState, AbortReason>;

/// The stage states, persisted in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ServerState {
    AdvertiseKeys(AdvertiseKeysState),
    ShareKeys(ShareKeysState),
    ShareVerification(ShareVerificationState),
    MaskedInputCollection(MaskedInputState),
    ConsistencyCheck(ConsistencyCheckState),
    Unmasking(UnmaskingState),
    Completed,
    Aborted,
}

impl ServerState {
    fn stage(&self) -> RoundStage {
        match self {
            ServerState::AdvertiseKeys(_) => RoundStage::AdvertiseKeys,
            ServerState::ShareKeys(_) => RoundStage::ShareKeys,
            ServerState::ShareVerification(_) => RoundStage::ShareVerification,
            ServerState::MaskedInputCollection(_) => RoundStage::MaskedInputCollection,
            ServerState::ConsistencyCheck(_) => RoundStage::ConsistencyCheck,
            ServerState::Unmasking(_) => RoundStage::Unmasking,
            ServerState::Completed => RoundStage::Completed,
            ServerState::Aborted => RoundStage::Aborted,
        }
    }
}

/// What every stage needs: the parameters (in the record), the graph, the parameter digest and the record.
pub(crate) struct Round {
    pub(crate) graph: NeighbourGraph,
    pub(crate) digest: [u8; 32],
    pub(crate) record: Record,
}

impl Round {
    pub(crate) fn params(&self) -> &SecAggParams {
        &self.record.params
    }

    pub(crate) fn malicious(&self) -> bool {
        self.record.params.threat_model == ThreatModel::Malicious
    }

    pub(crate) fn threshold(&self) -> usize {
        self.record.params.threshold as usize
    }

    /// Who may send a masked input: U2 (semi-honest) or the members that acknowledged their shares (malicious).
    pub(crate) fn masking_members(&self) -> &[ParticipantId] {
        if self.malicious() {
            &self.record.verified
        } else {
            &self.record.u2
        }
    }

    /// Who may reveal shares: U3 (semi-honest) or its members that signed it (malicious).
    pub(crate) fn unmasking_members(&self) -> &[ParticipantId] {
        if self.malicious() {
            &self.record.signers
        } else {
            &self.record.u3
        }
    }

    /// The dealers in U2 whose ciphertexts are routed to `recipient` (sorted).
    pub(crate) fn routed_dealers(&self, recipient: ParticipantId) -> Vec<ParticipantId> {
        self.record
            .dealings
            .iter()
            .filter(|(_, d)| d.ciphertext_for(recipient).is_some())
            .map(|(&sender, _)| sender)
            .collect()
    }

    /// Stage, round, and membership of the sender in `members` (or among all participants).
    pub(crate) fn check(
        &self,
        stage: RoundStage,
        round: u64,
        sender: ParticipantId,
        members: Option<&[ParticipantId]>,
    ) -> Result<()> {
        if round != self.params().round_id {
            return Err(SecAggError::WrongRound {
                expected: self.params().round_id,
                got: round,
            });
        }
        let member = match members {
            Some(m) => contains(m, sender),
            None => sender < self.params().participants,
        };
        if !member {
            return Err(SecAggError::NotMember {
                participant: sender,
                stage,
            });
        }
        Ok(())
    }

    /// Malicious rounds: the signature must be present and verify under the sender's roster identity. Semi-honest
    /// rounds carry none.
    pub(crate) fn check_signature(
        &self,
        sender: ParticipantId,
        signature: Option<&SignatureBytes>,
        statement: impl FnOnce() -> [u8; 32],
    ) -> Result<()> {
        match (signature, self.malicious()) {
            (None, false) => Ok(()),
            (Some(_), false) => Err(SecAggError::Malformed(
                "signatures belong to malicious-server rounds".into(),
            )),
            (None, true) => Err(SecAggError::MissingSignature {
                participant: sender,
            }),
            (Some(sig), true) => self.params().roster.verify(sender, &statement(), sig),
        }
    }

    /// Why a stage cannot close with `alive`: fewer than t, or some owner's neighbourhood (itself included) within
    /// `alive` smaller than t (its secrets could not be rebuilt).
    pub(crate) fn shortfall(
        &self,
        stage: RoundStage,
        owners: &[ParticipantId],
        alive: &[ParticipantId],
    ) -> Option<AbortReason> {
        let threshold = self.params().threshold;
        if alive.len() < threshold as usize {
            return Some(AbortReason::TooFewParticipants {
                stage,
                survivors: alive.len() as u32,
                threshold,
            });
        }
        owners.iter().find_map(|&v| {
            let members = alive
                .iter()
                .filter(|&&u| u == v || self.graph.are_neighbours(u, v))
                .count() as u32;
            (members < threshold).then_some(AbortReason::NeighbourhoodTooSmall {
                stage,
                participant: v,
                members,
                threshold,
            })
        })
    }
}

/// The server of one secure-aggregation round.
pub struct SecAggServer {
    round: Round,
    state: ServerState,
    /// Running sum of masked inputs (allocated when MaskedInputCollection opens); the aggregate once Completed.
    sum: Vec<u32>,
}

impl std::fmt::Debug for SecAggServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggServer")
            .field("round_id", &self.round.params().round_id)
            .field("stage", &self.stage())
            .finish_non_exhaustive()
    }
}

impl SecAggServer {
    /// A new round in stage AdvertiseKeys.
    pub fn new(params: SecAggParams) -> Result<Self> {
        params.validate()?;
        Ok(SecAggServer {
            round: Round {
                graph: params.neighbour_graph()?,
                digest: params.digest(),
                record: Record::new(params),
            },
            state: ServerState::AdvertiseKeys(AdvertiseKeysState::default()),
            sum: Vec::new(),
        })
    }

    /// The round parameters.
    pub fn params(&self) -> &SecAggParams {
        self.round.params()
    }

    /// The current stage.
    pub fn stage(&self) -> RoundStage {
        self.state.stage()
    }

    /// U1: participants that advertised keys (set when AdvertiseKeys closes).
    pub fn u1(&self) -> &[ParticipantId] {
        &self.round.record.u1
    }
    /// U2: participants that dealt shares (set when ShareKeys closes).
    pub fn u2(&self) -> &[ParticipantId] {
        &self.round.record.u2
    }
    /// Malicious rounds: the members of U2 that acknowledged their shares (set when ShareVerification closes).
    pub fn verified(&self) -> &[ParticipantId] {
        &self.round.record.verified
    }
    /// U3: participants whose masked input is in the sum (set when MaskedInputCollection closes).
    pub fn u3(&self) -> &[ParticipantId] {
        &self.round.record.u3
    }
    /// Malicious rounds: the members of U3 that signed it (set when ConsistencyCheck closes).
    pub fn signers(&self) -> &[ParticipantId] {
        &self.round.record.signers
    }
    /// U4: participants that revealed shares (set when Unmasking closes).
    pub fn u4(&self) -> &[ParticipantId] {
        &self.round.record.u4
    }

    /// The set that completed `stage` (after it closed): U1, U2, verified, U3, signers or U4.
    pub fn completed(&self, stage: RoundStage) -> &[ParticipantId] {
        match stage {
            RoundStage::AdvertiseKeys => self.u1(),
            RoundStage::ShareKeys => self.u2(),
            RoundStage::ShareVerification => self.verified(),
            RoundStage::MaskedInputCollection => self.u3(),
            RoundStage::ConsistencyCheck => self.signers(),
            RoundStage::Unmasking | RoundStage::Completed | RoundStage::Aborted => self.u4(),
        }
    }

    /// Participants allowed to send a message in the current stage.
    pub fn expected(&self) -> Vec<ParticipantId> {
        let r = &self.round.record;
        match self.state {
            ServerState::AdvertiseKeys(_) => (0..r.params.participants).collect(),
            ServerState::ShareKeys(_) => r.u1.clone(),
            ServerState::ShareVerification(_) => r.u2.clone(),
            ServerState::MaskedInputCollection(_) => self.round.masking_members().to_vec(),
            ServerState::ConsistencyCheck(_) => r.u3.clone(),
            ServerState::Unmasking(_) => self.round.unmasking_members().to_vec(),
            ServerState::Completed | ServerState::Aborted => Vec::new(),
        }
    }

    /// Participants that already answered in the current stage.
    pub fn responded(&self) -> Vec<ParticipantId> {
        match &self.state {
            ServerState::AdvertiseKeys(s) => s.advertised.keys().copied().collect(),
            ServerState::ShareKeys(s) => s.dealings.keys().copied().collect(),
            ServerState::ShareVerification(s) => s.verdicts.keys().copied().collect(),
            ServerState::MaskedInputCollection(s) => s.received.iter().copied().collect(),
            ServerState::ConsistencyCheck(s) => s.signatures.keys().copied().collect(),
            ServerState::Unmasking(s) => s.responders.iter().copied().collect(),
            ServerState::Completed | ServerState::Aborted => Vec::new(),
        }
    }

    /// Whether every expected participant has answered, so the stage can close without waiting for the deadline.
    pub fn ready_to_close(&self) -> bool {
        let expected = self.expected().len();
        expected > 0 && self.responded().len() == expected
    }

    fn wrong_stage(&self, got: RoundStage) -> SecAggError {
        match self.stage() {
            RoundStage::Completed | RoundStage::Aborted => SecAggError::RoundEnded,
            current => SecAggError::WrongStage { current, got },
        }
    }

    /// AdvertiseKeys: records a participant's public keys (and checks its signature in malicious rounds).
    pub fn handle_advertise_keys(&mut self, msg: &AdvertiseKeys) -> Result<()> {
        match &mut self.state {
            ServerState::AdvertiseKeys(s) => s.handle(&self.round, msg),
            _ => Err(self.wrong_stage(RoundStage::AdvertiseKeys)),
        }
    }

    /// ShareKeys: records a participant's dealing; there must be exactly one well-sized ciphertext per neighbour in
    /// U1 (and, in malicious rounds, a signature and commitments that pass the low-degree test).
    pub fn handle_share_keys(&mut self, msg: &ShareKeys) -> Result<()> {
        match &mut self.state {
            ServerState::ShareKeys(s) => s.handle(&self.round, msg),
            _ => Err(self.wrong_stage(RoundStage::ShareKeys)),
        }
    }

    /// ShareVerification (malicious rounds): records a holder's signed acknowledgement or judges its complaints.
    pub fn handle_share_verification(&mut self, msg: &ShareVerification) -> Result<()> {
        match &mut self.state {
            ServerState::ShareVerification(s) => s.handle(&self.round, msg),
            _ => Err(self.wrong_stage(RoundStage::ShareVerification)),
        }
    }

    /// MaskedInputCollection: adds a decoded masked input into the running sum.
    pub fn handle_masked_input(&mut self, msg: &MaskedInput) -> Result<()> {
        match &mut self.state {
            ServerState::MaskedInputCollection(s) => s.handle(&self.round, &mut self.sum, msg),
            _ => Err(self.wrong_stage(RoundStage::MaskedInputCollection)),
        }
    }

    /// MaskedInputCollection: checks a binary masked input ([`MaskedInput::encode`]) and adds it into the running
    /// sum straight from the bytes, without building an intermediate vector.
    pub fn handle_masked_input_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.state {
            ServerState::MaskedInputCollection(s) => s
                .handle_bytes(&self.round, &mut self.sum, bytes)
                .map(|_| ()),
            _ => Err(self.wrong_stage(RoundStage::MaskedInputCollection)),
        }
    }

    /// ConsistencyCheck (malicious rounds): records a survivor's signature over U3.
    pub fn handle_consistency_signature(&mut self, msg: &ConsistencySignature) -> Result<()> {
        match &mut self.state {
            ServerState::ConsistencyCheck(s) => s.handle(&self.round, msg),
            _ => Err(self.wrong_stage(RoundStage::ConsistencyCheck)),
        }
    }

    /// Unmasking: records a revealer's shares. It must reveal, for each neighbour in U2 and itself, the self-mask
    /// share if that participant is in U3 and the mask-key share otherwise, each exactly once.
    pub fn handle_unmasking_response(&mut self, msg: &UnmaskingResponse) -> Result<()> {
        match &mut self.state {
            ServerState::Unmasking(s) => s.handle(&self.round, msg),
            _ => Err(self.wrong_stage(RoundStage::Unmasking)),
        }
    }

    /// Any participant message of the current stage as received on the wire (JSON, or the binary masked input);
    /// returns its sender.
    pub fn handle_message(&mut self, body: &[u8]) -> Result<ParticipantId> {
        fn json<T: ControlMessage>(body: &[u8]) -> Result<T> {
            let text = std::str::from_utf8(body)
                .map_err(|_| SecAggError::Malformed("message is not UTF-8".into()))?;
            T::from_json(text)
        }
        match self.stage() {
            RoundStage::AdvertiseKeys => {
                let m: AdvertiseKeys = json(body)?;
                self.handle_advertise_keys(&m).map(|()| m.sender)
            }
            RoundStage::ShareKeys => {
                let m: ShareKeys = json(body)?;
                self.handle_share_keys(&m).map(|()| m.sender)
            }
            RoundStage::ShareVerification => {
                let m: ShareVerification = json(body)?;
                self.handle_share_verification(&m).map(|()| m.sender)
            }
            RoundStage::MaskedInputCollection => match &mut self.state {
                ServerState::MaskedInputCollection(s) => {
                    s.handle_bytes(&self.round, &mut self.sum, body)
                }
                _ => Err(self.wrong_stage(RoundStage::MaskedInputCollection)),
            },
            RoundStage::ConsistencyCheck => {
                let m: ConsistencySignature = json(body)?;
                self.handle_consistency_signature(&m).map(|()| m.sender)
            }
            RoundStage::Unmasking => {
                let m: UnmaskingResponse = json(body)?;
                self.handle_unmasking_response(&m).map(|()| m.sender)
            }
            RoundStage::Completed | RoundStage::Aborted => Err(SecAggError::RoundEnded),
        }
    }

    /// Aborts the round (e.g. the operator cancelled it). No aggregate will be released.
    pub fn abort(&mut self, reason: impl Into<String>) {
        self.abort_with(AbortReason::Coordinator {
            reason: reason.into(),
        });
    }

    fn abort_with(&mut self, reason: AbortReason) {
        self.state = ServerState::Aborted;
        self.round.record.abort_reason = Some(reason);
        self.round.record.dealings.clear();
        self.sum = Vec::new();
    }

    /// Closes the current stage with whoever answered (call when everyone has, or when the deadline passes) and
    /// opens the next, or aborts the round. Closing Unmasking rebuilds the secrets, removes the masks and completes
    /// the round; it is the heavy step (PRG expansion over all cores).
    pub fn close_stage(&mut self) -> Result<StageTransition> {
        let from = self.stage();
        if matches!(from, RoundStage::Completed | RoundStage::Aborted) {
            return Err(SecAggError::RoundEnded);
        }
        let state = std::mem::replace(&mut self.state, ServerState::Aborted);
        let round = &mut self.round;
        let next = match state {
            ServerState::AdvertiseKeys(s) => s.close(round),
            ServerState::ShareKeys(s) => s.close(round),
            ServerState::ShareVerification(s) => s.close(round),
            ServerState::MaskedInputCollection(s) => s.close(round),
            ServerState::ConsistencyCheck(s) => s.close(round),
            ServerState::Unmasking(s) => s.close(round, &mut self.sum),
            ServerState::Completed | ServerState::Aborted => return Err(SecAggError::RoundEnded),
        };
        match next {
            Ok(next) => {
                if matches!(next, ServerState::MaskedInputCollection(_)) {
                    self.sum = vec![0u32; self.params().vector_len as usize];
                }
                if matches!(next, ServerState::Completed) {
                    self.round.record.dealings.clear();
                }
                self.state = next;
            }
            Err(reason) => self.abort_with(reason),
        }
        Ok(StageTransition {
            from,
            to: self.stage(),
        })
    }

    /// Number of mask vectors the unmasking step expands (survivors' self masks plus dropped clients' pairwise
    /// masks with surviving neighbours); available once U3 is known.
    pub fn unmask_vector_count(&self) -> usize {
        let r = &self.round.record;
        let dropped = r.u2.iter().filter(|v| !contains(&r.u3, **v));
        r.u3.len()
            + dropped
                .map(|&v| {
                    r.u3.iter()
                        .filter(|&&u| self.round.graph.are_neighbours(u, v))
                        .count()
                })
                .sum::<usize>()
    }

    /// The outcome once the round has ended.
    pub fn outcome(&self) -> Option<RoundOutcome> {
        match self.state {
            ServerState::Completed => Some(RoundOutcome::Completed(self.sum.clone())),
            ServerState::Aborted => Some(RoundOutcome::Aborted {
                reason: self.round.record.abort_reason.clone().unwrap_or(
                    AbortReason::Coordinator {
                        reason: "unknown".into(),
                    },
                ),
            }),
            _ => None,
        }
    }

    /// The aggregate (sum of U3's inputs mod 2^bits) once Completed, without copying it.
    pub fn aggregate(&self) -> Option<&[u32]> {
        matches!(self.state, ServerState::Completed).then_some(&self.sum[..])
    }
}
