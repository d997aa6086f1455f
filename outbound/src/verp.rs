//! VERP return paths and unsubscribe addresses that nobody can forge.
//!
//! Owns: `bounces+<queue id>-<tag>@<bounce domain>` (and the same shape for
//! unsubscribe addresses), where the tag is the first 10 characters (50 bits,
//! base32) of HMAC-SHA256(key, kind ‖ queue id). A bounce or unsubscribe mail to an
//! address whose tag does not verify is ignored: only mail we sent can be bounced or
//! unsubscribed.
//! Must not: do I/O.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const TAG_LEN: usize = 10;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Which address family: bounces (DSNs) or unsubscribe requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bounce,
    Unsubscribe,
}

/// The VERP settings, from `[bounces]`.
#[derive(Debug, Clone)]
pub struct Verp {
    pub domain: String,
    pub bounce_prefix: String,
    pub unsubscribe_prefix: String,
    key: Vec<u8>,
}

impl Verp {
    pub fn new(domain: &str, bounce_prefix: &str, unsubscribe_prefix: &str, key: &[u8]) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
            bounce_prefix: bounce_prefix.to_ascii_lowercase(),
            unsubscribe_prefix: unsubscribe_prefix.to_ascii_lowercase(),
            key: key.to_vec(),
        }
    }

    fn tag(&self, kind: Kind, queue_id: i64) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(match kind {
            Kind::Bounce => b"b",
            Kind::Unsubscribe => b"u",
        });
        mac.update(queue_id.to_string().as_bytes());
        let digest = mac.finalize().into_bytes();
        // 5 bits per character from the digest's leading bits.
        let mut bits: u64 = 0;
        for b in digest.iter().take(8) {
            bits = (bits << 8) | u64::from(*b);
        }
        (0..TAG_LEN)
            .map(|i| {
                let index = (bits >> (64 - 5 * (i + 1))) & 31;
                char::from(BASE32[index as usize])
            })
            .collect()
    }

    fn prefix(&self, kind: Kind) -> &str {
        match kind {
            Kind::Bounce => &self.bounce_prefix,
            Kind::Unsubscribe => &self.unsubscribe_prefix,
        }
    }

    /// The address for `queue_id`.
    pub fn address(&self, kind: Kind, queue_id: i64) -> String {
        format!(
            "{}+{}-{}@{}",
            self.prefix(kind),
            queue_id,
            self.tag(kind, queue_id),
            self.domain
        )
    }

    /// Which kind of our address this is, if it has our shape (tag not checked).
    pub fn kind_of(&self, address: &str) -> Option<Kind> {
        let (local, domain) = address.rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let (prefix, _) = local.split_once('+')?;
        [Kind::Bounce, Kind::Unsubscribe]
            .into_iter()
            .find(|k| prefix.eq_ignore_ascii_case(self.prefix(*k)))
    }

    /// The queue id an address stands for, if it is ours and its tag verifies.
    pub fn verify(&self, address: &str) -> Result<(Kind, i64), VerpError> {
        let kind = self.kind_of(address).ok_or(VerpError::NotOurs)?;
        let (local, _) = address.rsplit_once('@').ok_or(VerpError::NotOurs)?;
        let (_, rest) = local.split_once('+').ok_or(VerpError::NotOurs)?;
        let (id, tag) = rest.split_once('-').ok_or(VerpError::Malformed)?;
        let id: i64 = id.parse().map_err(|_| VerpError::Malformed)?;
        let expected = self.tag(kind, id);
        let tag = tag.to_ascii_lowercase();
        // Constant time: the comparison must not tell a forger how many characters
        // of a guessed tag are right.
        let same = expected.len() == tag.len()
            && expected
                .bytes()
                .zip(tag.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok((kind, id))
        } else {
            Err(VerpError::BadTag)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("not a VERP address of ours")]
    NotOurs,
    #[error("malformed VERP address")]
    Malformed,
    #[error("VERP tag does not verify (forged or for another key)")]
    BadTag,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn verp() -> Verp {
        Verp::new("Bounce.Test", "bounces", "unsubscribe", b"secret")
    }

    #[test]
    fn addresses_round_trip_and_are_case_insensitive() {
        let v = verp();
        let a = v.address(Kind::Bounce, 42);
        assert!(a.starts_with("bounces+42-"), "{a}");
        assert!(a.ends_with("@bounce.test"));
        assert_eq!(
            a.len(),
            "bounces+42-".len() + TAG_LEN + "@bounce.test".len()
        );
        assert_eq!(v.verify(&a), Ok((Kind::Bounce, 42)));
        assert_eq!(v.verify(&a.to_uppercase()), Ok((Kind::Bounce, 42)));
        let u = v.address(Kind::Unsubscribe, 42);
        assert_eq!(v.verify(&u), Ok((Kind::Unsubscribe, 42)));
        assert_ne!(
            a.split('-').nth(1),
            u.split('-').nth(1),
            "tags differ by kind"
        );
    }

    #[test]
    fn forgeries_are_refused() {
        let v = verp();
        let a = v.address(Kind::Bounce, 42);
        let tag = a
            .split_once('-')
            .unwrap()
            .1
            .split('@')
            .next()
            .unwrap()
            .to_owned();
        // Another id with this tag, a changed tag, another key, another kind.
        assert_eq!(
            v.verify(&format!("bounces+43-{tag}@bounce.test")),
            Err(VerpError::BadTag)
        );
        let mut bad = tag.clone().into_bytes();
        bad[0] = if bad[0] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(
            v.verify(&format!("bounces+42-{bad}@bounce.test")),
            Err(VerpError::BadTag)
        );
        let other = Verp::new("bounce.test", "bounces", "unsubscribe", b"other");
        assert_eq!(other.verify(&a), Err(VerpError::BadTag));
        assert_eq!(
            v.verify(&format!("unsubscribe+42-{tag}@bounce.test")),
            Err(VerpError::BadTag)
        );
        assert_eq!(
            v.verify("bounces+42@bounce.test"),
            Err(VerpError::Malformed)
        );
        assert_eq!(
            v.verify("bounces+x-abc@bounce.test"),
            Err(VerpError::Malformed)
        );
        assert_eq!(v.verify("someone@bounce.test"), Err(VerpError::NotOurs));
        assert_eq!(
            v.verify(&a.replace("bounce.test", "other.test")),
            Err(VerpError::NotOurs)
        );
    }
}
