//! Client state MaskedInputCollection: masked input sent; handles U3 — by revealing (semi-honest) or by signing it
//! for the consistency check (malicious). Also the masking itself, shared by both modes.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::RistrettoPoint;
use rayon::prelude::*;

use super::super::crypto::{self, Secret32};
use super::super::error::{Result, SecAggError};
use super::super::group::{self, MaskKeyPair};
use super::super::identity;
use super::super::messages::{
    ConsistencyCheckRequest, ConsistencySignature, MaskedInput, UnmaskingRequest,
    UnmaskingResponse, WIRE_VERSION,
};
use super::super::shamir::SecretScalar;
use super::super::{ParticipantId, ThreatModel};
use super::Context;
use super::r4_consistency_check::ConsistencyCheckState;
use super::r5_unmasking::reveal;
use super::shares::HeldShares;

pub(crate) struct MaskedInputState {
    /// Shares held for the neighbours that dealt to this client (its view of U2).
    pub(crate) held: BTreeMap<ParticipantId, HeldShares>,
    pub(crate) own: HeldShares,
}

/// The caller's input: `vector_len` ring elements, each below 2^bits.
pub(crate) fn check_input(ctx: &Context, input: &[u32]) -> Result<()> {
    let expected = ctx.params.vector_len as usize;
    if input.len() != expected {
        return Err(SecAggError::WrongVectorLength {
            expected,
            got: input.len(),
        });
    }
    let bits = ctx.params.bits;
    if bits < 32
        && let Some(index) = input.iter().position(|&v| v >> bits != 0)
    {
        return Err(SecAggError::ValueOutOfRange { index, bits });
    }
    Ok(())
}

/// y = x + PRG(b_u) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv)  (mod 2^bits), over the given partners.
pub(crate) fn mask_input(
    ctx: &Context,
    mask: &MaskKeyPair,
    beta: &SecretScalar,
    partners: &[(ParticipantId, RistrettoPoint)],
    input: &[u32],
) -> Result<MaskedInput> {
    let (id, round) = (ctx.id, ctx.round());
    // One key agreement per partner, on all cores.
    let seeds = partners
        .par_iter()
        .map(|(v, pk)| Ok((*v, group::pairwise_mask_seed(mask, id, pk, *v, round)?)))
        .collect::<Result<Vec<(ParticipantId, Secret32)>>>()?;
    let mut add = vec![crypto::self_mask_seed(beta, round, id)];
    let mut sub = Vec::new();
    for (v, seed) in seeds {
        if v > id {
            add.push(seed)
        } else {
            sub.push(seed)
        }
    }
    let mut values = input.to_vec();
    crypto::apply_masks(&mut values, &add, &sub);
    crypto::reduce_to_ring(&mut values, ctx.params.bits);
    Ok(MaskedInput {
        round_id: round,
        sender: id,
        values,
    })
}

/// Valid ids, strictly increasing, this client among them.
fn parse_survivors(ctx: &Context, survivors: &[ParticipantId]) -> Result<BTreeSet<ParticipantId>> {
    if survivors.windows(2).any(|w| w[0] >= w[1])
        || survivors.iter().any(|&u| u >= ctx.params.participants)
    {
        return Err(SecAggError::Malformed(
            "survivor list must be valid ids, strictly increasing".into(),
        ));
    }
    let set: BTreeSet<ParticipantId> = survivors.iter().copied().collect();
    if !set.contains(&ctx.id) {
        return Err(SecAggError::Malformed(
            "survivor list omits this participant".into(),
        ));
    }
    Ok(set)
}

impl MaskedInputState {
    /// A neighbour listed as a survivor that never dealt to this client; too few survivors abort.
    fn check_survivors(&self, ctx: &Context, survivors: &BTreeSet<ParticipantId>) -> Result<()> {
        if let Some(v) = survivors.iter().find(|&&v| {
            v != ctx.id && ctx.graph.are_neighbours(ctx.id, v) && !self.held.contains_key(&v)
        }) {
            let why = format!("participant {v} is listed as a survivor but sent no shares");
            return Err(if ctx.malicious() {
                SecAggError::InconsistentSurvivors(why)
            } else {
                SecAggError::Malformed(why)
            });
        }
        let t = ctx.threshold();
        let surviving_neighbourhood =
            1 + self.held.keys().filter(|v| survivors.contains(v)).count();
        if survivors.len() < t || surviving_neighbourhood < t {
            return Err(SecAggError::TooFewSurvivors {
                survivors: survivors.len().min(surviving_neighbourhood),
                threshold: t,
            });
        }
        Ok(())
    }

    /// Semi-honest: reveals for U3 straight away.
    pub(crate) fn on_unmasking_request(
        &self,
        ctx: &Context,
        req: &UnmaskingRequest,
    ) -> Result<UnmaskingResponse> {
        if ctx.malicious() {
            return Err(SecAggError::WrongThreatModel(ThreatModel::SemiHonest));
        }
        ctx.expect_round(req.round_id)?;
        let survivors = parse_survivors(ctx, &req.survivors)?;
        self.check_survivors(ctx, &survivors)?;
        Ok(reveal(ctx, &self.own, &self.held, &survivors))
    }

    /// Malicious: signs U3 — only if it contains this client and only participants that dealt to it (so no honest
    /// partner can be declared dropped while this client is declared alive), and has at least t members.
    pub(crate) fn on_consistency_check_request(
        &self,
        ctx: &Context,
        req: &ConsistencyCheckRequest,
    ) -> Result<(ConsistencyCheckState, ConsistencySignature)> {
        if !ctx.malicious() {
            return Err(SecAggError::WrongThreatModel(ThreatModel::Malicious));
        }
        ctx.expect_round(req.round_id)?;
        let survivors = parse_survivors(ctx, &req.survivors)?;
        self.check_survivors(ctx, &survivors)?;
        let statement = identity::survivors_statement(&ctx.digest, ctx.round(), &req.survivors);
        let msg = ConsistencySignature {
            version: WIRE_VERSION,
            round_id: ctx.round(),
            sender: ctx.id,
            signature: ctx.must_sign(&statement)?,
        };
        let next = ConsistencyCheckState {
            held: self.held.clone(),
            own: self.own.clone(),
            survivors: req.survivors.clone(),
        };
        Ok((next, msg))
    }
}
