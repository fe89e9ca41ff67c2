//! Formal validators for the identifiers and contacts of domain.md §6.
//!
//! Every function here is pure and uses only the standard library. A validator
//! says whether a value is *well formed*; it never says whether it exists
//! (a matricola must still be looked up in the archive, a PEC must still be
//! checked against INI-PEC / Registro Imprese).

use std::error::Error;
use std::fmt;

/// Months of the codice fiscale, January to December (§6.1 `MONTHS`).
const MONTHS: &[u8; 12] = b"ABCDEHLMPRST";

/// Omocodia letters: `OMO[d]` replaces the digit `d` (§6.1 `OMO`).
const OMO: &[u8; 10] = b"LMNPQRSTUV";

/// Values of the characters in odd (1-based) positions, indexed by letter
/// `A..=Z`; the digits `0..=9` take the values of `A..=J` (§6.1 `ODD`).
const ODD: [u32; 26] = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];

/// 0-based indices of the seven numeric positions of a personal codice
/// fiscale (1-based 7, 8, 10, 11, 13, 14, 15), where omocodia letters may appear.
const NUMERIC_POSITIONS: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];

/// First letters of the codice catastale accepted by Sogei (`Z` = foreign country).
const PLACE_LETTERS: &[u8] = b"ABCDEFGHILMZ";

/// Why a codice fiscale of a natural person is not formally valid (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfError {
    /// The code does not have the 16-character layout (letters, digits or
    /// omocodia letters in the right places, a valid month letter).
    Formato,
    /// The codice catastale of the place of birth is impossible: its letter is
    /// not one Sogei accepts, or its numeric part is `000`.
    Luogo,
    /// Year, month and day do not form a real date in either 19yy or 20yy.
    Data,
    /// The 16th character is not the check character of the first 15.
    Check,
}

impl fmt::Display for CfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Formato => {
                "formato non valido (attesi 16 caratteri: 6 lettere, anno, mese, giorno, luogo, carattere di controllo)"
            }
            Self::Luogo => "codice del luogo di nascita non valido",
            Self::Data => "data di nascita non valida",
            Self::Check => "carattere di controllo errato",
        })
    }
}

impl Error for CfError {}

/// Why an 11-digit partita IVA / numeric codice fiscale is not formally valid (§6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PivaError {
    /// Not exactly 11 ASCII digits, or the first seven digits are all zero.
    Formato,
    /// Digits 8–10 are not a provincial office code (001–100, 120, 121, 888, 999).
    Ufficio,
    /// The 11th digit is not the check digit of the first ten.
    Check,
}

impl fmt::Display for PivaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Formato => "formato non valido (attese 11 cifre, le prime 7 non tutte zero)",
            Self::Ufficio => "codice ufficio provinciale non valido",
            Self::Check => "cifra di controllo errata",
        })
    }
}

impl Error for PivaError {}

/// Value of a numeric-position character: a digit, or an omocodia letter
/// mapped back to its digit. `None` for any other byte.
fn omo_digit(b: u8) -> Option<u32> {
    if b.is_ascii_digit() {
        Some(u32::from(b - b'0'))
    } else {
        OMO.iter().position(|&l| l == b).and_then(|d| u32::try_from(d).ok())
    }
}

/// Integer value of a run of numeric-position characters (§6.1 `n(x)`).
fn omo_number(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &b| Some(acc * 10 + omo_digit(b)?))
}

/// True when `b` may stand at a numeric position: a digit or an omocodia letter.
fn is_numeric_position_char(b: u8) -> bool {
    omo_digit(b).is_some()
}

/// The per-character-class equivalent of
/// `^[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]$`.
fn cf_layout_ok(b: &[u8]) -> bool {
    b.len() == 16
        && b.iter().enumerate().all(|(i, &c)| match i {
            0..=5 | 11 | 15 => c.is_ascii_uppercase(),
            8 => MONTHS.contains(&c),
            _ => is_numeric_position_char(c),
        })
}

/// Check character of the first 15 characters of a codice fiscale (§6.1
/// `cf_check_char`). The input must already have passed [`cf_layout_ok`].
fn cf_check_char(c15: &[u8]) -> u8 {
    let index = |c: u8| -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A',
            _ => 0,
        }
    };
    let sum: u32 = c15
        .iter()
        .take(15)
        .enumerate()
        .map(|(i, &c)| {
            if i % 2 == 0 {
                ODD[usize::from(index(c))]
            } else {
                // EVEN(c): a digit is worth itself, a letter its alphabet index.
                // Both are what `index` returns.
                u32::from(index(c))
            }
        })
        .sum();
    // `sum % 26` is below 26, so the narrowing cannot lose anything.
    b'A' + (sum % 26) as u8
}

/// Gregorian leap year.
fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Number of days in `month` (1–12) of `year`; 0 for an impossible month.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// True when day/month exist in 19yy or in 20yy (the code does not tell the century).
fn date_ok(yy: u32, month: u32, day: u32) -> bool {
    day >= 1 && [1900 + yy, 2000 + yy].iter().any(|&year| day <= days_in_month(year, month))
}

/// Validates a 16-char personal codice fiscale (trims, uppercases). Ok = the normalised (uppercase) code as written.
///
/// Checks, in the order of §6.1: the layout (letters, digits or omocodia
/// letters per position, month letter), the place of birth (first letter of
/// the codice catastale in `ABCDEFGHILMZ`, numeric part not `000` after
/// de-omocodia), the date of birth (day − 40 for women; valid in 19yy or 20yy,
/// leap years included), and finally the check character computed over the
/// code *as written*, because omocodic variants carry their own recomputed
/// check character. Only ASCII letters are uppercased, so no non-ASCII input
/// can turn into a valid code.
///
/// # Errors
///
/// The first rule the code breaks, as a [`CfError`].
pub fn codice_fiscale(cf: &str) -> Result<String, CfError> {
    let code = cf.trim().to_ascii_uppercase();
    let b = code.as_bytes();
    if !cf_layout_ok(b) {
        return Err(CfError::Formato);
    }
    if !PLACE_LETTERS.contains(&b[11]) {
        return Err(CfError::Luogo);
    }
    if omo_number(&b[12..15]).ok_or(CfError::Formato)? == 0 {
        return Err(CfError::Luogo);
    }
    let yy = omo_number(&b[6..8]).ok_or(CfError::Formato)?;
    let month =
        MONTHS.iter().position(|&m| m == b[8]).and_then(|m| u32::try_from(m + 1).ok()).ok_or(CfError::Formato)?;
    let raw_day = omo_number(&b[9..11]).ok_or(CfError::Formato)?;
    let day = if raw_day > 40 { raw_day - 40 } else { raw_day };
    if !date_ok(yy, month, day) {
        return Err(CfError::Data);
    }
    if b[15] != cf_check_char(&b[..15]) {
        return Err(CfError::Check);
    }
    Ok(code)
}

/// Maps omocodia letters back to digits at the 7 numeric positions (1-based 7,8,10,11,13,14,15); leaves the check char; uppercases/trims.
///
/// This gives the canonical form used to compare omocodic variants of the same
/// code (§6.1). It does not validate: other characters, including the check
/// character, are left as they are, and a short input is mapped as far as it goes.
#[must_use]
pub fn de_omocodia(cf: &str) -> String {
    cf.trim()
        .to_ascii_uppercase()
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let restored = if NUMERIC_POSITIONS.contains(&i) && !c.is_ascii_digit() {
                u8::try_from(c).ok().and_then(omo_digit).and_then(|d| char::from_digit(d, 10))
            } else {
                None
            };
            restored.unwrap_or(c)
        })
        .collect()
}

/// True when two personal codici fiscali denote the same person: compared after [`de_omocodia`] on the first 15 chars (the check char differs between omocodic variants, so it is ignored in the comparison). Case/space-insensitive.
///
/// Both codes must also be formally valid ([`codice_fiscale`] returns `Ok`,
/// check character included): a code that is not valid denotes nobody, so it
/// never matches, not even itself.
#[must_use]
pub fn same_person(a: &str, b: &str) -> bool {
    match (codice_fiscale(a), codice_fiscale(b)) {
        (Ok(a), Ok(b)) => de_omocodia(&a).chars().take(15).eq(de_omocodia(&b).chars().take(15)),
        _ => false,
    }
}

/// 11-digit partita IVA / numeric codice fiscale (§6.2).
///
/// Checks exactly 11 ASCII digits (no trimming: the caller gets no normalised
/// value back, so it must pass the value it will store), first seven digits not
/// all zero, a provincial office code in digits 8–10 (001–100, 120, 121, 888,
/// 999; provisional CF ranges are rejected), and the Luhn-like check digit
/// (digits in even 1-based positions doubled, minus 9 above 9). The same
/// routine accepts the numeric CF of non-natural persons that are not VAT
/// payers (e.g. associations starting with 8 or 9).
///
/// # Errors
///
/// The first rule the value breaks, as a [`PivaError`].
pub fn partita_iva(p: &str) -> Result<(), PivaError> {
    let b = p.as_bytes();
    if b.len() != 11 || !b.iter().all(u8::is_ascii_digit) {
        return Err(PivaError::Formato);
    }
    let digits: Vec<u32> = b.iter().map(|&c| u32::from(c - b'0')).collect();
    if digits[..7].iter().all(|&d| d == 0) {
        return Err(PivaError::Formato);
    }
    let office = digits[7] * 100 + digits[8] * 10 + digits[9];
    if !((1..=100).contains(&office) || matches!(office, 120 | 121 | 888 | 999)) {
        return Err(PivaError::Ufficio);
    }
    if piva_check_digit(&digits[..10]) == digits[10] { Ok(()) } else { Err(PivaError::Check) }
}

/// The check digit of the first 10 digits of a partita IVA (§6.2).
fn piva_check_digit(first10: &[u32]) -> u32 {
    let sum: u32 = first10
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = 2 * d;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// Appends the check digit to 10 digits, giving a partita IVA (for synthetic data and tests).
#[must_use]
pub fn complete_partita_iva(first10: &str) -> Option<String> {
    let b = first10.as_bytes();
    if b.len() != 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits: Vec<u32> = b.iter().map(|&c| u32::from(c - b'0')).collect();
    Some(format!("{first10}{}", piva_check_digit(&digits)))
}

/// Appends the check character to the first 15 characters of a codice fiscale (for synthetic data and
/// tests); None when they do not have the layout of §6.1.
#[must_use]
pub fn complete_codice_fiscale(first15: &str) -> Option<String> {
    let mut probe = first15.to_ascii_uppercase().into_bytes();
    if probe.len() != 15 {
        return None;
    }
    probe.push(b'A');
    if !cf_layout_ok(&probe) {
        return None;
    }
    let check = cf_check_char(&probe[..15]);
    probe[15] = check;
    String::from_utf8(probe).ok()
}

/// Either a valid personal CF (16 chars) or a valid 11-digit numeric CF; used for intermediaries, which may be firms.
///
/// Surrounding whitespace is ignored for both forms, and letters may be
/// lowercase, as in [`codice_fiscale`].
#[must_use]
pub fn cf_or_partita_iva(s: &str) -> bool {
    codice_fiscale(s).is_ok() || partita_iva(s.trim()).is_ok()
}

/// Matricola INPS: exactly 10 ASCII digits (§6.3), no checksum.
///
/// Leading zeros are significant. INPS does not publish the algorithm of the
/// last two ("contro codice") digits, so none is invented here: existence must
/// be checked against the archive.
#[must_use]
pub fn matricola(m: &str) -> bool {
    m.len() == 10 && m.bytes().all(|b| b.is_ascii_digit())
}

/// Codice sede: exactly 4 ASCII digits (§6.4).
///
/// The format required on every F24 INPS line; whether the sede exists is a
/// question for the `sedi` table.
#[must_use]
pub fn codice_sede(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Italian mobile number normalised to E.164 "+393…" (§6.5), None when not an Italian mobile.
///
/// Strips whitespace, `-`, `.`, `/` and then one leading `(+39)`, `+39` or
/// `0039`; what remains must match the mobile national pattern
/// `^3[1-9]\d{8}$|^3[2-9]\d{7}$` (10 digits, or 9 for old ranges), which rules
/// out landlines (starting with 0) and foreign numbers.
#[must_use]
pub fn mobile_e164(s: &str) -> Option<String> {
    let compact: String = s.chars().filter(|&c| !(c.is_whitespace() || matches!(c, '-' | '.' | '/'))).collect();
    let national = ["(+39)", "+39", "0039"].iter().find_map(|prefix| compact.strip_prefix(prefix)).unwrap_or(&compact);
    let b = national.as_bytes();
    let second_ok = |range: std::ops::RangeInclusive<u8>| b.get(1).is_some_and(|c| range.contains(c));
    let is_mobile = b.iter().all(u8::is_ascii_digit)
        && b.first() == Some(&b'3')
        && match b.len() {
            10 => second_ok(b'1'..=b'9'),
            9 => second_ok(b'2'..=b'9'),
            _ => false,
        };
    is_mobile.then(|| format!("+39{national}"))
}

/// Pragmatic e-mail/PEC syntax check (§6.6): returns the trimmed, lowercased address, None if invalid (max 254 chars).
///
/// Equivalent to `^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$`: one `@`,
/// a non-empty local part, a domain whose last label is at least two letters.
/// A PEC is syntactically an ordinary address, so this cannot tell whether an
/// address is a PEC.
#[must_use]
pub fn email(s: &str) -> Option<String> {
    let address = s.trim();
    if address.len() > 254 {
        return None;
    }
    let (local, domain) = address.split_once('@')?;
    let local_ok = !local.is_empty() && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b));
    // The TLD `[A-Za-z]{2,}` holds no dot, so it follows the last dot.
    let (host, tld) = domain.rsplit_once('.')?;
    let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let tld_ok = tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic());
    (local_ok && host_ok && tld_ok).then(|| address.to_ascii_lowercase())
}

/// Domains of PEC providers whose names do not contain "pec".
const PEC_DOMAINS: [&str; 4] = ["legalmail.it", "postecert.it", "sicurezzapostale.it", "actaliscertymail.it"];

/// §6.6: a domain that looks like a PEC provider (contains "pec", or is legalmail.it / postecert.it …). Only ever a warning.
///
/// Looks at the part after the last `@` (the whole input if there is none),
/// case-insensitively; subdomains of the known providers count too
/// (`cert.legalmail.it`). A heuristic: it may be wrong both ways, so callers
/// must use it for warnings, never to reject an address.
#[must_use]
pub fn looks_like_pec(address: &str) -> bool {
    let trimmed = address.trim();
    let domain = trimmed.rsplit_once('@').map_or(trimmed, |(_, d)| d).to_ascii_lowercase();
    domain.contains("pec")
        || PEC_DOMAINS
            .iter()
            .any(|known| domain.strip_suffix(known).is_some_and(|rest| rest.is_empty() || rest.ends_with('.')))
}

#[cfg(test)]
mod completion_tests {
    use super::*;

    #[test]
    fn completed_codes_validate() {
        assert_eq!(complete_codice_fiscale("RSSMRA80A01H501").as_deref(), Some("RSSMRA80A01H501U"));
        assert_eq!(complete_partita_iva("0074311015").as_deref(), Some("00743110157"));
        assert_eq!(complete_codice_fiscale("RSSMRA80A01H50"), None);
        assert_eq!(complete_partita_iva("007431101X"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends the check character to a 15-character prefix (test helper).
    fn with_check(c15: &str) -> String {
        let check = char::from(cf_check_char(c15.as_bytes()));
        format!("{c15}{check}")
    }

    #[test]
    fn cf_table_6_1() {
        use CfError::*;
        let table: [(&str, Result<(), CfError>); 14] = [
            ("RSSMRA85T10A562S", Ok(())),
            ("RSSMRA80A01H501U", Ok(())),
            ("VRDGPP80A41H501Y", Ok(())),
            ("BNCLRA90E50F205S", Ok(())),
            ("RSSMRA80A01HRLMS", Ok(())),
            ("RSSMRAULALMHRLMD", Ok(())),
            ("RSSMRA80A01H501X", Err(Check)),
            ("RSSMRA80Z01H501U", Err(Formato)),
            ("RSSMRA80A01H50", Err(Formato)),
            ("RSSMRA80A01H5O1I", Err(Formato)),
            ("RSSMRA80A32H501C", Err(Data)),
            ("RSSMRA80B30H501X", Err(Data)),
            ("RSSMRA80A01H000J", Err(Luogo)),
            ("RSSMRA80A01J501W", Err(Luogo)),
        ];
        for (code, expected) in table {
            let expected = expected.map(|()| code.to_string());
            assert_eq!(codice_fiscale(code), expected, "{code}");
        }
    }

    #[test]
    fn cf_table_data_and_luogo_rows_have_correct_check_char() {
        // The table says DATA/LUOGO rows carry a correct check character, so
        // only the date or place makes them fail.
        for code in ["RSSMRA80A32H501C", "RSSMRA80B30H501X", "RSSMRA80A01H000J", "RSSMRA80A01J501W"] {
            assert_eq!(with_check(&code[..15]), code);
        }
    }

    #[test]
    fn cf_lowercase_and_spaces_accepted() {
        assert_eq!(codice_fiscale("  rssmra85t10a562s\n"), Ok("RSSMRA85T10A562S".to_string()));
        assert_eq!(codice_fiscale("rssmra80a01hrlms"), Ok("RSSMRA80A01HRLMS".to_string()));
        // Inner spaces are not removed.
        assert_eq!(codice_fiscale("RSSMRA 85T10A562S"), Err(CfError::Formato));
        // Non-ASCII that uppercases to ASCII ("ﬀ" → "FF") is not accepted.
        assert_eq!(codice_fiscale("RSSMRA85T10A562\u{FB00}"), Err(CfError::Formato));
        assert_eq!(codice_fiscale(""), Err(CfError::Formato));
    }

    #[test]
    fn cf_dates() {
        // Feb 29: year 00 is valid (2000 is leap), 04 valid, 01 never.
        assert!(codice_fiscale(&with_check("RSSMRA00B29H501")).is_ok());
        assert!(codice_fiscale(&with_check("RSSMRA04B29H501")).is_ok());
        assert_eq!(codice_fiscale(&with_check("RSSMRA01B29H501")), Err(CfError::Data));
        // Female days: 41 = 1st, 71 = 31st; 40, 72 and 00 are impossible.
        assert!(codice_fiscale(&with_check("RSSMRA80A41H501")).is_ok());
        assert!(codice_fiscale(&with_check("RSSMRA80A71H501")).is_ok());
        assert_eq!(codice_fiscale(&with_check("RSSMRA80A40H501")), Err(CfError::Data));
        assert_eq!(codice_fiscale(&with_check("RSSMRA80A72H501")), Err(CfError::Data));
        assert_eq!(codice_fiscale(&with_check("RSSMRA80A00H501")), Err(CfError::Data));
        // April has 30 days, female April 30 = 70.
        assert!(codice_fiscale(&with_check("RSSMRA80D70H501")).is_ok());
        assert_eq!(codice_fiscale(&with_check("RSSMRA80D31H501")), Err(CfError::Data));
        // Omocodic day "MS" = 16 is read through de-omocodia.
        assert!(codice_fiscale(&with_check("RSSMRA80AMSH501")).is_ok());
    }

    #[test]
    fn cf_places() {
        // Foreign country (Z) is valid; Z000 and an omocodic "LLL" (= 000) are not.
        assert!(codice_fiscale(&with_check("RSSMRA80A01Z404")).is_ok());
        assert_eq!(codice_fiscale(&with_check("RSSMRA80A01Z000")), Err(CfError::Luogo));
        assert_eq!(codice_fiscale(&with_check("RSSMRA80A01HLLL")), Err(CfError::Luogo));
    }

    #[test]
    fn de_omocodia_maps_only_numeric_positions() {
        assert_eq!(de_omocodia("RSSMRA80A01HRLMS"), "RSSMRA80A01H501S");
        assert_eq!(de_omocodia(" rssmraulalmhrlmd "), "RSSMRA80A01H501D");
        // Letters outside the seven positions (names, month, place letter,
        // check char) stay, even when they are omocodia letters.
        assert_eq!(de_omocodia("LMNPQRSTUVLMNPQR"), "LMNPQR67U90M234R");
        assert_eq!(de_omocodia("RSSMRAUL"), "RSSMRA80");
        assert_eq!(de_omocodia(""), "");
    }

    /// Omocodic variants of `RSSMRA85T10A562S`, replacing 1 to 7 digits from the
    /// right (positions 15, 14, 13, 11, 10, 8, 7) with the check char recomputed.
    const RSSMRA85_VARIANTS: [&str; 7] = [
        "RSSMRA85T10A56NH",
        "RSSMRA85T10A5SNT",
        "RSSMRA85T10ARSNO",
        "RSSMRA85T1LARSNR",
        "RSSMRA85TMLARSNC",
        "RSSMRA8RTMLARSNO",
        "RSSMRAURTMLARSNL",
    ];

    #[test]
    fn omocodic_variants_are_valid() {
        for code in RSSMRA85_VARIANTS {
            assert_eq!(codice_fiscale(code), Ok(code.to_string()), "{code}");
            assert_eq!(&de_omocodia(code)[..15], "RSSMRA85T10A562");
        }
    }

    #[test]
    fn same_person_cases() {
        assert!(same_person("RSSMRA80A01H501U", "RSSMRA80A01HRLMS"));
        assert!(same_person("RSSMRA80A01HRLMS", "RSSMRAULALMHRLMD"));
        assert!(same_person(" rssmra80a01h501u ", "RSSMRA80A01H501U"));
        for variant in RSSMRA85_VARIANTS {
            assert!(same_person("RSSMRA85T10A562S", variant), "{variant}");
            assert!(same_person(variant, "rssmra85t10a562s"), "{variant}");
        }
        // Two different people.
        assert!(!same_person("RSSMRA80A01H501U", "RSSMRA85T10A562S"));
        assert!(!same_person("VRDGPP80A41H501Y", "BNCLRA90E50F205S"));
        assert!(!same_person("RSSMRA80A01HRLMS", "RSSMRA85T10A5SNT"));
        // An invalid code denotes nobody.
        assert!(!same_person("RSSMRA80A01H501X", "RSSMRA80A01H501X"));
        assert!(!same_person("RSSMRA80A01H501U", "RSSMRA80A01H501X"));
    }

    #[test]
    fn piva_table_6_2() {
        use PivaError::*;
        let table: [(&str, Result<(), PivaError>); 9] = [
            ("00743110157", Ok(())),
            ("12345670017", Ok(())),
            ("00000010017", Ok(())),
            ("11111110125", Ok(())),
            // domain.md says CHECK, but digits 8–10 are "789", not an office
            // code, so the algorithm stops at UFFICIO (its check digit would be 7).
            ("01234567890", Err(Ufficio)),
            ("12345670018", Err(Check)),
            ("12345678903", Err(Ufficio)),
            ("00000000000", Err(Formato)),
            ("1234567001", Err(Formato)),
        ];
        for (value, expected) in table {
            assert_eq!(partita_iva(value), expected, "{value}");
        }
    }

    #[test]
    fn piva_offices_and_format() {
        use PivaError::*;
        for ok in [
            "12345671007", // office 100
            "12345671205", // 120
            "12345671213", // 121
            "12345678887", // 888
            "12345679992", // 999
            "80000000010", // non-VAT numeric CF of an association
        ] {
            assert_eq!(partita_iva(ok), Ok(()), "{ok}");
        }
        for (value, expected) in [
            ("12345670009", Ufficio), // office 000
            ("12345671015", Ufficio), // 101
            ("12345671197", Ufficio), // 119
            ("12345671221", Ufficio), // 122
            ("123456700171", Formato),
            ("1234567001a", Formato),
            (" 12345670017", Formato),
            ("１2345670017", Formato),
            ("", Formato),
        ] {
            assert_eq!(partita_iva(value), Err(expected), "{value}");
        }
    }

    #[test]
    fn cf_or_piva() {
        assert!(cf_or_partita_iva("RSSMRA85T10A562S"));
        assert!(cf_or_partita_iva("rssmra80a01hrlms"));
        assert!(cf_or_partita_iva("00743110157"));
        assert!(cf_or_partita_iva(" 00743110157 "));
        assert!(!cf_or_partita_iva("RSSMRA80A01H501X"));
        assert!(!cf_or_partita_iva("12345670018"));
        assert!(!cf_or_partita_iva(""));
    }

    #[test]
    fn matricola_6_3() {
        assert!(matricola("0123456789"));
        assert!(matricola("1234567890"));
        assert!(!matricola("123456789"));
        assert!(!matricola("12345678901"));
        assert!(!matricola("12345678a0"));
        assert!(!matricola(" 123456789"));
        assert!(!matricola("１23456789"));
    }

    #[test]
    fn codice_sede_6_4() {
        assert!(codice_sede("2100"));
        assert!(codice_sede("0001"));
        assert!(!codice_sede("210"));
        assert!(!codice_sede("21000"));
        assert!(!codice_sede("21a0"));
        assert!(!codice_sede(""));
    }

    #[test]
    fn mobile_6_5() {
        assert_eq!(mobile_e164("+39 347 123 4567").as_deref(), Some("+393471234567"));
        assert_eq!(mobile_e164("3201234567").as_deref(), Some("+393201234567"));
        assert_eq!(mobile_e164("0612345678"), None); // landline
        assert_eq!(mobile_e164("30012345678"), None); // 11 digits
        assert_eq!(mobile_e164("2471234567"), None);
    }

    #[test]
    fn mobile_normalisation() {
        for input in ["0039 347-123.4567", "(+39) 347/123 45 67", "+39-347-1234567", "\t347 1234567 "] {
            assert_eq!(mobile_e164(input).as_deref(), Some("+393471234567"), "{input}");
        }
        // Old 9-digit ranges: 3[2-9] followed by 7 digits.
        assert_eq!(mobile_e164("331234567").as_deref(), Some("+39331234567"));
        assert_eq!(mobile_e164("311234567"), None);
        // Second digit 0 is never a mobile.
        assert_eq!(mobile_e164("3012345678"), None);
        // Foreign or malformed.
        assert_eq!(mobile_e164("+41 347 123 4567"), None);
        assert_eq!(mobile_e164("+39+39 3471234567"), None);
        assert_eq!(mobile_e164("347123456a"), None);
        assert_eq!(mobile_e164(""), None);
    }

    #[test]
    fn email_6_6() {
        assert_eq!(email("  Mario.Rossi+inps@Example.IT ").as_deref(), Some("mario.rossi+inps@example.it"));
        assert_eq!(email("studio_rossi%1@pec.studio-rossi.it").as_deref(), Some("studio_rossi%1@pec.studio-rossi.it"));
        for bad in [
            "",
            "mario.rossi",
            "@example.it",
            "mario@",
            "mario@example",
            "mario@.it",
            "mario@example.i",
            "mario@example.1t",
            "mario@@example.it",
            "mario@exa@mple.it",
            "mario rossi@example.it",
            "màrio@example.it",
            "mario@exam_ple.it",
        ] {
            assert_eq!(email(bad), None, "{bad}");
        }
        // Length: 254 characters accepted, 255 rejected.
        let domain = "@example.it"; // 11 characters
        let at_limit = format!("{}{domain}", "a".repeat(254 - domain.len()));
        assert_eq!(at_limit.len(), 254);
        assert_eq!(email(&at_limit), Some(at_limit.clone()));
        let over = format!("a{at_limit}");
        assert_eq!(over.len(), 255);
        assert_eq!(email(&over), None);
    }

    #[test]
    fn looks_like_pec_6_6() {
        for pec in [
            "studio@pec.it",
            "azienda@arubapec.it",
            "azienda@pec.azienda.it",
            "Studio@LegalMail.it",
            "studio@cert.legalmail.it",
            "ditta@postecert.it",
            "ditta@sicurezzapostale.it",
            "ditta@actaliscertymail.it",
        ] {
            assert!(looks_like_pec(pec), "{pec}");
        }
        for ordinary in [
            "mario@gmail.com",
            "mario@example.it",
            "mario@notlegalmail.it",
            "mario@legalmail.it.example.com",
            "pec@example.it", // "pec" in the local part only
        ] {
            assert!(!looks_like_pec(ordinary), "{ordinary}");
        }
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            CfError::Formato.to_string(),
            "formato non valido (attesi 16 caratteri: 6 lettere, anno, mese, giorno, luogo, carattere di controllo)"
        );
        assert_eq!(CfError::Luogo.to_string(), "codice del luogo di nascita non valido");
        assert_eq!(CfError::Data.to_string(), "data di nascita non valida");
        assert_eq!(CfError::Check.to_string(), "carattere di controllo errato");
        assert_eq!(PivaError::Ufficio.to_string(), "codice ufficio provinciale non valido");
        assert_eq!(PivaError::Check.to_string(), "cifra di controllo errata");
        assert!(PivaError::Formato.to_string().starts_with("formato non valido"));
        let boxed: Box<dyn Error> = Box::new(CfError::Check);
        assert_eq!(boxed.to_string(), "carattere di controllo errato");
        let boxed: Box<dyn Error + Send + Sync> = Box::new(PivaError::Formato);
        assert!(boxed.source().is_none());
    }
}
