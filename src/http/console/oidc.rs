//! The console's login through an OpenID Connect provider: the authorization code flow with PKCE (S256), `state`
//! and `nonce` (OpenID Connect Core 1.0 §3.1, RFC 7636). Four exchanges: discovery, the redirect to the
//! provider, the code for tokens at the token endpoint, the provider's keys; the ID token is verified with the
//! same jsonwebtoken + ring provider as the API's bearer tokens (issuer, audience, expiry, an asymmetric
//! algorithm, the nonce). Why not the `openidconnect` crate: ARCHITECTURE.md, "The console".

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::session::{PendingLogin, Session, random_token};
use crate::config::OidcConfig;
use crate::domain::time::Millis;

/// Why a login failed. The messages name the step, never a token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider cannot be reached ({step}): {error}")]
    Unreachable { step: &'static str, error: String },
    #[error("the identity provider's answer to {step} is not what OpenID Connect prescribes: {error}")]
    Protocol { step: &'static str, error: String },
    #[error("the ID token is refused: {0}")]
    Token(String),
    #[error("the login is stale or was not started here: start again")]
    State,
    #[error("the identity has no valid `sede` claim (4 digits): ask the provider's administrators")]
    NoSede,
}

/// What the provider's discovery document says (the fields this flow uses).
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
}

/// The ID token's claims the console reads.
#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    nonce: Option<String>,
    sede: Option<String>,
    #[serde(default)]
    sola_lettura: bool,
}

/// A configured provider, its discovery fetched once.
pub struct Provider {
    config: OidcConfig,
    http: reqwest::Client,
    discovery: OnceCell<Discovery>,
}

/// How long a started login may take.
const LOGIN_MS: Millis = 10 * 60 * 1000;

impl Provider {
    pub fn new(config: OidcConfig) -> Result<Provider, LoginError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| LoginError::Unreachable { step: "client", error: e.to_string() })?;
        Ok(Provider { config, http, discovery: OnceCell::new() })
    }

    async fn discovery(&self) -> Result<&Discovery, LoginError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
                let d: Discovery = self.get_json("discovery", &url).await?;
                if d.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
                    return Err(LoginError::Protocol {
                        step: "discovery",
                        error: format!("the document names the issuer `{}`, not the configured one", d.issuer),
                    });
                }
                Ok(d)
            })
            .await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, step: &'static str, url: &str) -> Result<T, LoginError> {
        let answer = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| LoginError::Unreachable { step, error: e.without_url().to_string() })?;
        if !answer.status().is_success() {
            return Err(LoginError::Protocol { step, error: format!("HTTP {}", answer.status()) });
        }
        answer.json().await.map_err(|e| LoginError::Protocol { step, error: e.without_url().to_string() })
    }

    /// Starts a login: the provider's authorization URL to redirect to, and what the callback must find again.
    pub async fn start(&self, now: Millis) -> Result<(String, PendingLogin), LoginError> {
        let d = self.discovery().await?;
        let pending = PendingLogin {
            state: random_token(24),
            nonce: random_token(24),
            verifier: random_token(48),
            exp: now + LOGIN_MS,
        };
        let challenge = B64.encode(Sha256::digest(pending.verifier.as_bytes()));
        let mut url = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| LoginError::Protocol { step: "discovery", error: format!("authorization_endpoint: {e}") })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok((url.into(), pending))
    }

    /// Ends a login: the code for tokens, the ID token verified, the session of who logged in (for `hours`).
    pub async fn finish(
        &self,
        pending: &PendingLogin,
        state: &str,
        code: &str,
        now: Millis,
        session_ms: Millis,
    ) -> Result<Session, LoginError> {
        // The state is no secret once the provider has it; the cookie that holds it is signed.
        if pending.exp <= now || pending.state != state {
            return Err(LoginError::State);
        }
        let d = self.discovery().await?;
        let answer = self
            .http
            .post(&d.token_endpoint)
            .basic_auth(form_encode(&self.config.client_id), Some(form_encode(&self.config.client_secret)))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.config.redirect_url),
                ("code_verifier", &pending.verifier),
            ])
            .send()
            .await
            .map_err(|e| LoginError::Unreachable { step: "token", error: e.without_url().to_string() })?;
        if !answer.status().is_success() {
            return Err(LoginError::Protocol { step: "token", error: format!("HTTP {}", answer.status()) });
        }
        let tokens: TokenAnswer = answer
            .json()
            .await
            .map_err(|e| LoginError::Protocol { step: "token", error: e.without_url().to_string() })?;
        let keys: JwkSet = self.get_json("jwks", &d.jwks_uri).await?;
        let claims = verify(&tokens.id_token, &keys, &d.issuer, &self.config.client_id)?;
        if claims.nonce.as_deref() != Some(pending.nonce.as_str()) {
            return Err(LoginError::Token("its nonce is not this login's".into()));
        }
        let sede = claims.sede.filter(|s| crate::domain::validators::codice_sede(s)).ok_or(LoginError::NoSede)?;
        Ok(Session {
            sid: random_token(18),
            sub: claims.sub,
            sede,
            agisce: !claims.sola_lettura,
            exp: now + session_ms,
        })
    }
}

/// RFC 6749 §2.3.1: the client's id and secret are form-encoded before HTTP Basic.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Verifies an ID token against the provider's keys: an asymmetric algorithm only, the key its `kid` names,
/// the issuer, this client as audience, not expired.
fn verify(token: &str, keys: &JwkSet, issuer: &str, client_id: &str) -> Result<IdClaims, LoginError> {
    crate::http::jwt_crypto::install();
    let header = jsonwebtoken::decode_header(token).map_err(|e| LoginError::Token(format!("not a JWT: {e}")))?;
    let asymmetric = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    if !asymmetric.contains(&header.alg) {
        return Err(LoginError::Token(format!("algorithm {:?} is not an asymmetric one", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None => keys.keys.first().filter(|_| keys.keys.len() == 1),
    }
    .ok_or_else(|| LoginError::Token("signed with a key the provider does not publish".into()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| LoginError::Token(format!("the provider's key: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| LoginError::Token(e.to_string()))
}
