//! Client state ShareVerification (malicious rounds): every routed share verified and acknowledged; handles the
//! server's go-ahead by sending the masked input.

use std::collections::BTreeMap;

use curve25519_dalek::ristretto::RistrettoPoint;

use super::super::ParticipantId;
use super::super::error::Result;
use super::super::group::MaskKeyPair;
use super::super::messages::{MaskedInput, MaskedInputRequest};
use super::super::shamir::SecretScalar;
use super::Context;
use super::r3_masked_input::{MaskedInputState, check_input, mask_input};
use super::shares::HeldShares;

pub(crate) struct ShareVerificationState {
    pub(crate) mask: MaskKeyPair,
    pub(crate) beta: SecretScalar,
    /// The neighbours whose shares were routed (U2 as this client saw it) and their mask public keys.
    pub(crate) partners: Vec<(ParticipantId, RistrettoPoint)>,
    /// Verified shares held for those neighbours.
    pub(crate) held: BTreeMap<ParticipantId, HeldShares>,
    pub(crate) own: HeldShares,
}

impl ShareVerificationState {
    /// Masks `input` with the self mask and the pairwise masks of the verified partners.
    pub(crate) fn on_masked_input_request(
        &self,
        ctx: &Context,
        req: &MaskedInputRequest,
        input: &[u32],
    ) -> Result<(MaskedInputState, MaskedInput)> {
        check_input(ctx, input)?;
        ctx.expect_round(req.round_id)?;
        let masked = mask_input(ctx, &self.mask, &self.beta, &self.partners, input)?;
        let next = MaskedInputState {
            held: self.held.clone(),
            own: self.own.clone(),
        };
        Ok((next, masked))
    }
}
