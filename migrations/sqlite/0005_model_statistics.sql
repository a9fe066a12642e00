-- The DP statistics (JSON `PublishedStatistics`: per-feature mean and std derived from a statistics round's noisy
-- totals, with the release's public parameters) a model version's inputs are standardised with. Published by the
-- statistics round with a model version of unchanged weights, and carried to every later version.
ALTER TABLE model_versions ADD COLUMN statistics_json TEXT;
