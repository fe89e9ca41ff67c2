//! Reference data: the import of an archive's file (references checked, subject versions bumped, rows
//! changed by effects kept unless the file's snapshot is later) and the consistent read of the facts rules see.

use super::*;
use crate::store::EffectRow;

impl Store {
    /// Upserts reference data in one transaction and bumps the version of every subject it touches.
    ///
    /// A delega or contact that an accepted request's effect changed after the file's `snapshot` (or ever, when
    /// the file has none) is the daemon's, not the archive's: the file's row would silently undo the decision,
    /// so the stored row is kept and reported, unless `overwrite_effects` says the file wins (reported too).
    pub async fn import_facts(&self, file: &ImportFile, overwrite_effects: bool) -> Result<ImportReport> {
        let mut tx = self.write_tx().await?;
        check_references(&mut tx, file).await?;
        let marks = EffectMarks::read(&mut tx, file).await?;
        let mut report = ImportReport {
            sedi: file.sedi.len(),
            aziende: file.aziende.len(),
            persone: file.persone.len(),
            intermediari: file.intermediari.len(),
            deleghe: file.deleghe.len(),
            contatti: file.contatti.len(),
            ..Default::default()
        };
        let mut effect_rows = |section: &str, i: usize, id: &str, found: Option<&(Value, EffectMark)>, row: Value| {
            let Some((stored, mark)) = found else { return true };
            if file.snapshot.is_some_and(|s| s.timestamp_millis() >= mark.at) {
                return true; // the archive saw the effect: its row is the newer one
            }
            let campi = differing_fields(stored, &row);
            if campi.is_empty() {
                return false; // the archive agrees: keep the row and its mark
            }
            let kept = EffectRow {
                record: format!("{section}[{i}] (id {id})"),
                protocollo: mark.protocollo.clone(),
                modificata_il: rfc3339(mark.at),
                campi,
            };
            if overwrite_effects {
                report.overwritten.push(kept);
                true
            } else {
                report.kept.push(kept);
                false
            }
        };
        // Parents before children, so that the `padre` foreign key holds row by row.
        let mut deleghe: Vec<(usize, &Delega)> = file.deleghe.iter().enumerate().collect();
        deleghe.sort_by_key(|(_, d)| d.padre.is_some());
        let deleghe: Vec<&Delega> = deleghe
            .into_iter()
            .filter(|(i, d)| effect_rows("deleghe", *i, &d.id, marks.deleghe.get(&d.id), json!(d)))
            .map(|(_, d)| d)
            .collect();
        let contatti: Vec<&Contatto> = file
            .contatti
            .iter()
            .enumerate()
            .filter(|(i, c)| effect_rows("contatti", *i, &c.id, marks.contatti.get(&c.id), json!(c)))
            .map(|(_, c)| c)
            .collect();
        // Versions first, as a close locks them before the rows it changes: two writers that take locks in
        // the same order wait for each other instead of deadlocking.
        let touched: Vec<String> = file.touched_subjects().iter().map(Subject::to_string).collect();
        bump_versions(&mut tx, &touched).await?;
        sqlx::query(tx.sql(
            "INSERT INTO sedi (codice, denominazione, provincia, email)
             SELECT value ->> 'codice', value ->> 'denominazione', value ->> 'provincia', value ->> 'email'
             FROM json_each($1) WHERE true
             ON CONFLICT (codice) DO UPDATE SET denominazione = excluded.denominazione,
                 provincia = excluded.provincia, email = excluded.email",
        ))
        .bind(json_text(&file.sedi))
        .execute(&mut *tx)
        .await?;
        sqlx::query(tx.sql(
            "INSERT INTO aziende (matricola, cf, ragione_sociale, sede, pec_registro_imprese, rappresentanti_legali)
             SELECT value ->> 'matricola', value ->> 'cf', value ->> 'ragione_sociale', value ->> 'sede',
                    value ->> 'pec_registro_imprese', CAST(value -> 'rappresentanti_legali' AS TEXT)
             FROM json_each($1) WHERE true
             ON CONFLICT (matricola) DO UPDATE SET cf = excluded.cf, ragione_sociale = excluded.ragione_sociale,
                 sede = excluded.sede, pec_registro_imprese = excluded.pec_registro_imprese,
                 rappresentanti_legali = excluded.rappresentanti_legali",
        ))
        .bind(json_text(&file.aziende))
        .execute(&mut *tx)
        .await?;
        sqlx::query(tx.sql(
            "INSERT INTO persone (cf, nome, cognome)
             SELECT value ->> 'cf', value ->> 'nome', value ->> 'cognome' FROM json_each($1) WHERE true
             ON CONFLICT (cf) DO UPDATE SET nome = excluded.nome, cognome = excluded.cognome",
        ))
        .bind(json_text(&file.persone))
        .execute(&mut *tx)
        .await?;
        sqlx::query(tx.sql(
            "INSERT INTO intermediari (cf, categoria, albo, sede)
             SELECT value ->> 'cf', value ->> 'categoria', value ->> 'albo', value ->> 'sede' FROM json_each($1) WHERE true
             ON CONFLICT (cf) DO UPDATE SET categoria = excluded.categoria, albo = excluded.albo, sede = excluded.sede",
        ))
        .bind(json_text(&file.intermediari))
        .execute(&mut *tx)
        .await?;
        // A row the file wins drops the effect's mark: from now on it is the archive's again.
        sqlx::query(tx.sql(
            "INSERT INTO deleghe (id, matricola, delegato_cf, tipo, stato, data_inizio, data_fine, data_revoca, padre)
             SELECT value ->> 'id', value ->> 'matricola', value ->> 'delegato_cf', value ->> 'tipo',
                    value ->> 'stato', value ->> 'data_inizio', value ->> 'data_fine', value ->> 'data_revoca',
                    value ->> 'padre'
             FROM json_each($1) WHERE true
             ON CONFLICT (id) DO UPDATE SET matricola = excluded.matricola, delegato_cf = excluded.delegato_cf,
                 tipo = excluded.tipo, stato = excluded.stato, data_inizio = excluded.data_inizio,
                 data_fine = excluded.data_fine, data_revoca = excluded.data_revoca, padre = excluded.padre,
                 revocata_da = NULL, effect_at = NULL",
        ))
        .bind(json_text(&deleghe))
        .execute(&mut *tx)
        .await?;
        let rows: Vec<Value> = contatti.iter().map(|c| contact_row(c, None)).collect();
        insert_contacts(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Reads the facts of the given subjects, each with its version, from one consistent snapshot.
    pub async fn load_facts(&self, subjects: &[Subject]) -> Result<HashMap<Subject, SubjectFacts>> {
        // One snapshot for every statement: versions and data agree.
        let mut tx = self.pool.begin_with(self.dialect.begin_snapshot()).await?;
        let keys: Vec<String> = subjects.iter().map(Subject::to_string).collect();
        let versions: HashMap<String, i64> = sqlx::query_as(
            tx.sql("SELECT subject, version FROM subject_versions WHERE subject IN (SELECT value FROM json_each($1))"),
        )
        .bind(json_text(&keys))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut out: HashMap<Subject, SubjectFacts> = subjects
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    SubjectFacts { version: versions.get(&s.to_string()).copied().unwrap_or(0), ..Default::default() },
                )
            })
            .collect();
        let keys_of = |pick: fn(&Subject) -> Option<&String>| -> Vec<&str> {
            subjects.iter().filter_map(pick).map(String::as_str).collect()
        };
        let aziende = keys_of(|s| if let Subject::Azienda(k) = s { Some(k) } else { None });
        let deleghe_azienda = keys_of(|s| if let Subject::DelegheAzienda(k) = s { Some(k) } else { None });
        let contatti_azienda = keys_of(|s| if let Subject::ContattiAzienda(k) = s { Some(k) } else { None });
        let persone = keys_of(|s| if let Subject::Persona(k) = s { Some(k) } else { None });
        let deleghe_delegato = keys_of(|s| if let Subject::DelegheDelegato(k) = s { Some(k) } else { None });
        let contatti_titolare = keys_of(|s| if let Subject::ContattiTitolare(k) = s { Some(k) } else { None });
        let sedi = keys_of(|s| if let Subject::Sede(k) = s { Some(k) } else { None });
        let open: Vec<[&str; 2]> = subjects
            .iter()
            .filter_map(|s| match s {
                Subject::Open { task, soggetto } => Some([task.as_str(), soggetto.as_str()]),
                _ => None,
            })
            .collect();
        let t = &mut tx;
        fill(
            t,
            &mut out,
            "SELECT * FROM aziende WHERE matricola IN (SELECT value FROM json_each($1))",
            &aziende,
            azienda,
            |a| Some(Subject::Azienda(a.matricola.clone())),
            |f, a| f.azienda = Some(a),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM deleghe WHERE matricola IN (SELECT value FROM json_each($1)) ORDER BY data_inizio, id",
            &deleghe_azienda,
            delega,
            |d| Some(Subject::DelegheAzienda(d.matricola.clone())),
            |f, d| f.deleghe.push(d),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM contatti WHERE matricola IN (SELECT value FROM json_each($1)) ORDER BY id",
            &contatti_azienda,
            contatto,
            |c| c.matricola.clone().map(Subject::ContattiAzienda),
            |f, c| f.contatti.push(c),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT cf, nome, cognome FROM persone WHERE cf IN (SELECT value FROM json_each($1))",
            &persone,
            persona,
            |p| Some(Subject::Persona(p.cf.clone())),
            |f, p| f.persona = Some(p),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT cf, categoria, albo, sede FROM intermediari WHERE cf IN (SELECT value FROM json_each($1))",
            &persone,
            intermediario,
            |i| Some(Subject::Persona(i.cf.clone())),
            |f, i| f.intermediario = Some(i),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM deleghe WHERE delegato_cf IN (SELECT value FROM json_each($1)) ORDER BY data_inizio, id",
            &deleghe_delegato,
            delega,
            |d| Some(Subject::DelegheDelegato(d.delegato_cf.clone())),
            |f, d| f.deleghe.push(d),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM contatti WHERE titolare_cf IN (SELECT value FROM json_each($1)) ORDER BY id",
            &contatti_titolare,
            contatto,
            |c| Some(Subject::ContattiTitolare(c.titolare_cf.clone())),
            |f, c| f.contatti.push(c),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM sedi WHERE codice IN (SELECT value FROM json_each($1))",
            &sedi,
            sede,
            |s| Some(Subject::Sede(s.codice.clone())),
            |f, s| f.sede = Some(s),
        )
        .await?;
        if !open.is_empty() {
            for row in sqlx::query(tx.sql(
                "SELECT r.id, r.protocollo, r.creata_il, r.task, r.soggetto
                 FROM json_each($1) j JOIN requests r ON r.task = j.value ->> 0 AND r.soggetto = j.value ->> 1
                 WHERE r.stato <> 'chiusa' ORDER BY r.id",
            ))
            .bind(json_text(&open))
            .fetch_all(&mut *tx)
            .await?
            {
                let key = Subject::Open { task: row.try_get("task")?, soggetto: row.try_get("soggetto")? };
                if let Some(f) = out.get_mut(&key) {
                    f.open_requests.push(OpenRequest {
                        id: row.try_get("id")?,
                        protocollo: row.try_get("protocollo")?,
                        creata_il: row.try_get("creata_il")?,
                    });
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// Refuses an import whose references point nowhere, naming the record and field.
async fn check_references(tx: &mut Tx, file: &ImportFile) -> Result<()> {
    let sedi: BTreeSet<String> =
        sqlx::query_scalar(tx.sql("SELECT codice FROM sedi")).fetch_all(&mut **tx).await?.into_iter().collect();
    for (i, a) in file.aziende.iter().enumerate() {
        if !sedi.contains(&a.sede) && !file.sedi.iter().any(|s| s.codice == a.sede) {
            return Err(StoreError::Reference {
                record: format!("aziende[{i}] (matricola {})", a.matricola),
                field: "sede".into(),
                problem: format!("sede `{}` is neither in this file nor in the database", a.sede),
            });
        }
    }
    for (i, m) in file.intermediari.iter().enumerate() {
        if let Some(sede) = m.sede.as_ref().filter(|s| !sedi.contains(*s) && !file.sedi.iter().any(|x| &x.codice == *s))
        {
            return Err(StoreError::Reference {
                record: format!("intermediari[{i}] (cf {})", m.cf),
                field: "sede".into(),
                problem: format!("sede `{sede}` is neither in this file nor in the database"),
            });
        }
    }
    let padri: Vec<&str> = file.deleghe.iter().filter_map(|d| d.padre.as_deref()).collect();
    let known: BTreeSet<String> =
        sqlx::query_scalar(tx.sql("SELECT id FROM deleghe WHERE id IN (SELECT value FROM json_each($1))"))
            .bind(json_text(&padri))
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    for (i, d) in file.deleghe.iter().enumerate() {
        if let Some(p) = &d.padre
            && !known.contains(p)
            && !file.deleghe.iter().any(|x| &x.id == p)
        {
            return Err(StoreError::Reference {
                record: format!("deleghe[{i}] (id {})", d.id),
                field: "padre".into(),
                problem: format!("delega `{p}` is neither in this file nor in the database"),
            });
        }
    }
    no_padre_cycle_through_the_database(tx, file).await
}

/// Refuses a delega of the file whose chain of `padre`, followed through the file's rows (which replace the
/// stored ones) and the stored rows, comes back to it: `D-1 -> D-2 -> D-1` where the file gives D-1 the
/// stored D-2 as its parent. Cycles inside the file were refused when it was read.
async fn no_padre_cycle_through_the_database(tx: &mut Tx, file: &ImportFile) -> Result<()> {
    let mut padre: HashMap<String, Option<String>> =
        file.deleghe.iter().map(|d| (d.id.clone(), d.padre.clone())).collect();
    // The stored chains above the file's rows, one level per statement (chains are a few levels deep).
    let mut frontier: Vec<String> =
        file.deleghe.iter().filter_map(|d| d.padre.clone()).filter(|p| !padre.contains_key(p)).collect();
    while !frontier.is_empty() {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as(tx.sql("SELECT id, padre FROM deleghe WHERE id IN (SELECT value FROM json_each($1))"))
                .bind(json_text(&frontier))
                .fetch_all(&mut **tx)
                .await?;
        frontier = rows.iter().filter_map(|(_, p)| p.clone()).filter(|p| !padre.contains_key(p)).collect();
        padre.extend(rows);
    }
    for (i, d) in file.deleghe.iter().enumerate() {
        let mut chain = vec![d.id.as_str()];
        while let Some(Some(next)) = chain.last().and_then(|at| padre.get(*at)) {
            if chain.contains(&next.as_str()) {
                if next != &d.id {
                    break; // a cycle not through this delega: reported from one of its own records
                }
                chain.push(next);
                return Err(StoreError::Reference {
                    record: format!("deleghe[{i}] (id {})", d.id),
                    field: "padre".into(),
                    problem: format!("cyclic chain of padre through the stored deleghe: {}", chain.join(" -> ")),
                });
            }
            chain.push(next);
        }
    }
    Ok(())
}

/// Upserts contact rows by id (imports and effects).
pub(super) async fn insert_contacts(tx: &mut Tx, rows: &[Value]) -> Result<()> {
    sqlx::query(tx.sql(
        "INSERT INTO contatti (id, titolare_cf, matricola, tipo, valore, uso, stato, anomalia, valid_from, valid_to,
                               effect_request, effect_at)
         SELECT value ->> 'id', value ->> 'titolare_cf', value ->> 'matricola', value ->> 'tipo',
                value ->> 'valore', CAST(value -> 'uso' AS TEXT), value ->> 'stato', value ->> 'anomalia',
                value ->> 'valid_from', value ->> 'valid_to',
                CAST(value ->> 'effect_request' AS BIGINT), CAST(value ->> 'effect_at' AS BIGINT)
         FROM json_each($1) WHERE true
         ON CONFLICT (id) DO UPDATE SET titolare_cf = excluded.titolare_cf, matricola = excluded.matricola,
             tipo = excluded.tipo, valore = excluded.valore, uso = excluded.uso, stato = excluded.stato,
             anomalia = excluded.anomalia, valid_from = excluded.valid_from, valid_to = excluded.valid_to,
             effect_request = excluded.effect_request, effect_at = excluded.effect_at",
    ))
    .bind(json_text(&rows))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A contact as [`insert_contacts`] writes it: with the request whose effect writes it and when, or unmarked
/// (an import: the archive's row).
pub(super) fn contact_row(c: &Contatto, effect: Option<(i64, Millis)>) -> Value {
    let mut row = json!(c);
    if let (Some((request, at)), Some(map)) = (effect, row.as_object_mut()) {
        map.insert("effect_request".into(), json!(request));
        map.insert("effect_at".into(), json!(at));
    }
    row
}

/// When an effect last changed a stored row, and the protocol number of the request whose effect it was.
struct EffectMark {
    at: Millis,
    protocollo: Option<String>,
}

/// The stored deleghe and contacts of an import file that an effect changed, by id, as the domain's JSON.
struct EffectMarks {
    deleghe: HashMap<String, (Value, EffectMark)>,
    contatti: HashMap<String, (Value, EffectMark)>,
}

impl EffectMarks {
    async fn read(tx: &mut Tx, file: &ImportFile) -> Result<EffectMarks> {
        let deleghe = marked(
            tx,
            "SELECT d.*, r.protocollo AS effect_protocollo FROM deleghe d LEFT JOIN requests r ON r.id = d.revocata_da
             WHERE d.effect_at IS NOT NULL AND d.id IN (SELECT value FROM json_each($1))",
            file.deleghe.iter().map(|d| d.id.as_str()).collect(),
            |row| delega(row).map(|d| (d.id.clone(), json!(d))),
        )
        .await?;
        let contatti = marked(
            tx,
            "SELECT c.*, r.protocollo AS effect_protocollo FROM contatti c LEFT JOIN requests r ON r.id = c.effect_request
             WHERE c.effect_at IS NOT NULL AND c.id IN (SELECT value FROM json_each($1))",
            file.contatti.iter().map(|c| c.id.as_str()).collect(),
            |row| contatto(row).map(|c| (c.id.clone(), json!(c))),
        )
        .await?;
        Ok(EffectMarks { deleghe, contatti })
    }
}

/// The marked rows among `ids`, by id, each as (id, domain JSON) by `parse`, with its mark.
async fn marked(
    tx: &mut Tx,
    sql: &'static str,
    ids: Vec<&str>,
    parse: fn(&AnyRow) -> Result<(String, Value)>,
) -> Result<HashMap<String, (Value, EffectMark)>> {
    let mut out = HashMap::new();
    for row in sqlx::query(tx.sql(sql)).bind(json_text(&ids)).fetch_all(&mut **tx).await? {
        let (id, record) = parse(&row)?;
        let mark = EffectMark { at: row.try_get("effect_at")?, protocollo: row.try_get("effect_protocollo")? };
        out.insert(id, (record, mark));
    }
    Ok(out)
}

/// The fields whose values differ between two records of the same kind (their domain JSON), by name only: a
/// report never quotes a contact's value.
fn differing_fields(stored: &Value, file: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (stored.as_object(), file.as_object()) else { return vec!["*".into()] };
    let mut keys: BTreeSet<&String> = a.keys().collect();
    keys.extend(b.keys());
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// Runs a fact query over `keys` (bound as a JSON array) and files each row under the subject it belongs to.
async fn fill<T>(
    tx: &mut Tx,
    out: &mut HashMap<Subject, SubjectFacts>,
    sql: &'static str,
    keys: &[&str],
    parse: fn(&AnyRow) -> Result<T>,
    subject: fn(&T) -> Option<Subject>,
    put: fn(&mut SubjectFacts, T),
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    for row in sqlx::query(tx.sql(sql)).bind(json_text(&keys)).fetch_all(&mut **tx).await? {
        let item = parse(&row)?;
        if let Some(f) = subject(&item).and_then(|s| out.get_mut(&s)) {
            put(f, item);
        }
    }
    Ok(())
}

fn persona(row: &AnyRow) -> Result<Persona> {
    Ok(Persona { cf: row.try_get("cf")?, nome: row.try_get("nome")?, cognome: row.try_get("cognome")? })
}

fn intermediario(row: &AnyRow) -> Result<Intermediario> {
    Ok(Intermediario {
        cf: row.try_get("cf")?,
        categoria: row.try_get("categoria")?,
        albo: row.try_get("albo")?,
        sede: row.try_get("sede")?,
    })
}

fn sede(row: &AnyRow) -> Result<Sede> {
    Ok(Sede {
        codice: row.try_get("codice")?,
        denominazione: row.try_get("denominazione")?,
        provincia: row.try_get("provincia")?,
        email: row.try_get("email")?,
    })
}

fn azienda(row: &AnyRow) -> Result<Azienda> {
    Ok(Azienda {
        matricola: row.try_get("matricola")?,
        cf: row.try_get("cf")?,
        ragione_sociale: row.try_get("ragione_sociale")?,
        sede: row.try_get("sede")?,
        pec_registro_imprese: row.try_get("pec_registro_imprese")?,
        rappresentanti_legali: parse_json("aziende.rappresentanti_legali", row.try_get("rappresentanti_legali")?)?,
    })
}

pub(super) fn delega(row: &AnyRow) -> Result<Delega> {
    Ok(Delega {
        id: row.try_get("id")?,
        matricola: row.try_get("matricola")?,
        delegato_cf: row.try_get("delegato_cf")?,
        tipo: text_enum(row, "deleghe.tipo")?,
        stato: text_enum(row, "deleghe.stato")?,
        data_inizio: row.try_get("data_inizio")?,
        data_fine: row.try_get("data_fine")?,
        data_revoca: row.try_get("data_revoca")?,
        padre: row.try_get("padre")?,
    })
}

/// A column holding one of an enumeration's names (`table.column`), read with the enumeration's serde names.
fn text_enum<T: serde::de::DeserializeOwned>(row: &AnyRow, what: &str) -> Result<T> {
    let column = what.rsplit('.').next().unwrap_or(what);
    serde_json::from_value(Value::String(row.try_get(column)?)).map_err(|e| corrupt(what, e))
}

pub(super) fn contatto(row: &AnyRow) -> Result<Contatto> {
    Ok(Contatto {
        id: row.try_get("id")?,
        titolare_cf: row.try_get("titolare_cf")?,
        matricola: row.try_get("matricola")?,
        tipo: text_enum(row, "contatti.tipo")?,
        valore: row.try_get("valore")?,
        uso: parse_json("contatti.uso", row.try_get("uso")?)?,
        stato: text_enum(row, "contatti.stato")?,
        anomalia: row.try_get("anomalia")?,
        valid_from: row.try_get("valid_from")?,
        valid_to: row.try_get("valid_to")?,
    })
}
