//! The DATA scanner: never panics, never keeps more than the limit, and gives the
//! same result however the input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::protocol::data::{DataReceiver, Progress};

const MAX_MESSAGE_BYTES: usize = 4096;

fn scan(chunks: &[&[u8]]) -> (Option<usize>, Option<Result<Vec<u8>, smtpd::protocol::data::DataError>>) {
    let mut r = DataReceiver::new(MAX_MESSAGE_BYTES, 200);
    let mut offset = 0;
    for chunk in chunks {
        if let Progress::Done { consumed } = r.feed(chunk) {
            return (Some(offset + consumed), Some(r.finish()));
        }
        offset += chunk.len();
    }
    (None, None)
}

fuzz_target!(|input: (&[u8], u16)| {
    let (bytes, cut) = input;
    let whole = scan(&[bytes]);
    let cut = usize::from(cut) % (bytes.len() + 1);
    let (a, b) = bytes.split_at(cut);
    assert_eq!(whole, scan(&[a, b]));
    if let (_, Some(Ok(body))) = &whole {
        assert!(body.len() <= MAX_MESSAGE_BYTES);
        // What is kept has only CRLF line endings.
        for (i, &c) in body.iter().enumerate() {
            if c == b'\n' {
                assert_eq!(body.get(i.wrapping_sub(1)), Some(&b'\r'));
            }
        }
    }
});
