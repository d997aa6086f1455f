//! The BDAT body (RFC 3030): never panics, never keeps more than the limit, gives
//! the same result however the octets are split into chunks, and keeps exactly
//! what was sent when it accepts (binary: always; text: only CRLF line endings).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::protocol::chunk::ChunkedBody;
use smtpd::protocol::data::DataError;

const MAX_MESSAGE_BYTES: usize = 4096;

fn join(chunks: &[&[u8]], binary: bool) -> Result<Vec<u8>, DataError> {
    let mut body = ChunkedBody::new(MAX_MESSAGE_BYTES, 200, binary);
    for chunk in chunks {
        body.extend(chunk);
        assert!(body.buffered_bytes() <= 2 * MAX_MESSAGE_BYTES);
    }
    body.finish()
}

fuzz_target!(|input: (&[u8], u16, u16, bool)| {
    let (bytes, a, b, binary) = input;
    let whole = join(&[bytes], binary);
    let mut cuts = [usize::from(a) % (bytes.len() + 1), usize::from(b) % (bytes.len() + 1)];
    cuts.sort_unstable();
    let split = join(&[&bytes[..cuts[0]], &bytes[cuts[0]..cuts[1]], &bytes[cuts[1]..]], binary);
    assert_eq!(whole, split);
    if let Ok(kept) = &whole {
        assert_eq!(kept.as_slice(), bytes);
        assert!(kept.len() <= MAX_MESSAGE_BYTES);
        if !binary {
            for (i, &c) in kept.iter().enumerate() {
                match c {
                    b'\r' => assert_eq!(kept.get(i + 1), Some(&b'\n')),
                    b'\n' => assert!(i > 0 && kept[i - 1] == b'\r'),
                    _ => {}
                }
            }
        }
    } else if binary {
        assert!(bytes.len() > MAX_MESSAGE_BYTES);
    }
});
