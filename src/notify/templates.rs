//! The Italian texts of notifications: minijinja templates under `notify.templates_dir`, one per event and
//! channel — `email/<evento>.txt` (first line `Oggetto: …`, then the text), optionally `email/<evento>.html`
//! (which may extend a layout such as `email/_layout.html`), and `sms/<evento>.txt`. Loaded and checked at
//! start and by `check-config` (every event rendered with sample data), reloaded on SIGHUP.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::domain::event::EventKind;
use crate::store::DueNotification;

/// The events that queue notifications.
pub const EVENTS: [&str; EventKind::NOTIFIED.len()] = {
    let mut names = [""; EventKind::NOTIFIED.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = EventKind::NOTIFIED[i].as_str();
        i += 1;
    }
    names
};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{}: missing (every event needs one per configured channel: {})", path.display(), EVENTS.join(", "))]
    Missing { path: PathBuf },
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("template {name}: {message}")]
    Render { name: String, message: String },
}

/// The values a template sees.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// protocollazione | smistamento | chiusura | commento_operatore | annullamento
    pub evento: String,
    pub protocollo: String,
    pub task: String,
    /// The task's label (e.g. "Revoca delega intermediario").
    pub servizio: String,
    pub sede: SedeContext,
    /// accolta | non_accolta | annullata (chiusura, annullamento)
    pub esito: Option<String>,
    /// "Accolta" | "Non accolta" | "Annullata"
    pub esito_testo: Option<String>,
    pub motivazioni: Vec<Motivazione>,
    /// The operator's note of a closing.
    pub nota: Option<String>,
    /// The text of an operator's comment (commento_operatore) or of the requester's message
    /// (messaggio_richiedente).
    pub commento: Option<String>,
    /// Days since protocollazione (sla_avviso, sla_superato).
    pub giorni: Option<i64>,
    /// richiedente | controparte
    pub ruolo: String,
    /// When the event happened: "25/11/2026 alle 10:42" (server time zone).
    pub data: String,
    /// The notification's stable reference (also the e-mail's Message-ID).
    pub riferimento: String,
    /// Whether the request is a quesito to the sede (its chiusura is the sede's answer, in `nota`).
    pub quesito: bool,
    /// A quesito's area, as its label ("Regolarità contributiva (DURC)").
    pub ambito: Option<String>,
    /// The one-time link to the satisfaction questionnaire (the chiusura e-mail of an invited professional
    /// requester only): a credential, rendered into the message and never logged or stored.
    pub questionario_link: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SedeContext {
    pub codice: String,
    pub denominazione: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Motivazione {
    pub codice: String,
    pub messaggio: String,
}

fn esito_testo(esito: &str) -> String {
    match esito {
        "accolta" => "Accolta".into(),
        "non_accolta" => "Non accolta".into(),
        "annullata" => "Annullata".into(),
        other => other.to_string(),
    }
}

impl Context {
    /// The context of a claimed notification; `servizio` is the task's label when the rules know the task.
    pub fn of(n: &DueNotification, servizio: Option<&str>) -> Context {
        let d = &n.event_detail;
        let text = |key: &str| d.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let esito = text("esito");
        let motivazioni = d
            .get("motivazioni")
            .and_then(|m| m.as_array())
            .map(|list| {
                list.iter()
                    .map(|m| Motivazione {
                        codice: m.get("codice").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
                        messaggio: m.get("messaggio").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let data = crate::domain::time::italian(n.event_at);
        Context {
            evento: n.event.clone(),
            protocollo: n.protocollo.clone(),
            task: n.task.clone(),
            servizio: servizio.map_or_else(|| n.task.clone(), str::to_string),
            sede: SedeContext {
                codice: n.sede.clone(),
                denominazione: n.sede_denominazione.clone(),
                email: n.sede_email.clone(),
            },
            esito_testo: esito.as_deref().map(esito_testo),
            esito,
            motivazioni,
            nota: text("nota"),
            commento: text("testo"),
            giorni: d.get("giorni").and_then(|v| v.as_i64()),
            ruolo: n.role.clone(),
            data,
            riferimento: n.reference.clone(),
            quesito: false,
            ambito: None,
            questionario_link: None,
        }
    }

    /// The context of a quesito's notification: its area, and its close worded as the sede's answer.
    pub fn as_quesito(&mut self, ambito: Option<String>) {
        self.quesito = true;
        self.ambito = ambito;
        if self.esito.as_deref() == Some("accolta") {
            self.esito_testo = Some("Risposta della sede".into());
        }
    }

    /// Sample contexts of an event, for checking its templates: with and without reasons and notes.
    pub fn samples(evento: &str) -> Vec<Context> {
        let base = Context {
            evento: evento.to_string(),
            protocollo: "INPS.7000.2026.0000001".into(),
            task: "REVOCA_DELEGA_INTERMEDIARIO".into(),
            servizio: "Revoca delega intermediario".into(),
            sede: SedeContext {
                codice: "7000".into(),
                denominazione: Some("Roma Tiburtino".into()),
                email: Some("aziende.roma@inps.it".into()),
            },
            esito: None,
            esito_testo: None,
            motivazioni: Vec::new(),
            nota: None,
            commento: None,
            giorni: None,
            ruolo: "richiedente".into(),
            data: "25/11/2026 alle 10:42".into(),
            riferimento: "<outbox-1@smart-task>".into(),
            quesito: false,
            ambito: None,
            questionario_link: None,
        };
        match evento {
            "chiusura" => vec![
                Context {
                    esito: Some("accolta".into()),
                    esito_testo: Some("Accolta".into()),
                    questionario_link: Some("https://servizi.example.it/questionario#t=0123456789abcdef".into()),
                    ..base.clone()
                },
                Context {
                    esito: Some("non_accolta".into()),
                    esito_testo: Some("Non accolta".into()),
                    motivazioni: vec![
                        Motivazione {
                            codice: "GEN-01".into(),
                            messaggio: "Il richiedente non risulta abilitato.".into(),
                        },
                        Motivazione { codice: "GEN-03".into(), messaggio: "La matricola non risulta presente.".into() },
                    ],
                    nota: Some("Nota dell'operatore.".into()),
                    ruolo: "controparte".into(),
                    sede: SedeContext { codice: "7000".into(), denominazione: None, email: None },
                    ..base.clone()
                },
                Context {
                    esito: Some("accolta".into()),
                    esito_testo: Some("Risposta della sede".into()),
                    nota: Some("Il versamento risulta abbinato dal 3 marzo.".into()),
                    quesito: true,
                    ambito: Some("Versamenti F24".into()),
                    servizio: "Quesito alla sede".into(),
                    task: "QUESITO_SEDE".into(),
                    ..base
                },
            ],
            "annullamento" => {
                vec![Context { esito: Some("annullata".into()), esito_testo: Some("Annullata".into()), ..base }]
            }
            "commento_operatore" => vec![Context { commento: Some("Serve un documento.".into()), ..base }],
            "messaggio_richiedente" => {
                vec![Context {
                    commento: Some("Allego la documentazione richiesta.".into()),
                    ruolo: "sede".into(),
                    ..base
                }]
            }
            "sla_avviso" => vec![Context { giorni: Some(20), ruolo: "sede".into(), ..base }],
            "sla_superato" => vec![Context { giorni: Some(30), ruolo: "sede".into(), ..base }],
            _ => vec![base],
        }
    }
}

/// A rendered e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailContent {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The compiled templates of the configured channels.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    dir: PathBuf,
}

impl Templates {
    /// Loads every template of the given channels from `dir` and checks each event's with sample data.
    pub fn load(dir: &Path, channels: &[&str]) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        let mut names = BTreeSet::new();
        for channel in channels {
            let folder = dir.join(channel);
            let entries =
                std::fs::read_dir(&folder).map_err(|error| TemplateError::Read { path: folder.clone(), error })?;
            for entry in entries {
                let path = entry.map_err(|error| TemplateError::Read { path: folder.clone(), error })?.path();
                let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
                if !(file.ends_with(".txt") || file.ends_with(".html")) || file.starts_with('.') {
                    continue;
                }
                let source = std::fs::read_to_string(&path)
                    .map_err(|error| TemplateError::Read { path: path.clone(), error })?;
                let name = format!("{channel}/{file}");
                env.add_template_owned(name.clone(), source)
                    .map_err(|e| TemplateError::Invalid { path: path.clone(), message: describe(&e) })?;
                names.insert(name);
            }
            for event in EVENTS {
                if !names.contains(&format!("{channel}/{event}.txt")) {
                    return Err(TemplateError::Missing { path: folder.join(format!("{event}.txt")) });
                }
            }
        }
        let templates = Templates { env, dir: dir.to_path_buf() };
        for channel in channels {
            for event in EVENTS {
                for ctx in Context::samples(event) {
                    let checked = match *channel {
                        "email" => templates.render_email(&ctx, true).map(|_| ()),
                        _ => templates.render_sms(&ctx).map(|_| ()),
                    };
                    checked.map_err(|e| TemplateError::Invalid {
                        path: dir.join(channel).join(format!("{event}.txt")),
                        message: format!("with sample data ({}): {e}", ctx.esito.as_deref().unwrap_or(event)),
                    })?;
                }
            }
        }
        Ok(templates)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn render(&self, name: &str, ctx: &Context) -> Result<String, TemplateError> {
        let render_error =
            |e: minijinja::Error| TemplateError::Render { name: name.to_string(), message: describe(&e) };
        self.env.get_template(name).map_err(render_error)?.render(ctx).map_err(render_error)
    }

    /// Subject, text and (when there is an `.html` template and `html` is wanted) HTML of an event's e-mail.
    pub fn render_email(&self, ctx: &Context, html: bool) -> Result<EmailContent, TemplateError> {
        let name = format!("email/{}.txt", ctx.evento);
        let rendered = self.render(&name, ctx)?;
        let (first, rest) = rendered.trim_start().split_once('\n').unwrap_or((rendered.trim_start(), ""));
        let subject = first.strip_prefix("Oggetto:").map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
            TemplateError::Render {
                name: name.clone(),
                message: "the first line must be `Oggetto: <the subject>`".into(),
            }
        })?;
        let html_name = format!("email/{}.html", ctx.evento);
        let html = match html && self.env.get_template(&html_name).is_ok() {
            true => Some(self.render(&html_name, ctx)?),
            false => None,
        };
        Ok(EmailContent { subject: subject.to_string(), text: format!("{}\n", rest.trim()), html })
    }

    /// The text of an event's SMS (one line; spaces collapsed).
    pub fn render_sms(&self, ctx: &Context) -> Result<String, TemplateError> {
        let rendered = self.render(&format!("sms/{}.txt", ctx.evento), ctx)?;
        Ok(rendered.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// A minijinja error with its line, without the template source.
fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("line {line}: {}", e.detail().unwrap_or(&e.kind().to_string())),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/templates")
    }

    #[test]
    fn the_shipped_templates_load_and_say_what_happened() {
        let t = Templates::load(&shipped(), &["email", "sms"]).expect("templates");
        let samples = Context::samples("chiusura");
        let rejected = &samples[1];
        let mail = t.render_email(rejected, true).expect("render");
        assert!(mail.subject.contains("INPS.7000.2026.0000001"), "{}", mail.subject);
        for needle in ["Non accolta", "Revoca delega intermediario", "GEN-01", "Il richiedente non risulta abilitato."]
        {
            assert!(mail.text.contains(needle), "{needle} not in {}", mail.text);
            assert!(mail.html.as_deref().unwrap_or_default().contains(needle), "{needle} not in the HTML");
        }
        let sms = t.render_sms(rejected).expect("sms");
        assert!(sms.contains("INPS.7000.2026.0000001") && sms.contains("non accolta"), "{sms}");
    }

    #[test]
    fn a_missing_event_template_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sms")).expect("mkdir");
        std::fs::write(dir.path().join("sms/protocollazione.txt"), "{{ protocollo }}").expect("write");
        let err = Templates::load(dir.path(), &["sms"]).expect_err("missing");
        assert!(err.to_string().contains("smistamento.txt"), "{err}");
    }

    #[test]
    fn an_unknown_variable_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sms")).expect("mkdir");
        for event in EVENTS {
            std::fs::write(dir.path().join(format!("sms/{event}.txt")), "Pratica {{ protocollo }}").expect("write");
        }
        std::fs::write(dir.path().join("sms/chiusura.txt"), "Pratica\n{{ protocolo }}").expect("write");
        let err = Templates::load(dir.path(), &["sms"]).expect_err("typo");
        assert!(err.to_string().contains("chiusura.txt") && err.to_string().contains("line 2"), "{err}");
    }
}
