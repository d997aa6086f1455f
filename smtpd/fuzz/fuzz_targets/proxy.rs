//! The PROXY header parser: never panics, never asks for more bytes past the bound,
//! and a decision on any prefix is the decision on the whole input (so a header split
//! across reads parses the same, and its strict prefixes are all `Incomplete`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::protocol::proxy::{MAX_PROXY_HEADER_BYTES, ProxyParse, parse};

fuzz_target!(|input: &[u8]| {
    let whole = parse(input);
    match whole {
        Ok(ProxyParse::Incomplete) => assert!(input.len() < MAX_PROXY_HEADER_BYTES),
        Ok(ProxyParse::Done { consumed, .. }) => {
            assert!(consumed <= input.len() && consumed <= MAX_PROXY_HEADER_BYTES);
            assert_eq!(parse(&input[..consumed]), whole);
            assert_eq!(parse(&input[..consumed - 1]), Ok(ProxyParse::Incomplete));
        }
        Err(_) => {}
    }
    // Every cut in the first 32 bytes, then about 64 spread over the rest: checking
    // every cut would make long inputs quadratic.
    let step = (input.len() / 64).max(1);
    let cuts = (0..input.len().min(32)).chain((32..input.len()).step_by(step));
    for cut in cuts {
        let prefix = parse(&input[..cut]);
        if prefix != Ok(ProxyParse::Incomplete) {
            assert_eq!(prefix, whole, "cut at {cut}");
        }
    }
});
