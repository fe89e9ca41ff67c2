//! The signature check of bearer tokens done by ring, the project's one crypto provider: a
//! `jsonwebtoken::crypto::CryptoProvider` whose verifiers are ring's (ES256/ES384 fixed-size signatures,
//! RS256/384/512 and PS256/384/512 from the JWKS's modulus and exponent or PKCS#1 DER, EdDSA over Ed25519).
//! Measured on the API's hot path: RustCrypto's P-256, the default backend of `jsonwebtoken`, was a quarter
//! of the daemon's CPU at 875 submissions/s. Signing (only the benchmark's and the tests' tokens) and the
//! JWK helpers stay with the crate's RustCrypto backend; shared-secret algorithms are refused by
//! `api.auth` before a token is ever checked.

use std::sync::LazyLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

/// The provider; installed once per process by [`install`].
static RING: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
});

/// Makes ring verify every token of this process (a second call, or a provider installed before, is a no-op).
pub fn install() {
    let provider: &'static CryptoProvider = &RING;
    let _ = provider.install_default();
}

/// The public key as ring reads it.
enum Key {
    /// SEC1 point (EC), raw 32 bytes (Ed25519) or PKCS#1 DER (RSA).
    Bytes(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

struct RingVerifier {
    algorithm: Algorithm,
    ring: &'static dyn VerificationAlgorithm,
    key: Key,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let checked = match &self.key {
            Key::Bytes(bytes) => UnparsedPublicKey::new(self.ring, bytes).verify(msg, signature),
            Key::Rsa { n, e } => {
                let params = match self.algorithm {
                    Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                    _ => &sig::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let ring: &'static dyn VerificationAlgorithm = match algorithm {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        // Shared secrets (HS256 …) and whatever a later version of the crate adds.
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    let key = match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => Key::Bytes(bytes.clone()),
        DecodingKeyKind::RsaModulusExponent { n, e } => Key::Rsa { n: n.clone(), e: e.clone() },
    };
    let rsa = matches!(
        algorithm,
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512
    );
    if matches!(key, Key::Rsa { .. }) && !rsa {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier { algorithm: *algorithm, ring, key }))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, Validation, decode, encode};
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::{Value, json};

    use super::*;

    fn round_trip(algorithm: Algorithm, signing: &EncodingKey, verifying: &DecodingKey, other: &DecodingKey) {
        install();
        let claims = json!({"sub": "portale", "exp": 4_000_000_000_u64});
        let token = encode(&Header::new(algorithm), &claims, signing).expect("sign");
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        let read = decode::<Value>(&token, verifying, &validation).expect("ring verifies a good signature");
        assert_eq!(read.claims["sub"], "portale");
        let wrong_key = decode::<Value>(&token, other, &validation).expect_err("another key");
        assert_eq!(wrong_key.kind(), &ErrorKind::InvalidSignature);
        let (head, signature) = token.rsplit_once('.').expect("three parts");
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let tampered = format!("{head}.{flipped}{}", &signature[1..]);
        assert!(decode::<Value>(&tampered, verifying, &validation).is_err(), "a changed signature is refused");
    }

    #[test]
    fn ring_checks_es256_signatures() {
        let rng = ring::rand::SystemRandom::new();
        let pair = |_| {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
            let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
            let point = key.public_key().as_ref().to_vec();
            let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
            let verifying = DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..65])).expect("jwk");
            (EncodingKey::from_ec_der(pkcs8.as_ref()), verifying)
        };
        let ((signing, verifying), (_, other)) = (pair(0), pair(1));
        round_trip(Algorithm::ES256, &signing, &verifying, &other);
    }

    #[test]
    fn ring_checks_eddsa_signatures() {
        let rng = ring::rand::SystemRandom::new();
        let pair = |_| {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
            let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
            let b64 = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, key.public_key());
            (EncodingKey::from_ed_der(pkcs8.as_ref()), DecodingKey::from_ed_components(&b64).expect("jwk"))
        };
        let ((signing, verifying), (_, other)) = (pair(0), pair(1));
        round_trip(Algorithm::EdDSA, &signing, &verifying, &other);
    }

    #[test]
    fn shared_secrets_are_refused() {
        install();
        let token =
            encode(&Header::new(Algorithm::HS256), &json!({"sub": "x"}), &EncodingKey::from_secret(b"k").expect("key"))
                .expect("sign");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        let refused = decode::<Value>(&token, &DecodingKey::from_secret(b"k").expect("key"), &validation);
        assert_eq!(refused.expect_err("HS256").kind(), &ErrorKind::InvalidAlgorithm);
    }
}
