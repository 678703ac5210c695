//! Tokens: the secret a client presents, the digest the server keeps, and the
//! record of what the token may do. A secret is shown once, when it is made,
//! and never stored, logged or printed: [`TokenSecret`] has no `Debug` or
//! `Display` that shows it.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::{Prefix, ProjectId, Timestamp};

/// What a token may do. The order is the order of rights: each role can do
/// what the ones before it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Manage,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Manage => "manage",
            Role::Admin => "admin",
        }
    }
}

/// How a token came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenSource {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "simple-pykv")]
    SimplePykv,
    #[serde(rename = "import")]
    Import,
    #[serde(rename = "env")]
    Env,
    #[serde(rename = "bootstrap")]
    Bootstrap,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::V1 => "v1",
            TokenSource::SimplePykv => "simple-pykv",
            TokenSource::Import => "import",
            TokenSource::Env => "env",
            TokenSource::Bootstrap => "bootstrap",
        }
    }
}

/// SHA-256 of a secret: all the server keeps of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Constant-time equality, for the final comparison after a lookup.
    pub fn matches(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Digest {
    /// A digest of 32 random bytes: the digest of no secret anyone can
    /// present (an imported token's, until its key is first verified).
    pub fn random() -> Result<Digest, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Digest(bytes))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest(..)")
    }
}

/// A token secret: `kvs_` and 43 base64url characters (256 random bits).
pub struct TokenSecret(String);

impl TokenSecret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Result<TokenSecret, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(TokenSecret(format!(
            "kvs_{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// Any presented credential. Its form is not checked here: an unknown or
    /// malformed secret is simply one whose digest matches no token.
    pub fn presented(text: &str) -> TokenSecret {
        TokenSecret(text.to_owned())
    }

    /// Whether the text has the form of a secret that this server issues.
    pub fn is_well_formed(text: &str) -> bool {
        text.len() == 47
            && text.starts_with("kvs_")
            && text[4..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    pub fn digest(&self) -> Digest {
        Digest(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The secret itself, for the one answer that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// The most PBKDF2 rounds an imported digest may ask for: a verification
/// costs this many HMACs on a blocking thread.
const MAX_PBKDF2_ROUNDS: u32 = 2_000_000;

/// Why an imported digest was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "expected pbkdf2_sha256$<iterations>$<salt>$<hash> (iterations 1 to {MAX_PBKDF2_ROUNDS}, \
     salt and hash base64url without padding, hash 16 to 64 bytes): {0}"
)]
pub struct ImportedDigestError(&'static str);

/// A digest that another server kept of an API key: Simple-PyKV's
/// `pbkdf2_sha256$<iterations>$<salt>$<hash>` (salt and hash base64url
/// without padding; the hash is PBKDF2-HMAC-SHA256 of the key's UTF-8
/// bytes, as long as the hash). kvs keeps it only until the key is first
/// presented; from then on the token has a SHA-256 digest like any other.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportedDigest {
    text: String,
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl ImportedDigest {
    pub fn parse(text: &str) -> Result<ImportedDigest, ImportedDigestError> {
        let mut parts = text.split('$');
        let (Some(scheme), Some(rounds), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ImportedDigestError("not four fields separated by $"));
        };
        if scheme != "pbkdf2_sha256" {
            return Err(ImportedDigestError("the scheme is not pbkdf2_sha256"));
        }
        let iterations = rounds
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PBKDF2_ROUNDS).contains(n))
            .ok_or(ImportedDigestError("bad iterations"))?;
        let salt = URL_SAFE_NO_PAD
            .decode(salt)
            .map_err(|_| ImportedDigestError("the salt is not base64url"))?;
        let hash = URL_SAFE_NO_PAD
            .decode(hash)
            .map_err(|_| ImportedDigestError("the hash is not base64url"))?;
        if salt.is_empty() || salt.len() > 256 {
            return Err(ImportedDigestError("bad salt length"));
        }
        if !(16..=64).contains(&hash.len()) {
            return Err(ImportedDigestError("bad hash length"));
        }
        Ok(ImportedDigest {
            text: text.to_owned(),
            iterations,
            salt,
            hash,
        })
    }

    /// The digest as it was given (and as it is stored).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `presented` is the key this digest was made from: PBKDF2 of
    /// it (slow on purpose: run it on a blocking thread), compared in
    /// constant time.
    pub fn verify(&self, presented: &str) -> bool {
        let mut derived = vec![0u8; self.hash.len()];
        pbkdf2::pbkdf2_hmac::<Sha256>(
            presented.as_bytes(),
            &self.salt,
            self.iterations,
            &mut derived,
        );
        derived.ct_eq(&self.hash).into()
    }
}

impl fmt::Debug for ImportedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImportedDigest(..)")
    }
}

/// A token's public id, used in URLs to list and revoke it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(String);

impl TokenId {
    pub fn generate() -> Result<TokenId, getrandom::Error> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)?;
        Ok(TokenId(format!("tok_{}", hex::encode(bytes))))
    }

    pub fn from_path(text: &str) -> TokenId {
        TokenId(text.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything the server keeps about a token (on disk as the engine's codec's
/// own versioned record, not as this struct).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub digest: Digest,
    pub role: Role,
    /// `None` for admin tokens.
    pub project: Option<ProjectId>,
    pub prefix: Option<String>,
    pub name: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub source: TokenSource,
}

impl TokenRecord {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    pub fn prefix(&self) -> Prefix {
        Prefix::parse(self.prefix.clone().unwrap_or_default()).unwrap_or_default()
    }

    /// The contract's "wider than": a higher role, any role on another
    /// project, no prefix or a prefix that does not start with `than`'s, or
    /// a later expiry (none is the latest). A manage token may only mint,
    /// list and revoke tokens that are not wider than itself.
    pub fn is_wider_than(&self, than: &TokenRecord) -> bool {
        let role = self.role > than.role;
        let project = self.project != than.project;
        let prefix = match (&than.prefix, &self.prefix) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(own), Some(other)) => !other.starts_with(own.as_str()),
        };
        let expiry = match (than.expires_at, self.expires_at) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(own), Some(other)) => other > own,
        };
        role || project || prefix || expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let (a, b) = (
            TokenSecret::generate().unwrap(),
            TokenSecret::generate().unwrap(),
        );
        assert!(TokenSecret::is_well_formed(a.expose()));
        assert_ne!(a.expose(), b.expose());
        assert!(!a.digest().matches(&b.digest()));
        assert!(
            a.digest()
                .matches(&TokenSecret::presented(a.expose()).digest())
        );
        assert_eq!(format!("{a:?}"), "TokenSecret(..)");
    }

    fn token(role: Role, prefix: Option<&str>, expires: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: TokenId::generate().unwrap(),
            digest: Digest([0; 32]),
            role,
            project: ProjectId::parse("p"),
            prefix: prefix.map(str::to_owned),
            name: None,
            created_at: Timestamp::from_millis(0),
            expires_at: expires.map(Timestamp::from_millis),
            source: TokenSource::V1,
        }
    }

    /// Python: `hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 1, 32)`.
    #[test]
    fn imported_digests_verify_pbkdf2_sha256() {
        let hash = hex::decode("120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b")
            .unwrap();
        let text = format!(
            "pbkdf2_sha256$1${}${}",
            URL_SAFE_NO_PAD.encode(b"salt"),
            URL_SAFE_NO_PAD.encode(&hash)
        );
        let digest = ImportedDigest::parse(&text).unwrap();
        assert!(digest.verify("password"));
        assert!(!digest.verify("passwore"));
        assert!(!digest.verify(""));
        assert_eq!(digest.as_str(), text);
        // RFC 7914's vector at 80,000 rounds, 64 bytes.
        let long = hex::decode(
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56\
             a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d",
        )
        .unwrap();
        let text = format!(
            "pbkdf2_sha256$80000${}${}",
            URL_SAFE_NO_PAD.encode(b"NaCl"),
            URL_SAFE_NO_PAD.encode(&long)
        );
        assert!(ImportedDigest::parse(&text).unwrap().verify("Password"));
        for bad in [
            "",
            "pbkdf2_sha256$1$c2FsdA",
            "pbkdf2_sha1$1$c2FsdA$Eg-2z_z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs",
            "pbkdf2_sha256$0$c2FsdA$Eg-2z_z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs",
            "pbkdf2_sha256$99999999$c2FsdA$Eg-2z_z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs",
            "pbkdf2_sha256$1$$Eg-2z_z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs",
            "pbkdf2_sha256$1$c2FsdA$EgA",
            "pbkdf2_sha256$1$c2FsdA=$Eg-2z_z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs",
            "pbkdf2_sha256$1$c2FsdA$Eg-2z_z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs$x",
        ] {
            assert!(ImportedDigest::parse(bad).is_err(), "{bad}");
        }
        assert!(
            ImportedDigest::parse(
                "pbkdf2_sha256$1$c2FsdA$Eg-2z_z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs"
            )
            .unwrap()
            .verify("password")
        );
    }

    #[test]
    fn wider_follows_role_prefix_and_expiry() {
        let manager = token(Role::Manage, Some("team/"), Some(3600));
        assert!(!token(Role::Read, Some("team/a/"), Some(1800)).is_wider_than(&manager));
        assert!(!token(Role::Manage, Some("team/"), Some(3600)).is_wider_than(&manager));
        assert!(token(Role::Read, None, Some(10)).is_wider_than(&manager));
        assert!(token(Role::Read, Some("tea"), Some(10)).is_wider_than(&manager));
        assert!(token(Role::Read, Some("team/c/"), None).is_wider_than(&manager));
        assert!(token(Role::Manage, Some("team/"), Some(7200)).is_wider_than(&manager));
        let unbounded = token(Role::Manage, None, None);
        assert!(!token(Role::Manage, Some("x"), None).is_wider_than(&unbounded));
        assert!(token(Role::Admin, None, None).is_wider_than(&unbounded));
    }
}
