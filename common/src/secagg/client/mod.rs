//! The participant's side of a round: one state type per stage, each transition a typed function of the one server
//! message that opens the next stage.
//!
//! ```text
//! state (file)                     server message handled            → next state, message sent
//! AdvertiseKeys (r0)               KeyDirectory                      → ShareKeys, ShareKeys
//! ShareKeys (r1)       semi-honest RoutedShares + input              → MaskedInputCollection, MaskedInput
//!                      malicious   RoutedShares                      → ShareVerification, ShareVerification (ack)
//!                                                                     | Aborted, ShareVerification (complaints)
//! ShareVerification (r2)           MaskedInputRequest + input        → MaskedInputCollection, MaskedInput
//! MaskedInputCollection (r3) s-h   UnmaskingRequest                  → Completed, UnmaskingResponse (r5 rule)
//!                            mal.  ConsistencyCheckRequest           → ConsistencyCheck, ConsistencySignature
//! ConsistencyCheck (r4)            SignedSurvivors                   → Completed, UnmaskingResponse (r5 rule)
//! ```
//! A rejected message leaves the client as it was, with two exceptions where the client aborts and forgets its
//! secrets: fewer than t survivors (any mode), and — in malicious rounds — any server message that fails a check
//! (a bad or missing signature, a survivor set it cannot accept, a malformed or replayed broadcast): a server that
//! lies once gets no second try. Errors about the caller's own input (vector length, ring range) or calls out of
//! order never abort. The reveal rule is enforced here, not trusted to the server: for each neighbour the client
//! reveals the self-mask share if the neighbour is in U3 and the mask-key share otherwise — never both, only once,
//! nothing when fewer than t survive, and in malicious rounds only after t signatures over that one U3.

mod r0_advertise_keys;
mod r1_share_keys;
mod r2_share_verification;
mod r3_masked_input;
mod r4_consistency_check;
mod r5_unmasking;
pub mod shares;

use rand::CryptoRng;

use super::error::{Result, SecAggError};
use super::identity::{IdentityKey, SignatureBytes};
use super::messages::{
    AdvertiseKeys, ConsistencyCheckRequest, ConsistencySignature, KeyDirectory, MaskedInput,
    MaskedInputRequest, RoutedShares, ShareKeys, ShareVerification, SignedSurvivors,
    UnmaskingRequest, UnmaskingResponse,
};
use super::{NeighbourGraph, ParticipantId, RoundStage, SecAggParams, ThreatModel};
use r0_advertise_keys::AdvertiseKeysState;
use r1_share_keys::ShareKeysState;
use r2_share_verification::ShareVerificationState;
use r3_masked_input::MaskedInputState;
use r4_consistency_check::ConsistencyCheckState;

pub use shares::{SHARE_CIPHERTEXT_LEN, SHARE_PLAINTEXT_LEN};

/// Why a client left its round early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAbort {
    /// The caller abandoned the round ([`SecAggClient::abort`]).
    Requested,
    /// It complained about these dealers and revealed its share-decryption key (it cannot take part any more).
    Complained { dealers: Vec<ParticipantId> },
    /// It refused a server message (see the error).
    Refused(SecAggError),
}

/// What a client knows for the whole round.
pub(crate) struct Context {
    pub(crate) params: SecAggParams,
    pub(crate) graph: NeighbourGraph,
    pub(crate) id: ParticipantId,
    /// [`SecAggParams::digest`], bound into every signature.
    pub(crate) digest: [u8; 32],
    /// The signing identity (malicious rounds only).
    identity: Option<IdentityKey>,
}

impl Context {
    pub(crate) fn malicious(&self) -> bool {
        self.params.threat_model == ThreatModel::Malicious
    }

    pub(crate) fn threshold(&self) -> usize {
        self.params.threshold as usize
    }

    pub(crate) fn round(&self) -> u64 {
        self.params.round_id
    }

    pub(crate) fn expect_round(&self, round: u64) -> Result<()> {
        if round != self.params.round_id {
            return Err(SecAggError::WrongRound {
                expected: self.params.round_id,
                got: round,
            });
        }
        Ok(())
    }

    /// Signs in malicious rounds; `None` in semi-honest ones.
    pub(crate) fn sign(&self, statement: &[u8; 32]) -> Option<SignatureBytes> {
        self.identity.as_ref().map(|k| k.sign(statement))
    }

    /// Signs; refuses if this client has no identity (a malicious-only step called in a semi-honest round).
    pub(crate) fn must_sign(&self, statement: &[u8; 32]) -> Result<SignatureBytes> {
        self.sign(statement)
            .ok_or(SecAggError::WrongThreatModel(self.params.threat_model))
    }
}

pub(crate) enum ClientState {
    AdvertiseKeys(AdvertiseKeysState),
    ShareKeys(ShareKeysState),
    ShareVerification(ShareVerificationState),
    MaskedInputCollection(MaskedInputState),
    ConsistencyCheck(ConsistencyCheckState),
    Completed,
    Aborted(ClientAbort),
}

impl ClientState {
    fn stage(&self) -> RoundStage {
        match self {
            ClientState::AdvertiseKeys(_) => RoundStage::AdvertiseKeys,
            ClientState::ShareKeys(_) => RoundStage::ShareKeys,
            ClientState::ShareVerification(_) => RoundStage::ShareVerification,
            ClientState::MaskedInputCollection(_) => RoundStage::MaskedInputCollection,
            ClientState::ConsistencyCheck(_) => RoundStage::ConsistencyCheck,
            ClientState::Completed => RoundStage::Completed,
            ClientState::Aborted(_) => RoundStage::Aborted,
        }
    }
}

/// A participant in one secure-aggregation round. Secrets (key pairs, self-mask secret, held shares, identity key)
/// are zeroised when the client or the state holding them is dropped; `Debug` prints none of them.
pub struct SecAggClient {
    ctx: Context,
    state: ClientState,
}

impl std::fmt::Debug for SecAggClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggClient")
            .field("round_id", &self.ctx.params.round_id)
            .field("id", &self.ctx.id)
            .field("stage", &self.state.stage())
            .finish_non_exhaustive()
    }
}

/// Whether an error in handling a server message ends the client's round (see the module docs).
fn aborts(e: &SecAggError, malicious: bool) -> bool {
    match e {
        SecAggError::TooFewSurvivors { .. } => true,
        SecAggError::WrongStage { .. }
        | SecAggError::RoundEnded
        | SecAggError::WrongVectorLength { .. }
        | SecAggError::ValueOutOfRange { .. }
        | SecAggError::Quantization(_)
        | SecAggError::WrongThreatModel(_) => false,
        _ => malicious,
    }
}

impl SecAggClient {
    /// Starts a semi-honest round: validates the parameters, draws both key pairs and the self-mask secret, and
    /// returns the AdvertiseKeys message to send. Malicious rounds need [`SecAggClient::with_identity`].
    pub fn new<R: CryptoRng + ?Sized>(
        params: SecAggParams,
        id: ParticipantId,
        rng: &mut R,
    ) -> Result<(Self, AdvertiseKeys)> {
        if params.threat_model != ThreatModel::SemiHonest {
            return Err(SecAggError::InvalidParams(
                "a malicious-server round needs the participant's identity key (SecAggClient::with_identity)".into(),
            ));
        }
        Self::start(params, id, None, rng)
    }

    /// Starts a malicious-server round as the holder of `identity`, which must be the roster's entry for `id`.
    /// Checking the roster itself (pinned or allow-listed peers, enough distinct peers) is the caller's job, before
    /// calling this: see [`SecAggParams::roster`].
    pub fn with_identity<R: CryptoRng + ?Sized>(
        params: SecAggParams,
        id: ParticipantId,
        identity: IdentityKey,
        rng: &mut R,
    ) -> Result<(Self, AdvertiseKeys)> {
        if params.threat_model != ThreatModel::Malicious {
            return Err(SecAggError::WrongThreatModel(params.threat_model));
        }
        Self::start(params, id, Some(identity), rng)
    }

    fn start<R: CryptoRng + ?Sized>(
        params: SecAggParams,
        id: ParticipantId,
        identity: Option<IdentityKey>,
        rng: &mut R,
    ) -> Result<(Self, AdvertiseKeys)> {
        params.validate()?;
        if id >= params.participants {
            return Err(SecAggError::InvalidParams(format!(
                "participant id {id} is not below {}",
                params.participants
            )));
        }
        if let Some(k) = &identity
            && params.roster.get(id) != Some(&k.public())
        {
            return Err(SecAggError::InvalidParams(format!(
                "this identity ({}) is not the roster's entry for index {id}",
                k.public().fingerprint()
            )));
        }
        let ctx = Context {
            graph: params.neighbour_graph()?,
            digest: params.digest(),
            params,
            id,
            identity,
        };
        let (state, msg) = AdvertiseKeysState::start(&ctx, rng);
        Ok((
            SecAggClient {
                ctx,
                state: ClientState::AdvertiseKeys(state),
            },
            msg,
        ))
    }

    /// This participant's id.
    pub fn id(&self) -> ParticipantId {
        self.ctx.id
    }

    /// The stage of the last message this client produced (Completed/Aborted once it is done).
    pub fn stage(&self) -> RoundStage {
        self.state.stage()
    }

    /// Why the client left the round, if it did.
    pub fn abort_cause(&self) -> Option<&ClientAbort> {
        match &self.state {
            ClientState::Aborted(c) => Some(c),
            _ => None,
        }
    }

    /// The round parameters.
    pub fn params(&self) -> &SecAggParams {
        &self.ctx.params
    }

    /// Abandons the round and forgets every secret it holds.
    pub fn abort(&mut self) {
        self.state = ClientState::Aborted(ClientAbort::Requested);
    }

    /// Runs one transition from `expected` (the state that handles the message) to whatever `f` returns.
    fn step<T>(
        &mut self,
        expected: RoundStage,
        opens: RoundStage,
        f: impl FnOnce(&Context, &ClientState) -> Result<(ClientState, T)>,
    ) -> Result<T> {
        let current = self.state.stage();
        if matches!(current, RoundStage::Completed | RoundStage::Aborted) {
            return Err(SecAggError::RoundEnded);
        }
        if current != expected {
            return Err(SecAggError::WrongStage {
                current,
                got: opens,
            });
        }
        match f(&self.ctx, &self.state) {
            Ok((next, out)) => {
                self.state = next;
                Ok(out)
            }
            Err(e) => {
                if aborts(&e, self.ctx.malicious()) {
                    self.state = ClientState::Aborted(ClientAbort::Refused(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// ShareKeys: checks the key directory (U1; in malicious rounds every entry's signature against the roster,
    /// before anything is shared), then Shamir-shares the self-mask secret and the mask key among the neighbours in
    /// U1 and itself, encrypting each neighbour's pair of shares for it (and committing to every share, signed, in
    /// malicious rounds).
    pub fn handle_key_directory<R: CryptoRng + ?Sized>(
        &mut self,
        dir: &KeyDirectory,
        rng: &mut R,
    ) -> Result<ShareKeys> {
        self.step(
            RoundStage::AdvertiseKeys,
            RoundStage::ShareKeys,
            |ctx, st| {
                let ClientState::AdvertiseKeys(s) = st else {
                    return Err(SecAggError::RoundEnded);
                };
                let (next, msg) = s.on_key_directory(ctx, dir, rng)?;
                Ok((ClientState::ShareKeys(next), msg))
            },
        )
    }

    /// MaskedInputCollection (semi-honest rounds): decrypts the shares routed from neighbours in U2, then masks
    /// `input` (ring elements, length `vector_len`, each < 2^bits) with the self mask and the pairwise masks of
    /// those neighbours.
    pub fn handle_routed_shares(
        &mut self,
        routed: &RoutedShares,
        input: &[u32],
    ) -> Result<MaskedInput> {
        self.step(
            RoundStage::ShareKeys,
            RoundStage::MaskedInputCollection,
            |ctx, st| {
                let ClientState::ShareKeys(s) = st else {
                    return Err(SecAggError::RoundEnded);
                };
                let (next, msg) = s.on_routed_shares(ctx, routed, input)?;
                Ok((ClientState::MaskedInputCollection(next), msg))
            },
        )
    }

    /// ShareVerification (malicious rounds): decrypts the shares routed from neighbours in U2 and checks each
    /// against its dealer's commitments. All good: a signed acknowledgement. Otherwise: signed complaints naming the
    /// dealers, with this client's per-round cipher secret so the server can check them — and the client leaves
    /// the round ([`SecAggClient::stage`] is then Aborted; send the message anyway).
    pub fn verify_routed_shares<R: CryptoRng + ?Sized>(
        &mut self,
        routed: &RoutedShares,
        rng: &mut R,
    ) -> Result<ShareVerification> {
        self.step(
            RoundStage::ShareKeys,
            RoundStage::ShareVerification,
            |ctx, st| {
                let ClientState::ShareKeys(s) = st else {
                    return Err(SecAggError::RoundEnded);
                };
                s.on_routed_shares_to_verify(ctx, routed, rng)
            },
        )
    }

    /// MaskedInputCollection (malicious rounds): share verification passed; masks `input` as
    /// [`SecAggClient::handle_routed_shares`] does in semi-honest rounds.
    pub fn handle_masked_input_request(
        &mut self,
        req: &MaskedInputRequest,
        input: &[u32],
    ) -> Result<MaskedInput> {
        self.step(
            RoundStage::ShareVerification,
            RoundStage::MaskedInputCollection,
            |ctx, st| {
                let ClientState::ShareVerification(s) = st else {
                    return Err(SecAggError::RoundEnded);
                };
                let (next, msg) = s.on_masked_input_request(ctx, req, input)?;
                Ok((ClientState::MaskedInputCollection(next), msg))
            },
        )
    }

    /// Unmasking (semi-honest rounds): given U3, reveals for each neighbour in U2 (and itself) exactly one share —
    /// of the self-mask secret if it is in U3, of the mask key otherwise. Refuses (and aborts) if fewer than t
    /// survive; refuses an inconsistent U3 (a neighbour that never sent it shares, or one that omits itself).
    pub fn handle_unmasking_request(
        &mut self,
        req: &UnmaskingRequest,
    ) -> Result<UnmaskingResponse> {
        self.step(
            RoundStage::MaskedInputCollection,
            RoundStage::Unmasking,
            |ctx, st| {
                let ClientState::MaskedInputCollection(s) = st else {
                    return Err(SecAggError::RoundEnded);
                };
                Ok((ClientState::Completed, s.on_unmasking_request(ctx, req)?))
            },
        )
    }

    /// ConsistencyCheck (malicious rounds): signs U3 if it can accept it — it contains this client, only
    /// participants whose shares it holds, and at least t members; otherwise aborts, having revealed nothing.
    pub fn handle_consistency_check_request(
        &mut self,
        req: &ConsistencyCheckRequest,
    ) -> Result<ConsistencySignature> {
        self.step(
            RoundStage::MaskedInputCollection,
            RoundStage::ConsistencyCheck,
            |ctx, st| {
                let ClientState::MaskedInputCollection(s) = st else {
                    return Err(SecAggError::RoundEnded);
                };
                let (next, msg) = s.on_consistency_check_request(ctx, req)?;
                Ok((ClientState::ConsistencyCheck(next), msg))
            },
        )
    }

    /// Unmasking (malicious rounds): reveals its shares (the rule of [`SecAggClient::handle_unmasking_request`])
    /// only if the server forwards at least t valid signatures, by members of U3, over the very U3 this client
    /// signed; otherwise aborts, having revealed nothing.
    pub fn handle_signed_survivors(&mut self, msg: &SignedSurvivors) -> Result<UnmaskingResponse> {
        self.step(
            RoundStage::ConsistencyCheck,
            RoundStage::Unmasking,
            |ctx, st| {
                let ClientState::ConsistencyCheck(s) = st else {
                    return Err(SecAggError::RoundEnded);
                };
                Ok((ClientState::Completed, s.on_signed_survivors(ctx, msg)?))
            },
        )
    }
}
