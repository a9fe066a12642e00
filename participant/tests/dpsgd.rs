//! The DP-SGD engine against explicit per-example computations.

use confide_common::model::{Activation, ConvBlock, ModelSpec};
use confide_participant::data::Dataset;
use confide_participant::dp::GaussianNoise;
use confide_participant::dpsgd::{
    DpSgdParams, Optimizer, OptimizerConfig, check_supported, clipped_gradient_sum, noisy_gradient,
    plain_gradient, poisson_sample,
};
use confide_participant::model::{Network, cross_entropy_sum};
use confide_participant::train::{
    LocalTrainer, Mode, PrivacySpent, TrainError, TrainingPlan, train_round,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tch::{Kind, Tensor};

fn mlp() -> ModelSpec {
    ModelSpec::Mlp {
        input_dim: 6,
        hidden: vec![5, 4],
        activation: Activation::Tanh,
        num_classes: 3,
    }
}

fn cnn() -> ModelSpec {
    ModelSpec::Cnn {
        input_shape: [2, 6, 6],
        conv: vec![
            ConvBlock {
                out_channels: 3,
                kernel_size: 3,
                padding: 1,
                pool: Some(2),
            },
            ConvBlock {
                out_channels: 4,
                kernel_size: 2,
                padding: 0,
                pool: None,
            },
        ],
        hidden: vec![5],
        activation: Activation::Relu,
        num_classes: 3,
    }
}

/// A single-channel input (as for grey images), whose patches take a different path.
fn cnn_single_channel() -> ModelSpec {
    ModelSpec::Cnn {
        input_shape: [1, 5, 5],
        conv: vec![
            ConvBlock {
                out_channels: 3,
                kernel_size: 3,
                padding: 1,
                pool: Some(2),
            },
            ConvBlock {
                out_channels: 2,
                kernel_size: 2,
                padding: 1,
                pool: None,
            },
        ],
        hidden: vec![],
        activation: Activation::Tanh,
        num_classes: 2,
    }
}

fn batch(spec: &ModelSpec, n: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let x = Tensor::randn(
        [n, spec.input_dim() as i64],
        (Kind::Float, tch::Device::Cpu),
    ) * 2.0;
    let y = Tensor::randint(
        spec.num_classes() as i64,
        [n],
        (Kind::Int64, tch::Device::Cpu),
    );
    (x, y)
}

/// Per-example gradients by running autograd on each example alone.
fn per_example_gradients(net: &Network, x: &Tensor, y: &Tensor) -> Vec<Vec<Tensor>> {
    (0..y.size()[0])
        .map(|i| {
            let xi = x.narrow(0, i, 1);
            let yi = y.narrow(0, i, 1);
            let loss = cross_entropy_sum(&net.forward(&xi), &yi);
            Tensor::run_backward(&[&loss], net.params(), false, false)
        })
        .collect()
}

fn norm(grads: &[Tensor]) -> f64 {
    grads
        .iter()
        .map(|g| {
            g.to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                .double_value(&[])
        })
        .sum::<f64>()
        .sqrt()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn per_example_norms_equal_batch_of_one_norms() {
    for spec in [mlp(), cnn(), cnn_single_channel()] {
        let net = Network::new(&spec, &spec.initial_parameters(3)).unwrap();
        let (x, y) = batch(&spec, 9, 1);
        let ghost = clipped_gradient_sum(&net, &x, &y, f64::INFINITY);
        let norms: Vec<f64> = Vec::<f32>::try_from(&ghost.norms)
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let expected: Vec<f64> = per_example_gradients(&net, &x, &y)
            .iter()
            .map(|g| norm(g))
            .collect();
        assert_eq!(norms.len(), 9);
        for (got, want) in norms.iter().zip(&expected) {
            let rel = (got - want).abs() / want;
            assert!(
                rel < 1e-5,
                "{spec:?}: ghost norm {got} vs autograd {want} (rel {rel})"
            );
        }
    }
}

#[test]
fn clipped_sum_equals_explicit_per_example_loop() {
    for spec in [mlp(), cnn(), cnn_single_channel()] {
        let net = Network::new(&spec, &spec.initial_parameters(5)).unwrap();
        let (x, y) = batch(&spec, 12, 2);
        let per_example = per_example_gradients(&net, &x, &y);
        let norms: Vec<f64> = per_example.iter().map(|g| norm(g)).collect();
        // A clip norm below the median so that some examples are clipped and some are not.
        let mut sorted = norms.clone();
        sorted.sort_by(f64::total_cmp);
        let clip = sorted[6];
        assert!(sorted[0] < clip && sorted[11] > clip);

        let ghost = clipped_gradient_sum(&net, &x, &y, clip);
        for (k, got) in ghost.clipped_sum.iter().enumerate() {
            let mut want = got.zeros_like().to_kind(Kind::Double);
            for (g, n) in per_example.iter().zip(&norms) {
                let factor = (clip / (n + 1e-6)).min(1.0);
                want += g[k].to_kind(Kind::Double) * factor;
            }
            let rel = max_rel_diff(got, &want);
            assert!(
                rel < 1e-5,
                "{spec:?} parameter {k}: relative difference {rel}"
            );
        }
    }
}

#[test]
fn dp_step_with_no_noise_and_no_clipping_equals_plain_step() {
    for spec in [mlp(), cnn()] {
        let init = spec.initial_parameters(7);
        let mut plain = Network::new(&spec, &init).unwrap();
        let mut private = Network::new(&spec, &init).unwrap();
        let (x, y) = batch(&spec, 16, 3);
        let params = DpSgdParams {
            sampling_rate: 0.5,
            clip_norm: f64::INFINITY,
            noise_multiplier: 0.0,
            // The expected batch size equals the actual one here, so the divisions agree.
            expected_batch_size: 16.0,
        };
        let sgd = OptimizerConfig::Sgd {
            learning_rate: 0.1,
            momentum: 0.9,
        };
        let mut opt_plain = Optimizer::new(sgd, plain.params().len());
        let mut opt_private = Optimizer::new(sgd, private.params().len());
        let mut noise = GaussianNoise::from_seed([1; 32]);
        for _ in 0..3 {
            let (g_plain, _) = plain_gradient(&plain, &x, &y);
            let (g_private, stats) = noisy_gradient(&private, &x, &y, &params, &mut noise);
            assert_eq!(stats.batch_size, 16);
            assert_eq!(stats.clipped_fraction, 0.0);
            for (a, b) in g_private.iter().zip(&g_plain) {
                assert!(max_rel_diff(a, b) < 1e-5);
            }
            opt_plain.step(plain.params_mut(), &g_plain);
            opt_private.step(private.params_mut(), &g_private);
        }
        let a = plain.to_flat();
        let b = private.to_flat();
        let diff = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{spec:?}: parameters differ by {diff}");
    }
}

#[test]
fn noise_has_std_sigma_c_over_expected_batch() {
    // With a zero-gradient batch (empty sample) the step is pure noise N(0, (σC/qN)²).
    let spec = ModelSpec::LogisticRegression {
        input_dim: 200,
        num_classes: 10,
    };
    let net = Network::new(&spec, &spec.initial_parameters(0)).unwrap();
    let x = Tensor::zeros([0, 200], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu));
    let params = DpSgdParams {
        sampling_rate: 0.01,
        clip_norm: 2.0,
        noise_multiplier: 1.5,
        expected_batch_size: 4.0,
    };
    let mut noise = GaussianNoise::from_seed([2; 32]);
    let (g, stats) = noisy_gradient(&net, &x, &y, &params, &mut noise);
    assert_eq!(stats.batch_size, 0);
    let all = Tensor::cat(&g.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
    let std = all.std(true).double_value(&[]);
    let want = 1.5 * 2.0 / 4.0;
    assert!((std - want).abs() < 0.05 * want, "std {std}, want {want}");
}

#[test]
fn the_agents_update_noise_does_not_reveal_the_record_count() {
    // A round as the agent trains it: the study's public divisor B = 40, whatever the site's N. Zero features make
    // every weight gradient exactly 0, so the weight coordinates of the update are pure noise with std lr·σC/B.
    // Dividing by the site's own q·N (32 for 64 records, 32.5 for 65) would put N into that spread.
    let spec = ModelSpec::LogisticRegression {
        input_dim: 2000,
        num_classes: 2,
    };
    let plan = TrainingPlan {
        sampling_rate: 0.5,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        expected_batch_size: 40.0,
        steps: 1,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 1.0,
            momentum: 0.0,
        },
    };
    let global = vec![0.0f32; spec.num_parameters()];
    let want = 1.0 * 1.0 / 40.0;
    for records in [64usize, 65] {
        let data = Dataset {
            feature_names: (0..2000).map(|i| format!("f{i}")).collect(),
            features: vec![0.0; records * 2000],
            labels: (0..records as i64).map(|i| i % 2).collect(),
        };
        let update = train_round(&spec, &global, &data, &plan).unwrap();
        // Layout: the 2 × 2000 weights first, then the 2 biases (which carry signal).
        let weights = &update.parameters[..4000];
        let mean = weights.iter().map(|&v| f64::from(v)).sum::<f64>() / 4000.0;
        let var = weights
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / 3999.0;
        let std = var.sqrt();
        // 4000 draws: the estimate's relative error is about 1.1 %; q·N would be off by 23–25 %.
        assert!(
            (std - want).abs() < 0.05 * want,
            "{records} records: noise std {std}, want σC/B = {want}"
        );
    }
}

#[test]
fn noise_drawn_on_torch_threads_is_the_samplers_noise() {
    // 20,010 parameters: two chunks, so the draw runs on torch's OpenMP team; it must be exactly what the
    // sampler gives for the same seed, every element drawn.
    tch::set_num_threads(2);
    let spec = ModelSpec::LogisticRegression {
        input_dim: 2000,
        num_classes: 10,
    };
    let net = Network::new(&spec, &spec.initial_parameters(0)).unwrap();
    let x = Tensor::zeros([0, 2000], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu));
    let params = DpSgdParams {
        sampling_rate: 0.01,
        clip_norm: 2.0,
        noise_multiplier: 1.5,
        expected_batch_size: 4.0,
    };
    let (g, _) = noisy_gradient(
        &net,
        &x,
        &y,
        &params,
        &mut GaussianNoise::from_seed([4; 32]),
    );
    let got: Vec<f32> = g
        .iter()
        .flat_map(|t| Vec::<f32>::try_from(t.reshape([-1])).unwrap())
        .collect();
    let mut want = vec![0.0f32; spec.num_parameters()];
    GaussianNoise::from_seed([4; 32]).fill_f32(&mut want, 1.5 * 2.0 / 4.0);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "noise differs from the sampler's");
}

#[test]
fn poisson_sampling_frequency_matches_rate() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (n, q, draws) = (2000usize, 0.05, 400);
    let mut counts = vec![0u32; n];
    let mut sizes = Vec::new();
    for _ in 0..draws {
        let s = poisson_sample(&mut rng, n, q);
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "indices are distinct and sorted"
        );
        sizes.push(s.len() as f64);
        for i in s {
            counts[i] += 1;
        }
    }
    let total: f64 = counts.iter().map(|&c| f64::from(c)).sum();
    let freq = total / (n * draws) as f64;
    // Standard error of freq: sqrt(q(1-q)/(n·draws)) ≈ 0.00024.
    assert!((freq - q).abs() < 0.0015, "frequency {freq}");
    let mean = sizes.iter().sum::<f64>() / draws as f64;
    let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (draws - 1) as f64;
    let want_var = n as f64 * q * (1.0 - q);
    assert!((mean - n as f64 * q).abs() < 2.0, "mean batch {mean}");
    assert!(
        (var / want_var - 1.0).abs() < 0.3,
        "batch variance {var} vs {want_var}"
    );
    // Every record is sampled at the same rate: no record is never or always chosen.
    assert!(counts.iter().all(|&c| c > 0 && c < 60));
}

#[test]
fn validator_rejects_layers_the_clipper_cannot_handle() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/models/layer_norm_mlp_unsupported.json"
    ))
    .unwrap();
    let spec = ModelSpec::from_json(&text).unwrap();
    let err = check_supported(&spec).unwrap_err().to_string();
    assert!(
        err.starts_with("layer 1 (layer_norm) has trainable parameters"),
        "{err}"
    );

    let data = Dataset {
        feature_names: (0..30).map(|i| format!("f{i}")).collect(),
        features: vec![0.5; 30 * 4],
        labels: vec![0, 1, 0, 1],
    };
    let private = Mode::Private(DpSgdParams {
        sampling_rate: 0.5,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        expected_batch_size: 2.0,
    });
    let sgd = OptimizerConfig::Sgd {
        learning_rate: 0.1,
        momentum: 0.0,
    };
    let noise = || GaussianNoise::from_seed([0; 32]);
    let init = spec.initial_parameters(0);
    let err = LocalTrainer::new(&spec, &init, &data, private, sgd, noise(), Some(1)).unwrap_err();
    assert!(matches!(err, TrainError::Unsupported(_)), "{err}");
    // The same model trains without DP (the layer itself works).
    let mut t = LocalTrainer::new(
        &spec,
        &init,
        &data,
        Mode::NonPrivate { sampling_rate: 0.5 },
        sgd,
        noise(),
        Some(1),
    )
    .unwrap();
    t.step();
    assert_eq!(t.privacy_spent(), PrivacySpent::NoGuarantee);
}

#[test]
fn trainer_checks_data_against_the_model() {
    let spec = mlp();
    let init = spec.initial_parameters(0);
    let mode = Mode::Private(DpSgdParams {
        sampling_rate: 0.5,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        expected_batch_size: 2.0,
    });
    let sgd = OptimizerConfig::Sgd {
        learning_rate: 0.1,
        momentum: 0.0,
    };
    let noise = || GaussianNoise::from_seed([0; 32]);
    let wrong_width = Dataset {
        feature_names: vec!["a".into()],
        features: vec![1.0, 2.0],
        labels: vec![0, 1],
    };
    let err =
        LocalTrainer::new(&spec, &init, &wrong_width, mode, sgd, noise(), Some(0)).unwrap_err();
    assert!(matches!(
        err,
        TrainError::FeatureMismatch {
            expected: 6,
            found: 1
        }
    ));
    let bad_label = Dataset {
        feature_names: (0..6).map(|i| i.to_string()).collect(),
        features: vec![0.0; 6],
        labels: vec![3],
    };
    let err = LocalTrainer::new(&spec, &init, &bad_label, mode, sgd, noise(), Some(0)).unwrap_err();
    assert!(matches!(
        err,
        TrainError::LabelOutOfRange { num_classes: 3 }
    ));
    let err =
        LocalTrainer::new(&spec, &init[1..], &bad_label, mode, sgd, noise(), Some(0)).unwrap_err();
    assert!(matches!(
        err,
        TrainError::LabelOutOfRange { .. } | TrainError::Model(_)
    ));
    let bad_rate = Mode::Private(DpSgdParams {
        sampling_rate: 1.5,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        expected_batch_size: 2.0,
    });
    let ok_data = Dataset {
        labels: vec![0],
        ..bad_label
    };
    let err =
        LocalTrainer::new(&spec, &init, &ok_data, bad_rate, sgd, noise(), Some(0)).unwrap_err();
    assert!(err.to_string().contains("sampling rate"), "{err}");
}

#[test]
fn network_flat_vector_round_trips_in_layout_order() {
    let spec = ModelSpec::LogisticRegression {
        input_dim: 3,
        num_classes: 2,
    };
    // weight [[1,2,3],[4,5,6]], bias [0.5, -0.5]
    let flat = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.5, -0.5];
    let net = Network::new(&spec, &flat).unwrap();
    assert_eq!(net.to_flat(), flat);
    let logits = net.forward(&Tensor::from_slice(&[1.0f32, 0.0, -1.0]).reshape([1, 3]));
    let got = Vec::<f32>::try_from(logits.reshape([-1])).unwrap();
    assert_eq!(got, [1.0 - 3.0 + 0.5, 4.0 - 6.0 - 0.5]);
    assert!(Network::new(&spec, &flat[..7]).is_err());
    let cnn = cnn();
    let init = cnn.initial_parameters(9);
    assert_eq!(Network::new(&cnn, &init).unwrap().to_flat(), init);
}

#[test]
fn private_training_learns_a_separable_problem() {
    // Two well-separated Gaussian blobs; a modest noise level still learns them.
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let n = 2000;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    tch::manual_seed(5);
    let noise_t =
        Vec::<f32>::try_from(Tensor::randn([n * 4], (Kind::Float, tch::Device::Cpu))).unwrap();
    for i in 0..n as usize {
        let label = (rand::RngExt::random::<f64>(&mut rng) < 0.5) as i64;
        let shift = if label == 1 { 1.5 } else { -1.5 };
        features.extend((0..4).map(|j| noise_t[i * 4 + j] + shift));
        labels.push(label);
    }
    let data = Dataset {
        feature_names: (0..4).map(|i| format!("f{i}")).collect(),
        features,
        labels,
    };
    let spec = ModelSpec::LogisticRegression {
        input_dim: 4,
        num_classes: 2,
    };
    let mode = Mode::Private(DpSgdParams {
        sampling_rate: 0.05,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        expected_batch_size: 100.0,
    });
    let mut trainer = LocalTrainer::new(
        &spec,
        &spec.initial_parameters(0),
        &data,
        mode,
        OptimizerConfig::Sgd {
            learning_rate: 0.5,
            momentum: 0.5,
        },
        GaussianNoise::from_seed([4; 32]),
        Some(4),
    )
    .unwrap();
    for _ in 0..40 {
        trainer.step();
    }
    let (acc, _) = trainer.evaluate(&data);
    assert!(acc > 0.95, "accuracy {acc}");
    assert_eq!(trainer.steps_done(), 40);
    assert!(matches!(trainer.privacy_spent(), PrivacySpent::Events(e) if e.len() == 1));
}
