//! Shared harness of the secure-aggregation tests: round set-ups for both threat models, a driver that runs a whole
//! round through the real state machines and wire encodings (with dropouts at any stage), and what an attacker
//! learns from revealed shares.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use confide_common::secagg::client::shares::{HeldShares, encode_share_plaintext};
use confide_common::secagg::crypto::{self, KeyPair};
use confide_common::secagg::group::{self, MaskKeyPair, Scalar};
use confide_common::secagg::messages::{
    ControlMessage, RevealedCipherKey, ShareCommitments, WIRE_VERSION,
};
use confide_common::secagg::shamir::{self, SecretScalar};
use confide_common::secagg::{
    AdvertiseKeys, Broadcast, Complaint, EncryptedShares, GraphKind, IdentityKey, KeyDirectory,
    MaskedInputRequest, Roster, RoundOutcome, RoundStage, RoutedShares, SecAggClient, SecAggParams,
    SecAggServer, ShareKeys, ShareVerification, SignatureBytes, SignedSurvivors, ThreatModel,
    UnmaskingRequest, UnmaskingResponse,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Round parameters plus, for malicious rounds, every participant's identity key (index = roster position).
#[derive(Clone)]
pub struct Setup {
    pub params: SecAggParams,
    pub identities: Vec<IdentityKey>,
}

/// A semi-honest round.
pub fn semi_honest(n: u32, t: u32, graph: GraphKind, len: u32, bits: u32) -> Setup {
    let params = SecAggParams {
        round_id: 42,
        participants: n,
        threshold: t,
        graph,
        graph_seed: [3; 32],
        vector_len: len,
        bits,
        threat_model: ThreatModel::SemiHonest,
        max_corrupt: 0,
        roster: Roster::default(),
    };
    params.validate().unwrap();
    Setup {
        params,
        identities: Vec::new(),
    }
}

/// A malicious-server round over the complete graph with fresh identities (from `seed`).
pub fn malicious(n: u32, t: u32, max_corrupt: u32, len: u32, bits: u32, seed: u64) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x1d);
    let identities: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(&mut rng)).collect();
    let params = SecAggParams {
        round_id: 7_000 + seed % 1000,
        participants: n,
        threshold: t,
        graph: GraphKind::Complete,
        graph_seed: [0; 32],
        vector_len: len,
        bits,
        threat_model: ThreatModel::Malicious,
        max_corrupt,
        roster: Roster::new(identities.iter().map(|k| k.public()).collect()).unwrap(),
    };
    params.validate().unwrap();
    Setup { params, identities }
}

/// Starts participant `u`'s client with the constructor its round needs.
pub fn client(s: &Setup, u: u32, rng: &mut ChaCha20Rng) -> (SecAggClient, AdvertiseKeys) {
    match s.params.threat_model {
        ThreatModel::SemiHonest => SecAggClient::new(s.params.clone(), u, rng).unwrap(),
        ThreatModel::Malicious => {
            SecAggClient::with_identity(s.params.clone(), u, s.identities[u as usize].clone(), rng)
                .unwrap()
        }
    }
}

pub fn ring_mask(bits: u32) -> u32 {
    if bits == 32 {
        u32::MAX
    } else {
        (1 << bits) - 1
    }
}

/// Who stops answering at which stage (stages a mode lacks are ignored).
#[derive(Default, Clone, Debug)]
pub struct Dropouts {
    pub advertise: Vec<u32>,
    pub share: Vec<u32>,
    pub verify: Vec<u32>,
    pub masked: Vec<u32>,
    pub consistency: Vec<u32>,
    pub unmask: Vec<u32>,
}

impl Dropouts {
    fn at(&self, stage: RoundStage) -> &[u32] {
        match stage {
            RoundStage::AdvertiseKeys => &self.advertise,
            RoundStage::ShareKeys => &self.share,
            RoundStage::ShareVerification => &self.verify,
            RoundStage::MaskedInputCollection => &self.masked,
            RoundStage::ConsistencyCheck => &self.consistency,
            _ => &self.unmask,
        }
    }
}

/// Spreads `count` dropouts over the stages of the round's mode, round robin, choosing pseudo-random participants.
pub fn spread_dropouts(s: &Setup, count: u32, rng: &mut ChaCha20Rng) -> Dropouts {
    let mut ids: Vec<u32> = (0..s.params.participants).collect();
    rand::seq::SliceRandom::shuffle(&mut ids[..], rng);
    let stages = RoundStage::sequence(s.params.threat_model);
    let mut d = Dropouts::default();
    for (i, &u) in ids.iter().take(count as usize).enumerate() {
        match stages[i % stages.len()] {
            RoundStage::AdvertiseKeys => d.advertise.push(u),
            RoundStage::ShareKeys => d.share.push(u),
            RoundStage::ShareVerification => d.verify.push(u),
            RoundStage::MaskedInputCollection => d.masked.push(u),
            RoundStage::ConsistencyCheck => d.consistency.push(u),
            _ => d.unmask.push(u),
        }
    }
    d
}

/// Persists and restores the server, as the coordinator does at every stage boundary.
pub fn persist(server: &mut SecAggServer) {
    let bytes = server.encode();
    *server = SecAggServer::decode(&bytes).unwrap();
    assert_eq!(server.encode(), bytes);
}

/// A round in progress: the real server, the real clients (`None` for participants the test plays itself), the
/// inputs and the randomness.
pub struct Game {
    pub server: SecAggServer,
    pub clients: Vec<Option<SecAggClient>>,
    pub inputs: Vec<Vec<u32>>,
    pub rng: ChaCha20Rng,
}

impl Game {
    /// Starts every client for which `real(u)` holds and sends its advertisement (unless it drops there);
    /// AdvertiseKeys stays open.
    pub fn start(s: &Setup, drops: &Dropouts, seed: u64, real: impl Fn(u32) -> bool) -> Self {
        let p = &s.params;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut server = SecAggServer::new(p.clone()).unwrap();
        let mut clients = Vec::new();
        let mut inputs = Vec::new();
        for u in 0..p.participants {
            inputs.push(
                (0..p.vector_len)
                    .map(|_| rng.next_u32() & ring_mask(p.bits))
                    .collect::<Vec<u32>>(),
            );
            if !real(u) {
                clients.push(None);
                continue;
            }
            let (c, msg) = client(s, u, &mut rng);
            clients.push(Some(c));
            if !drops.advertise.contains(&u) {
                server.handle_message(msg.to_json().as_bytes()).unwrap();
            }
        }
        Game {
            server,
            clients,
            inputs,
            rng,
        }
    }

    /// Closes the current stage and persists/restores the server, as the coordinator does.
    pub fn close(&mut self) {
        self.server.close_stage().unwrap();
        persist(&mut self.server);
    }

    /// Every real client expected in the current stage answers its broadcast through the wire encodings, and the
    /// server takes the answer unless the client drops at this stage.
    pub fn answer(&mut self, drops: &Dropouts) {
        let stage = self.server.stage();
        let broadcasts = self.server.broadcasts().unwrap();
        for u in self.server.expected() {
            let Some(c) = self.clients[u as usize].as_mut() else {
                continue;
            };
            let b = broadcasts
                .iter()
                .find(|b| b.recipient().is_none_or(|r| r == u))
                .unwrap();
            let input = &self.inputs[u as usize];
            let rng = &mut self.rng;
            let body: Vec<u8> = match (stage, b) {
                (RoundStage::ShareKeys, Broadcast::KeyDirectory(_)) => {
                    let dir = KeyDirectory::from_json(&b.to_json()).unwrap();
                    c.handle_key_directory(&dir, rng).unwrap().to_json().into()
                }
                (RoundStage::ShareVerification, Broadcast::RoutedShares(_)) => {
                    let routed = RoutedShares::from_json(&b.to_json()).unwrap();
                    c.verify_routed_shares(&routed, rng)
                        .unwrap()
                        .to_json()
                        .into()
                }
                (RoundStage::MaskedInputCollection, Broadcast::RoutedShares(_)) => {
                    let routed = RoutedShares::from_json(&b.to_json()).unwrap();
                    c.handle_routed_shares(&routed, input).unwrap().encode()
                }
                (RoundStage::MaskedInputCollection, Broadcast::MaskedInputRequest(_)) => {
                    let req = MaskedInputRequest::from_json(&b.to_json()).unwrap();
                    c.handle_masked_input_request(&req, input).unwrap().encode()
                }
                (RoundStage::ConsistencyCheck, Broadcast::ConsistencyCheckRequest(req)) => c
                    .handle_consistency_check_request(req)
                    .unwrap()
                    .to_json()
                    .into(),
                (RoundStage::Unmasking, Broadcast::UnmaskingRequest(_)) => {
                    let req = UnmaskingRequest::from_json(&b.to_json()).unwrap();
                    let resp = c.handle_unmasking_request(&req).unwrap();
                    UnmaskingResponse::from_json(&resp.to_json())
                        .unwrap()
                        .to_json()
                        .into()
                }
                (RoundStage::Unmasking, Broadcast::SignedSurvivors(_)) => {
                    let msg = SignedSurvivors::from_json(&b.to_json()).unwrap();
                    c.handle_signed_survivors(&msg).unwrap().to_json().into()
                }
                other => panic!("unexpected broadcast in stage {other:?}"),
            };
            if !drops.at(stage).contains(&u) {
                self.server.handle_message(&body).unwrap();
            }
        }
    }

    /// Closes and answers stage after stage until the round ends.
    pub fn finish(&mut self, drops: &Dropouts) {
        loop {
            self.close();
            let stage = self.server.stage();
            if matches!(stage, RoundStage::Completed | RoundStage::Aborted) {
                return;
            }
            self.answer(drops);
            let expected = self.server.expected();
            if expected.iter().all(|&u| self.clients[u as usize].is_some()) {
                let dropping = expected.iter().any(|u| drops.at(stage).contains(u));
                assert_eq!(self.server.ready_to_close(), !dropping, "stage {stage:?}");
            }
        }
    }

    /// The sum of U3's inputs.
    pub fn expected_sum(&self) -> Vec<u32> {
        let p = self.server.params();
        let mut sum = vec![0u32; p.vector_len as usize];
        for &u in self.server.u3() {
            for (e, x) in sum.iter_mut().zip(&self.inputs[u as usize]) {
                *e = e.wrapping_add(*x) & ring_mask(p.bits);
            }
        }
        sum
    }
}

/// Runs a whole round through the wire encodings (the server parses every message as the coordinator would);
/// returns the outcome, the expected sum of U3's inputs if it completed, and the server.
pub fn run(
    s: &Setup,
    drops: &Dropouts,
    seed: u64,
) -> (RoundOutcome, Option<Vec<u32>>, SecAggServer) {
    let mut g = Game::start(s, drops, seed, |_| true);
    g.finish(drops);
    let outcome = g.server.outcome().unwrap();
    let expected = matches!(outcome, RoundOutcome::Completed(_)).then(|| g.expected_sum());
    (outcome, expected, g.server)
}

/// Runs a round and asserts that it completes with the exact sum.
pub fn assert_completes(s: &Setup, drops: &Dropouts, seed: u64) -> SecAggServer {
    let (outcome, expected, server) = run(s, drops, seed);
    match outcome {
        RoundOutcome::Completed(sum) => assert_eq!(
            Some(sum),
            expected,
            "n = {}, drops = {drops:?}",
            s.params.participants
        ),
        RoundOutcome::Aborted { reason } => panic!(
            "aborted: {reason} (n = {}, drops = {drops:?})",
            s.params.participants
        ),
    }
    server
}

/// The shares an attacker collected, by owner: which holders revealed a self-mask share and which a mask-key share.
#[derive(Default, Debug)]
pub struct Revealed {
    pub self_mask: BTreeMap<u32, BTreeSet<u32>>,
    pub mask_key: BTreeMap<u32, BTreeSet<u32>>,
}

impl Revealed {
    pub fn add(&mut self, r: &UnmaskingResponse) {
        for s in &r.self_mask_shares {
            self.self_mask.entry(s.owner).or_default().insert(r.sender);
        }
        for s in &r.mask_key_shares {
            self.mask_key.entry(s.owner).or_default().insert(r.sender);
        }
    }

    /// Also counts everything `holders` (corrupt, or who revealed their cipher key) hold, of both kinds.
    pub fn add_held_by(&mut self, holders: &[u32], owners: &[u32]) {
        for &o in owners {
            for &h in holders {
                self.self_mask.entry(o).or_default().insert(h);
                self.mask_key.entry(o).or_default().insert(h);
            }
        }
    }

    /// Whether `owner`'s self-mask secret can be rebuilt (t self-mask shares).
    pub fn self_mask_known(&self, owner: u32, t: usize) -> bool {
        self.self_mask.get(&owner).is_some_and(|s| s.len() >= t)
    }

    /// Whether `owner`'s mask key can be rebuilt (t mask-key shares, or the owner is corrupt).
    pub fn mask_key_known(&self, owner: u32, t: usize, corrupt: &[u32]) -> bool {
        corrupt.contains(&owner) || self.mask_key.get(&owner).is_some_and(|s| s.len() >= t)
    }

    /// Whether the attacker can strip every mask from `owner`'s masked input: its self mask, and each pairwise
    /// mask with the `partners` it masked with (known when either side's mask key is known).
    pub fn exposes(&self, owner: u32, partners: &[u32], corrupt: &[u32], t: usize) -> bool {
        self.self_mask_known(owner, t)
            && (self.mask_key_known(owner, t, corrupt)
                || partners.iter().all(|&v| self.mask_key_known(v, t, corrupt)))
    }
}

/// How a corrupt dealer deviates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Deals correctly.
    Honest,
    /// Commits correctly but encrypts a wrong self-mask share for these holders.
    WrongShareFor(Vec<u32>),
    /// Sends these holders ciphertexts that do not authenticate.
    GarbleFor(Vec<u32>),
    /// Commits to shares that are not on one polynomial (the combined commitments the server tests).
    CommitmentOffPolynomial,
    /// Splits one holder's view: its mask-key commitment (and the share sent to it) are off the polynomial, while
    /// the combined commitments — all the server's degree test sees — stay on theirs (γ drawn over the tampered
    /// commitments, as the protocol says). Only the holder's own three-way check, or the server's relation check on
    /// a revealed share, can tell.
    SplitCommitmentFor(u32),
    /// Sends a commitment that is not a Ristretto255 point.
    CommitmentNotAPoint,
}

/// A participant the attacker controls, assembled from the public building blocks so that it can deviate.
pub struct Corrupt {
    pub id: u32,
    pub identity: IdentityKey,
    pub cipher: KeyPair,
    pub mask: MaskKeyPair,
    pub beta: SecretScalar,
    params: SecAggParams,
}

impl Corrupt {
    pub fn new(s: &Setup, id: u32, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        Corrupt {
            id,
            identity: s.identities[id as usize].clone(),
            cipher: KeyPair::generate(&mut rng),
            mask: MaskKeyPair::generate(&mut rng),
            beta: SecretScalar::random(&mut rng),
            params: s.params.clone(),
        }
    }

    fn digest(&self) -> [u8; 32] {
        self.params.digest()
    }

    pub fn advertise(&self) -> AdvertiseKeys {
        let mut m = AdvertiseKeys {
            version: WIRE_VERSION,
            round_id: self.params.round_id,
            sender: self.id,
            cipher_public_key: self.cipher.public_bytes(),
            mask_public_key: self.mask.public_bytes(),
            signature: None,
        };
        m.signature = Some(self.identity.sign(&m.statement(&self.digest())));
        m
    }

    /// Deals to everyone in the directory (complete graph), deviating as `tamper` says, and signs the dealing.
    pub fn deal(&self, dir: &KeyDirectory, tamper: &Tamper, rng: &mut ChaCha20Rng) -> ShareKeys {
        let t = self.params.threshold as usize;
        let holders: Vec<u32> = dir.participants.iter().map(|e| e.participant).collect();
        let xs: Vec<u32> = holders.iter().map(|h| h + 1).collect();
        let sm = shamir::split(&self.beta, t, &xs, rng).unwrap();
        let mk = shamir::split(self.mask.secret(), t, &xs, rng).unwrap();
        let round = self.params.round_id;
        let self_mask_commitment = group::commit(self.beta.expose());
        let ys = |v: &[shamir::Share]| v.iter().map(|s| s.y).collect::<Vec<Scalar>>();
        let mut commitments = ShareCommitments::of_shares(
            &self.digest(),
            round,
            self.id,
            &self_mask_commitment,
            &ys(&sm),
            &ys(&mk),
        );
        if *tamper == Tamper::CommitmentOffPolynomial {
            commitments.combined[0] = group::commit(&Scalar::from(7u64));
        }
        let split = match tamper {
            Tamper::SplitCommitmentFor(h) => holders.iter().position(|x| x == h),
            _ => None,
        };
        if let Some(i) = split {
            commitments.mask_key[i] = group::commit(&(mk[i].y + Scalar::ONE));
            let digest = commitments.dealing_digest(&self_mask_commitment);
            let gamma = group::combination_challenge(&self.digest(), round, self.id, &digest);
            commitments.combined =
                group::commit_all(&group::combined_shares(&gamma, &ys(&sm), &ys(&mk)));
        }
        if *tamper == Tamper::CommitmentNotAPoint {
            commitments.combined[1] = [0xff; 32];
        }
        let mut encrypted_shares = Vec::new();
        for (i, e) in dir.participants.iter().enumerate() {
            let h = e.participant;
            if h == self.id {
                continue;
            }
            let mut held = HeldShares {
                self_mask: sm[i].clone(),
                mask_key: mk[i].clone(),
            };
            if matches!(tamper, Tamper::WrongShareFor(v) if v.contains(&h)) {
                held.self_mask.y += Scalar::ONE;
            }
            if split == Some(i) {
                held.mask_key.y += Scalar::ONE;
            }
            let key = crypto::share_encryption_key(
                &self.cipher,
                &e.cipher_public_key,
                round,
                self.id,
                h,
                h,
            )
            .unwrap();
            let mut ciphertext = crypto::encrypt_shares(
                &key,
                round,
                self.id,
                h,
                &encode_share_plaintext(self.id, h, &held),
            );
            if matches!(tamper, Tamper::GarbleFor(v) if v.contains(&h)) {
                ciphertext[5] ^= 1;
            }
            encrypted_shares.push(EncryptedShares {
                recipient: h,
                ciphertext,
            });
        }
        let mut m = ShareKeys {
            version: WIRE_VERSION,
            round_id: round,
            sender: self.id,
            self_mask_commitment,
            encrypted_shares,
            commitments: Some(commitments),
            signature: None,
        };
        m.signature = Some(self.identity.sign(&m.statement(&self.digest())));
        m
    }

    /// A signed verdict with these complaints, revealing `key` as its cipher key.
    pub fn complain(&self, complaints: Vec<Complaint>, key: [u8; 32]) -> ShareVerification {
        let mut m = ShareVerification {
            version: WIRE_VERSION,
            round_id: self.params.round_id,
            sender: self.id,
            complaints,
            revealed_cipher_key: Some(RevealedCipherKey(key)),
            signature: SignatureBytes([0; 64]),
        };
        m.signature = self.identity.sign(&m.statement(&self.digest()));
        m
    }
}
