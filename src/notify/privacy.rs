//! Recipients are personal data: logs and operator listings show them masked, and server answers quoted in
//! errors have the recipient masked before they are stored or logged. Bodies are never logged at all.

use std::fmt;

/// A recipient (e-mail address or phone number) that displays masked: `m***@example.it`, `+39*******567`.
#[derive(Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask(self.0))
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", mask(self.0))
    }
}

/// The masked form of an e-mail address (first character of the local part and the domain) or a phone
/// number (the country prefix and the last three digits).
pub fn mask(recipient: &str) -> String {
    let r = recipient.trim();
    if let Some((local, domain)) = r.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = r.chars().collect();
    let keep_head = if r.starts_with('+') { 3.min(chars.len()) } else { 0 };
    let keep_tail = 3.min(chars.len().saturating_sub(keep_head));
    let hidden = chars.len() - keep_head - keep_tail;
    let mut out: String = chars[..keep_head].iter().collect();
    out.extend(std::iter::repeat_n('*', hidden.max(1)));
    out.extend(&chars[chars.len() - keep_tail..]);
    out
}

/// `text` with every occurrence of the recipient (and of its national form, for a phone number) masked:
/// for SMTP replies and gateway errors, which often quote the address they refuse.
pub fn redact(text: &str, recipient: &str) -> String {
    let mut out = replace_ignore_case(text, recipient, &mask(recipient));
    if let Some(national) = recipient.strip_prefix("+39") {
        out = out.replace(&format!("39{national}"), &mask(recipient)).replace(national, &mask(recipient));
    }
    out
}

fn replace_ignore_case(text: &str, needle: &str, with: &str) -> String {
    if needle.is_empty() {
        return text.to_string();
    }
    let lower = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in lower.match_indices(&needle) {
        out.push_str(&text[last..at]);
        out.push_str(with);
        last = at + needle.len();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_addresses_and_numbers() {
        assert_eq!(mask("mario.rossi@example.it"), "m***@example.it");
        assert_eq!(mask("+393471234567"), "+39*******567");
        assert_eq!(mask("12"), "*12");
        assert_eq!(Masked("a@b.it").to_string(), "a***@b.it");
    }

    #[test]
    fn redacts_quoted_recipients() {
        let r = redact("550 5.1.1 <Mario.Rossi@Example.it>: Recipient address rejected", "mario.rossi@example.it");
        assert_eq!(r, "550 5.1.1 <m***@example.it>: Recipient address rejected");
        let r = redact("invalid recipient 393471234567", "+393471234567");
        assert!(!r.contains("3471234567"), "{r}");
    }
}
