//! DKIM signing (RFC 6376; Ed25519 per RFC 8463) with `mail-auth`'s ring backend.
//!
//! Owns: the keys of each signing domain (loaded once at start from `[dkim]`, see
//! [`Keys::load`]), the list of signed headers, signing a rendered message by its
//! header From domain (one `DKIM-Signature` per key of that domain), the TXT record
//! of a key (`outbound dkim generate`, `dns-records`, `dns-check`) and key generation.
//! Must not: do I/O after start (signing runs in the delivery workers, just before
//! DATA), or implement any cryptography itself: every signature comes from
//! `mail-auth`, every key from ring or the `rsa` crate.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Headers signed when present (absent ones are signed as absent, so they cannot be
/// added later). RFC 8058 requires both List-Unsubscribe headers to be signed.
pub const SIGNED_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Key algorithm: RSA-2048 with SHA-256 (`k=rsa`), or Ed25519-SHA256 (`k=ed25519`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    pub fn dns_name(self) -> &'static str {
        match self {
            Self::Rsa => "rsa",
            Self::Ed25519 => "ed25519",
        }
    }
}

/// A signer per key, built once at load (domain, selector and headers fixed).
enum Private {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// One key of a domain: its selector, the private key and the public key as the
/// TXT record's `p=` carries it (SubjectPublicKeyInfo for RSA, the 32 raw bytes for
/// Ed25519).
pub struct DomainKey {
    pub selector: String,
    pub algorithm: Algorithm,
    pub public: Vec<u8>,
    pub path: PathBuf,
    private: Private,
}

impl fmt::Debug for DomainKey {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainKey")
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("path", &self.path)
            .finish()
    }
}

impl DomainKey {
    /// The TXT record's value, `v=DKIM1; k=...; p=...`.
    pub fn txt_value(&self) -> String {
        txt_value(self.algorithm, &self.public)
    }
}

/// Every signing domain's keys, by lowercased domain.
#[derive(Debug, Default)]
pub struct Keys {
    domains: HashMap<String, Vec<DomainKey>>,
}

/// A key as configured: selector and file.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub selector: String,
    pub key_file: PathBuf,
    /// The config field naming the file, for errors.
    pub field: String,
}

impl Keys {
    /// Loads every configured key; an error names the field and says why.
    pub fn load(specs: &HashMap<String, Vec<KeySpec>>) -> Result<Self, (String, String)> {
        let mut domains = HashMap::new();
        for (domain, keys) in specs {
            let mut loaded = Vec::new();
            for spec in keys {
                let key = load_key(&spec.key_file, &spec.selector, domain)
                    .map_err(|e| (spec.field.clone(), e))?;
                loaded.push(key);
            }
            domains.insert(domain.to_ascii_lowercase(), loaded);
        }
        Ok(Self { domains })
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn for_domain(&self, domain: &str) -> &[DomainKey] {
        self.domains
            .get(&domain.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// The `DKIM-Signature` header fields for `message` (CRLF line endings, as sent),
    /// one per key of its header From domain, ready to be put in front of it; None
    /// when that domain has no key (or the message has no From). A key that fails
    /// to sign is logged and skipped: the message still goes, unsigned by it.
    /// `fallback` signs as that domain when the From domain has no key: the relay's
    /// own DSNs (From the host name) are signed with the bounce domain's key.
    pub fn sign(&self, message: &[u8], fallback: Option<&str>) -> Option<Vec<u8>> {
        if self.domains.is_empty() {
            return None;
        }
        let from = from_domain(message);
        let (domain, keys) = match from
            .as_ref()
            .and_then(|d| self.domains.get(d).map(|k| (d, k)))
        {
            Some((d, k)) => (d.clone(), k),
            None => {
                let d = fallback?.to_ascii_lowercase();
                let k = self.domains.get(&d)?;
                (d, k)
            }
        };
        let mut out = Vec::new();
        for key in keys {
            let signed = match &key.private {
                Private::Rsa(s) => s.sign(message),
                Private::Ed25519(s) => s.sign(message),
            };
            match signed {
                Ok(sig) => out.extend_from_slice(unfold_last(sig.to_header()).as_bytes()),
                Err(e) => {
                    tracing::warn!(domain, selector = key.selector, error = %e, "DKIM signing failed")
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// mail-auth folds before the closing `;` when the `b=` value ends a line, but signs
/// the field without that fold; a verifier keeps the fold (it is outside the tag
/// value, RFC 6376 §3.2) and the signature fails. So the fold goes.
fn unfold_last(header: String) -> String {
    match header.strip_suffix("\r\n\t;\r\n") {
        Some(head) => format!("{head};\r\n"),
        None => header,
    }
}

/// The lowercased domain of the message's header From (its first address).
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let addr = parsed.from()?.first()?.address()?;
    let (_, domain) = addr.rsplit_once('@')?;
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

/// The DER inside a PEM block labelled `PRIVATE KEY` (PKCS#8).
fn pem_der(text: &str) -> Result<Vec<u8>, String> {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = text
        .find(begin)
        .ok_or("not a PKCS#8 PEM file (no \"-----BEGIN PRIVATE KEY-----\")")?;
    let rest = &text[start + begin.len()..];
    let stop = rest.find(end).ok_or("PEM block has no END line")?;
    let b64: String = rest[..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(b64)
        .map_err(|e| format!("PEM body is not base64: {e}"))
}

/// Reads a PKCS#8 PEM private key, RSA or Ed25519 (told apart by trying both).
pub fn load_key(path: &Path, selector: &str, domain: &str) -> Result<DomainKey, String> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = pem_der(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // Keys from `openssl genpkey` are PKCS#8 v1 (no public key inside): accepted.
    if let Ok(k) = Ed25519Key::from_pkcs8_maybe_unchecked_der(&der) {
        return Ok(DomainKey {
            selector: selector.to_owned(),
            algorithm: Algorithm::Ed25519,
            public: k.public_key(),
            path: path.to_owned(),
            private: Private::Ed25519(
                DkimSigner::from_key(k)
                    .domain(domain)
                    .selector(selector)
                    .headers(SIGNED_HEADERS),
            ),
        });
    }
    let rsa_key = rsa::RsaPrivateKey::from_pkcs8_der(&der)
        .map_err(|e| format!("{}: neither an Ed25519 nor an RSA key: {e}", path.display()))?;
    let public = rsa_key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .as_bytes()
        .to_vec();
    let k = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        der.as_slice(),
    )))
    .map_err(|e| format!("{}: RSA key rejected: {e}", path.display()))?;
    Ok(DomainKey {
        selector: selector.to_owned(),
        algorithm: Algorithm::Rsa,
        public,
        path: path.to_owned(),
        private: Private::Rsa(
            DkimSigner::from_key(k)
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS),
        ),
    })
}

pub fn txt_value(algorithm: Algorithm, public: &[u8]) -> String {
    format!(
        "v=DKIM1; k={}; p={}",
        algorithm.dns_name(),
        B64.encode(public)
    )
}

/// A TXT record's value in zone-file form: quoted strings of at most 255 bytes.
pub fn quoted_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new private key as PKCS#8 PEM.
pub fn generate(algorithm: Algorithm) -> Result<String, String> {
    match algorithm {
        Algorithm::Ed25519 => {
            let der = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
            let body = B64.encode(der);
            let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
            for line in body.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END PRIVATE KEY-----\n");
            Ok(pem)
        }
        Algorithm::Rsa => {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| e.to_string())?;
            key.to_pkcs8_pem(LineEnding::LF)
                .map(|p| p.to_string())
                .map_err(|e| e.to_string())
        }
    }
}

/// `outbound dkim generate`: writes the key (mode 0600, never over an existing file)
/// and returns the zone-file line of its TXT record.
pub fn generate_to_file(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    out: &Path,
) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = generate(algorithm).map_err(|e| anyhow::anyhow!("key generation: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    let key = load_key(out, selector, domain).map_err(|e| anyhow::anyhow!(e))?;
    Ok(txt_line(domain, &key))
}

/// `S._domainkey.DOMAIN. IN TXT "v=DKIM1; ..."`.
pub fn txt_line(domain: &str, key: &DomainKey) -> String {
    format!(
        "{}._domainkey.{}. IN TXT {}",
        key.selector,
        domain.trim_end_matches('.'),
        quoted_strings(&key.txt_value())
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn keys_with(dir: &Path, algorithms: &[Algorithm]) -> Keys {
        let mut specs = Vec::new();
        for (i, a) in algorithms.iter().enumerate() {
            let path = dir.join(format!("k{i}.pem"));
            std::fs::write(&path, generate(*a).unwrap()).unwrap();
            specs.push(KeySpec {
                selector: format!("s{i}"),
                key_file: path,
                field: "f".into(),
            });
        }
        Keys::load(&HashMap::from([("Example.com".to_owned(), specs)])).unwrap()
    }

    #[test]
    fn signs_by_header_from_domain_once_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys_with(dir.path(), &[Algorithm::Rsa, Algorithm::Ed25519]);
        let msg = b"From: A <a@example.com>\r\nTo: b@x.org\r\nSubject: hi\r\n\r\nbody\r\n";
        let sig = String::from_utf8(keys.sign(msg, None).unwrap()).unwrap();
        assert_eq!(sig.matches("DKIM-Signature:").count(), 2);
        assert!(sig.contains("a=rsa-sha256") && sig.contains("a=ed25519-sha256"));
        assert!(sig.contains("d=example.com"));
        let other = b"From: a@other.com\r\n\r\nbody\r\n";
        assert!(keys.sign(other, None).is_none());
        let dsn = String::from_utf8(keys.sign(other, Some("example.com")).unwrap()).unwrap();
        assert!(dsn.contains("d=example.com"));
    }

    #[test]
    fn txt_records_split_into_255_byte_strings() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys_with(dir.path(), &[Algorithm::Rsa]);
        let line = txt_line("example.com", &keys.for_domain("example.com")[0]);
        assert!(line.starts_with("s0._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p="));
        assert_eq!(line.matches('"').count(), 4, "{line}");
    }

    #[test]
    fn a_file_that_is_not_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.pem");
        std::fs::write(&p, "hello").unwrap();
        assert!(
            load_key(&p, "s", "example.com")
                .unwrap_err()
                .contains("not a PKCS#8 PEM")
        );
    }
}
