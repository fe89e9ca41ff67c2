-- When an accepted request's effect last changed a delega or a contact (unix ms), and for contacts which request
-- did (deleghe have `revocata_da`). A reference-data import keeps such a row instead of silently reverting the
-- effect, unless the file's snapshot was taken after the change (or the import is told to overwrite effects).
ALTER TABLE deleghe ADD COLUMN effect_at INTEGER;
ALTER TABLE contatti ADD COLUMN effect_at INTEGER;
ALTER TABLE contatti ADD COLUMN effect_request INTEGER REFERENCES requests (id);
-- Revocations applied before this migration: their request's closing time.
UPDATE deleghe SET effect_at = (SELECT r.chiusa_il FROM requests r WHERE r.id = deleghe.revocata_da)
WHERE revocata_da IS NOT NULL;
