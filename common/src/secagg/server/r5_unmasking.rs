//! Server state Unmasking: collects the revealed shares; closing it rebuilds the secrets and removes the masks
//! (see [`super::reconstruct`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::super::error::{Result, SecAggError};
use super::super::messages::{SurvivorSignature, UnmaskingResponse};
use super::super::shamir::Share;
use super::super::{ParticipantId, RoundStage};
use super::reconstruct;
use super::record::{AbortReason, contains};
use super::{Round, ServerState};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UnmaskingState {
    /// Malicious rounds: the consistency-check signatures forwarded to the revealers.
    pub(crate) signatures: Vec<SurvivorSignature>,
    pub(crate) self_mask_shares: BTreeMap<ParticipantId, Vec<Share>>,
    pub(crate) mask_key_shares: BTreeMap<ParticipantId, Vec<Share>>,
    pub(crate) responders: BTreeSet<ParticipantId>,
}

impl UnmaskingState {
    /// Records a revealer's shares. It must reveal, for each dealer among itself and its neighbours in U2, the
    /// self-mask share if that dealer is in U3 and the mask-key share otherwise, each exactly once, at its own
    /// evaluation point. (Whether each share matches its commitment is checked when the stage closes.)
    pub(crate) fn handle(&mut self, round: &Round, msg: &UnmaskingResponse) -> Result<()> {
        round.check(
            RoundStage::Unmasking,
            msg.round_id,
            msg.sender,
            Some(round.unmasking_members()),
        )?;
        if self.responders.contains(&msg.sender) {
            return Err(SecAggError::Duplicate(msg.sender));
        }
        let sender = msg.sender;
        let bad = |owner: ParticipantId, reason: &str| SecAggError::BadShare {
            sender,
            owner,
            reason: reason.into(),
        };
        let owners: Vec<ParticipantId> = round
            .record
            .u2
            .iter()
            .copied()
            .filter(|&v| v == sender || round.graph.are_neighbours(sender, v))
            .collect();
        let (want_self, want_key): (Vec<ParticipantId>, Vec<ParticipantId>) =
            owners.iter().partition(|&&v| contains(&round.record.u3, v));
        let x = sender + 1;
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
            if let Some(s) = shares.iter().find(|s| s.share.x != x) {
                return Err(bad(s.owner, "share evaluation point is not the sender's"));
            }
        }
        for s in &msg.self_mask_shares {
            self.self_mask_shares
                .entry(s.owner)
                .or_default()
                .push(s.share.clone());
        }
        for s in &msg.mask_key_shares {
            self.mask_key_shares
                .entry(s.owner)
                .or_default()
                .push(s.share.clone());
        }
        self.responders.insert(sender);
        Ok(())
    }

    /// U4 = the revealers; rebuilds every needed secret and strips all masks from `sum`.
    pub(crate) fn close(
        self,
        round: &mut Round,
        sum: &mut [u32],
    ) -> std::result::Result<ServerState, AbortReason> {
        let u4: Vec<ParticipantId> = self.responders.iter().copied().collect();
        let t = round.params().threshold;
        if u4.len() < t as usize {
            return Err(AbortReason::TooFewParticipants {
                stage: RoundStage::Unmasking,
                survivors: u4.len() as u32,
                threshold: t,
            });
        }
        round.record.u4 = u4;
        reconstruct::unmask(round, &self.self_mask_shares, &self.mask_key_shares, sum)?;
        Ok(ServerState::Completed)
    }
}
