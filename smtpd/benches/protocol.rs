//! Micro-benchmarks of the protocol core: command parsing, the DATA scanner
//! (bytes/s), and a whole pipelined transcript through the sans-IO session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smtpd::handoff::QueueId;
use smtpd::protocol::command::parse;
use smtpd::protocol::data::DataReceiver;
use smtpd::protocol::{DomainPolicy, Event, Session, SessionConfig};

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.bench".into(),
        max_message_bytes: 64 << 20,
        max_recipients: 100,
        max_data_line_bytes: 1 << 20,
        domains: DomainPolicy::Any,
        starttls: false,
        require_tls: false,
        max_errors: 1_000_000,
        max_junk_commands: 1_000_000,
    })
}

/// A realistic body: 76-column text lines, some starting with a dot.
fn body(bytes: usize) -> Vec<u8> {
    let mut out = b"Subject: benchmark\r\nFrom: a@b.example\r\n\r\n".to_vec();
    let mut n = 0;
    while out.len() < bytes {
        if n % 50 == 0 {
            out.extend_from_slice(b"..a line that starts with a dot\r\n");
        } else {
            out.extend_from_slice(&[b'x'; 74]);
            out.extend_from_slice(b"\r\n");
        }
        n += 1;
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn commands(c: &mut Criterion) {
    let mut g = c.benchmark_group("command");
    for line in [
        &b"MAIL FROM:<sender.name+tag@example.org> SIZE=12345 BODY=8BITMIME"[..],
        b"RCPT TO:<recipient@example.com>",
        b"EHLO client.example.org",
        b"NOOP",
    ] {
        let name = String::from_utf8_lossy(&line[..4]).into_owned();
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| b.iter(|| parse(black_box(line), false)));
    }
    g.finish();
}

fn data_scanner(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_scan");
    for size in [1 << 10, 50 << 10, 1 << 20] {
        let input = body(size);
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let mut r = DataReceiver::new(64 << 20, 1 << 20);
                black_box(r.feed(black_box(&input)));
                black_box(r.finish().map(|v| v.len()))
            })
        });
    }
    g.finish();
}

fn transcript(c: &mut Criterion) {
    let mut input = b"EHLO client.example\r\n".to_vec();
    for _ in 0..10 {
        input.extend_from_slice(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n");
        input.extend_from_slice(&body(1 << 10));
    }
    input.extend_from_slice(b"QUIT\r\n");
    let config = config();
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(10));
    g.bench_function("10_messages_1KB_pipelined", |b| {
        b.iter(|| {
            let mut s = Session::new(Arc::clone(&config), IpAddr::V4(Ipv4Addr::LOCALHOST));
            let mut out = Vec::with_capacity(4096);
            let mut rest = &input[..];
            loop {
                let fed = s.feed(rest, &mut out);
                rest = &rest[fed.consumed..];
                match fed.event {
                    Some(Event::Message(m)) => {
                        black_box(m);
                        s.on_stored(Ok(QueueId([1; 16])), &mut out);
                    }
                    Some(_) => break,
                    None if fed.consumed == 0 => break,
                    None => {}
                }
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, commands, data_scanner, transcript);
criterion_main!(benches);
