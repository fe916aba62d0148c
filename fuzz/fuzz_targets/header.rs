//! Header parsing never panics; whatever parses re-encodes to the same bytes
//! (one message, one encoding) and survives a frame round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::{codec::encode_frame, Header};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Header::parse(data) else { return };
    let mut buf = vec![0u8; data.len() + 64];
    let enc = h.emit(&mut buf).expect("a parsed header re-encodes");
    assert_eq!(enc, data, "non-canonical encoding accepted");
    let mut fbuf = vec![0u8; data.len() + 64];
    let frame = encode_frame(&h, &[], &mut fbuf).expect("fits");
    assert_eq!(&frame[18..], data);
});
