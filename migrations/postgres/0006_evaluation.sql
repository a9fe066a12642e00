-- Federated evaluation (issue #14).
--
-- What a round computes, so that evaluation rounds (which publish no model version) do not count against a
-- study's rounds. Rounds stored before this column existed are 'training' here (a statistics round among them
-- keeps counting, as it did; its plan_json still says what it was).
ALTER TABLE rounds ADD COLUMN purpose TEXT NOT NULL DEFAULT 'training';

-- The part of a participant's dataset a charge used ('all', 'training', 'evaluation'): a site's held-out
-- evaluation records and its training records are disjoint, so their charges compose in parallel. Charges stored
-- before this column existed used every record.
ALTER TABLE privacy_ledger ADD COLUMN data_partition TEXT NOT NULL DEFAULT 'all';

-- The noisy aggregate of an evaluation round per model version, with the public parameters its noise follows
-- from (noise std per site, sites, loss clamp, the release's ε): accuracy, loss and their noise are
-- post-processing of these numbers.
CREATE TABLE model_evaluations (
    id                 BIGSERIAL PRIMARY KEY,
    study_id           BIGINT NOT NULL REFERENCES studies(id),
    round_id           BIGINT NOT NULL UNIQUE REFERENCES rounds(id),
    model_version      BIGINT NOT NULL,
    training_rounds    BIGINT NOT NULL,
    correct            DOUBLE PRECISION NOT NULL,
    record_count       DOUBLE PRECISION NOT NULL,
    loss_sum           DOUBLE PRECISION NOT NULL,
    sites              BIGINT NOT NULL,
    noise_std_per_site DOUBLE PRECISION NOT NULL,
    loss_max           DOUBLE PRECISION NOT NULL,
    release_epsilon    DOUBLE PRECISION NOT NULL,
    epsilon_spent      DOUBLE PRECISION NOT NULL,
    created_at         BIGINT NOT NULL,
    UNIQUE (study_id, model_version)
);
