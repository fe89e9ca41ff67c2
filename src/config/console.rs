//! The `console` section: the operators' web console served by `smart-taskd run` (on `api.listen`), and how an
//! operator logs in to it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Where its pages are served: an absolute path without a trailing slash (`/console`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The key (at least 32 bytes) that signs the session cookies; relative to this file's directory. Give every
    /// instance behind one address the same file. Absent: a random key per start (sessions end with the process).
    pub session_key_file: Option<PathBuf>,
    /// How long a session lasts, in hours.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// Login through an OpenID Connect provider (authorization code with PKCE).
    pub oidc: Option<OidcConfig>,
    /// Accept the API's bearer tokens (`ruolo: operatore`) in `Authorization`, for a console behind a trusted
    /// proxy that logs operators in and adds the token to each request. Needs `api.auth`.
    #[serde(default)]
    pub trusted_proxy: bool,
}

/// The OpenID Connect provider of the operators' identities. The ID token must carry `sede` (the operator's
/// 4-digit sede) and may carry `sola_lettura: true` (a read-only operator).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer: its discovery document is `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// Sent with HTTP Basic authentication to the token endpoint.
    pub client_secret: String,
    /// This console's callback as the provider knows it: `https://host/console/callback`.
    pub redirect_url: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_path() -> String {
    "/console".into()
}

fn default_session_hours() -> u64 {
    8
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into()]
}

/// Checks the section and anchors its relative paths to `base`.
pub(super) fn check_console(
    console: &mut ConsoleConfig,
    has_api_auth: bool,
    path: &Path,
    base: &Path,
) -> Result<(), ConfigError> {
    let invalid = |field, problem: String| ConfigError::Invalid { path: path.to_path_buf(), field, problem };
    let p = &console.path;
    if !p.starts_with('/')
        || p.ends_with('/')
        || !p[1..]
            .split('/')
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(invalid(
            "console.path",
            format!(
                "`{p}`: expected an absolute path of letters, digits, `-` and `_`, without a trailing slash (e.g. /console)"
            ),
        ));
    }
    if console.session_hours == 0 || console.session_hours > 24 * 7 {
        return Err(invalid("console.session_hours", "expected 1 to 168 hours".into()));
    }
    if console.oidc.is_none() && !console.trusted_proxy {
        return Err(invalid("console", "nobody could log in: configure `oidc`, or `trusted_proxy: true` behind a proxy that adds the API's bearer tokens".into()));
    }
    if console.trusted_proxy && !has_api_auth {
        return Err(invalid(
            "console.trusted_proxy",
            "the bearer tokens are checked with `api.auth`: configure it".into(),
        ));
    }
    if let Some(oidc) = &console.oidc {
        for (field, url) in [("console.oidc.issuer", &oidc.issuer), ("console.oidc.redirect_url", &oidc.redirect_url)] {
            if !(url.starts_with("https://")
                || url.starts_with("http://127.0.0.1")
                || url.starts_with("http://localhost"))
            {
                return Err(invalid(
                    field,
                    format!("`{url}`: expected an https:// URL (http:// only on loopback, for tests)"),
                ));
            }
        }
        if !oidc.redirect_url.ends_with(&format!("{p}/callback")) {
            return Err(invalid(
                "console.oidc.redirect_url",
                format!("expected the console's callback, ending in `{p}/callback`"),
            ));
        }
        if !oidc.scopes.iter().any(|s| s == "openid") {
            return Err(invalid("console.oidc.scopes", "must include `openid`".into()));
        }
    }
    if let Some(key) = console.session_key_file.as_mut()
        && key.is_relative()
    {
        *key = base.join(&*key);
    }
    Ok(())
}
