//! End-to-end tests of the secure-aggregation state machines in both threat models: correctness under dropouts at
//! every stage, aborts, the honest client's reveal rule, typed errors that leave the server unchanged, and
//! statistical uniformity. The malicious-server and malicious-participant attacks are in `secagg_malicious_*.rs`.

mod secagg_support;

use confide_common::secagg::group::Scalar;
use confide_common::secagg::{
    AbortReason, GraphKind, MaskedInput, QuantizationParams, RoundOutcome, RoundStage,
    SecAggClient, SecAggError, SecAggParams, SecAggServer, SecurityRequirements, ThreatModel,
    UnmaskingRequest, UnmaskingResponse,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use secagg_support::{
    Dropouts, Setup, assert_completes, malicious, run, semi_honest, spread_dropouts,
};

fn params(n: u32, t: u32, graph: GraphKind, len: u32, bits: u32) -> SecAggParams {
    semi_honest(n, t, graph, len, bits).params
}

fn complete(n: u32, t: u32, len: u32, bits: u32) -> Setup {
    semi_honest(n, t, GraphKind::Complete, len, bits)
}

#[test]
fn complete_graph_sum_is_exact_for_many_n_with_dropouts_up_to_the_threshold() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for n in [2u32, 3, 4, 5, 6, 7, 9, 12, 17, 25, 33, 50, 100] {
        let t = n / 2 + 1;
        let s = complete(n, t, 5, 32);
        if n < 100 {
            assert_completes(&s, &Dropouts::default(), u64::from(n));
        }
        // As many dropouts as the threshold allows, spread over all stages.
        let drops = spread_dropouts(&s, n - t, &mut rng);
        assert_completes(&s, &drops, u64::from(n) + 1000);
    }
}

#[test]
fn malicious_rounds_sum_exactly_with_dropouts_at_every_stage_up_to_the_threshold() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    for (n, nc) in [
        (3u32, 0u32),
        (3, 1),
        (4, 1),
        (5, 1),
        (7, 2),
        (10, 1),
        (16, 3),
        (25, 2),
    ] {
        let t = confide_common::secagg::malicious_threshold_bound(n, nc);
        let s = malicious(n, t, nc, 5, 32, u64::from(n * 10 + nc));
        assert_completes(&s, &Dropouts::default(), u64::from(n));
        let drops = spread_dropouts(&s, n - t, &mut rng);
        let server = assert_completes(&s, &drops, u64::from(n) + 500);
        // Everyone who dropped is reported as having given no answer, at the stage it skipped.
        for u in drops.consistency.iter().chain(&drops.verify) {
            let status = server.status(*u).unwrap();
            assert!(status.dropped.is_some(), "{u}: {status:?}");
        }
    }
}

#[test]
fn dropouts_concentrated_in_each_single_stage() {
    let dropped: Vec<u32> = vec![0, 3, 5, 9, 10];
    for mode in [ThreatModel::SemiHonest, ThreatModel::Malicious] {
        let s = match mode {
            ThreatModel::SemiHonest => semi_honest(11, 6, GraphKind::Complete, 7, 20),
            ThreatModel::Malicious => malicious(11, 6, 0, 7, 20, 11),
        };
        for (i, stage) in RoundStage::sequence(mode).iter().enumerate() {
            let mut d = Dropouts::default();
            match stage {
                RoundStage::AdvertiseKeys => d.advertise = dropped.clone(),
                RoundStage::ShareKeys => d.share = dropped.clone(),
                RoundStage::ShareVerification => d.verify = dropped.clone(),
                RoundStage::MaskedInputCollection => d.masked = dropped.clone(),
                RoundStage::ConsistencyCheck => d.consistency = dropped.clone(),
                _ => d.unmask = dropped.clone(),
            }
            assert_completes(&s, &d, 77 + i as u64);
        }
    }
}

#[test]
fn sparse_graph_sum_is_exact_with_dropouts() {
    let s = semi_honest(60, 7, GraphKind::Harary { degree: 10 }, 9, 32);
    assert_completes(&s, &Dropouts::default(), 5);
    let d = Dropouts {
        advertise: vec![1],
        share: vec![20],
        masked: vec![33, 47],
        unmask: vec![59],
        ..Dropouts::default()
    };
    assert_completes(&s, &d, 6);
}

#[test]
fn derived_sparse_parameters_run_a_round() {
    let req = SecurityRequirements {
        participants: 150,
        dropout_rate: 0.1,
        corrupt_fraction: 0.05,
        sparse: true,
        threat_model: ThreatModel::SemiHonest,
    };
    let p = SecAggParams::derive(7, &req, 4, 32, [9; 32], Default::default()).unwrap();
    assert!(matches!(p.graph, GraphKind::Harary { .. }), "{:?}", p.graph);
    let s = Setup {
        params: p,
        identities: Vec::new(),
    };
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let drops = spread_dropouts(&s, 15, &mut rng);
    assert_completes(&s, &drops, 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn random_rounds_sum_exactly(seed in any::<u64>(), n in 2u32..40, sparse in any::<bool>(), bits in 1u32..=32, len in 1u32..20, drop_frac in 0.0f64..=1.0) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (graph, size) = if sparse && n >= 8 {
            let degree = 2 * (1 + (seed % u64::from((n - 2) / 2).max(1)) as u32).min((n - 2) / 2);
            if degree + 1 < n { (GraphKind::Harary { degree }, degree + 1) } else { (GraphKind::Complete, n) }
        } else {
            (GraphKind::Complete, n)
        };
        let t = size / 2 + 1;
        let s = semi_honest(n, t, graph, len, bits);
        // Sparse graphs can only lose dropouts that keep every neighbourhood at t; allow few there.
        let budget = if matches!(graph, GraphKind::Complete) { n - t } else { (size - t).min(1) };
        let drops = spread_dropouts(&s, (f64::from(budget) * drop_frac) as u32, &mut rng);
        let (outcome, expected, _) = run(&s, &drops, seed);
        match outcome {
            RoundOutcome::Completed(sum) => prop_assert_eq!(Some(sum), expected),
            RoundOutcome::Aborted { reason } => prop_assert!(false, "aborted: {}", reason),
        }
    }

    #[test]
    fn random_malicious_rounds_sum_exactly(seed in any::<u64>(), n in 3u32..16, corrupt in 0.0f64..0.5, bits in 1u32..=32, len in 1u32..12, drop_frac in 0.0f64..=1.0) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let nc = ((f64::from(n) * corrupt) as u32).min(n - 2);
        let t = confide_common::secagg::malicious_threshold_bound(n, nc);
        let s = malicious(n, t, nc, len, bits, seed);
        let drops = spread_dropouts(&s, (f64::from(n - t) * drop_frac) as u32, &mut rng);
        let (outcome, expected, _) = run(&s, &drops, seed);
        match outcome {
            RoundOutcome::Completed(sum) => prop_assert_eq!(Some(sum), expected),
            RoundOutcome::Aborted { reason } => prop_assert!(false, "aborted: {}", reason),
        }
    }
}

#[test]
fn round_aborts_cleanly_below_the_threshold_at_every_stage() {
    let five: Vec<u32> = vec![0, 1, 2, 3, 4];
    for mode in [ThreatModel::SemiHonest, ThreatModel::Malicious] {
        let s = match mode {
            ThreatModel::SemiHonest => semi_honest(9, 5, GraphKind::Complete, 3, 32),
            ThreatModel::Malicious => malicious(9, 5, 0, 3, 32, 9),
        };
        for (i, stage) in RoundStage::sequence(mode).iter().enumerate() {
            let mut d = Dropouts::default();
            match stage {
                RoundStage::AdvertiseKeys => d.advertise = five.clone(),
                RoundStage::ShareKeys => d.share = five.clone(),
                RoundStage::ShareVerification => d.verify = five.clone(),
                RoundStage::MaskedInputCollection => d.masked = five.clone(),
                RoundStage::ConsistencyCheck => d.consistency = five.clone(),
                _ => d.unmask = five.clone(),
            }
            let (outcome, _, server) = run(&s, &d, 10 + i as u64);
            let RoundOutcome::Aborted { reason } = outcome else {
                panic!("{mode:?} {stage:?}: round should abort")
            };
            assert!(
                matches!(
                    reason,
                    AbortReason::TooFewParticipants {
                        survivors: 4,
                        threshold: 5,
                        ..
                    }
                ),
                "{mode:?} {stage:?}: {reason:?}"
            );
            // Nothing past the stage that failed: no aggregate, the snapshot keeps no dealing.
            assert_eq!(server.aggregate(), None);
        }
    }
}

/// Drives a complete-graph round up to the Unmasking broadcast; returns server, clients, inputs.
fn round_until_unmasking(
    n: u32,
    t: u32,
    seed: u64,
) -> (SecAggServer, Vec<SecAggClient>, ChaCha20Rng) {
    let p = params(n, t, GraphKind::Complete, 4, 32);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut server = SecAggServer::new(p.clone()).unwrap();
    let mut clients = Vec::new();
    for u in 0..n {
        let (c, m) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
        server.handle_advertise_keys(&m).unwrap();
        clients.push(c);
    }
    server.close_stage().unwrap();
    let dir = server.key_directory().unwrap();
    for c in &mut clients {
        let m = c.handle_key_directory(&dir, &mut rng).unwrap();
        server.handle_share_keys(&m).unwrap();
    }
    server.close_stage().unwrap();
    (server, clients, rng)
}

#[test]
fn honest_client_never_reveals_both_shares_of_one_peer() {
    let (server, mut clients, _) = round_until_unmasking(7, 4, 21);
    let input = vec![0u32; 4];
    for c in &mut clients {
        let routed = server.routed_shares(c.id()).unwrap();
        c.handle_routed_shares(&routed, &input).unwrap();
    }
    // A server that claims participants 5 and 6 dropped (so it gets their mask keys) ...
    let req = UnmaskingRequest {
        version: 2,
        round_id: 42,
        survivors: vec![0, 1, 2, 3, 4],
    };
    let resp = clients[0].handle_unmasking_request(&req).unwrap();
    let self_owners: Vec<u32> = resp.self_mask_shares.iter().map(|s| s.owner).collect();
    let key_owners: Vec<u32> = resp.mask_key_shares.iter().map(|s| s.owner).collect();
    assert_eq!(self_owners, vec![0, 1, 2, 3, 4]);
    assert_eq!(key_owners, vec![5, 6]);
    // ... and then asks again claiming they survived, to get their self-mask shares too: refused.
    let req2 = UnmaskingRequest {
        version: 2,
        round_id: 42,
        survivors: (0..7).collect(),
    };
    assert_eq!(
        clients[0].handle_unmasking_request(&req2),
        Err(SecAggError::RoundEnded)
    );
    // Asking a fresh client with fewer than t survivors reveals nothing and ends its participation.
    let few = UnmaskingRequest {
        version: 2,
        round_id: 42,
        survivors: vec![1, 2, 3],
    };
    assert!(matches!(
        clients[1].handle_unmasking_request(&few),
        Err(SecAggError::TooFewSurvivors {
            survivors: 3,
            threshold: 4
        })
    ));
    assert_eq!(clients[1].stage(), RoundStage::Aborted);
    assert_eq!(
        clients[1].handle_unmasking_request(&req2),
        Err(SecAggError::RoundEnded)
    );
    // A survivor list without the client itself, or unsorted, is refused and changes nothing.
    let without_self = UnmaskingRequest {
        version: 2,
        round_id: 42,
        survivors: vec![0, 1, 3, 4, 5],
    };
    assert!(matches!(
        clients[2].handle_unmasking_request(&without_self),
        Err(SecAggError::Malformed(_))
    ));
    let unsorted = UnmaskingRequest {
        version: 2,
        round_id: 42,
        survivors: vec![2, 1, 3, 4, 5],
    };
    assert!(matches!(
        clients[2].handle_unmasking_request(&unsorted),
        Err(SecAggError::Malformed(_))
    ));
    assert_eq!(clients[2].stage(), RoundStage::MaskedInputCollection);
    let ok = clients[2].handle_unmasking_request(&req2).unwrap();
    assert_eq!(ok.self_mask_shares.len(), 7);
    assert!(ok.mask_key_shares.is_empty());
}

#[test]
fn tampered_ciphertext_is_rejected_and_the_client_can_still_proceed() {
    let (server, mut clients, _) = round_until_unmasking(5, 3, 22);
    let routed = server.routed_shares(2).unwrap();
    let mut tampered = routed.clone();
    tampered.shares[1].ciphertext[10] ^= 0x40;
    let sender = tampered.shares[1].sender;
    let input = vec![1u32; 4];
    assert_eq!(
        clients[2].handle_routed_shares(&tampered, &input),
        Err(SecAggError::BadCiphertext { sender })
    );
    // Misrouted: another participant's shares.
    let other = server.routed_shares(3).unwrap();
    assert!(clients[2].handle_routed_shares(&other, &input).is_err());
    let mut swapped = routed.clone();
    swapped.shares.swap(0, 1);
    assert!(matches!(
        clients[2].handle_routed_shares(&swapped, &input),
        Err(SecAggError::Malformed(_))
    ));
    assert_eq!(
        clients[2].handle_routed_shares(&routed, &[1u32; 3]),
        Err(SecAggError::WrongVectorLength {
            expected: 4,
            got: 3
        })
    );
    assert_eq!(clients[2].stage(), RoundStage::ShareKeys);
    let masked = clients[2].handle_routed_shares(&routed, &input).unwrap();
    assert_eq!(masked.values.len(), 4);
}

#[test]
fn rejected_messages_leave_the_server_state_unchanged() {
    let n = 5;
    let p = params(n, 3, GraphKind::Complete, 6, 16);
    let mut rng = ChaCha20Rng::seed_from_u64(30);
    let mut server = SecAggServer::new(p.clone()).unwrap();
    let mut clients = Vec::new();
    let mut adverts = Vec::new();
    for u in 0..n {
        let (c, m) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
        clients.push(c);
        adverts.push(m);
    }
    let rejects = |server: &mut SecAggServer,
                   f: &dyn Fn(&mut SecAggServer) -> Result<(), SecAggError>| {
        let before = server.encode();
        let err = f(server).unwrap_err();
        assert_eq!(server.encode(), before, "state changed after {err:?}");
        err
    };
    server.handle_advertise_keys(&adverts[0]).unwrap();
    let a0 = adverts[0].clone();
    assert_eq!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&a0)),
        SecAggError::Duplicate(0)
    );
    let mut stranger = adverts[1].clone();
    stranger.sender = 9;
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&stranger)),
        SecAggError::NotMember { participant: 9, .. }
    ));
    let mut reused = adverts[1].clone();
    reused.mask_public_key = adverts[0].mask_public_key;
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&reused)),
        SecAggError::Malformed(_)
    ));
    let mut other_round = adverts[1].clone();
    other_round.round_id = 1;
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&other_round)),
        SecAggError::WrongRound { .. }
    ));
    let early = MaskedInput {
        round_id: 42,
        sender: 1,
        values: vec![0; 6],
    };
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input(&early)),
        SecAggError::WrongStage { .. }
    ));
    // Participant 4 never advertises: it is not in U1.
    for m in &adverts[1..4] {
        server.handle_advertise_keys(m).unwrap();
    }
    server.close_stage().unwrap();
    assert_eq!(server.u1(), &[0, 1, 2, 3]);
    let dir = server.key_directory().unwrap();
    let mut share_msgs = Vec::new();
    for c in &mut clients[..4] {
        share_msgs.push(c.handle_key_directory(&dir, &mut rng).unwrap());
    }
    let a4 = adverts[4].clone();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&a4)),
        SecAggError::WrongStage { .. }
    ));
    let mut short = share_msgs[0].clone();
    short.encrypted_shares[0].ciphertext.pop();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_share_keys(&short)),
        SecAggError::Malformed(_)
    ));
    let mut missing = share_msgs[0].clone();
    missing.encrypted_shares.pop();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_share_keys(&missing)),
        SecAggError::Malformed(_)
    ));
    for m in &share_msgs {
        server.handle_share_keys(m).unwrap();
    }
    let s0 = share_msgs[0].clone();
    assert_eq!(
        rejects(&mut server, &|s| s.handle_share_keys(&s0)),
        SecAggError::Duplicate(0)
    );
    server.close_stage().unwrap();
    let inputs: Vec<Vec<u32>> = (0..4).map(|u| vec![u * 100 + 1; 6]).collect();
    let mut masked = Vec::new();
    for (u, c) in clients[..4].iter_mut().enumerate() {
        let routed = server.routed_shares(u as u32).unwrap();
        masked.push(c.handle_routed_shares(&routed, &inputs[u]).unwrap());
    }
    let wrong_len = MaskedInput {
        round_id: 42,
        sender: 0,
        values: vec![0; 5],
    };
    assert_eq!(
        rejects(&mut server, &|s| s.handle_masked_input(&wrong_len)),
        SecAggError::WrongVectorLength {
            expected: 6,
            got: 5
        }
    );
    let bytes = wrong_len.encode();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input_bytes(&bytes)),
        SecAggError::WrongVectorLength { .. }
    ));
    let truncated = masked[0].encode();
    let truncated = truncated[..truncated.len() - 2].to_vec();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input_bytes(&truncated)),
        SecAggError::Malformed(_)
    ));
    let out_of_ring = MaskedInput {
        round_id: 42,
        sender: 0,
        values: vec![1 << 16; 6],
    };
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input(&out_of_ring)),
        SecAggError::ValueOutOfRange { .. }
    ));
    let from_4 = MaskedInput {
        round_id: 42,
        sender: 4,
        values: vec![0; 6],
    };
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input(&from_4)),
        SecAggError::NotMember { participant: 4, .. }
    ));
    for m in &masked {
        server.handle_masked_input_bytes(&m.encode()).unwrap();
    }
    let m0 = masked[0].encode();
    assert_eq!(
        rejects(&mut server, &|s| s.handle_masked_input_bytes(&m0)),
        SecAggError::Duplicate(0)
    );
    server.close_stage().unwrap();
    let req = server.unmasking_request().unwrap();
    let responses: Vec<UnmaskingResponse> = clients[..4]
        .iter_mut()
        .map(|c| c.handle_unmasking_request(&req).unwrap())
        .collect();
    // Asking for both kinds of share of participant 1: refused as a bad share.
    let mut both = responses[0].clone();
    let mut extra = both.self_mask_shares[1].clone();
    extra.owner = 1;
    both.mask_key_shares.push(extra);
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_unmasking_response(&both)),
        SecAggError::BadShare { .. }
    ));
    let mut missing = responses[0].clone();
    missing.self_mask_shares.pop();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_unmasking_response(&missing)),
        SecAggError::BadShare { .. }
    ));
    let mut foreign_point = responses[0].clone();
    foreign_point.self_mask_shares[0].share = responses[1].self_mask_shares[0].share.clone();
    assert!(matches!(
        rejects(&mut server, &|s| s
            .handle_unmasking_response(&foreign_point)),
        SecAggError::BadShare { .. }
    ));
    for r in &responses {
        server.handle_unmasking_response(r).unwrap();
    }
    let r0 = responses[0].clone();
    assert_eq!(
        rejects(&mut server, &|s| s.handle_unmasking_response(&r0)),
        SecAggError::Duplicate(0)
    );
    assert!(server.ready_to_close());
    server.close_stage().unwrap();
    let expected: Vec<u32> = vec![1 + 101 + 201 + 301; 6];
    assert_eq!(server.aggregate(), Some(&expected[..]));
    assert_eq!(server.close_stage(), Err(SecAggError::RoundEnded));
}

#[test]
fn wrong_share_is_detected_at_unmasking() {
    let (mut server, mut clients, _) = round_until_unmasking(5, 3, 23);
    for c in &mut clients {
        let routed = server.routed_shares(c.id()).unwrap();
        let m = c.handle_routed_shares(&routed, &[7u32; 4]).unwrap();
        server.handle_masked_input(&m).unwrap();
    }
    server.close_stage().unwrap();
    let req = server.unmasking_request().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut r = c.handle_unmasking_request(&req).unwrap();
        if i < 3 {
            // The first t holders (whose shares the server uses) corrupt participant 4's share.
            r.self_mask_shares[4].share.y += Scalar::ONE;
        }
        server.handle_unmasking_response(&r).unwrap();
    }
    server.close_stage().unwrap();
    assert_eq!(
        server.outcome(),
        Some(RoundOutcome::Aborted {
            reason: AbortReason::InconsistentShares { participant: 4 }
        })
    );
}

#[test]
fn masked_inputs_are_uniform() {
    // A constant input (all zeros) masked in an 8-bit ring: χ² over 256 bins, 255 degrees of freedom.
    let len = 64_000u32;
    let (server, mut clients, _) = {
        let p = params(3, 2, GraphKind::Complete, len, 8);
        let mut rng = ChaCha20Rng::seed_from_u64(40);
        let mut server = SecAggServer::new(p.clone()).unwrap();
        let mut clients = Vec::new();
        for u in 0..3 {
            let (c, m) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
            server.handle_advertise_keys(&m).unwrap();
            clients.push(c);
        }
        server.close_stage().unwrap();
        let dir = server.key_directory().unwrap();
        for c in &mut clients {
            let m = c.handle_key_directory(&dir, &mut rng).unwrap();
            server.handle_share_keys(&m).unwrap();
        }
        server.close_stage().unwrap();
        (server, clients, rng)
    };
    let routed = server.routed_shares(1).unwrap();
    let masked = clients[1]
        .handle_routed_shares(&routed, &vec![0u32; len as usize])
        .unwrap();
    let mut hist = [0u64; 256];
    for &v in &masked.values {
        hist[v as usize] += 1;
    }
    let expected = f64::from(len) / 256.0;
    let chi2: f64 = hist
        .iter()
        .map(|&h| (h as f64 - expected).powi(2) / expected)
        .sum();
    // 99.9th percentile of χ²(255) ≈ 330.5.
    assert!(chi2 < 330.5, "chi-square {chi2}");
}

#[test]
fn quantised_updates_aggregate_to_their_sum() {
    let n = 6;
    let q = QuantizationParams::for_participants(1.0, 32, n, 1000).unwrap();
    let p = params(n, 4, GraphKind::Complete, 4, 32);
    let mut rng = ChaCha20Rng::seed_from_u64(50);
    let updates: Vec<Vec<f32>> = (0..n)
        .map(|u| vec![0.1 * u as f32, -0.3, 0.77, 2.0])
        .collect();
    let mut server = SecAggServer::new(p.clone()).unwrap();
    let mut clients = Vec::new();
    for u in 0..n {
        let (c, m) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
        server.handle_advertise_keys(&m).unwrap();
        clients.push(c);
    }
    server.close_stage().unwrap();
    let dir = server.key_directory().unwrap();
    for c in &mut clients {
        let m = c.handle_key_directory(&dir, &mut rng).unwrap();
        server.handle_share_keys(&m).unwrap();
    }
    server.close_stage().unwrap();
    for (u, c) in clients.iter_mut().enumerate() {
        let x = q
            .quantize(&updates[u][..3], 10 + u as u32, &mut rng)
            .unwrap();
        let m = c
            .handle_routed_shares(&server.routed_shares(u as u32).unwrap(), &x)
            .unwrap();
        server.handle_masked_input(&m).unwrap();
    }
    server.close_stage().unwrap();
    let req = server.unmasking_request().unwrap();
    for c in &mut clients {
        server
            .handle_unmasking_response(&c.handle_unmasking_request(&req).unwrap())
            .unwrap();
    }
    server.close_stage().unwrap();
    let d = q.dequantize(server.aggregate().unwrap()).unwrap();
    let exact = [1.5f64, -1.8, 4.62];
    for (got, want) in d.values.iter().zip(exact) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    assert_eq!(d.total_weight, (10..16).sum::<u64>());
}

#[test]
fn corrupted_state_is_refused() {
    let p = params(4, 3, GraphKind::Complete, 2, 32);
    let server = SecAggServer::new(p).unwrap();
    let bytes = server.encode();
    assert!(SecAggServer::decode(&bytes[..bytes.len() - 1]).is_err());
    assert!(SecAggServer::decode(b"nope").is_err());
    // Another format version (an older one: its dealings lack the combined commitments) is refused.
    for version in [2u8, 4] {
        let mut other = bytes.clone();
        other[4] = version;
        assert!(matches!(
            SecAggServer::decode(&other),
            Err(SecAggError::Decode(_))
        ));
    }
    assert!(SecAggServer::decode(&bytes).is_ok());
}
