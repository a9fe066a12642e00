//! Client state ShareKeys: shares dealt; handles the shares routed to it — by masking straight away (semi-honest)
//! or by verifying them against their dealers' commitments first (malicious).

use std::collections::BTreeMap;

use curve25519_dalek::ristretto::RistrettoPoint;
use rand::CryptoRng;
use rayon::prelude::*;

use super::super::crypto::{self, KeyPair};
use super::super::error::{Result, SecAggError};
use super::super::group::{self, MaskKeyPair};
use super::super::messages::{
    Complaint, ComplaintReason, MaskedInput, RevealedCipherKey, RoutedShare, RoutedShares,
    ShareVerification, WIRE_VERSION,
};
use super::super::shamir::SecretScalar;
use super::super::{ParticipantId, RoundStage, ThreatModel};
use super::r0_advertise_keys::Peer;
use super::r2_share_verification::ShareVerificationState;
use super::r3_masked_input::{MaskedInputState, check_input, mask_input};
use super::shares::{HeldShares, decode_share_plaintext};
use super::{ClientAbort, ClientState, Context};

pub(crate) struct ShareKeysState {
    pub(crate) cipher: KeyPair,
    pub(crate) mask: MaskKeyPair,
    pub(crate) beta: SecretScalar,
    /// Neighbours in U1 and their keys.
    pub(crate) peers: BTreeMap<ParticipantId, Peer>,
    /// This client's own pair of shares.
    pub(crate) own: HeldShares,
}

impl ShareKeysState {
    /// Addressed to this client, sorted senders that are neighbours in U1, at least t holders with itself.
    fn check_routing(&self, ctx: &Context, routed: &RoutedShares) -> Result<()> {
        ctx.expect_round(routed.round_id)?;
        if routed.recipient != ctx.id {
            return Err(SecAggError::Malformed(format!(
                "shares addressed to participant {}",
                routed.recipient
            )));
        }
        if routed.shares.windows(2).any(|w| w[0].sender >= w[1].sender) {
            return Err(SecAggError::Malformed(
                "routed shares must be sorted by sender without repeats".into(),
            ));
        }
        if let Some(r) = routed
            .shares
            .iter()
            .find(|r| !self.peers.contains_key(&r.sender))
        {
            return Err(SecAggError::NotMember {
                participant: r.sender,
                stage: RoundStage::ShareKeys,
            });
        }
        let t = ctx.threshold();
        if routed.shares.len() + 1 < t {
            return Err(SecAggError::TooFewSurvivors {
                survivors: routed.shares.len() + 1,
                threshold: t,
            });
        }
        Ok(())
    }

    /// Decrypts and decodes the shares one dealer sent.
    fn open(&self, ctx: &Context, r: &RoutedShare) -> Result<HeldShares> {
        let (id, round) = (ctx.id, ctx.round());
        let key = crypto::share_encryption_key(
            &self.cipher,
            &self.peers[&r.sender].cipher_public_key,
            round,
            r.sender,
            id,
            r.sender,
        )?;
        let plaintext = crypto::decrypt_shares(&key, round, r.sender, id, &r.ciphertext)?;
        decode_share_plaintext(&plaintext, r.sender, id)
    }

    fn partners(&self, routed: &RoutedShares) -> Vec<(ParticipantId, RistrettoPoint)> {
        routed
            .shares
            .iter()
            .map(|r| (r.sender, self.peers[&r.sender].mask_public_key))
            .collect()
    }

    /// Semi-honest: decrypts every routed pair of shares and masks the input with the neighbours that sent them.
    pub(crate) fn on_routed_shares(
        &self,
        ctx: &Context,
        routed: &RoutedShares,
        input: &[u32],
    ) -> Result<(MaskedInputState, MaskedInput)> {
        if ctx.malicious() {
            return Err(SecAggError::WrongThreatModel(ThreatModel::SemiHonest));
        }
        check_input(ctx, input)?;
        self.check_routing(ctx, routed)?;
        let opened = routed
            .shares
            .par_iter()
            .map(|r| Ok((r.sender, self.open(ctx, r)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let masked = mask_input(ctx, &self.mask, &self.beta, &self.partners(routed), input)?;
        let next = MaskedInputState {
            held: opened,
            own: self.own.clone(),
        };
        Ok((next, masked))
    }

    /// Malicious: decrypts every routed pair of shares and checks both shares against the dealer's commitments (in
    /// one batch; dealer by dealer only if the batch fails). A signed acknowledgement if all verify; otherwise signed
    /// complaints with this client's cipher secret, and the client leaves the round.
    pub(crate) fn on_routed_shares_to_verify<R: CryptoRng + ?Sized>(
        &self,
        ctx: &Context,
        routed: &RoutedShares,
        rng: &mut R,
    ) -> Result<(ClientState, ShareVerification)> {
        if !ctx.malicious() {
            return Err(SecAggError::WrongThreatModel(ThreatModel::Malicious));
        }
        self.check_routing(ctx, routed)?;
        if let Some(r) = routed.shares.iter().find(|r| r.commitments.is_none()) {
            return Err(SecAggError::Malformed(format!(
                "the shares routed from {} come without commitments",
                r.sender
            )));
        }
        let opened: Vec<(
            ParticipantId,
            std::result::Result<HeldShares, ComplaintReason>,
        )> = routed
            .shares
            .par_iter()
            .map(|r| {
                let verdict = self.open(ctx, r).map_err(|e| match e {
                    SecAggError::BadShare { .. } => ComplaintReason::Malformed,
                    _ => ComplaintReason::Undecryptable,
                });
                (r.sender, verdict)
            })
            .collect();
        let complaints = verify_against_commitments(ctx, routed, &opened, rng);
        let mut msg = ShareVerification {
            version: WIRE_VERSION,
            round_id: ctx.round(),
            sender: ctx.id,
            revealed_cipher_key: (!complaints.is_empty())
                .then(|| RevealedCipherKey(*self.cipher.secret_bytes().as_bytes())),
            complaints,
            signature: super::super::identity::SignatureBytes([0; 64]),
        };
        msg.signature = ctx.must_sign(&msg.statement(&ctx.digest))?;
        if !msg.complaints.is_empty() {
            let dealers = msg.complaints.iter().map(|c| c.dealer).collect();
            return Ok((
                ClientState::Aborted(ClientAbort::Complained { dealers }),
                msg,
            ));
        }
        let held = opened
            .into_iter()
            .filter_map(|(v, r)| r.ok().map(|h| (v, h)))
            .collect();
        let next = ShareVerificationState {
            mask: self.mask.clone(),
            beta: self.beta.clone(),
            partners: self.partners(routed),
            holders: {
                let mut h: Vec<ParticipantId> =
                    self.peers.keys().copied().chain([ctx.id]).collect();
                h.sort_unstable();
                h
            },
            held,
            own: self.own.clone(),
        };
        Ok((ClientState::ShareVerification(next), msg))
    }
}

/// Complaints (sorted by dealer) for every dealer whose shares did not open or do not match its commitments — the
/// two per-secret ones and the combined one (b + γ·s, γ drawn from the dealing's digest).
fn verify_against_commitments<R: CryptoRng + ?Sized>(
    ctx: &Context,
    routed: &RoutedShares,
    opened: &[(
        ParticipantId,
        std::result::Result<HeldShares, ComplaintReason>,
    )],
    rng: &mut R,
) -> Vec<Complaint> {
    let (digest, round) = (&ctx.digest, ctx.round());
    let mut complaints = Vec::new();
    let mut items = Vec::with_capacity(3 * opened.len());
    let mut checked = Vec::with_capacity(opened.len());
    // Decompressing the commitments is most of the cost: spread over all cores.
    let decoded: Vec<Option<[RistrettoPoint; 3]>> = routed
        .shares
        .par_iter()
        .map(|r| {
            let c = r.commitments.as_ref()?;
            Some([
                group::decode_point(&c.self_mask)?,
                group::decode_point(&c.mask_key)?,
                group::decode_point(&c.combined)?,
            ])
        })
        .collect();
    for ((r, (dealer, verdict)), points) in routed.shares.iter().zip(opened).zip(decoded) {
        let reason = match (verdict, &r.commitments, points) {
            (Err(reason), _, _) => Some(*reason),
            (Ok(h), Some(c), Some([cs, cm, cw])) => {
                let gamma = group::combination_challenge(digest, round, *dealer, &c.dealing_digest);
                let (b, s) = (h.self_mask.y, h.mask_key.y);
                items.extend([(b, cs), (s, cm), (b + gamma * s, cw)]);
                checked.push((*dealer, h, *c, gamma));
                None
            }
            (Ok(_), _, _) => Some(ComplaintReason::NotOnCommitment),
        };
        if let Some(reason) = reason {
            complaints.push(Complaint {
                dealer: *dealer,
                reason,
            });
        }
    }
    if !group::batch_check(&items, rng) {
        // Find the culprits one dealer at a time.
        for (dealer, h, c, gamma) in checked {
            let (b, s) = (h.self_mask.y, h.mask_key.y);
            if group::commit(&b) != c.self_mask
                || group::commit(&s) != c.mask_key
                || group::commit(&(b + gamma * s)) != c.combined
            {
                complaints.push(Complaint {
                    dealer,
                    reason: ComplaintReason::NotOnCommitment,
                });
            }
        }
    }
    complaints.sort_by_key(|c| c.dealer);
    complaints
}
