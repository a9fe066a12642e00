//! A malicious server against real `SecAggClient`s: the harness plays the coordinator and lies — substitutes keys,
//! replays messages, splits views, asks for both shares, shows too few survivors, forwards signatures over other
//! sets. In each case the honest client aborts with a typed error before revealing anything that would let the
//! server unmask it, and each test asserts exactly what the clients revealed.

mod secagg_support;

use confide_common::secagg::crypto::KeyPair;
use confide_common::secagg::group::MaskKeyPair;
use confide_common::secagg::identity::survivors_statement;
use confide_common::secagg::messages::{
    Acknowledgement, ConsistencyCheckRequest, MaskedInputRequest, SignedSurvivors,
    SurvivorSignature, WIRE_VERSION,
};
use confide_common::secagg::{
    AdvertisedKeys, ClientAbort, IdentityKey, KeyDirectory, RoundStage, RoutedShares, SecAggClient,
    SecAggError, SecAggServer, SignatureBytes, UnmaskingResponse, malicious_threshold_bound,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use secagg_support::{Revealed, Setup, client, malicious};

/// A malicious round driven honestly up to the stage each test lies in.
struct Lab {
    s: Setup,
    server: SecAggServer,
    clients: Vec<SecAggClient>,
    rng: ChaCha20Rng,
    /// Acknowledgements collected at share verification.
    acks: Vec<Acknowledgement>,
}

impl Lab {
    /// Everyone advertised; the honest server closed AdvertiseKeys.
    fn new(n: u32, t: u32, nc: u32, seed: u64) -> Self {
        Self::with_setup(malicious(n, t, nc, 3, 32, seed), seed)
    }

    fn with_setup(s: Setup, seed: u64) -> Self {
        let n = s.params.participants;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut server = SecAggServer::new(s.params.clone()).unwrap();
        let mut clients = Vec::new();
        for u in 0..n {
            let (c, m) = client(&s, u, &mut rng);
            server.handle_advertise_keys(&m).unwrap();
            clients.push(c);
        }
        server.close_stage().unwrap();
        Lab {
            s,
            server,
            clients,
            rng,
            acks: Vec::new(),
        }
    }

    fn round(&self) -> u64 {
        self.s.params.round_id
    }

    fn directory(&self) -> KeyDirectory {
        self.server.key_directory().unwrap()
    }

    /// Everyone deals; the honest server closes ShareKeys (routing opens).
    fn deal_all(&mut self) {
        let dir = self.directory();
        for c in &mut self.clients {
            let m = c.handle_key_directory(&dir, &mut self.rng).unwrap();
            self.server.handle_share_keys(&m).unwrap();
        }
        self.server.close_stage().unwrap();
    }

    /// Routes to `u` only the shares of `keep` (as a lying server may).
    fn routed_only(&self, u: u32, keep: &[u32]) -> RoutedShares {
        let mut r = self.server.routed_shares(u).unwrap();
        r.shares.retain(|s| keep.contains(&s.sender));
        r
    }

    /// Verification by `u` of what is routed to it, which must be an acknowledgement (kept for the go-ahead).
    fn verify(&mut self, u: u32, routed: &RoutedShares) {
        let v = self.clients[u as usize]
            .verify_routed_shares(routed, &mut self.rng)
            .unwrap();
        assert!(v.complaints.is_empty());
        self.acks.push(Acknowledgement {
            holder: u,
            signature: v.signature,
        });
        self.acks.sort_by_key(|a| a.holder);
    }

    /// `u` masks a zero input after the server's go-ahead with every acknowledgement collected so far.
    fn try_mask(&mut self, u: u32) -> Result<(), SecAggError> {
        let req = MaskedInputRequest {
            version: WIRE_VERSION,
            round_id: self.round(),
            acknowledgements: self.acks.clone(),
        };
        let len = self.s.params.vector_len as usize;
        self.clients[u as usize]
            .handle_masked_input_request(&req, &vec![0; len])
            .map(|_| ())
    }

    fn mask(&mut self, u: u32) {
        self.try_mask(u).unwrap();
    }

    /// Honest routing and verification for everyone, then everyone masks.
    fn verify_and_mask_all(&mut self) {
        for u in 0..self.s.params.participants {
            let r = self.server.routed_shares(u).unwrap();
            self.verify(u, &r);
        }
        for u in 0..self.s.params.participants {
            self.mask(u);
        }
    }

    fn consistency_request(&self, survivors: &[u32]) -> ConsistencyCheckRequest {
        ConsistencyCheckRequest {
            version: WIRE_VERSION,
            round_id: self.round(),
            survivors: survivors.to_vec(),
        }
    }

    /// `u` asked to sign `set`.
    fn sign_set(&mut self, u: u32, set: &[u32]) -> Result<SurvivorSignature, SecAggError> {
        let req = self.consistency_request(set);
        let sig = self.clients[u as usize].handle_consistency_check_request(&req)?;
        Ok(SurvivorSignature {
            signer: u,
            signature: sig.signature,
        })
    }

    /// `u` shown `set` with the signatures of `signers` (honest ones must have signed it before; the attacker's
    /// are forged).
    fn reveal(&mut self, u: u32, msg: &SignedSurvivors) -> Result<UnmaskingResponse, SecAggError> {
        self.clients[u as usize].handle_signed_survivors(msg)
    }

    /// What a participant whose identity the attacker holds signs: anything.
    fn forge(&self, signer: u32, survivors: &[u32]) -> SurvivorSignature {
        let st = survivors_statement(&self.s.params.digest(), self.round(), survivors);
        SurvivorSignature {
            signer,
            signature: self.s.identities[signer as usize].sign(&st),
        }
    }

    fn signed(&self, survivors: &[u32], mut signatures: Vec<SurvivorSignature>) -> SignedSurvivors {
        signatures.sort_by_key(|s| s.signer);
        SignedSurvivors {
            version: WIRE_VERSION,
            round_id: self.round(),
            survivors: survivors.to_vec(),
            signatures,
        }
    }
}

fn refused(c: &SecAggClient) -> &SecAggError {
    match c.abort_cause() {
        Some(ClientAbort::Refused(e)) => e,
        other => panic!(
            "client should have refused, is {other:?} in {:?}",
            c.stage()
        ),
    }
}

#[test]
fn key_substitution_is_refused_before_anything_is_shared() {
    for n in [3u32, 10] {
        let t = malicious_threshold_bound(n, 1);
        let lab = Lab::new(n, t, 1, u64::from(n));
        let honest = lab.directory();
        let identities = lab.s.identities.clone();
        let (digest, round) = (lab.s.params.digest(), lab.round());
        let mut srng = ChaCha20Rng::seed_from_u64(99);
        let server_identity = IdentityKey::generate(&mut srng);
        // How the server signs each substituted entry: (a) keeps the owner's signature, (b) signs with its own
        // identity, (c) has another roster member sign it, (d) strips it.
        type Signer<'a> = Box<dyn Fn(&mut AdvertisedKeys) + 'a>;
        let cases: Vec<(&str, Signer)> = vec![
            ("kept", Box::new(|_| {})),
            (
                "server-signed",
                Box::new(|e| {
                    e.signature = Some(server_identity.sign(&e.statement(&digest, round)))
                }),
            ),
            (
                "foreign",
                Box::new(|e| {
                    let other = (e.participant + 1) % n;
                    e.signature =
                        Some(identities[other as usize].sign(&e.statement(&digest, round)))
                }),
            ),
            ("unsigned", Box::new(|e| e.signature = None)),
        ];
        for (i, (name, sign)) in cases.iter().enumerate() {
            // A fresh victim (index 0) per case: a refused directory ends the client's round.
            let mut vrng = ChaCha20Rng::seed_from_u64(1000 + i as u64);
            let (mut victim, own) = client(&lab.s, 0, &mut vrng);
            let mut dir = honest.clone();
            for e in dir.participants.iter_mut() {
                if e.participant == 0 {
                    e.cipher_public_key = own.cipher_public_key;
                    e.mask_public_key = own.mask_public_key;
                    e.signature = own.signature;
                } else {
                    // The server's own key pairs in place of the participant's.
                    e.cipher_public_key = KeyPair::generate(&mut srng).public_bytes();
                    e.mask_public_key = MaskKeyPair::generate(&mut srng).public_bytes();
                    sign(e);
                }
            }
            let err = victim.handle_key_directory(&dir, &mut vrng).unwrap_err();
            match (*name, &err) {
                ("unsigned", SecAggError::MissingSignature { participant: 1 }) => {}
                ("kept" | "server-signed" | "foreign", SecAggError::BadSignature { signer: 1 }) => {
                }
                _ => panic!("n {n}, {name}: {err:?}"),
            }
            assert_eq!(victim.stage(), RoundStage::Aborted, "{name}");
            assert_eq!(refused(&victim), &err);
            // It revealed nothing but its public keys: no share was dealt, and none will be.
            assert_eq!(
                victim.handle_key_directory(&honest, &mut vrng),
                Err(SecAggError::RoundEnded)
            );
        }
    }
}

#[test]
fn replayed_and_cross_parameter_messages_are_refused() {
    let (n, t) = (5, 4);
    let mut earlier = Lab::new(n, t, 1, 5);
    // Same roster and participants, the next round.
    let mut next = earlier.s.clone();
    next.params.round_id += 1;
    let mut now = Lab::with_setup(next, 6);
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (mut victim, _) = client(&now.s, 0, &mut rng);
    let old_dir = earlier.directory();
    assert!(matches!(
        victim.handle_key_directory(&old_dir, &mut rng),
        Err(SecAggError::WrongRound { .. })
    ));
    assert_eq!(victim.stage(), RoundStage::Aborted);
    // The earlier directory relabelled with the current round id: every foreign entry's signature fails.
    let (mut victim, own) = client(&now.s, 0, &mut rng);
    let mut relabelled = old_dir.clone();
    relabelled.round_id = now.s.params.round_id;
    relabelled.participants[0].cipher_public_key = own.cipher_public_key;
    relabelled.participants[0].mask_public_key = own.mask_public_key;
    relabelled.participants[0].signature = own.signature;
    assert_eq!(
        victim.handle_key_directory(&relabelled, &mut rng),
        Err(SecAggError::BadSignature { signer: 1 })
    );
    // The server refuses a replayed advertisement too.
    let mut server = SecAggServer::new(now.s.params.clone()).unwrap();
    let mut replay = confide_common::secagg::AdvertiseKeys {
        version: WIRE_VERSION,
        round_id: now.s.params.round_id,
        sender: 1,
        cipher_public_key: old_dir.participants[1].cipher_public_key,
        mask_public_key: old_dir.participants[1].mask_public_key,
        signature: old_dir.participants[1].signature,
    };
    assert_eq!(
        server.handle_advertise_keys(&replay),
        Err(SecAggError::BadSignature { signer: 1 })
    );
    replay.signature = None;
    assert_eq!(
        server.handle_advertise_keys(&replay),
        Err(SecAggError::MissingSignature { participant: 1 })
    );
    // A survivor signature set from the earlier round, replayed at a client of this one.
    earlier.deal_all();
    let everyone: Vec<u32> = (0..n).collect();
    earlier.verify_and_mask_all();
    let req = earlier.consistency_request(&everyone);
    let sigs: Vec<SurvivorSignature> = (0..n)
        .map(|u| SurvivorSignature {
            signer: u,
            signature: earlier.clients[u as usize]
                .handle_consistency_check_request(&req)
                .unwrap()
                .signature,
        })
        .collect();
    now.deal_all();
    now.verify_and_mask_all();
    let req = now.consistency_request(&everyone);
    now.clients[0]
        .handle_consistency_check_request(&req)
        .unwrap();
    let mut replayed = now.signed(&everyone, sigs);
    replayed.round_id = now.round();
    assert_eq!(
        now.clients[0].handle_signed_survivors(&replayed),
        Err(SecAggError::BadSignature { signer: 0 })
    );
    assert_eq!(now.clients[0].stage(), RoundStage::Aborted);
}

#[test]
fn parameters_split_between_clients_break_every_signature() {
    // The server shows the victim other (valid) parameters than its peers: here a higher threshold.
    let lab = Lab::new(5, 4, 1, 8);
    let mut other = lab.s.clone();
    other.params.threshold = 5;
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let (mut victim, own) = client(&other, 0, &mut rng);
    let mut dir = lab.directory();
    dir.participants[0].cipher_public_key = own.cipher_public_key;
    dir.participants[0].mask_public_key = own.mask_public_key;
    dir.participants[0].signature = own.signature;
    assert_eq!(
        victim.handle_key_directory(&dir, &mut rng),
        Err(SecAggError::BadSignature { signer: 1 })
    );
}

#[test]
fn a_roster_that_repeats_an_identity_or_misses_the_bound_is_refused() {
    let s = malicious(5, 4, 1, 3, 32, 3);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut p = s.params.clone();
    let mut keys = p.roster.keys().to_vec();
    keys[3] = keys[1];
    assert_eq!(
        confide_common::secagg::Roster::new(keys),
        Err(SecAggError::DuplicateIdentity(3))
    );
    // A threshold one below the bound t > (n + n_c)/2 is refused before any key is drawn.
    p.threshold = malicious_threshold_bound(5, 1) - 1;
    assert!(matches!(
        SecAggClient::with_identity(p, 0, s.identities[0].clone(), &mut rng),
        Err(SecAggError::InvalidParams(_))
    ));
    // The identity handed to the client must be the roster's entry for its index.
    assert!(matches!(
        SecAggClient::with_identity(s.params.clone(), 0, s.identities[1].clone(), &mut rng),
        Err(SecAggError::InvalidParams(_))
    ));
}

/// Attack 2 without key substitution: the victim gets only its t − 1 partners' shares (so it masks with them
/// alone); the server then tells some clients those partners dropped — to collect their mask keys — and others
/// that they survived.
#[test]
fn split_views_of_the_survivors_never_expose_an_honest_input() {
    for n in [5u32, 7] {
        let t = malicious_threshold_bound(n, 0);
        let victim = 0u32;
        let partners: Vec<u32> = (1..t).collect();
        let others: Vec<u32> = (t..n).collect();
        let everyone: Vec<u32> = (0..n).collect();
        let without_partners: Vec<u32> = everyone
            .iter()
            .copied()
            .filter(|u| !partners.contains(u))
            .collect();
        let prepare = |seed: u64| {
            let mut lab = Lab::new(n, t, 0, seed);
            lab.deal_all();
            let r = lab.routed_only(victim, &partners);
            lab.verify(victim, &r);
            for u in 1..n {
                let r = lab.server.routed_shares(u).unwrap();
                lab.verify(u, &r);
            }
            for u in 0..n {
                lab.mask(u);
            }
            lab
        };
        // Strategy A: everyone is told the partners dropped. The victim cannot accept a U3 with members whose
        // shares it does not hold; the others sign it but stay below t without the partners and the victim.
        let mut lab = prepare(u64::from(n) * 3);
        let req = lab.consistency_request(&without_partners);
        assert!(matches!(
            lab.clients[victim as usize].handle_consistency_check_request(&req),
            Err(SecAggError::InconsistentSurvivors(_))
        ));
        let mut sigs = Vec::new();
        for &u in &others {
            sigs.push(lab.sign_set(u, &without_partners).unwrap());
        }
        let msg = lab.signed(&without_partners, sigs);
        for &u in &others {
            assert_eq!(
                lab.clients[u as usize].handle_signed_survivors(&msg),
                Err(SecAggError::TooFewSignatures {
                    got: others.len(),
                    threshold: t as usize
                })
            );
        }
        // Strategy B: the victim and its partners see U3 = {victim} ∪ partners (t members, who all sign, so they
        // reveal), the others U3 without the partners (too few signers).
        let mut lab = prepare(u64::from(n) * 3 + 1);
        let small: Vec<u32> = std::iter::once(victim)
            .chain(partners.iter().copied())
            .collect();
        let mut revealed = Revealed::default();
        for (group, u3) in [(&small, &small), (&others, &without_partners)] {
            let mut sigs = Vec::new();
            for &u in group.iter() {
                sigs.push(lab.sign_set(u, u3).unwrap());
            }
            let msg = lab.signed(u3, sigs);
            for &u in group.iter() {
                if let Ok(resp) = lab.reveal(u, &msg) {
                    revealed.add(&resp);
                }
            }
        }
        // Exactly: the victim revealed self-mask shares of the small set and no mask key; each partner revealed
        // self-mask shares of the small set and mask-key shares of the others; the others revealed nothing.
        for o in &small {
            assert_eq!(revealed.self_mask[o].len(), t as usize);
        }
        assert!(revealed.mask_key.keys().all(|o| others.contains(o)));
        assert!(
            revealed
                .mask_key
                .values()
                .all(|holders| holders.iter().all(|h| partners.contains(h)))
        );
        assert!(
            others
                .iter()
                .all(|&u| lab.clients[u as usize].stage() == RoundStage::Aborted)
        );
        // The victim's self mask is known, but not one of the pairwise masks with its partners; nobody is exposed.
        assert!(revealed.self_mask_known(victim, t as usize));
        assert!(!revealed.exposes(victim, &partners, &[], t as usize));
        for &o in &everyone {
            let partners_of: Vec<u32> = everyone.iter().copied().filter(|&v| v != o).collect();
            assert!(
                !revealed.exposes(o, &partners_of, &[], t as usize),
                "n {n}: {o} exposed"
            );
        }
    }
}

/// Attack 2 with one fake participant (whose identity, and so whose signatures and shares, the server holds):
/// every way of splitting the honest clients into a group told some of the others dropped and a group told
/// everyone survived. With t > (n + 1)/2, no honest input is ever exposed.
#[test]
fn different_survivor_sets_with_a_fake_participant_never_unmask_anyone() {
    for n in [3u32, 5, 7] {
        let nc = 1;
        let t = malicious_threshold_bound(n, nc);
        let fake = n - 1;
        let honest: Vec<u32> = (0..fake).collect();
        let everyone: Vec<u32> = (0..n).collect();
        // Which honest clients are declared dropped to group 1 (bit mask over the honest clients).
        for mask in 1u32..(1 << honest.len()) - 1 {
            let dropped: Vec<u32> = honest
                .iter()
                .copied()
                .filter(|u| mask >> u & 1 == 1)
                .collect();
            let group1: Vec<u32> = honest
                .iter()
                .copied()
                .filter(|u| !dropped.contains(u))
                .collect();
            let u3_1: Vec<u32> = everyone
                .iter()
                .copied()
                .filter(|u| !dropped.contains(u))
                .collect();
            let mut lab = Lab::new(n, t, nc, u64::from(n * 100 + mask));
            lab.deal_all();
            lab.verify_and_mask_all();
            let mut revealed = Revealed::default();
            revealed.add_held_by(&[fake], &everyone);
            let sign_group = |lab: &mut Lab, group: &[u32], u3: &[u32]| {
                let mut sigs = vec![lab.forge(fake, u3)];
                sigs.extend(group.iter().filter_map(|&u| lab.sign_set(u, u3).ok()));
                sigs
            };
            let sigs1 = sign_group(&mut lab, &group1, &u3_1);
            let sigs2 = sign_group(&mut lab, &dropped, &everyone);
            for (group, u3, sigs) in [(&group1, &u3_1, sigs1), (&dropped, &everyone, sigs2)] {
                let msg = lab.signed(u3, sigs);
                for &u in group.iter() {
                    if let Ok(resp) = lab.reveal(u, &msg) {
                        revealed.add(&resp);
                    }
                }
            }
            for &o in &honest {
                let partners: Vec<u32> = everyone.iter().copied().filter(|&v| v != o).collect();
                assert!(
                    !revealed.exposes(o, &partners, &[fake], t as usize),
                    "n {n}, dropped {dropped:?}: input of {o} exposed: {revealed:?}"
                );
            }
        }
    }
}

#[test]
fn no_client_reveals_twice_or_for_a_set_other_than_the_one_it_signed() {
    let (n, t) = (5, 4);
    let mut lab = Lab::new(n, t, 1, 12);
    lab.deal_all();
    lab.verify_and_mask_all();
    let everyone: Vec<u32> = (0..n).collect();
    let without_4: Vec<u32> = (0..4).collect();
    let all_signed =
        |lab: &Lab, set: &[u32]| lab.signed(set, set.iter().map(|&u| lab.forge(u, set)).collect());
    // Client 0 signs U3 = everyone; the server then forwards t valid signatures over U3 without 4 (to get 4's mask
    // key from client 0 while the others reveal 4's self-mask share): refused, nothing revealed.
    lab.sign_set(0, &everyone).unwrap();
    // Asking it to sign a second set is out of order and changes nothing.
    assert!(matches!(
        lab.sign_set(0, &without_4),
        Err(SecAggError::WrongStage { .. })
    ));
    let msg = all_signed(&lab, &without_4);
    assert!(matches!(
        lab.reveal(0, &msg),
        Err(SecAggError::InconsistentSurvivors(_))
    ));
    assert_eq!(lab.clients[0].stage(), RoundStage::Aborted);
    // Client 1 reveals once, for the set it signed: 4's self-mask share and no mask key; a second request ends
    // there.
    lab.sign_set(1, &everyone).unwrap();
    let msg = all_signed(&lab, &everyone);
    let resp = lab.reveal(1, &msg).unwrap();
    let owners: Vec<u32> = resp.self_mask_shares.iter().map(|s| s.owner).collect();
    assert_eq!(owners, everyone);
    assert!(resp.mask_key_shares.is_empty());
    let msg = all_signed(&lab, &without_4);
    assert_eq!(lab.reveal(1, &msg), Err(SecAggError::RoundEnded));
}

#[test]
fn too_few_survivors_or_signatures_reveal_nothing() {
    let (n, t) = (7, 5);
    let mut lab = Lab::new(n, t, 2, 13);
    lab.deal_all();
    lab.verify_and_mask_all();
    // |U3| = t − 1: refused at the consistency check, nothing signed.
    let few: Vec<u32> = (0..4).collect();
    assert_eq!(
        lab.sign_set(0, &few).map(|_| ()),
        Err(SecAggError::TooFewSurvivors {
            survivors: 4,
            threshold: 5
        })
    );
    assert_eq!(lab.clients[0].stage(), RoundStage::Aborted);
    // |U3| = n but only t − 1 signatures forwarded.
    let everyone: Vec<u32> = (0..n).collect();
    lab.sign_set(1, &everyone).unwrap();
    let sigs: Vec<SurvivorSignature> = (1..5).map(|u| lab.forge(u, &everyone)).collect();
    assert_eq!(
        {
            let msg = lab.signed(&everyone, sigs);
            lab.reveal(1, &msg)
        },
        Err(SecAggError::TooFewSignatures {
            got: 4,
            threshold: 5
        })
    );
    // t signatures, one of them by a participant outside U3 … or over another U3.
    let six: Vec<u32> = (0..6).collect();
    lab.sign_set(3, &six).unwrap();
    let mut sigs: Vec<SurvivorSignature> = (0..5).map(|u| lab.forge(u, &six)).collect();
    sigs.push(lab.forge(6, &six));
    assert!(matches!(
        {
            let msg = lab.signed(&six, sigs);
            lab.reveal(3, &msg)
        },
        Err(SecAggError::InconsistentSurvivors(_))
    ));
    lab.sign_set(4, &six).unwrap();
    let mut sigs: Vec<SurvivorSignature> = (0..5).map(|u| lab.forge(u, &six)).collect();
    sigs[2] = lab.forge(2, &everyone);
    assert_eq!(
        {
            let msg = lab.signed(&six, sigs);
            lab.reveal(4, &msg)
        },
        Err(SecAggError::BadSignature { signer: 2 })
    );
    lab.sign_set(5, &six).unwrap();
    let mut sigs: Vec<SurvivorSignature> = (0..5).map(|u| lab.forge(u, &six)).collect();
    sigs[1].signature = SignatureBytes([0; 64]);
    assert_eq!(
        {
            let msg = lab.signed(&six, sigs);
            lab.reveal(5, &msg)
        },
        Err(SecAggError::BadSignature { signer: 1 })
    );
    for u in [0, 1, 3, 4, 5] {
        assert_eq!(lab.clients[u].stage(), RoundStage::Aborted, "client {u}");
    }
}

/// The cost of a complaint, against a server that fakes them: it corrupts the ciphertexts sent to k honest holders,
/// who complain and reveal their cipher keys (so the server learns their shares of every dealer, both kinds), then
/// ignores the complaints and runs the round on with the others and one fake participant. Clients mask only after
/// t acknowledgements, so for every k either nobody sends a masked input or the harvested pairs stay below t.
#[test]
fn harvesting_cipher_keys_through_forced_complaints_never_unmasks_anyone() {
    let (n, nc) = (7u32, 1u32);
    let t = malicious_threshold_bound(n, nc);
    let fake = n - 1;
    let everyone: Vec<u32> = (0..n).collect();
    for k in 0..fake {
        let mut lab = Lab::new(n, t, nc, 40 + u64::from(k));
        lab.deal_all();
        let complainers: Vec<u32> = (0..k).collect();
        let mut revealed = Revealed::default();
        revealed.add_held_by(&[fake], &everyone);
        for u in 0..n {
            let mut r = lab.server.routed_shares(u).unwrap();
            if complainers.contains(&u) {
                r.shares[0].ciphertext[3] ^= 1;
                let v = lab.clients[u as usize]
                    .verify_routed_shares(&r, &mut lab.rng)
                    .unwrap();
                assert!(v.revealed_cipher_key.is_some() && v.complaints.len() == 1);
                assert!(matches!(
                    lab.clients[u as usize].abort_cause(),
                    Some(ClientAbort::Complained { .. })
                ));
                revealed.add_held_by(&[u], &everyone);
            } else {
                lab.verify(u, &r);
            }
        }
        let rest: Vec<u32> = everyone
            .iter()
            .copied()
            .filter(|u| !complainers.contains(u))
            .collect();
        let masked: Vec<u32> = rest
            .iter()
            .copied()
            .filter(|&u| u != fake && lab.try_mask(u).is_ok())
            .collect();
        assert_eq!(
            masked.len() + 1 == rest.len(),
            rest.len() >= t as usize,
            "k = {k}"
        );
        let mut sigs = vec![lab.forge(fake, &rest)];
        for &u in &masked {
            if let Ok(s) = lab.sign_set(u, &rest) {
                sigs.push(s);
            }
        }
        let msg = lab.signed(&rest, sigs);
        for &u in &masked {
            if let Ok(resp) = lab.reveal(u, &msg) {
                revealed.add(&resp);
            }
        }
        for &o in &masked {
            let partners: Vec<u32> = everyone.iter().copied().filter(|&v| v != o).collect();
            assert!(
                !revealed.exposes(o, &partners, &[fake], t as usize),
                "k = {k}: input of {o} exposed"
            );
        }
    }
}
