//! The kinds of event a request's history records (the `events.kind` column, the `outbox.event` of its
//! notifications, the name of the templates that render them): a closed set, written here once.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Submitted: protocol number given.
    Protocollazione,
    /// First claimed by a worker: `in_carico`.
    Smistamento,
    /// Claimed again after a lease expired.
    RipresaLavorazione,
    /// The rule referred it to an operator of the competent sede.
    RinvioOperatore,
    /// Closed with an esito (by the rule or an operator).
    Chiusura,
    /// Parked after too many rule failures.
    SospesaErroreRegola,
    /// A rule failure that will be retried.
    ErroreRegola,
    /// An operator's comment, sent to the requester.
    CommentoOperatore,
    /// The requester's message to the sede (the channel is bidirectional), sent to the sede.
    MessaggioRichiedente,
    /// Withdrawn by the requester.
    Annullamento,
    /// Handed back to the workers by an operator.
    RimessaInCoda,
    /// Taken in hand by an operator of its sede (presa in carico): the others see who works it.
    PresaInCarico,
    /// Let go by the operator who held it.
    Rilascio,
    /// Referred for 20 days: the sede is warned.
    SlaAvviso,
    /// Referred for 30 days: the sede is told the deadline passed.
    SlaSuperato,
    /// The esito PDF of the closed request was rendered: its SHA-256 (the document can be regenerated at any
    /// time; the history says which bytes it was).
    EsitoDocumento,
}

impl EventKind {
    /// The events that notify someone: each needs a template per configured channel.
    pub const NOTIFIED: [EventKind; 8] = [
        EventKind::Protocollazione,
        EventKind::Smistamento,
        EventKind::Chiusura,
        EventKind::CommentoOperatore,
        EventKind::MessaggioRichiedente,
        EventKind::Annullamento,
        EventKind::SlaAvviso,
        EventKind::SlaSuperato,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Protocollazione => "protocollazione",
            EventKind::Smistamento => "smistamento",
            EventKind::RipresaLavorazione => "ripresa_lavorazione",
            EventKind::RinvioOperatore => "rinvio_operatore",
            EventKind::Chiusura => "chiusura",
            EventKind::SospesaErroreRegola => "sospesa_errore_regola",
            EventKind::ErroreRegola => "errore_regola",
            EventKind::CommentoOperatore => "commento_operatore",
            EventKind::MessaggioRichiedente => "messaggio_richiedente",
            EventKind::Annullamento => "annullamento",
            EventKind::RimessaInCoda => "rimessa_in_coda",
            EventKind::PresaInCarico => "presa_in_carico",
            EventKind::Rilascio => "rilascio",
            EventKind::SlaAvviso => "sla_avviso",
            EventKind::SlaSuperato => "sla_superato",
            EventKind::EsitoDocumento => "esito_documento",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_name_is_the_serialised_one() {
        for kind in EventKind::NOTIFIED.into_iter().chain([
            EventKind::RipresaLavorazione,
            EventKind::RimessaInCoda,
            EventKind::PresaInCarico,
            EventKind::Rilascio,
            EventKind::EsitoDocumento,
        ]) {
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::Value::from(kind.as_str())));
        }
    }
}
