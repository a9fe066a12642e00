//! Client state ConsistencyCheck (malicious rounds): U3 signed; handles the forwarded signatures by revealing — only
//! if at least t members of that very U3 signed it.

use std::collections::{BTreeMap, BTreeSet};

use super::super::ParticipantId;
use super::super::error::{Result, SecAggError};
use super::super::identity;
use super::super::messages::{SignedSurvivors, UnmaskingResponse};
use super::Context;
use super::r5_unmasking::reveal;
use super::shares::HeldShares;

pub(crate) struct ConsistencyCheckState {
    pub(crate) held: BTreeMap<ParticipantId, HeldShares>,
    pub(crate) own: HeldShares,
    /// The U3 this client signed.
    pub(crate) survivors: Vec<ParticipantId>,
}

impl ConsistencyCheckState {
    /// Same U3 as signed; signers sorted, distinct members of U3, each signature valid under the roster over
    /// (round, U3); at least t of them. Any failure means the server lies: the client aborts, revealing nothing.
    pub(crate) fn on_signed_survivors(
        &self,
        ctx: &Context,
        msg: &SignedSurvivors,
    ) -> Result<UnmaskingResponse> {
        ctx.expect_round(msg.round_id)?;
        if msg.survivors != self.survivors {
            return Err(SecAggError::InconsistentSurvivors(
                "the survivor set differs from the one this participant signed".into(),
            ));
        }
        if msg
            .signatures
            .windows(2)
            .any(|w| w[0].signer >= w[1].signer)
        {
            return Err(SecAggError::Malformed(
                "signatures must be sorted by signer without repeats".into(),
            ));
        }
        let survivors: BTreeSet<ParticipantId> = self.survivors.iter().copied().collect();
        let statement = identity::survivors_statement(&ctx.digest, ctx.round(), &self.survivors);
        if let Some(s) = msg
            .signatures
            .iter()
            .find(|s| !survivors.contains(&s.signer))
        {
            return Err(SecAggError::InconsistentSurvivors(format!(
                "participant {} signed but is not in the survivor set",
                s.signer
            )));
        }
        let signed: Vec<_> = msg
            .signatures
            .iter()
            .map(|s| (s.signer, statement, &s.signature))
            .collect();
        ctx.params.roster.verify_all(&signed)?;
        let t = ctx.threshold();
        if msg.signatures.len() < t {
            return Err(SecAggError::TooFewSignatures {
                got: msg.signatures.len(),
                threshold: t,
            });
        }
        Ok(reveal(ctx, &self.own, &self.held, &survivors))
    }
}
