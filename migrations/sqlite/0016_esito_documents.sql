-- The SHA-256 of the esito PDF of a closed request, recorded with an `esito_documento` event by the daemon soon
-- after the close (rendering is kept off the workers' closing transaction): the document can be regenerated at
-- any time, and the history says which bytes it was. NULL: not recorded yet; '-': the rendering failed (logged).
ALTER TABLE requests ADD COLUMN esito_sha256 TEXT;
CREATE INDEX requests_esito_pending ON requests (chiusa_il, id) WHERE stato = 'chiusa' AND esito_sha256 IS NULL;
