//! DKIM signing cost per message (`cargo bench -p outbound --bench dkim`): RSA-2048
//! and Ed25519, a 5 KB and a 100 KB message, each signed as the worker signs it
//! (`dkim::Keys::sign`: From-domain lookup, header parse, canonicalization, hash,
//! signature). A bounded timing loop: 7 rounds of 200 messages, median per message.
//! The module is compiled in from the binary's source (outbound has no library).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../src/dkim.rs"]
#[allow(dead_code)]
mod dkim;

use std::collections::HashMap;
use std::time::Instant;

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: News <news@example.com>\r\nTo: ann@a.test\r\nSubject: Spring news\r\n\
Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nList-Unsubscribe: <mailto:u@example.com>\r\n\
List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n"
        .to_vec();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!("| key | message | median µs/message | rounds (µs/message) |");
    println!("| --- | --- | --- | --- |");
    for (name, alg) in [
        ("RSA-2048", dkim::Algorithm::Rsa),
        ("Ed25519", dkim::Algorithm::Ed25519),
    ] {
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, dkim::generate(alg).unwrap()).unwrap();
        let keys = dkim::Keys::load(&HashMap::from([(
            "example.com".to_owned(),
            vec![dkim::KeySpec {
                selector: "s1".into(),
                key_file: path,
                field: "bench".into(),
            }],
        )]))
        .unwrap();
        for size in [5 * 1024, 100 * 1024] {
            let msg = message(size);
            assert!(keys.sign(&msg, None).is_some());
            let mut rounds = Vec::new();
            for _ in 0..7 {
                let n = 200;
                let t = Instant::now();
                for _ in 0..n {
                    std::hint::black_box(keys.sign(std::hint::black_box(&msg), None));
                }
                rounds.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
            }
            let mut sorted = rounds.clone();
            sorted.sort_by(f64::total_cmp);
            let shown: Vec<String> = rounds.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "| {name} | {} KB | **{:.0}** | {} |",
                size / 1024,
                sorted[sorted.len() / 2],
                shown.join(" / ")
            );
        }
    }
}
