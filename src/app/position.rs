//! A position and a subject as their requesters and the sede see them: the riepilogo of a position and the
//! Fascicolo Elettronico of a subject, each scoped to who may see it.

use super::{Actor, AppError, MAX_PAGE};
use crate::domain::facts::{Azienda, Contatto, Delega, StatoDelega, Subject};
use crate::domain::validators;
use crate::store::{FascicoloEntry, ListFilter, RequestSummary, Store};

/// Whether the actor may see a position: the CLI any; a requester one they may act for (a legal
/// representative of the company, or the holder of an active delega on it); an operator one of their sede.
fn may_see_position(actor: &Actor, azienda: &Azienda, deleghe: &[Delega]) -> bool {
    match actor {
        Actor::Cli | Actor::OperatoreCli { .. } => true,
        Actor::Richiedente { cf, .. } => {
            let same = |other: &str| other == cf || validators::same_person(other, cf);
            azienda.rappresentanti_legali.iter().any(|r| same(r))
                || deleghe.iter().any(|d| d.stato == StatoDelega::Attiva && same(&d.delegato_cf))
        }
        Actor::Operatore { sede, .. } => &azienda.sede == sede,
        Actor::Integratore { .. } | Actor::Operazioni { .. } => false,
    }
}

/// The riepilogo of a position: the company, its deleghe, the contacts bound to it and its open requests.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Riepilogo {
    pub azienda: Azienda,
    #[schema(min_items = 0, max_items = 100000)]
    pub deleghe: Vec<Delega>,
    #[schema(min_items = 0, max_items = 100000)]
    pub contatti: Vec<Contatto>,
    #[schema(min_items = 0, max_items = 200)]
    pub richieste_aperte: Vec<RequestSummary>,
}

/// The riepilogo of `matricola`, for an actor who may act for the position: a legal representative of the
/// company, or the holder of an active delega on it (the CLI: anyone). Anyone else — and a matricola that does
/// not exist — gets the same "not found", so the answer does not tell which positions exist.
pub async fn riepilogo(store: &Store, actor: &Actor, matricola: &str) -> Result<Riepilogo, AppError> {
    let not_found = || AppError::NotFound("no position with that matricola that you may act for".into());
    let subjects = [
        Subject::Azienda(matricola.to_string()),
        Subject::DelegheAzienda(matricola.to_string()),
        Subject::ContattiAzienda(matricola.to_string()),
    ];
    let mut facts = store.load_facts(&subjects).await?;
    let mut take = |s: &Subject| facts.remove(s).unwrap_or_default();
    let azienda = take(&subjects[0]).azienda.ok_or_else(not_found)?;
    let deleghe = take(&subjects[1]).deleghe;
    let contatti = take(&subjects[2]).contatti;
    if !may_see_position(actor, &azienda, &deleghe) {
        return Err(not_found());
    }
    // Filtered in the query: closed requests must not crowd open ones out of the page.
    let filter =
        ListFilter { matricola: Some(matricola.to_string()), open_only: true, limit: MAX_PAGE, ..Default::default() };
    let richieste_aperte = store.list(&filter).await?;
    Ok(Riepilogo { azienda, deleghe, contatti, richieste_aperte })
}

/// The Fascicolo Elettronico of a subject (a codice fiscale or a matricola): its closed requests with their
/// esiti and reasons. A requester sees their own and those of a position they may act for; an operator those
/// of a position of their sede. Anything else is "not found", as for a subject without requests the actor may
/// see — the answer never tells whether a subject exists.
pub async fn fascicolo(store: &Store, actor: &Actor, soggetto: &str) -> Result<Vec<FascicoloEntry>, AppError> {
    let key = soggetto.trim().to_uppercase();
    let not_found = || AppError::NotFound("no Fascicolo of that subject that you may see".into());
    let own = matches!(actor, Actor::Richiedente { cf, .. } if *cf == key || validators::same_person(cf, &key));
    if !matches!(actor, Actor::Cli | Actor::OperatoreCli { .. }) && !own {
        if !validators::matricola(&key) {
            return Err(not_found());
        }
        let subjects = [Subject::Azienda(key.clone()), Subject::DelegheAzienda(key.clone())];
        let mut facts = store.load_facts(&subjects).await?;
        let mut take = |s: &Subject| facts.remove(s).unwrap_or_default();
        let azienda = take(&subjects[0]).azienda.ok_or_else(not_found)?;
        if !may_see_position(actor, &azienda, &take(&subjects[1]).deleghe) {
            return Err(not_found());
        }
    }
    Ok(store.fascicolo(&key).await?)
}
