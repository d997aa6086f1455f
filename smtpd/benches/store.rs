//! Micro-benchmark of a storage batch commit into SQLite at several batch sizes
//! (synchronous=FULL, WAL): what group commit buys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smtpd::handoff::{CompletionSink, ConnKey, Envelope, Submission};
use smtpd::store::{StageConfig, StorageStage, StoreUrl};

fn envelope() -> Envelope {
    let mut data = b"Subject: bench\r\nFrom: a@b.example\r\nTo: x@example.com\r\n\r\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', 1000));
    data.extend_from_slice(b"\r\n");
    Envelope {
        mail_from: "a@b.example".into(),
        rcpt_to: vec!["x@example.com".into()],
        data,
        data_offset: 0,
        helo: "client.example".into(),
        esmtp: true,
        smtputf8: false,
        body_8bit: false,
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        is_tls: false,
    }
}

fn batch_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("sqlite_batch_commit");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for batch in [1usize, 16, 256] {
        let path = dir.path().join(format!("b{batch}.sqlite"));
        let mut config = StageConfig::new("mx.bench");
        config.batch_max_messages = batch;
        config.batch_max_delay = Duration::from_secs(1);
        let stage = StorageStage::start(&StoreUrl::Sqlite(path), config).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let sink = Arc::new(CompletionSink::new(tx, waker));
        let sender = stage.sender();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("{batch}_messages_1KB"), |b| {
            b.iter(|| {
                for slot in 0..batch {
                    sender
                        .send(Submission {
                            envelope: envelope(),
                            spool: None,
                            received_at: SystemTime::now(),
                            conn: ConnKey {
                                slot,
                                generation: 0,
                            },
                            reply: Arc::clone(&sink),
                        })
                        .unwrap();
                }
                for _ in 0..batch {
                    rx.recv_timeout(Duration::from_secs(30))
                        .unwrap()
                        .result
                        .unwrap();
                }
            })
        });
        drop(sender);
        stage.join().unwrap();
    }
    g.finish();
}

criterion_group!(benches, batch_commit);
criterion_main!(benches);
