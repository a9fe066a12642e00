//! Server state ConsistencyCheck (malicious rounds): every member of U3 signs U3; the signatures are forwarded when
//! Unmasking opens, and a client reveals only after seeing t of them over the same set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::error::{Result, SecAggError};
use super::super::identity::{self, SignatureBytes};
use super::super::messages::{ConsistencySignature, SurvivorSignature};
use super::super::{ParticipantId, RoundStage};
use super::r5_unmasking::UnmaskingState;
use super::{Next, Round, ServerState};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConsistencyCheckState {
    pub(crate) signatures: BTreeMap<ParticipantId, SignatureBytes>,
}

impl ConsistencyCheckState {
    /// Records a member's signature over (round, U3) after checking it against the roster.
    pub(crate) fn handle(&mut self, round: &Round, msg: &ConsistencySignature) -> Result<()> {
        round.check(
            RoundStage::ConsistencyCheck,
            msg.round_id,
            msg.sender,
            Some(&round.record.u3),
        )?;
        if self.signatures.contains_key(&msg.sender) {
            return Err(SecAggError::Duplicate(msg.sender));
        }
        let statement =
            identity::survivors_statement(&round.digest, msg.round_id, &round.record.u3);
        round.check_signature(msg.sender, Some(&msg.signature), || statement)?;
        self.signatures.insert(msg.sender, msg.signature);
        Ok(())
    }

    /// At least t signers, and every dealer still rebuildable from them (they are the ones who will reveal).
    pub(crate) fn close(self, round: &mut Round) -> Next {
        let signers: Vec<ParticipantId> = self.signatures.keys().copied().collect();
        let owners = round.record.u2.clone();
        if let Some(reason) = round.shortfall(RoundStage::ConsistencyCheck, &owners, &signers) {
            return Err(reason);
        }
        round.record.signers = signers;
        let signatures = self
            .signatures
            .into_iter()
            .map(|(signer, signature)| SurvivorSignature { signer, signature })
            .collect();
        Ok(ServerState::Unmasking(UnmaskingState {
            signatures,
            ..UnmaskingState::default()
        }))
    }
}
