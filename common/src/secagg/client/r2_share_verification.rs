//! Client state ShareVerification (malicious rounds): every routed share verified and acknowledged; handles the
//! server's go-ahead by sending the masked input — only once t holders of its shares have acknowledged theirs.
//!
//! Why t acknowledgements: a holder that complains reveals its cipher key, and with it the shares of *both* kinds
//! every dealer sent it; a malicious server can provoke that at will (by corrupting ciphertexts). An honest holder
//! signs one verdict per round, so each acknowledgement proves one holder kept its key. With t of them at most
//! n − t honest holders revealed, and with the n_c colluders the server holds at most n + n_c − t < t pairs of this
//! client's shares — too few to rebuild both its secrets once its masked input is out.

use std::collections::BTreeMap;

use curve25519_dalek::ristretto::RistrettoPoint;

use super::super::error::{Result, SecAggError};
use super::super::group::MaskKeyPair;
use super::super::identity;
use super::super::messages::{MaskedInput, MaskedInputRequest};
use super::super::shamir::SecretScalar;
use super::super::{ParticipantId, RoundStage};
use super::Context;
use super::r3_masked_input::{MaskedInputState, check_input, mask_input};
use super::shares::HeldShares;

pub(crate) struct ShareVerificationState {
    pub(crate) mask: MaskKeyPair,
    pub(crate) beta: SecretScalar,
    /// The neighbours whose shares were routed (U2 as this client saw it) and their mask public keys.
    pub(crate) partners: Vec<(ParticipantId, RistrettoPoint)>,
    /// The holders of this client's shares (its view of U1, itself included), sorted.
    pub(crate) holders: Vec<ParticipantId>,
    /// Verified shares held for those neighbours.
    pub(crate) held: BTreeMap<ParticipantId, HeldShares>,
    pub(crate) own: HeldShares,
}

impl ShareVerificationState {
    /// Sorted distinct holders of this client's shares, each signature valid, at least t of them.
    fn check_acknowledgements(&self, ctx: &Context, req: &MaskedInputRequest) -> Result<()> {
        let acks = &req.acknowledgements;
        if acks.windows(2).any(|w| w[0].holder >= w[1].holder) {
            return Err(SecAggError::Malformed(
                "acknowledgements must be sorted by holder without repeats".into(),
            ));
        }
        if let Some(a) = acks
            .iter()
            .find(|a| self.holders.binary_search(&a.holder).is_err())
        {
            return Err(SecAggError::NotMember {
                participant: a.holder,
                stage: RoundStage::ShareVerification,
            });
        }
        let signed: Vec<_> = acks
            .iter()
            .map(|a| {
                let statement =
                    identity::acknowledgement_statement(&ctx.digest, ctx.round(), a.holder);
                (a.holder, statement, &a.signature)
            })
            .collect();
        ctx.params.roster.verify_all(&signed)?;
        let t = ctx.threshold();
        if acks.len() < t {
            return Err(SecAggError::TooFewSignatures {
                got: acks.len(),
                threshold: t,
            });
        }
        Ok(())
    }

    /// Masks `input` with the self mask and the pairwise masks of the verified partners.
    pub(crate) fn on_masked_input_request(
        &self,
        ctx: &Context,
        req: &MaskedInputRequest,
        input: &[u32],
    ) -> Result<(MaskedInputState, MaskedInput)> {
        check_input(ctx, input)?;
        ctx.expect_round(req.round_id)?;
        self.check_acknowledgements(ctx, req)?;
        let masked = mask_input(ctx, &self.mask, &self.beta, &self.partners, input)?;
        let next = MaskedInputState {
            held: self.held.clone(),
            own: self.own.clone(),
        };
        Ok((next, masked))
    }
}
