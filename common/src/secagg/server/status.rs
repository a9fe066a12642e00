//! Where each participant stands: the last stage it completed and, if it left, when and why.

use super::super::{ParticipantId, RoundStage};
use super::SecAggServer;
use super::record::{ClientStatus, DropReason, Dropout, contains};

impl SecAggServer {
    /// The status of participant `p` (`None` if it is not in the round).
    pub fn status(&self, p: ParticipantId) -> Option<ClientStatus> {
        let r = &self.round.record;
        if p >= r.params.participants {
            return None;
        }
        let malicious = self.round.malicious();
        // The closed stages' sets, in order (a set is recorded only when its stage closed: it then has ≥ t members).
        let sets: Vec<(RoundStage, &[ParticipantId])> = [
            (RoundStage::AdvertiseKeys, &r.u1[..], true),
            (RoundStage::ShareKeys, &r.u2[..], true),
            (RoundStage::ShareVerification, &r.verified[..], malicious),
            (RoundStage::MaskedInputCollection, &r.u3[..], true),
            (RoundStage::ConsistencyCheck, &r.signers[..], malicious),
            (RoundStage::Unmasking, &r.u4[..], true),
        ]
        .into_iter()
        .filter(|(_, set, applies)| *applies && !set.is_empty())
        .map(|(stage, set, _)| (stage, set))
        .collect();
        let mut reached = None;
        let mut dropped = r.drops.get(&p).copied();
        for (stage, set) in &sets {
            if contains(set, p) {
                reached = Some(*stage);
            } else {
                if dropped.is_none() {
                    dropped = Some(Dropout {
                        stage: *stage,
                        reason: DropReason::NoResponse,
                    });
                }
                break;
            }
        }
        if dropped.is_none() && self.responded().contains(&p) {
            reached = Some(self.stage());
        }
        Some(ClientStatus { reached, dropped })
    }
}
