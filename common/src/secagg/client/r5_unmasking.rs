//! The reveal rule of the Unmasking stage, the same in both modes: for itself and each neighbour whose shares it
//! holds, exactly one share — of the self-mask secret if that participant is in U3, of the mask key otherwise.

use std::collections::{BTreeMap, BTreeSet};

use super::super::ParticipantId;
use super::super::messages::{RevealedShare, UnmaskingResponse, WIRE_VERSION};
use super::Context;
use super::shares::HeldShares;

/// The response for `survivors` (= U3, already checked by the caller). The caller moves to Completed, so the rule
/// can never be applied twice with two different sets.
pub(crate) fn reveal(
    ctx: &Context,
    own: &HeldShares,
    held: &BTreeMap<ParticipantId, HeldShares>,
    survivors: &BTreeSet<ParticipantId>,
) -> UnmaskingResponse {
    let mut self_mask_shares = vec![RevealedShare {
        owner: ctx.id,
        share: own.self_mask.clone(),
    }];
    let mut mask_key_shares = Vec::new();
    for (&owner, h) in held {
        if survivors.contains(&owner) {
            self_mask_shares.push(RevealedShare {
                owner,
                share: h.self_mask.clone(),
            });
        } else {
            mask_key_shares.push(RevealedShare {
                owner,
                share: h.mask_key.clone(),
            });
        }
    }
    self_mask_shares.sort_by_key(|s| s.owner);
    UnmaskingResponse {
        version: WIRE_VERSION,
        round_id: ctx.round(),
        sender: ctx.id,
        self_mask_shares,
        mask_key_shares,
    }
}
