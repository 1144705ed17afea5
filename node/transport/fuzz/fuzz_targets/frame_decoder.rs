//! Feeds arbitrary bytes, in arbitrary chunks, to the session stream decoder: it must never
//! panic, never buffer past one frame over the limit, and re-encode every frame it accepts to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongroom_transport::frame::{
    Frame, FrameDecoder, LEN_PREFIX, decode_payload, encode_message, encode_open,
};

const MAX: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so frames straddle reads in every way.
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let mut decoder = FrameDecoder::new(MAX);
    let mut reencoded = Vec::new();
    let mut failed = false;
    for piece in rest.chunks(chunk) {
        decoder.feed(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let bytes = match &frame {
                        Frame::Open(open) => encode_open(open),
                        Frame::Message { kind, body } => {
                            encode_message(*kind, body, MAX).expect("accepted frames fit the limit")
                        }
                    };
                    assert_eq!(decode_payload(&bytes[LEN_PREFIX..]), Ok(frame));
                    reencoded.extend_from_slice(&bytes);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(decoder.buffered() <= LEN_PREFIX + MAX as usize + chunk);
        if failed {
            break;
        }
    }
    if !failed && decoder.finish().is_ok() {
        // A clean stream re-encodes to exactly the bytes that were fed.
        assert_eq!(reencoded.as_slice(), rest);
    }
    // The one-shot payload decoder never panics either.
    let _ = decode_payload(rest);
});
