//! The closing plan: what one batch of evaluated requests writes, computed without I/O.
//!
//! The store loads the current lease tokens, subject versions and effect targets inside its write
//! transaction, calls [`plan`], and executes the plan in the same transaction. Keeping the decision logic
//! here means both backends close batches identically, and the fencing and optimistic checks are unit-tested.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;

use super::decision::{Ambito, Channel, Decision, Effect, NewContact, Outcome, RuleFailure};
use super::event::EventKind;
use super::facts::{
    Contatto, Delega, StatoContatto, StatoDelega, Subject, TipoContatto, contatto_subjects, delega_subjects,
};
use super::request::ContattiNotifica;
use super::time::{Millis, is_iso_date, iso_date};
use super::validators;

/// A request as a worker holds it between claim and close.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRequest {
    pub id: i64,
    pub protocollo: String,
    pub task: String,
    pub soggetto: String,
    pub sede: String,
    pub payload: serde_json::Map<String, serde_json::Value>,
    pub contatti: ContattiNotifica,
    /// The fencing token of this claim.
    pub token: i64,
    pub failures: i64,
    pub creata_il: Millis,
    /// The request had been claimed before and its lease expired: a takeover.
    pub taken_over: bool,
}

/// The result of evaluating one claimed request.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    Decided(Box<Decision>),
    Failed(RuleFailure),
}

/// What the store read inside the closing transaction.
#[derive(Debug, Default)]
pub struct World {
    /// Current lease token of each request of the batch (None = not leased any more).
    pub tokens: HashMap<i64, Option<i64>>,
    /// Current version of every subject read or changed by the batch (absent = 0).
    pub versions: HashMap<Subject, i64>,
    /// The deleghe that effects target, and every delega whose `padre` is one of them.
    pub deleghe: HashMap<String, Delega>,
    /// The contacts that effects target: by id, and every contact of the holders whose contacts change.
    pub contatti: HashMap<String, Contatto>,
    /// PEC addresses of the Registro Imprese of the companies whose contacts change: never touched here.
    pub pec_registro_imprese: Vec<String>,
}

impl World {
    /// What the batch's effects refer to: what the store must load into the world.
    pub fn targets(batch: &[(ClaimedRequest, Evaluation)]) -> EffectTargets {
        let mut t = EffectTargets::default();
        let effects = batch
            .iter()
            .filter_map(|(_, e)| match e {
                Evaluation::Decided(d) => Some(d),
                Evaluation::Failed(_) => None,
            })
            .flat_map(|d| d.effects.iter());
        for effect in effects {
            match effect {
                Effect::RevokeDelegation { delegation_id, .. } => t.deleghe.push(delegation_id.clone()),
                Effect::ReplaceContacts { titolare_cf, ambito, .. } => {
                    t.titolari.push(titolare_cf.clone());
                    let scope = match ambito {
                        Ambito::Tutte(_) => Vec::new(),
                        Ambito::Matricole(m) => m.clone(),
                    };
                    for m in std::iter::once(None).chain(scope.iter().map(Some)) {
                        t.subjects.extend(contatto_subjects(titolare_cf, m));
                    }
                }
                Effect::DisableContacts { contact_ids, .. } => t.contatti.extend(contact_ids.iter().cloned()),
                Effect::AddContact { titolare_cf, matricola, .. } => {
                    t.titolari.push(titolare_cf.clone());
                    t.subjects.extend(contatto_subjects(titolare_cf, matricola.as_ref()));
                }
                Effect::Notify { .. } => {}
            }
        }
        t
    }
}

/// What the batch's effects refer to (see [`World::targets`]).
#[derive(Debug, Default)]
pub struct EffectTargets {
    pub deleghe: Vec<String>,
    pub contatti: Vec<String>,
    pub titolari: Vec<String>,
    /// Subjects that effects may bump although no loaded row names them (e.g. the first contact of a holder):
    /// their current versions must be read too.
    pub subjects: Vec<Subject>,
}

/// Retry schedule of rule failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Failures after which the request is parked for an operator.
    pub max_failures: i64,
    pub base_delay_ms: i64,
    pub max_delay_ms: i64,
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half fixed, half random (`jitter` in [0, 1)).
    pub fn delay_ms(&self, failures: i64, jitter: f64) -> i64 {
        let exp = self.base_delay_ms.saturating_mul(1_i64 << (failures - 1).clamp(0, 30));
        let capped = exp.min(self.max_delay_ms);
        capped / 2 + ((capped / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64
    }
}

/// A notification to queue in the outbox with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel: &'static str,
    pub recipient: String,
    pub role: String,
}

/// The requester's notifications for an event, as consented in `contatti_notifica`.
pub fn requester_notifications(c: &ContattiNotifica) -> Vec<Notification> {
    let mut out = Vec::new();
    if let (true, Some(email)) = (c.consenso_email, &c.email) {
        out.push(Notification { channel: "email", recipient: email.clone(), role: "richiedente".into() });
    }
    if let (true, Some(cell)) = (c.consenso_sms, &c.cellulare) {
        out.push(Notification { channel: "sms", recipient: cell.clone(), role: "richiedente".into() });
    }
    out
}

/// An event to append to a request's history, with the notifications it causes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub request_id: i64,
    pub kind: EventKind,
    pub actor: String,
    pub detail: serde_json::Value,
    pub notifications: Vec<Notification>,
}

/// A change to a contact row.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactChange {
    /// Replaced: archived from `valid_to` on, anomaly flags cleared.
    Archive {
        id: String,
        valid_to: String,
    },
    /// Disabled for notifications (soft delete; the anomaly stays for audit).
    Disable {
        id: String,
        valid_to: String,
    },
    Insert(Contatto),
}

/// A delega the batch revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub delega_id: String,
    pub data_revoca: String,
    pub request_id: i64,
}

/// How one request of the batch ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Closed(Outcome),
    Referred,
    Retried,
    Parked,
    /// A fact it read changed: its decision is discarded and it is decided again.
    Conflict,
    /// Its lease was lost (expired and taken over): nothing is written for it.
    Stale,
}

#[derive(Debug, Default)]
pub struct ClosePlan {
    pub fates: Vec<(i64, Fate)>,
    /// Requests closed: (id, esito).
    pub closed: Vec<(i64, &'static str)>,
    /// Requests referred to an operator: (id, sede).
    pub referred: Vec<(i64, String)>,
    /// Requests to retry after a rule failure: (id, available_at, error).
    pub retried: Vec<(i64, Millis, String)>,
    /// Requests parked after too many rule failures: (id, error).
    pub parked: Vec<(i64, String)>,
    /// Requests released for a new decision.
    pub released: Vec<i64>,
    pub decisions: Vec<(i64, Decision)>,
    pub events: Vec<NewEvent>,
    pub revocations: Vec<Revocation>,
    /// Contact rows the batch changes: (id of the request whose effect changes it, change).
    pub contacts: Vec<(i64, ContactChange)>,
    /// New versions of the subjects the batch changed.
    pub versions: HashMap<Subject, i64>,
}

/// What kind of master-data change an applied effect made: the archives' feed names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliedEffectKind {
    RevocaDelega,
    ArchiviazioneContatto,
    DisabilitazioneContatto,
    NuovoContatto,
}

impl AppliedEffectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppliedEffectKind::RevocaDelega => "revoca_delega",
            AppliedEffectKind::ArchiviazioneContatto => "archiviazione_contatto",
            AppliedEffectKind::DisabilitazioneContatto => "disabilitazione_contatto",
            AppliedEffectKind::NuovoContatto => "nuovo_contatto",
        }
    }
}

/// One master-data change of a closing, as the archives' feed records it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedEffect {
    pub request_id: i64,
    pub kind: AppliedEffectKind,
    /// The delega's or the contact's id.
    pub entity: String,
    /// What changed: the date of a revocation or archiving, or the whole new contact.
    pub detail: serde_json::Value,
}

impl ClosePlan {
    /// Every change to deleghe and contacts the plan writes, one entry per row changed, in plan order.
    pub fn applied_effects(&self) -> Vec<AppliedEffect> {
        let revocations = self.revocations.iter().map(|r| AppliedEffect {
            request_id: r.request_id,
            kind: AppliedEffectKind::RevocaDelega,
            entity: r.delega_id.clone(),
            detail: json!({ "delega": r.delega_id, "data_revoca": r.data_revoca }),
        });
        let contacts = self.contacts.iter().map(|(request_id, change)| {
            let (kind, entity, detail) = match change {
                ContactChange::Archive { id, valid_to } => {
                    (AppliedEffectKind::ArchiviazioneContatto, id, json!({ "contatto": id, "valid_to": valid_to }))
                }
                ContactChange::Disable { id, valid_to } => {
                    (AppliedEffectKind::DisabilitazioneContatto, id, json!({ "contatto": id, "valid_to": valid_to }))
                }
                ContactChange::Insert(c) => (AppliedEffectKind::NuovoContatto, &c.id, json!(c)),
            };
            AppliedEffect { request_id: *request_id, kind, entity: entity.clone(), detail }
        });
        revocations.chain(contacts).collect()
    }
}

/// Decides what a batch writes. `jitter` yields numbers in [0, 1) for retry backoff.
pub fn plan(
    batch: &[(ClaimedRequest, Evaluation)],
    world: &World,
    policy: RetryPolicy,
    now: Millis,
    actor: &str,
    mut jitter: impl FnMut() -> f64,
) -> ClosePlan {
    let mut p = ClosePlan::default();
    let version =
        |p: &ClosePlan, s: &Subject| p.versions.get(s).or_else(|| world.versions.get(s)).copied().unwrap_or(0);
    for (req, eval) in batch {
        if world.tokens.get(&req.id).copied().flatten() != Some(req.token) {
            p.fates.push((req.id, Fate::Stale));
            continue;
        }
        let decision = match eval {
            Evaluation::Failed(f) => {
                let fate = fail(&mut p, req, f, policy, now, actor, jitter());
                p.fates.push((req.id, fate));
                continue;
            }
            Evaluation::Decided(d) => d,
        };
        if decision.read_versions().any(|(s, v)| version(&p, s) != v) {
            p.released.push(req.id);
            p.fates.push((req.id, Fate::Conflict));
            continue;
        }
        let mut counterparts = Vec::new();
        if decision.outcome == Outcome::Accolta {
            match effect_changes(decision, world, &p, req.id, now) {
                Ok(changes) => {
                    for s in changes.subjects {
                        let next = version(&p, &s) + 1;
                        p.versions.insert(s, next);
                    }
                    p.revocations.extend(changes.revocations.into_iter().map(|(delega_id, data_revoca)| Revocation {
                        delega_id,
                        data_revoca,
                        request_id: req.id,
                    }));
                    p.contacts.extend(changes.contacts.into_iter().map(|c| (req.id, c)));
                    counterparts = changes.notifications;
                }
                Err(message) => {
                    let failure = RuleFailure { kind: super::decision::FailureKind::Error, message };
                    let fate = fail(&mut p, req, &failure, policy, now, actor, jitter());
                    p.fates.push((req.id, fate));
                    continue;
                }
            }
        }
        let outcome = decision.outcome;
        if outcome == Outcome::Rinvio {
            p.referred.push((req.id, req.sede.clone()));
            p.events.push(NewEvent {
                request_id: req.id,
                kind: EventKind::RinvioOperatore,
                actor: actor.to_string(),
                detail: json!({ "sede": req.sede, "motivazioni": decision.reasons }),
                notifications: Vec::new(),
            });
            p.fates.push((req.id, Fate::Referred));
        } else {
            let esito = outcome.as_str();
            p.closed.push((req.id, esito));
            let open = Subject::Open { task: req.task.clone(), soggetto: req.soggetto.clone() };
            let next = version(&p, &open) + 1;
            p.versions.insert(open, next);
            let mut notifications = requester_notifications(&req.contatti);
            for n in counterparts {
                if !notifications.iter().any(|m| m.channel == n.channel && m.recipient == n.recipient) {
                    notifications.push(n);
                }
            }
            p.events.push(NewEvent {
                request_id: req.id,
                kind: EventKind::Chiusura,
                actor: actor.to_string(),
                detail: match &decision.nota {
                    Some(nota) => json!({ "esito": esito, "motivazioni": decision.reasons, "nota": nota }),
                    None => json!({ "esito": esito, "motivazioni": decision.reasons }),
                },
                notifications,
            });
            p.fates.push((req.id, Fate::Closed(outcome)));
        }
        p.decisions.push((req.id, (**decision).clone()));
    }
    p
}

fn fail(
    p: &mut ClosePlan,
    req: &ClaimedRequest,
    f: &RuleFailure,
    policy: RetryPolicy,
    now: Millis,
    actor: &str,
    jitter: f64,
) -> Fate {
    let failures = req.failures + 1;
    let error = format!("{}: {}", f.kind.as_str(), f.message);
    if failures >= policy.max_failures {
        p.parked.push((req.id, error.clone()));
        p.events.push(NewEvent {
            request_id: req.id,
            kind: EventKind::SospesaErroreRegola,
            actor: actor.to_string(),
            detail: json!({ "tentativi": failures, "errore": error }),
            notifications: Vec::new(),
        });
        Fate::Parked
    } else {
        let at = now + policy.delay_ms(failures, jitter);
        p.retried.push((req.id, at, error.clone()));
        p.events.push(NewEvent {
            request_id: req.id,
            kind: EventKind::ErroreRegola,
            actor: actor.to_string(),
            detail: json!({ "tentativo": failures, "errore": error, "nuovo_tentativo_ms": at }),
            notifications: Vec::new(),
        });
        Fate::Retried
    }
}

#[derive(Default)]
struct EffectChanges {
    subjects: Vec<Subject>,
    revocations: Vec<(String, String)>,
    contacts: Vec<ContactChange>,
    notifications: Vec<Notification>,
}

/// Whether the decision read `subject` (so its version check covers what an effect changes).
fn read(d: &Decision, subject: &Subject) -> bool {
    d.read_versions().any(|(s, _)| s == subject)
}

/// A contact value in its stored form, or None when it is not valid for its type.
pub fn normalise_contact(kind: TipoContatto, value: &str) -> Option<String> {
    match kind {
        TipoContatto::Email | TipoContatto::Pec => validators::email(value),
        TipoContatto::Cellulare => validators::mobile_e164(value),
        TipoContatto::Telefono => {
            let digits: String = value.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '/')).collect();
            let national = digits.strip_prefix("+39").unwrap_or(&digits);
            (national.len() >= 6 && national.len() <= 11 && national.chars().all(|c| c.is_ascii_digit()))
                .then(|| national.to_string())
        }
    }
}

/// A contact is current when it is not disabled and has not been archived.
fn current(c: &Contatto) -> bool {
    c.stato != StatoContatto::Disabilitato && c.valid_to.is_none()
}

/// Builds the rows an accepted decision's effects change, checked against the world and the changes of
/// earlier decisions in the batch. A target that is missing, or not in the state the effect needs, is a rule
/// error: the decision's version check already passed, so the rule saw that state itself.
struct EffectBuilder<'a> {
    d: &'a Decision,
    world: &'a World,
    earlier: &'a ClosePlan,
    request_id: i64,
    today: String,
    out: EffectChanges,
    inserted: usize,
}

impl EffectBuilder<'_> {
    /// True when an earlier effect of this batch (or of this decision) already archived or disabled `id`.
    fn touched(&self, id: &str) -> bool {
        self.earlier.contacts.iter().map(|(_, c)| c).chain(&self.out.contacts).any(|c| match c {
            ContactChange::Archive { id: x, .. } | ContactChange::Disable { id: x, .. } => x == id,
            ContactChange::Insert(_) => false,
        })
    }

    fn contact_subjects(&mut self, titolare: &str, matricola: Option<&String>) {
        self.out.subjects.extend(contatto_subjects(titolare, matricola));
    }

    fn insert(
        &mut self,
        titolare: &str,
        matricola: Option<String>,
        tipo: TipoContatto,
        valore: String,
        uso: Vec<String>,
    ) {
        self.inserted += 1;
        self.contact_subjects(titolare, matricola.as_ref());
        self.out.contacts.push(ContactChange::Insert(Contatto {
            id: format!("R{}-{}", self.request_id, self.inserted),
            titolare_cf: titolare.to_string(),
            matricola,
            tipo,
            valore,
            uso,
            stato: StatoContatto::Valido,
            anomalia: None,
            valid_from: Some(self.today.clone()),
            valid_to: None,
        }));
    }

    fn revoke(&mut self, delegation_id: &str, from: &str) -> Result<(), String> {
        if !is_iso_date(from) {
            return Err(format!("effect revoke_delegation: `from` must be a date YYYY-MM-DD, got `{from}`"));
        }
        let target = self
            .world
            .deleghe
            .get(delegation_id)
            .ok_or_else(|| format!("effect revoke_delegation: no delega with id `{delegation_id}`"))?;
        if !read(self.d, &Subject::DelegheAzienda(target.matricola.clone())) {
            return Err(format!(
                "effect revoke_delegation: the rule must read the deleghe of the position (ctx.delegation or ctx.delegations) before revoking `{delegation_id}`"
            ));
        }
        let revoked_earlier = |id: &str| {
            self.earlier.revocations.iter().any(|r| r.delega_id == id) || self.out.revocations.iter().any(|r| r.0 == id)
        };
        if target.stato != StatoDelega::Attiva || revoked_earlier(&target.id) {
            return Err(format!("effect revoke_delegation: delega `{delegation_id}` is not ATTIVA"));
        }
        let children: Vec<&Delega> = self
            .world
            .deleghe
            .values()
            .filter(|c| {
                c.padre.as_deref() == Some(target.id.as_str())
                    && c.stato == StatoDelega::Attiva
                    && !revoked_earlier(&c.id)
            })
            .collect();
        for d in std::iter::once(target).chain(children) {
            self.out.subjects.extend(delega_subjects(d));
            self.out.revocations.push((d.id.clone(), from.to_string()));
        }
        Ok(())
    }

    fn replace(&mut self, titolare_cf: &str, ambito: &Ambito, contatti: &[NewContact]) -> Result<(), String> {
        if !read(self.d, &Subject::ContattiTitolare(titolare_cf.to_string())) {
            return Err(format!(
                "effect replace_contacts: the rule must read ctx.contacts(\"{titolare_cf}\") before changing them"
            ));
        }
        let scopes: Vec<Option<String>> = match ambito {
            Ambito::Tutte(_) => vec![None],
            Ambito::Matricole(m) if !m.is_empty() => m.iter().cloned().map(Some).collect(),
            Ambito::Matricole(_) => return Err("effect replace_contacts: `ambito` is an empty list".into()),
        };
        for NewContact { tipo, valore } in contatti {
            let valore = normalise_contact(*tipo, valore)
                .ok_or_else(|| format!("effect replace_contacts: `{valore}` is not a valid {tipo:?}"))?;
            for scope in &scopes {
                let replaced: Vec<Contatto> = self
                    .world
                    .contatti
                    .values()
                    .filter(|c| c.titolare_cf == titolare_cf && c.tipo == *tipo && current(c))
                    .filter(|c| scope.is_none() || c.matricola == *scope)
                    .filter(|c| !self.touched(&c.id))
                    .cloned()
                    .collect();
                if replaced.iter().any(|c| c.valore == valore && c.matricola == *scope) {
                    continue; // already the current value in this scope
                }
                let mut uso: Vec<String> = replaced.iter().flat_map(|c| c.uso.iter().cloned()).collect();
                uso.sort();
                uso.dedup();
                if uso.is_empty() {
                    uso = vec!["GENERALE".into(), "NDR".into()];
                }
                for c in &replaced {
                    self.contact_subjects(&c.titolare_cf, c.matricola.as_ref());
                    self.out.contacts.push(ContactChange::Archive { id: c.id.clone(), valid_to: self.today.clone() });
                }
                self.insert(titolare_cf, scope.clone(), *tipo, valore.clone(), uso);
            }
        }
        Ok(())
    }

    fn disable(&mut self, contact_ids: &[String], motivo: &str) -> Result<(), String> {
        if contact_ids.is_empty() || motivo.trim().is_empty() {
            return Err("effect disable_contacts: needs `contact_ids` (not empty) and `motivo`".into());
        }
        for id in contact_ids {
            let c = self
                .world
                .contatti
                .get(id)
                .ok_or_else(|| format!("effect disable_contacts: no contact with id `{id}`"))?;
            let by_position = c.matricola.as_ref().is_some_and(|m| read(self.d, &Subject::ContattiAzienda(m.clone())));
            if !by_position && !read(self.d, &Subject::ContattiTitolare(c.titolare_cf.clone())) {
                return Err(format!(
                    "effect disable_contacts: the rule must read the contacts of `{id}` before disabling it"
                ));
            }
            if !current(c) || self.touched(id) {
                return Err(format!("effect disable_contacts: contact `{id}` is already disabled"));
            }
            if self.world.pec_registro_imprese.iter().any(|pec| pec.eq_ignore_ascii_case(&c.valore)) {
                return Err(format!(
                    "effect disable_contacts: `{id}` is the PEC of the Registro Imprese, which only the CCIAA changes"
                ));
            }
            let (titolare, matricola) = (c.titolare_cf.clone(), c.matricola.clone());
            self.contact_subjects(&titolare, matricola.as_ref());
            self.out.contacts.push(ContactChange::Disable { id: id.clone(), valid_to: self.today.clone() });
        }
        Ok(())
    }

    fn apply(&mut self, effect: &Effect) -> Result<(), String> {
        match effect {
            Effect::RevokeDelegation { delegation_id, from } => self.revoke(delegation_id, from),
            Effect::ReplaceContacts { titolare_cf, ambito, contatti } => self.replace(titolare_cf, ambito, contatti),
            Effect::DisableContacts { contact_ids, motivo } => self.disable(contact_ids, motivo),
            Effect::AddContact { titolare_cf, matricola, kind, valore, uso } => {
                let by_position =
                    matricola.as_ref().is_some_and(|m| read(self.d, &Subject::ContattiAzienda(m.clone())));
                if !by_position && !read(self.d, &Subject::ContattiTitolare(titolare_cf.clone())) {
                    return Err(
                        "effect add_contact: the rule must read the holder's or the position's contacts first".into()
                    );
                }
                let valore = normalise_contact(*kind, valore)
                    .ok_or_else(|| format!("effect add_contact: `{valore}` is not a valid {kind:?}"))?;
                self.insert(titolare_cf, matricola.clone(), *kind, valore, uso.clone());
                Ok(())
            }
            Effect::Notify { channel, recipient, role } => {
                let normalised = match channel {
                    Channel::Email => validators::email(recipient),
                    Channel::Sms => validators::mobile_e164(recipient),
                }
                .ok_or_else(|| format!("effect notify: `{recipient}` is not a valid {} recipient", channel.as_str()))?;
                self.out.notifications.push(Notification {
                    channel: channel.as_str(),
                    recipient: normalised,
                    role: role.clone(),
                });
                Ok(())
            }
        }
    }
}

fn effect_changes(
    d: &Decision,
    world: &World,
    earlier: &ClosePlan,
    request_id: i64,
    now: Millis,
) -> Result<EffectChanges, String> {
    let mut b = EffectBuilder {
        d,
        world,
        earlier,
        request_id,
        today: iso_date(now),
        out: EffectChanges::default(),
        inserted: 0,
    };
    for effect in &d.effects {
        b.apply(effect)?;
    }
    b.out.subjects.sort();
    b.out.subjects.dedup();
    Ok(b.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::{FactRead, FailureKind, Trace};
    use crate::domain::facts::TipoDelega;

    const POLICY: RetryPolicy = RetryPolicy { max_failures: 3, base_delay_ms: 1000, max_delay_ms: 60_000 };

    fn req(id: i64, token: i64) -> ClaimedRequest {
        ClaimedRequest {
            id,
            protocollo: format!("7000.2026.{id:07}"),
            task: "T".into(),
            soggetto: "1234567890".into(),
            sede: "7000".into(),
            payload: Default::default(),
            contatti: ContattiNotifica { email: Some("a@b.it".into()), consenso_email: true, ..Default::default() },
            token,
            failures: 0,
            creata_il: 0,
            taken_over: false,
        }
    }

    fn delega(id: &str, padre: Option<&str>) -> Delega {
        Delega {
            id: id.into(),
            matricola: "1234567890".into(),
            delegato_cf: format!("CF{id}"),
            tipo: if padre.is_some() { TipoDelega::Subdelega } else { TipoDelega::Intermediario },
            stato: StatoDelega::Attiva,
            data_inizio: "2022-01-01".into(),
            data_fine: None,
            data_revoca: None,
            padre: padre.map(str::to_string),
        }
    }

    fn accept_revoke(id: &str, seen: i64) -> Evaluation {
        Evaluation::Decided(Box::new(Decision {
            outcome: Outcome::Accolta,
            reasons: vec![],
            effects: vec![Effect::RevokeDelegation { delegation_id: id.into(), from: "2026-12-01".into() }],
            rule_version: "v".into(),
            trace: Trace {
                facts: vec![FactRead {
                    call: "delegation".into(),
                    subject: Subject::DelegheAzienda("1234567890".into()),
                    version: seen,
                    value: serde_json::Value::Null,
                }],
                ..Default::default()
            },
            duration_us: 1,
            nota: None,
        }))
    }

    fn world() -> World {
        let mut w = World::default();
        w.tokens.insert(1, Some(1));
        w.tokens.insert(2, Some(5));
        w.versions.insert(Subject::DelegheAzienda("1234567890".into()), 3);
        for d in [delega("D-1", None), delega("D-3", Some("D-1"))] {
            w.deleghe.insert(d.id.clone(), d);
        }
        w
    }

    #[test]
    fn acceptance_cascades_and_second_reader_conflicts() {
        let batch = vec![(req(1, 1), accept_revoke("D-1", 3)), (req(2, 5), accept_revoke("D-1", 3))];
        let p = plan(&batch, &world(), POLICY, 0, "w", || 0.5);
        assert_eq!(p.fates, vec![(1, Fate::Closed(Outcome::Accolta)), (2, Fate::Conflict)]);
        let mut revoked: Vec<_> = p.revocations.iter().map(|r| r.delega_id.as_str()).collect();
        revoked.sort();
        assert_eq!(revoked, ["D-1", "D-3"]);
        assert_eq!(p.versions[&Subject::DelegheAzienda("1234567890".into())], 4);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].notifications.len(), 1);
    }

    #[test]
    fn stale_token_writes_nothing() {
        let batch = vec![(req(2, 4), accept_revoke("D-1", 3))];
        let p = plan(&batch, &world(), POLICY, 0, "w", || 0.5);
        assert_eq!(p.fates, vec![(2, Fate::Stale)]);
        assert!(p.decisions.is_empty() && p.revocations.is_empty() && p.events.is_empty());
    }

    #[test]
    fn failures_retry_then_park() {
        let failure = Evaluation::Failed(RuleFailure { kind: FailureKind::Budget, message: "ops".into() });
        let p = plan(&[(req(1, 1), failure.clone())], &world(), POLICY, 1000, "w", || 0.0);
        assert_eq!(p.retried, vec![(1, 1500, "budget: ops".into())]);
        let mut last = req(1, 1);
        last.failures = 2;
        let p = plan(&[(last, failure)], &world(), POLICY, 1000, "w", || 0.0);
        assert_eq!(p.fates, vec![(1, Fate::Parked)]);
    }

    #[test]
    fn revoking_what_the_rule_did_not_read_is_a_rule_error() {
        let Evaluation::Decided(mut d) = accept_revoke("D-1", 3) else { unreachable!() };
        d.trace.facts.clear();
        let p = plan(&[(req(1, 1), Evaluation::Decided(d))], &world(), POLICY, 0, "w", || 0.0);
        assert_eq!(p.fates, vec![(1, Fate::Retried)]);
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(POLICY.delay_ms(1, 0.0), 500);
        assert_eq!(POLICY.delay_ms(40, 1.0), 60_000);
    }
}
