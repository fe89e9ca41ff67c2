//! The JSON bodies the API v1 answers with that are the API's own (the domain's views — `RequestView`,
//! `Riepilogo`, `Problem` — are serialised as they are): typed, so the OpenAPI document describes exactly what is
//! sent. The bounds in `#[schema(…)]` are the real ones: ids are at most 19 digits (an `i64`), hrefs are built
//! from the base path, an id and the Lista Richieste's bounded filters.

use serde::Serialize;
use utoipa::ToSchema;

use super::api::BASE;
use crate::store::RequestSummary;

/// A link (`href`: an absolute path on this server).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Link {
    #[schema(max_length = 4096)]
    pub href: String,
}

/// The links of an item: its own resource.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SelfLinks {
    #[serde(rename = "self")]
    pub own: Link,
}

impl SelfLinks {
    pub fn request(id: i64) -> SelfLinks {
        SelfLinks { own: Link { href: format!("{BASE}/richieste/{id}") } }
    }
}

/// The links of a page: the next one, absent on the last page.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct PageLinks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Link>,
}

/// A request as stored by `POST /richieste`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RichiestaPresentata {
    /// The request's opaque id (digits), for `/richieste/{id}`.
    #[schema(max_length = 19, pattern = "^[0-9]{1,19}$")]
    pub id: String,
    #[schema(max_length = 64)]
    pub protocollo: String,
    #[schema(max_length = 1000)]
    pub task: String,
    /// True when `chiave_idempotenza` matched an earlier request, which is returned instead.
    pub gia_presentata: bool,
    pub _links: SelfLinks,
}

/// The requests stored by `POST /richieste`, in the order sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RichiestePresentate {
    #[schema(min_items = 1, max_items = 10000)]
    pub items: Vec<RichiestaPresentata>,
}

/// A line of the Lista Richieste.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RigaRichiesta {
    #[schema(max_length = 19, pattern = "^[0-9]{1,19}$")]
    pub id: String,
    #[schema(max_length = 64)]
    pub protocollo: String,
    #[schema(max_length = 1000)]
    pub task: String,
    #[schema(max_length = 16)]
    pub stato: String,
    #[schema(max_length = 16)]
    pub esito: Option<String>,
    #[schema(max_length = 10, pattern = "^[0-9]{10}$")]
    pub matricola: Option<String>,
    #[schema(format = DateTime)]
    pub creata_il: String,
    #[schema(format = DateTime)]
    pub aggiornata_il: String,
    #[schema(format = DateTime)]
    pub chiusa_il: Option<String>,
    pub _links: SelfLinks,
}

impl From<RequestSummary> for RigaRichiesta {
    fn from(r: RequestSummary) -> RigaRichiesta {
        RigaRichiesta {
            id: r.id.to_string(),
            _links: SelfLinks::request(r.id),
            protocollo: r.protocollo,
            task: r.task,
            stato: r.stato,
            esito: r.esito,
            matricola: r.matricola,
            creata_il: r.creata_il,
            aggiornata_il: r.aggiornata_il,
            chiusa_il: r.chiusa_il,
        }
    }
}

/// A page of the Lista Richieste, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListaRichieste {
    #[schema(min_items = 0, max_items = 200)]
    pub items: Vec<RigaRichiesta>,
    pub _links: PageLinks,
}

/// The kind of history entry a message to the sede became.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TipoMessaggio {
    MessaggioRichiedente,
}

/// A message to the sede, as recorded in the request's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessaggioInviato {
    #[schema(max_length = 64)]
    pub protocollo: String,
    pub tipo: TipoMessaggio,
}

/// The body of a message to the sede.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Messaggio {
    /// Free text, at most `intake.limits.max_note_chars` characters (4000 by default) after trimming; no
    /// control characters but line breaks and tabs.
    #[schema(min_length = 1, max_length = 4000)]
    pub testo: String,
}
