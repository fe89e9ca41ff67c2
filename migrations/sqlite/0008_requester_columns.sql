-- Who submitted a request and for which position, as columns: the Lista Richieste of a requester (the API)
-- reads them by index instead of parsing every payload.
ALTER TABLE requests ADD COLUMN richiedente_cf TEXT;
ALTER TABLE requests ADD COLUMN matricola TEXT;
UPDATE requests SET richiedente_cf = json_extract(payload, '$.richiedente_cf'),
                    matricola = json_extract(payload, '$.matricola');
CREATE INDEX requests_richiedente ON requests (richiedente_cf, id);
