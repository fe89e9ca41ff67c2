//! Recipients are personal data: logs and operator listings show them masked. Bodies, and whatever a server
//! or gateway answered in words (it quotes addresses, numbers and texts), are never logged nor stored: only
//! their codes are. Passwords in URLs are masked wherever a URL is printed.

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

/// A URL with its password masked, for `check-config` and logs: `postgres://user:***@host/db`, and the value
/// of a `password=` (or `pass=`, `pwd=`, `secret=`, `token=`) query parameter likewise.
pub fn mask_password(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
                    format!("{scheme}://{masked}@{host}{path}")
                }
                None => head.to_string(),
            }
        }
        None => head.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _))
                    if ["password", "pass", "pwd", "secret", "token"].contains(&k.to_ascii_lowercase().as_str()) =>
                {
                    format!("{k}=***")
                }
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
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
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_password("postgres://smart:s3cret@db.example.it:5432/st"),
            "postgres://smart:***@db.example.it:5432/st"
        );
        assert_eq!(mask_password("smtps://user:p%40ss@mail.example.it:465"), "smtps://user:***@mail.example.it:465");
        assert_eq!(
            mask_password("postgres://smart@db/st?password=x&sslmode=require"),
            "postgres://smart@db/st?password=***&sslmode=require"
        );
        assert_eq!(mask_password("sqlite:///var/lib/st.db"), "sqlite:///var/lib/st.db");
        assert_eq!(mask_password("smtp://localhost:2525?tls=required"), "smtp://localhost:2525?tls=required");
        assert_eq!(mask_password("maildir:/var/mail"), "maildir:/var/mail");
    }
}
