//! Tracking tokens: what a masked link (`/l/`), an open pixel (`/o/`), an
//! unsubscribe URL (`/u/`) or a double opt-in confirm link (`/c/`) names, signed
//! so that nobody can make one up.
//!
//! Wire form: `base64url(payload ‖ tag)` without padding, where `payload` is one
//! kind byte then unsigned LEB128 varints (campaign id, link id for links only,
//! subscriber id), and `tag` the first [`TAG_BYTES`] bytes of
//! HMAC-SHA256(key, [`DOMAIN`] ‖ payload). A link token of realistic ids is about
//! 26 characters. The domain-separation prefix keeps these MACs apart from the
//! VERP tags made with another key (should an operator reuse one).
//!
//! Owns: encoding, signing, verifying (constant-time tag comparison, via
//! `hmac`'s `verify_truncated_left`) and the length bound of a token.
//! Must not: do I/O, read the clock, or panic on any input (tokens come from the
//! internet).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the HMAC kept: 96 bits (the brief asks ≥ 80); a forger's chance per
/// guess is 2⁻⁹⁶.
pub const TAG_BYTES: usize = 12;
/// The longest payload: a kind byte and three 10-byte varints.
const MAX_PAYLOAD_BYTES: usize = 1 + 3 * 10;
/// The longest token text accepted; longer input is refused before decoding.
pub const MAX_TOKEN_CHARS: usize = (MAX_PAYLOAD_BYTES + TAG_BYTES).div_ceil(3) * 4;
/// Domain separation of the MAC input.
const DOMAIN: &[u8] = b"outbound-tracking-v1\0";

/// What a verified token names. Ids are the database's (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Claim {
    /// A masked link: campaign, link (`campaign_links.id`), subscriber.
    Link {
        campaign: i64,
        link: i64,
        subscriber: i64,
    },
    /// The open pixel of one recipient's message.
    Open { campaign: i64, subscriber: i64 },
    /// One recipient's unsubscribe URL.
    Unsubscribe { campaign: i64, subscriber: i64 },
    /// A double opt-in confirmation: list (`lists.id`) and subscriber. Its first
    /// id is the list's where the others carry the campaign's.
    Confirm { list: i64, subscriber: i64 },
}

impl Claim {
    fn kind_byte(self) -> u8 {
        match self {
            Self::Link { .. } => 1,
            Self::Open { .. } => 2,
            Self::Unsubscribe { .. } => 3,
            Self::Confirm { .. } => 4,
        }
    }

    /// The campaign (the list, of a confirmation): the payload's first id.
    pub fn campaign(self) -> i64 {
        match self {
            Self::Link { campaign, .. }
            | Self::Open { campaign, .. }
            | Self::Unsubscribe { campaign, .. } => campaign,
            Self::Confirm { list, .. } => list,
        }
    }

    pub fn subscriber(self) -> i64 {
        match self {
            Self::Link { subscriber, .. }
            | Self::Open { subscriber, .. }
            | Self::Unsubscribe { subscriber, .. }
            | Self::Confirm { subscriber, .. } => subscriber,
        }
    }
}

/// Why a token was refused. The web answers 404 to all alike; the reason is
/// for tests and debug logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("longer than {MAX_TOKEN_CHARS} characters")]
    TooLong,
    #[error("not base64url")]
    Encoding,
    #[error("too short")]
    TooShort,
    #[error("the signature does not match")]
    Signature,
    #[error("malformed payload")]
    Payload,
}

/// Signs and verifies tokens with one key. Keyed once; each use clones the keyed
/// state (no key schedule per request).
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<key>)")
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One canonical varint from the front of `input` (no overlong forms: each value
/// has one encoding), as a positive i64.
fn take_varint(input: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * u32::try_from(i).ok()?;
        value |= bits.checked_shl(shift)?;
        if (bits << shift) >> shift != bits {
            return None;
        }
        if byte & 0x80 == 0 {
            // A last byte of 0 after others is an overlong encoding.
            if i > 0 && byte == 0 {
                return None;
            }
            *input = input.get(i + 1..)?;
            return i64::try_from(value).ok().filter(|v| *v > 0);
        }
    }
    None
}

impl Signer {
    /// `key`: `tracking.key` (checked ≥ 16 bytes by the config).
    pub fn new(key: &[u8]) -> Self {
        // HMAC takes keys of any length: new_from_slice never fails for it.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        Self { mac }
    }

    fn tag(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    /// The token text of `claim`.
    pub fn sign(&self, claim: Claim) -> String {
        let mut bytes = Vec::with_capacity(MAX_PAYLOAD_BYTES + TAG_BYTES);
        bytes.push(claim.kind_byte());
        // Ids are positive; a negative one (never stored) is written as 0, which
        // verification refuses.
        let id = |v: i64| u64::try_from(v).unwrap_or(0);
        push_varint(&mut bytes, id(claim.campaign()));
        if let Claim::Link { link, .. } = claim {
            push_varint(&mut bytes, id(link));
        }
        push_varint(&mut bytes, id(claim.subscriber()));
        let tag = self.tag(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(tag.get(..TAG_BYTES).unwrap_or(&[]));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The claim of a token, when its signature holds and its payload is
    /// well-formed. Any changed, added or removed character is refused.
    pub fn verify(&self, token: &str) -> Result<Claim, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Encoding)?;
        let split = bytes
            .len()
            .checked_sub(TAG_BYTES)
            .filter(|n| *n >= 3)
            .ok_or(TokenError::TooShort)?;
        let (payload, tag) = bytes.split_at(split);
        // Constant-time comparison of the kept bytes.
        self.tag(payload)
            .verify_truncated_left(tag)
            .map_err(|_| TokenError::Signature)?;
        let (&kind, mut rest) = payload.split_first().ok_or(TokenError::Payload)?;
        let campaign = take_varint(&mut rest).ok_or(TokenError::Payload)?;
        let claim = match kind {
            1 => {
                let link = take_varint(&mut rest).ok_or(TokenError::Payload)?;
                let subscriber = take_varint(&mut rest).ok_or(TokenError::Payload)?;
                Claim::Link {
                    campaign,
                    link,
                    subscriber,
                }
            }
            2..=4 => {
                let subscriber = take_varint(&mut rest).ok_or(TokenError::Payload)?;
                match kind {
                    2 => Claim::Open {
                        campaign,
                        subscriber,
                    },
                    3 => Claim::Unsubscribe {
                        campaign,
                        subscriber,
                    },
                    _ => Claim::Confirm {
                        list: campaign,
                        subscriber,
                    },
                }
            }
            _ => return Err(TokenError::Payload),
        };
        if !rest.is_empty() {
            return Err(TokenError::Payload);
        }
        Ok(claim)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef-test-key")
    }

    fn link(campaign: i64, link: i64, subscriber: i64) -> Claim {
        Claim::Link {
            campaign,
            link,
            subscriber,
        }
    }

    #[test]
    fn round_trip_of_each_kind_and_extreme_ids() {
        let s = signer();
        for claim in [
            link(1, 1, 1),
            link(i64::MAX, i64::MAX, i64::MAX),
            Claim::Open {
                campaign: 7,
                subscriber: 1_000_000,
            },
            Claim::Unsubscribe {
                campaign: 300,
                subscriber: 128,
            },
            Claim::Confirm {
                list: 5,
                subscriber: 77,
            },
        ] {
            let t = s.sign(claim);
            assert!(t.len() <= MAX_TOKEN_CHARS, "{t}");
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(s.verify(&t), Ok(claim));
        }
        // Compact: realistic ids make a short URL.
        assert!(s.sign(link(12, 40, 1_500_000)).len() <= 27);
    }

    #[test]
    fn another_key_refuses() {
        let t = signer().sign(link(1, 2, 3));
        assert_eq!(
            Signer::new(b"another-key-of-16-bytes").verify(&t),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn truncated_extended_and_garbage_tokens_are_refused() {
        let s = signer();
        let t = s.sign(link(1, 2, 3));
        for n in 0..t.len() {
            assert!(s.verify(&t[..n]).is_err(), "prefix of {n}");
        }
        assert!(s.verify(&format!("{t}A")).is_err());
        assert!(s.verify(&format!("A{t}")).is_err());
        assert_eq!(s.verify(&"A".repeat(10_000)), Err(TokenError::TooLong));
        assert_eq!(s.verify("not base64!"), Err(TokenError::Encoding));
        assert_eq!(s.verify("=="), Err(TokenError::Encoding));
        assert_eq!(s.verify(""), Err(TokenError::TooShort));
    }

    #[test]
    fn a_token_of_another_kind_is_another_claim() {
        // The kind byte is signed: an open token never verifies as a link.
        let s = signer();
        let open = s.sign(Claim::Open {
            campaign: 1,
            subscriber: 2,
        });
        assert!(!matches!(s.verify(&open), Ok(Claim::Link { .. })));
        let mut bytes = URL_SAFE_NO_PAD.decode(&open).unwrap();
        bytes[0] = 3; // Unsubscribe, same ids: the tag no longer matches.
        assert_eq!(
            s.verify(&URL_SAFE_NO_PAD.encode(bytes)),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn well_signed_but_malformed_payloads_are_refused() {
        let s = signer();
        let forge = |payload: &[u8]| {
            let mut b = payload.to_vec();
            let tag = s.tag(payload).finalize().into_bytes();
            b.extend_from_slice(&tag[..TAG_BYTES]);
            URL_SAFE_NO_PAD.encode(b)
        };
        for payload in [
            &[9u8, 1, 1][..],        // unknown kind
            &[1, 1, 1][..],          // link without a subscriber
            &[2, 1, 1, 1][..],       // trailing byte
            &[2, 0, 1][..],          // id 0
            &[2, 0x81, 0x00, 1][..], // overlong varint
            &[
                2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1,
            ][..], // > i64
        ] {
            assert_eq!(
                s.verify(&forge(payload)),
                Err(TokenError::Payload),
                "{payload:?}"
            );
        }
        assert_eq!(
            s.verify(&forge(&[2, 5, 6])),
            Ok(Claim::Open {
                campaign: 5,
                subscriber: 6
            })
        );
    }

    proptest! {
        #[test]
        fn any_claim_round_trips(c in 1..i64::MAX, l in 1..i64::MAX, sub in 1..i64::MAX) {
            let s = signer();
            prop_assert_eq!(s.verify(&s.sign(link(c, l, sub))), Ok(link(c, l, sub)));
        }

        #[test]
        fn any_altered_character_is_refused(
            c in 1..1_000_000i64, l in 1..10_000i64, sub in 1..100_000_000i64,
            pos in any::<prop::sample::Index>(), ch in prop::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()),
        ) {
            let s = signer();
            let t = s.sign(link(c, l, sub));
            let i = pos.index(t.len());
            let mut altered = t.clone().into_bytes();
            prop_assume!(altered[i] != ch);
            altered[i] = ch;
            let altered = String::from_utf8(altered).unwrap();
            // base64's non-zero trailing bits are refused too: no alias verifies.
            prop_assert!(s.verify(&altered).is_err(), "{} → {}", t, altered);
        }

        #[test]
        fn any_input_is_refused_without_panic(input in ".{0,80}") {
            let _ = signer().verify(&input);
        }
    }
}
