-- The sede an intermediary belongs to (issue 16): a request that names no position (no matricola) — a quesito
-- of an intermediary about its own affairs, a change of its contacts — goes to the requester's sede when it is
-- known, else to intake.sede_predefinita. Checked against sedi at import, like an azienda's sede.
ALTER TABLE intermediari ADD COLUMN sede TEXT;
