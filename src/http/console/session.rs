//! The console's signed cookies: the operator's session (who, which sede, whether they may act, until when) and
//! the short-lived state of a login in progress (OIDC `state`, `nonce`, PKCE verifier). Both are JSON signed with
//! HMAC-SHA-256 under `console.session_key_file`, so any instance holding the key accepts them and nothing is kept
//! on the server. The CSRF token of the forms is derived from the session the same way.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::app::Actor;
use crate::domain::time::Millis;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "st_console";
/// The login-in-progress cookie's name.
pub const LOGIN_COOKIE: &str = "st_console_login";

/// An operator's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// A random id, recorded when the operator logs out so that the cookie is refused from then on.
    pub sid: String,
    pub sub: String,
    pub sede: String,
    pub agisce: bool,
    /// Milliseconds since the epoch after which the session is over.
    pub exp: Millis,
}

impl Session {
    /// The id under which a logout records this session (in the store's table of used token ids).
    pub fn ended_id(&self) -> String {
        format!("console-session:{}", self.sid)
    }

    pub fn actor(&self) -> Actor {
        Actor::Operatore { id: self.sub.clone(), sede: self.sede.clone(), agisce: self.agisce }
    }
}

/// A login in progress: what the callback must find again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub exp: Millis,
}

/// The key that signs and checks the cookies.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// `payload.signature`, both base64url.
    pub fn seal<T: Serialize>(&self, value: &T) -> String {
        let payload = B64.encode(serde_json::to_vec(value).unwrap_or_default());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", B64.encode(tag.as_ref()))
    }

    /// The value of a sealed text, if the signature holds (in constant time) and it decodes.
    pub fn open<T: DeserializeOwned>(&self, sealed: &str) -> Option<T> {
        let (payload, tag) = sealed.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }

    /// The session in a cookie value, if signed by this key and not expired at `now`.
    pub fn session(&self, sealed: &str, now: Millis) -> Option<Session> {
        self.open::<Session>(sealed).filter(|s| s.exp > now)
    }

    /// The CSRF token of a session's forms: bound to who is logged in and until when.
    pub fn csrf(&self, session: &Session) -> String {
        B64.encode(hmac::sign(&self.key, csrf_material(session).as_bytes()).as_ref())
    }

    /// Whether `token` is the CSRF token of `session` (checked by ring in constant time).
    pub fn csrf_holds(&self, session: &Session, token: &str) -> bool {
        B64.decode(token).is_ok_and(|tag| hmac::verify(&self.key, csrf_material(session).as_bytes(), &tag).is_ok())
    }
}

fn csrf_material(session: &Session) -> String {
    format!("csrf|{}|{}|{}|{}|{}", session.sid, session.sub, session.sede, session.agisce, session.exp)
}

/// A random token of `bytes` bytes, base64url (state, nonce, PKCE verifier, a CSP nonce).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    B64.encode(buf)
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the provider's redirect back is a cross-site navigation, which a
/// Strict cookie would not survive; forms are guarded by the CSRF token and the origin check), scoped to `path`,
/// `Secure` unless served on plain loopback HTTP.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_s: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(exp: Millis) -> Session {
        Session { sid: "s-1".into(), sub: "op-anna".into(), sede: "7000".into(), agisce: true, exp }
    }

    #[test]
    fn a_sealed_session_opens_only_with_its_key_untouched_and_unexpired() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef");
        let sealed = signer.seal(&session(2_000));
        assert_eq!(signer.session(&sealed, 1_000), Some(session(2_000)));
        assert_eq!(signer.session(&sealed, 2_000), None, "expired");
        assert_eq!(Signer::new(b"another key, another key, another").session(&sealed, 1_000), None);
        // Another payload under the same signature (a sede changed by hand) is refused.
        let (_, tag) = sealed.split_once('.').expect("sealed");
        let forged =
            format!("{}.{tag}", B64.encode(br#"{"sid":"s-1","sub":"op-anna","sede":"1300","agisce":true,"exp":2000}"#));
        assert_eq!(signer.session(&forged, 1_000), None);
    }

    #[test]
    fn the_csrf_token_belongs_to_its_session() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef");
        let (a, b) = (session(2_000), session(3_000));
        assert!(signer.csrf_holds(&a, &signer.csrf(&a)));
        assert!(!signer.csrf_holds(&a, &signer.csrf(&b)));
        assert!(!signer.csrf_holds(&a, ""));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, "st_console_login=x; st_console=y".parse().expect("header"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("y"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), Some("x"));
    }
}
