-- Revocation (issue #13): operator tokens, unused enrolment tokens and participants' credentials can be revoked.
-- Every lookup of a secret checks revoked_at in the database, so a revocation holds at once in every coordinator
-- process that shares it. Rows are kept (NULL = active) so that history and foreign keys stay intact.
ALTER TABLE operator_tokens ADD COLUMN revoked_at BIGINT;
ALTER TABLE enrolment_tokens ADD COLUMN revoked_at BIGINT;
ALTER TABLE participants ADD COLUMN revoked_at BIGINT;
