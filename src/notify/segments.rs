//! SMS length: GSM 03.38 (7-bit) or UCS-2 encoding, the number of segments a text takes, and cutting a text
//! to fit a number of segments.

/// The GSM 03.38 basic character set: one septet each.
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The GSM 03.38 extension table: an escape plus the character, two septets each.
const GSM_EXTENSION: &str = "^{}\\[~]|€\u{c}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm",
            Encoding::Ucs2 => "ucs2",
        }
    }

    /// Characters (septets or UTF-16 units) in one segment, and in each segment of a concatenated message.
    fn capacity(self) -> (usize, usize) {
        match self {
            Encoding::Gsm7 => (160, 153),
            Encoding::Ucs2 => (70, 67),
        }
    }
}

/// How a text goes over SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub segments: usize,
}

fn gsm_septets(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The encoding, length and segments of a text.
pub fn measure(text: &str) -> Length {
    let septets: Option<usize> = text.chars().map(gsm_septets).sum();
    let (encoding, units) = match septets {
        Some(n) => (Encoding::Gsm7, n),
        None => (Encoding::Ucs2, text.encode_utf16().count()),
    };
    let (single, multi) = encoding.capacity();
    let segments = if units <= single { 1 } else { units.div_ceil(multi) };
    Length { encoding, units, segments }
}

/// The text itself when it fits `max_segments`, else cut at a word boundary where possible and ended with an
/// ellipsis so that it fits. Returns the text and whether it was cut.
pub fn fit(text: &str, max_segments: usize) -> (String, bool) {
    let length = measure(text);
    if length.segments <= max_segments.max(1) {
        return (text.to_string(), false);
    }
    let (single, multi) = length.encoding.capacity();
    let capacity = if max_segments <= 1 { single } else { multi * max_segments };
    let ellipsis = match length.encoding {
        Encoding::Gsm7 => "...",
        Encoding::Ucs2 => "…",
    };
    let cost = |c: char| match length.encoding {
        Encoding::Gsm7 => gsm_septets(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16(),
    };
    let budget = capacity - measure(ellipsis).units;
    let mut used = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        if used + cost(c) > budget {
            break;
        }
        used += cost(c);
        end = i + c.len_utf8();
    }
    let head = &text[..end];
    let head = match head.rfind(char::is_whitespace) {
        Some(space) if space > end / 2 => &head[..space],
        _ => head,
    };
    (format!("{}{ellipsis}", head.trim_end()), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn italian_accents_are_gsm7() {
        let l = measure("La richiesta è stata accolta: più informazioni nell'area riservata.");
        assert_eq!(l.encoding, Encoding::Gsm7);
        assert_eq!(l.segments, 1);
    }

    #[test]
    fn extension_characters_take_two_septets() {
        assert_eq!(measure("€").units, 2);
        assert_eq!(measure(&"a".repeat(159)).segments, 1);
        assert_eq!(measure(&format!("{}€", "a".repeat(159))).segments, 2);
    }

    #[test]
    fn other_characters_switch_to_ucs2() {
        let l = measure("Richiesta “accolta”");
        assert_eq!(l.encoding, Encoding::Ucs2);
        assert_eq!(measure(&"È".repeat(70)).segments, 1);
        assert_eq!(measure(&"È".repeat(71)).segments, 2);
        assert_eq!(measure(&"È".repeat(135)).segments, 3);
    }

    #[test]
    fn segments_of_concatenated_messages() {
        assert_eq!(measure(&"a".repeat(160)).segments, 1);
        assert_eq!(measure(&"a".repeat(161)).segments, 2);
        assert_eq!(measure(&"a".repeat(306)).segments, 2);
        assert_eq!(measure(&"a".repeat(307)).segments, 3);
    }

    #[test]
    fn fitting_cuts_at_a_word_and_marks_the_cut() {
        let text = "parola ".repeat(100);
        let (cut, was_cut) = fit(&text, 2);
        assert!(was_cut);
        assert!(cut.ends_with("parola..."), "{cut}");
        assert_eq!(measure(&cut).segments, 2);
        let (same, was_cut) = fit("breve", 1);
        assert_eq!((same.as_str(), was_cut), ("breve", false));
        let (cut, _) = fit(&"È".repeat(200), 1);
        assert_eq!(measure(&cut).segments, 1);
        assert!(cut.ends_with('…'));
    }
}
