//! Bearer JWTs (RFC 7519, `Authorization: Bearer …`): signed by a key of the configured JWKS file (chosen by
//! `kid`), with one of the pinned asymmetric algorithms, the configured `iss` and `aud`, and inside
//! `exp`/`nbf`. The claims say who acts (`ruolo`, with `sub` always): `richiedente` with `cf` and `profilo` is
//! the portal acting for an authenticated requester; `operatore` with `sede` (and `sola_lettura: true` for a
//! read-only one) an operator of that sede; `integratore` reads the feeds; `operazioni` runs the service. A refusal is a 401 problem with `WWW-Authenticate: Bearer`; its detail names the
//! check that failed, never the token or its claims. With `api.auth.jti_replay` (AgID ID_AUTH_REST_02) a token
//! needs a `jti`, and its second use before `exp` is refused: the ids are kept in the database (one insert per
//! request), so every instance sharing it refuses the replay.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::AppState;
use super::problem::Problem;
use crate::app::Actor;
use crate::config::AuthConfig;

/// Why the API's token configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("api.auth.jwks_file: cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("api.auth.jwks_file: {path} is not a JWKS document: {error}")]
    Parse { path: String, error: String },
    #[error("api.auth.algorithms: {0}")]
    Algorithm(String),
}

/// Why a token was refused, in words for the caller.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenRefused(String);

/// Validates tokens against the configured keys and claims.
pub struct Verifier {
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    jti_replay: bool,
    /// Tokens whose `jti` was recorded: every [`PURGE_EVERY`]th one purges the expired ids.
    recorded: AtomicU64,
}

/// How many recorded token ids between two purges of the expired ones.
const PURGE_EVERY: u64 = 1024;

/// The longest `jti` accepted.
const MAX_JTI: usize = 255;

/// A valid token: who acts, and the token's id and expiry for the replay cache.
pub struct Verified {
    pub actor: Actor,
    pub jti: Option<String>,
    /// `exp`, unix seconds.
    pub exp: i64,
}

#[derive(Deserialize)]
struct Claims {
    ruolo: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    jti: Option<String>,
    /// An operator's sede.
    #[serde(default)]
    sede: Option<String>,
    /// An operator who may only read.
    #[serde(default)]
    sola_lettura: bool,
    #[serde(default)]
    cf: Option<String>,
    #[serde(default)]
    profilo: Option<String>,
}

impl Verifier {
    pub fn load(config: &AuthConfig) -> Result<Verifier, AuthConfigError> {
        super::jwt_crypto::install();
        let path = config.jwks_file.display().to_string();
        let text = std::fs::read_to_string(&config.jwks_file)
            .map_err(|error| AuthConfigError::Read { path: path.clone(), error })?;
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| AuthConfigError::Parse { path: path.clone(), error: e.to_string() })?;
        let keys = set
            .keys
            .iter()
            .map(|k| DecodingKey::from_jwk(k).map(|d| (k.common.key_id.clone(), d)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AuthConfigError::Parse { path: path.clone(), error: e.to_string() })?;
        if keys.is_empty() {
            return Err(AuthConfigError::Parse { path, error: "it holds no key".into() });
        }
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let alg = Algorithm::from_str(name).map_err(|_| AuthConfigError::Algorithm(format!("unknown `{name}`")))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(AuthConfigError::Algorithm(format!(
                    "`{name}` is a shared-secret algorithm: only public-key algorithms are accepted"
                )));
            }
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err(AuthConfigError::Algorithm("name at least one (e.g. ES256)".into()));
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway_seconds;
        Ok(Verifier { keys, validation, jti_replay: config.jti_replay, recorded: AtomicU64::new(0) })
    }

    /// Who a token says is acting, or why it is refused (in words for the caller, naming no claim value).
    pub fn verify(&self, token: &str) -> Result<Verified, TokenRefused> {
        self.check(token).map_err(TokenRefused)
    }

    fn check(&self, token: &str) -> Result<Verified, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is not a JWT".to_string())?;
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|(k, _)| k.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .map(|(_, key)| key)
        .ok_or_else(|| "the token is signed by no key this service trusts".to_string())?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_string(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
                ErrorKind::InvalidIssuer => "the token's issuer is not the configured one".to_string(),
                ErrorKind::InvalidAudience => "the token's audience is not this service".to_string(),
                ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted".to_string(),
                ErrorKind::InvalidSignature => "the token's signature does not verify".to_string(),
                ErrorKind::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                _ => "the token cannot be validated".to_string(),
            }
        })?;
        let (jti, exp) = (data.claims.jti, data.claims.exp);
        if self.jti_replay && !jti.as_deref().is_some_and(|j| !j.is_empty() && j.len() <= MAX_JTI) {
            return Err(format!("the token needs a `jti` claim of 1 to {MAX_JTI} characters"));
        }
        let actor: Result<Actor, String> = match (data.claims.ruolo.as_str(), data.claims.cf, data.claims.profilo) {
            ("richiedente", Some(cf), Some(profilo)) => {
                Ok(Actor::Richiedente { cf: cf.trim().to_uppercase(), profilo: profilo.trim().to_uppercase() })
            }
            ("richiedente", _, _) => Err("a `richiedente` token needs the `cf` and `profilo` claims".into()),
            ("operatore", _, _) => match data.claims.sede {
                Some(sede) if !sede.trim().is_empty() => Ok(Actor::Operatore {
                    id: data.claims.sub,
                    sede: sede.trim().into(),
                    agisce: !data.claims.sola_lettura,
                }),
                _ => Err("an `operatore` token needs the `sede` claim".into()),
            },
            ("integratore", _, _) => Ok(Actor::Integratore { id: data.claims.sub }),
            ("operazioni", _, _) => Ok(Actor::Operazioni { id: data.claims.sub }),
            _ => Err("the token's `ruolo` is not one this API serves".into()),
        };
        Ok(Verified { actor: actor?, jti, exp })
    }

    /// With `jti_replay` on, records the token's id: false when it was used before (a replay). Now and then
    /// the ids of expired tokens are purged, so the table holds only the live ones.
    async fn first_use(&self, store: &crate::store::Store, verified: &Verified) -> Result<bool, Problem> {
        let (true, Some(jti)) = (self.jti_replay, verified.jti.as_deref()) else { return Ok(true) };
        let now = chrono::Utc::now().timestamp();
        let unavailable = |e: crate::store::StoreError| {
            tracing::error!(error = %e, "the token replay cache failed");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the service cannot answer right now: try again later")
        };
        // Kept past `exp` by the leeway: a token is accepted that long after it expires.
        let until = verified.exp.saturating_add(i64::try_from(self.validation.leeway).unwrap_or(i64::MAX));
        let first = store.first_use_of_jti(jti, until, now).await.map_err(unavailable)?;
        if self.recorded.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            store.purge_jti(now).await.map_err(unavailable)?;
        }
        Ok(first)
    }
}

/// The actor of an authenticated request.
pub struct Authenticated(pub Actor);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let refuse = |detail: String| {
            Problem::new(StatusCode::UNAUTHORIZED, detail).with_header(WWW_AUTHENTICATE, "Bearer realm=\"smart-task\"")
        };
        let Some(api) = &state.api else { return Err(refuse("the API is not configured".into())) };
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| refuse("send `Authorization: Bearer <token>`".into()))?;
        let verified = api.verifier.verify(token.trim()).map_err(|e| refuse(e.to_string()))?;
        if !api.verifier.first_use(&state.store, &verified).await? {
            return Err(refuse("the token was already used (its `jti` was seen): get a new one".into()));
        }
        Ok(Authenticated(verified.actor))
    }
}
