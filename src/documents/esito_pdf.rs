//! The esito of a closed request as a PDF/A-2b document in Italian (domain.md §7, issue 13): protocol number,
//! task, requester, position, dates in the configured civil time zone, esito, each reason with its code and
//! message, the effects in words, the sede and the rule version.
//!
//! Deterministic: the document has no timestamp of its own (its creation date is the request's closing
//! instant), its id is the SHA-256 of the input, fonts are the ones shipped in `assets/fonts/` (subset by
//! krilla), so the same [`EsitoView`] gives the same bytes with the same build. Rendered with krilla, which
//! checks the PDF/A-2b rules while writing and fails the export rather than write a non-conforming file.

use krilla::Document;
use krilla::color::rgb;
use krilla::configure::{Archival, ConfigurationBuilder, Validator};
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::metadata::{DateTime as PdfDateTime, Metadata};
use krilla::page::PageSettings;
use krilla::paint::Fill;
use krilla::text::{Font, TextDirection};
use krilla::{Data, SerializeSettings};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::decision::{Ambito, Channel, Effect, Reason};
use crate::domain::facts::TipoContatto;
use crate::domain::time::{self, Millis};

static REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// How a closed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Esito {
    Accolta,
    NonAccolta,
    /// Withdrawn by its requester before a decision.
    Annullata,
}

impl Esito {
    /// The stored esito (`accolta`, `non_accolta`, `annullata`); None for anything else.
    pub fn from_stored(esito: &str) -> Option<Esito> {
        match esito {
            "accolta" => Some(Esito::Accolta),
            "non_accolta" => Some(Esito::NonAccolta),
            "annullata" => Some(Esito::Annullata),
            _ => None,
        }
    }

    /// The esito as the document writes it.
    pub fn italian(self) -> &'static str {
        match self {
            Esito::Accolta => "Accolta",
            Esito::NonAccolta => "Non Accolta",
            Esito::Annullata => "Annullata (ritirata dal richiedente)",
        }
    }
}

/// An effect of the decision as stored: one the daemon knows, or (a record written by another version) only
/// its kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum EffectEntry {
    Known(Effect),
    Unrecognised { tipo: String },
}

/// What the esito document shows: everything comes from the stored request and its decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EsitoView {
    pub protocollo: String,
    pub task: String,
    /// The requester's codice fiscale.
    pub richiedente_cf: String,
    /// The position (matricola), when the request names one.
    pub matricola: Option<String>,
    /// When it was submitted and when it was closed.
    pub apertura: Millis,
    pub chiusura: Millis,
    pub esito: Esito,
    pub motivazioni: Vec<Reason>,
    pub effetti: Vec<EffectEntry>,
    pub sede: String,
    /// The rule version that decided it (None for a withdrawn request).
    pub versione_regola: Option<String>,
}

impl EsitoView {
    /// The document's id: SHA-256 of the view's canonical JSON, in hex.
    pub fn document_id(&self) -> Result<String, PdfError> {
        let json = serde_json::to_vec(self).map_err(|e| PdfError::Encode(e.to_string()))?;
        Ok(Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Why a document could not be rendered: a failure of the renderer, never of the caller's input.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the font `{0}` shipped with the program cannot be read")]
    Font(&'static str),
    #[error("cannot lay out the page: {0}")]
    Layout(&'static str),
    #[error("cannot encode the document's input: {0}")]
    Encode(String),
    #[error("the PDF/A export failed: {0}")]
    Export(String),
}

// A4 in points, margins, type sizes.
const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 56.0;
const TOP: f32 = 64.0;
const BOTTOM: f32 = PAGE_H - 64.0;
const BODY: f32 = 10.0;
const LEADING: f32 = 14.0;
const LABEL_W: f32 = 150.0;
const TEXT_W: f32 = PAGE_W - 2.0 * MARGIN;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Weight {
    Regular,
    Bold,
}

/// One run of text on a line.
struct Run {
    x: f32,
    weight: Weight,
    size: f32,
    text: String,
}

/// One line of the flow: its height and what it draws; `keep` lines of the following must fit on the same page
/// (a heading is never the last line of a page).
enum Line {
    Text { height: f32, runs: Vec<Run>, keep: usize },
    Rule { height: f32 },
    Space(f32),
}

impl Line {
    fn height(&self) -> f32 {
        match self {
            Line::Text { height, .. } | Line::Rule { height } => *height,
            Line::Space(h) => *h,
        }
    }
}

/// The shipped fonts, for krilla and for measuring.
struct Fonts {
    regular: Font,
    bold: Font,
    regular_face: ttf_parser::Face<'static>,
    bold_face: ttf_parser::Face<'static>,
}

impl Fonts {
    fn load() -> Result<Fonts, PdfError> {
        Ok(Fonts {
            regular: Font::new(Data::from(REGULAR), 0).ok_or(PdfError::Font("DejaVuSans.ttf"))?,
            bold: Font::new(Data::from(BOLD), 0).ok_or(PdfError::Font("DejaVuSans-Bold.ttf"))?,
            regular_face: ttf_parser::Face::parse(REGULAR, 0).map_err(|_| PdfError::Font("DejaVuSans.ttf"))?,
            bold_face: ttf_parser::Face::parse(BOLD, 0).map_err(|_| PdfError::Font("DejaVuSans-Bold.ttf"))?,
        })
    }

    fn face(&self, weight: Weight) -> &ttf_parser::Face<'static> {
        match weight {
            Weight::Regular => &self.regular_face,
            Weight::Bold => &self.bold_face,
        }
    }

    fn font(&self, weight: Weight) -> Font {
        match weight {
            Weight::Regular => self.regular.clone(),
            Weight::Bold => self.bold.clone(),
        }
    }

    /// The text with what the font cannot draw replaced: control characters become spaces, characters without
    /// a glyph (or in a private use area: PDF/A refuses both) become `?`.
    fn drawable(&self, text: &str) -> String {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    ' '
                } else if is_private_use(c)
                    || self.regular_face.glyph_index(c).is_none()
                    || self.bold_face.glyph_index(c).is_none()
                {
                    '?'
                } else {
                    c
                }
            })
            .collect()
    }

    /// The advance width of `text` at `size` points (no kerning: an upper bound for DejaVu's pairs).
    fn width(&self, weight: Weight, size: f32, text: &str) -> f32 {
        let face = self.face(weight);
        let units = f32::from(face.units_per_em());
        let advance: f32 = text
            .chars()
            .map(|c| face.glyph_index(c).and_then(|g| face.glyph_hor_advance(g)).map_or(0.0, f32::from))
            .sum();
        advance * size / units
    }

    /// Greedy word wrap within `max` points; a word longer than a line is cut between characters.
    fn wrap(&self, weight: Weight, size: f32, text: &str, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut current = String::new();
        for word in text.split_whitespace() {
            let candidate = if current.is_empty() { word.to_string() } else { format!("{current} {word}") };
            if self.width(weight, size, &candidate) <= max {
                current = candidate;
                continue;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            if self.width(weight, size, word) <= max {
                current = word.to_string();
                continue;
            }
            for c in word.chars() {
                let mut next = current.clone();
                next.push(c);
                if !current.is_empty() && self.width(weight, size, &next) > max {
                    lines.push(std::mem::replace(&mut current, c.to_string()));
                } else {
                    current = next;
                }
            }
        }
        if !current.is_empty() || lines.is_empty() {
            lines.push(current);
        }
        lines
    }
}

fn is_private_use(c: char) -> bool {
    matches!(u32::from(c), 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
}

/// Builds the flow of lines, page-independent.
struct Flow<'a> {
    fonts: &'a Fonts,
    lines: Vec<Line>,
}

impl Flow<'_> {
    fn paragraph(&mut self, x: f32, weight: Weight, size: f32, text: &str) {
        let text = self.fonts.drawable(text);
        for line in self.fonts.wrap(weight, size, &text, TEXT_W - x) {
            self.lines.push(Line::Text {
                height: size * 1.4,
                runs: vec![Run { x, weight, size, text: line }],
                keep: 0,
            });
        }
    }

    fn heading(&mut self, text: &str) {
        self.lines.push(Line::Space(LEADING * 0.6));
        let text = self.fonts.drawable(text);
        self.lines.push(Line::Text {
            height: 12.0 * 1.5,
            runs: vec![Run { x: 0.0, weight: Weight::Bold, size: 12.0, text }],
            keep: 2,
        });
    }

    /// A label and its value, the value wrapped in the column right of the label.
    fn field(&mut self, label: &str, value: &str, weight: Weight) {
        let value = self.fonts.drawable(value);
        let label = self.fonts.drawable(label);
        let value_lines = self.fonts.wrap(weight, BODY, &value, TEXT_W - LABEL_W);
        let count = value_lines.len();
        for (i, line) in value_lines.into_iter().enumerate() {
            let mut runs = Vec::with_capacity(2);
            if i == 0 {
                runs.push(Run { x: 0.0, weight: Weight::Bold, size: BODY, text: label.clone() });
            }
            runs.push(Run { x: LABEL_W, weight, size: BODY, text: line });
            // A field's lines stay together when they can.
            let keep = if i == 0 { (count - 1).min(3) } else { 0 };
            self.lines.push(Line::Text { height: LEADING, runs, keep });
        }
    }
}

/// The date of an instant for the text: `03/12/2026 alle 08:09 (CET)` in the configured zone.
fn italian_instant(ms: Millis) -> String {
    time::italian(ms)
}

/// `2026-12-01` → `01/12/2026`; anything else as it is.
fn italian_date(iso: &str) -> String {
    if time::is_iso_date(iso) { format!("{}/{}/{}", &iso[8..10], &iso[5..7], &iso[0..4]) } else { iso.to_string() }
}

fn contatto(tipo: TipoContatto) -> &'static str {
    match tipo {
        TipoContatto::Email => "e-mail",
        TipoContatto::Pec => "PEC",
        TipoContatto::Cellulare => "cellulare",
        TipoContatto::Telefono => "telefono",
    }
}

fn ambito(a: &Ambito) -> String {
    match a {
        Ambito::Tutte(_) => "su tutte le posizioni".into(),
        Ambito::Matricole(m) if m.len() == 1 => format!("sulla posizione {}", m[0]),
        Ambito::Matricole(m) => format!("sulle posizioni {}", m.join(", ")),
    }
}

/// An effect in words.
fn effect_in_words(e: &EffectEntry) -> String {
    let effect = match e {
        EffectEntry::Known(effect) => effect,
        EffectEntry::Unrecognised { tipo } => return format!("Effetto di tipo «{tipo}»."),
    };
    match effect {
        Effect::RevokeDelegation { delegation_id, from } => format!(
            "Revoca della delega {delegation_id} con decorrenza dal {}, insieme alle sub-deleghe che ne dipendono.",
            italian_date(from)
        ),
        Effect::ReplaceContacts { titolare_cf, ambito: a, contatti } => {
            let nuovi: Vec<String> = contatti.iter().map(|c| format!("{} {}", contatto(c.tipo), c.valore)).collect();
            format!(
                "Sostituzione dei recapiti di {titolare_cf} {}: i recapiti dello stesso tipo sono archiviati e dalla \
                 data della decisione {} {}.",
                ambito(a),
                if nuovi.len() == 1 { "vale il nuovo recapito" } else { "valgono i nuovi recapiti" },
                nuovi.join(", ")
            )
        }
        Effect::DisableContacts { contact_ids, motivo } => format!(
            "Disabilitazione per le notifiche {} {} (motivo: {motivo}); i dati restano conservati.",
            if contact_ids.len() == 1 { "del recapito" } else { "dei recapiti" },
            contact_ids.join(", ")
        ),
        Effect::AddContact { titolare_cf, matricola, kind, valore, uso } => format!(
            "Nuovo recapito {} {valore} di {titolare_cf}{}{}.",
            contatto(*kind),
            matricola.as_ref().map(|m| format!(" per la posizione {m}")).unwrap_or_default(),
            if uso.is_empty() { String::new() } else { format!(", per l'uso {}", uso.join(", ")) }
        ),
        Effect::Notify { channel, role, .. } => format!(
            "Comunicazione della chiusura {} al soggetto con ruolo «{role}».",
            match channel {
                Channel::Email => "per e-mail",
                Channel::Sms => "per SMS",
            }
        ),
    }
}

/// The document's lines.
fn flow(view: &EsitoView, fonts: &Fonts) -> Vec<Line> {
    let mut f = Flow { fonts, lines: Vec::new() };
    f.paragraph(0.0, Weight::Bold, 9.0, "INPS · Smart-Task");
    f.lines.push(Line::Rule { height: 10.0 });
    f.lines.push(Line::Text {
        height: 28.0,
        runs: vec![Run { x: 0.0, weight: Weight::Bold, size: 18.0, text: "Esito della richiesta".into() }],
        keep: 0,
    });
    f.lines.push(Line::Space(LEADING * 0.5));
    f.field("Numero di protocollo", &view.protocollo, Weight::Regular);
    f.field("Servizio", &view.task, Weight::Regular);
    f.field("Richiedente", &format!("codice fiscale {}", view.richiedente_cf), Weight::Regular);
    f.field("Posizione", &view.matricola.as_ref().map_or("—".into(), |m| format!("matricola {m}")), Weight::Regular);
    f.field("Data di apertura", &italian_instant(view.apertura), Weight::Regular);
    f.field("Data di chiusura", &italian_instant(view.chiusura), Weight::Regular);
    f.field("Sede competente", &view.sede, Weight::Regular);
    f.field("Versione della regola", view.versione_regola.as_deref().unwrap_or("—"), Weight::Regular);
    f.lines.push(Line::Space(LEADING * 0.5));
    f.field("Esito", view.esito.italian(), Weight::Bold);

    f.heading("Motivazioni");
    if view.motivazioni.is_empty() {
        f.paragraph(0.0, Weight::Regular, BODY, "Nessuna motivazione.");
    }
    for (i, r) in view.motivazioni.iter().enumerate() {
        if i > 0 {
            f.lines.push(Line::Space(LEADING * 0.4));
        }
        f.paragraph(0.0, Weight::Bold, BODY, &format!("{}. {}", i + 1, r.codice));
        f.paragraph(16.0, Weight::Regular, BODY, &r.messaggio);
    }

    f.heading("Effetti applicati");
    if view.effetti.is_empty() || view.esito != Esito::Accolta {
        let none = match view.esito {
            Esito::Accolta => "Nessun effetto sui dati: la richiesta è stata accolta senza modifiche.",
            Esito::NonAccolta => "Nessun effetto: la richiesta non è stata accolta e i dati restano invariati.",
            Esito::Annullata => "Nessun effetto: la richiesta è stata ritirata e i dati restano invariati.",
        };
        f.paragraph(0.0, Weight::Regular, BODY, none);
    } else {
        for e in &view.effetti {
            let words = fonts.drawable(&effect_in_words(e));
            for (i, line) in fonts.wrap(Weight::Regular, BODY, &words, TEXT_W - 16.0).into_iter().enumerate() {
                let mut runs = Vec::with_capacity(2);
                if i == 0 {
                    runs.push(Run { x: 4.0, weight: Weight::Regular, size: BODY, text: "•".into() });
                }
                runs.push(Run { x: 16.0, weight: Weight::Regular, size: BODY, text: line });
                f.lines.push(Line::Text { height: LEADING, runs, keep: 0 });
            }
        }
    }
    f.lines
}

/// Splits the flow into pages: a line that does not fit, or a heading whose next lines would not, starts a
/// new page.
fn paginate(lines: Vec<Line>) -> Vec<Vec<(f32, Line)>> {
    let heights: Vec<f32> = lines.iter().map(Line::height).collect();
    let mut pages = vec![Vec::new()];
    let mut y = TOP;
    for (i, line) in lines.into_iter().enumerate() {
        let keep = match &line {
            Line::Text { keep, .. } => *keep,
            _ => 0,
        };
        let needed: f32 = heights[i..heights.len().min(i + 1 + keep)].iter().sum();
        let current_empty = pages.last().is_none_or(Vec::is_empty);
        if y + needed > BOTTOM && !current_empty {
            pages.push(Vec::new());
            y = TOP;
            // Vertical space does not open a page.
            if matches!(line, Line::Space(_)) {
                continue;
            }
        }
        let h = line.height();
        if let Some(page) = pages.last_mut() {
            page.push((y, line));
        }
        y += h;
    }
    pages
}

/// The closing instant as the document's creation date (no clock: the document's date is the esito's).
fn creation_date(ms: Millis) -> PdfDateTime {
    use chrono::{Datelike, Offset, Timelike};
    let dt = time::to_datetime(ms);
    let offset = dt.offset().fix().local_minus_utc();
    let hours = i8::try_from(offset / 3600).unwrap_or(0);
    let minutes = u8::try_from((offset.abs() % 3600) / 60).unwrap_or(0);
    PdfDateTime::new(u16::try_from(dt.year()).unwrap_or(1970))
        .month(u8::try_from(dt.month()).unwrap_or(1))
        .day(u8::try_from(dt.day()).unwrap_or(1))
        .hour(u8::try_from(dt.hour()).unwrap_or(0))
        .minute(u8::try_from(dt.minute()).unwrap_or(0))
        .second(u8::try_from(dt.second()).unwrap_or(0))
        .utc_offset_hour(hours)
        .utc_offset_minute(minutes)
}

/// Renders the esito of a closed request as a PDF/A-2b document. The same view gives the same bytes.
pub fn esito_pdf(view: &EsitoView) -> Result<Vec<u8>, PdfError> {
    let fonts = Fonts::load()?;
    let document_id = view.document_id()?;
    let pages = paginate(flow(view, &fonts));
    let total = pages.len();

    let configuration = ConfigurationBuilder::new()
        .set_validator(Validator::A(Archival::A2_B))
        .finish()
        .map_err(|e| PdfError::Export(format!("{e:?}")))?;
    let settings = SerializeSettings { configuration, enable_tagging: false, ..SerializeSettings::default() };
    let mut document = Document::new_with(settings);
    document.set_metadata(
        Metadata::new()
            .title(format!("Esito della richiesta {}", fonts.drawable(&view.protocollo)))
            .language("it".into())
            .creator("smart-task".into())
            .document_id(document_id.clone())
            .creation_date(creation_date(view.chiusura)),
    );
    let grey = Fill { paint: rgb::Color::new(110, 110, 110).into(), ..Fill::default() };
    for (n, lines) in pages.into_iter().enumerate() {
        let settings = PageSettings::from_wh(PAGE_W, PAGE_H).ok_or(PdfError::Layout("page size"))?;
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        for (y, line) in lines {
            match line {
                Line::Text { height, runs, .. } => {
                    // The baseline sits at about three quarters of the line's height.
                    for run in runs {
                        surface.draw_text(
                            Point::from_xy(MARGIN + run.x, y + height * 0.75),
                            fonts.font(run.weight),
                            run.size,
                            &run.text,
                            false,
                            TextDirection::Auto,
                        );
                    }
                }
                Line::Rule { height } => {
                    let mut path = PathBuilder::new();
                    path.push_rect(
                        Rect::from_xywh(MARGIN, y + height / 2.0, TEXT_W, 0.6).ok_or(PdfError::Layout("rule"))?,
                    );
                    let path = path.finish().ok_or(PdfError::Layout("rule"))?;
                    surface.set_fill(Some(grey.clone()));
                    surface.draw_path(&path);
                    surface.set_fill(Some(Fill::default()));
                }
                Line::Space(_) => {}
            }
        }
        let footer = format!(
            "Documento {} · identificativo {} · Pagina {} di {}",
            fonts.drawable(&view.protocollo),
            &document_id[..16],
            n + 1,
            total
        );
        surface.set_fill(Some(grey.clone()));
        surface.draw_text(
            Point::from_xy(MARGIN, PAGE_H - 36.0),
            fonts.font(Weight::Regular),
            7.5,
            &footer,
            false,
            TextDirection::Auto,
        );
        surface.set_fill(Some(Fill::default()));
        surface.finish();
        page.finish();
    }
    document.finish().map_err(|e| PdfError::Export(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(reasons: usize) -> EsitoView {
        EsitoView {
            protocollo: "ST-2026-0000042".into(),
            task: "REVOCA_DELEGA_INTERMEDIARIO".into(),
            richiedente_cf: "RSSMRA80A01H501U".into(),
            matricola: Some("1234567890".into()),
            apertura: 1_780_000_000_000,
            chiusura: 1_780_000_360_000,
            esito: if reasons == 0 { Esito::Accolta } else { Esito::NonAccolta },
            motivazioni: (0..reasons)
                .map(|i| Reason {
                    codice: format!("RDI-{i:02}"),
                    messaggio: "La delega indicata non risulta attiva sulla posizione: verificare i dati e \
                                ripresentare la richiesta. "
                        .repeat(3),
                })
                .collect(),
            effetti: vec![EffectEntry::Known(Effect::RevokeDelegation {
                delegation_id: "D-1".into(),
                from: "2026-12-01".into(),
            })],
            sede: "1300".into(),
            versione_regola: Some("rdi@abc123".into()),
        }
    }

    #[test]
    fn same_view_same_bytes_and_pdf_a() {
        let a = esito_pdf(&view(2)).expect("renders");
        let b = esito_pdf(&view(2)).expect("renders");
        assert_eq!(a, b);
        assert!(a.starts_with(b"%PDF-1.7"));
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("pdfaid:part"), "XMP carries the PDF/A identification");
    }

    #[test]
    fn many_reasons_continue_on_a_next_page() {
        let pages = paginate(flow(&view(40), &Fonts::load().expect("fonts")));
        assert!(pages.len() > 1);
        assert!(esito_pdf(&view(40)).is_ok());
    }

    #[test]
    fn long_words_are_cut_and_missing_glyphs_replaced() {
        let fonts = Fonts::load().expect("fonts");
        let long = "x".repeat(500);
        let lines = fonts.wrap(Weight::Regular, BODY, &long, 100.0);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| fonts.width(Weight::Regular, BODY, l) <= 100.0));
        assert_eq!(fonts.drawable("a\u{E000}b\tc"), "a?b c");
    }
}
