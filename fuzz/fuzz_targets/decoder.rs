//! The decoder never panics, and feeding the same bytes in different splits
//! yields the same frames, body bytes and errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::codec::{Decoder, Event, Limits};

#[derive(Debug, PartialEq)]
enum Seen {
    Header(Vec<u8>),
    Body(Vec<u8>),
    End(Option<[u8; 16]>),
    Error(tether_proto::DecodeError),
}

fn run(data: &[u8], step: usize) -> Vec<Seen> {
    let mut hb = [0u8; 256];
    let mut dec = Decoder::new(&mut hb[..], Limits { max_header: 200, max_body: 4096 });
    let mut seen: Vec<Seen> = Vec::new();
    for chunk in data.chunks(step) {
        let mut rest = chunk;
        loop {
            let (n, r) = dec.handle_bytes(rest);
            assert!(n <= rest.len());
            rest = &rest[n..];
            match r {
                Ok(Some(Event::Header(f))) => {
                    let _ = f.parse();
                    seen.push(Seen::Header(f.header.to_vec()));
                }
                Ok(Some(Event::Body(b))) => match seen.last_mut() {
                    // Merge body chunks: their split is the only allowed difference.
                    Some(Seen::Body(prev)) => prev.extend_from_slice(b),
                    _ => seen.push(Seen::Body(b.to_vec())),
                },
                Ok(Some(Event::End { tag })) => seen.push(Seen::End(tag)),
                Ok(None) => {
                    assert!(rest.is_empty(), "Ok(None) must mean all input consumed");
                    break;
                }
                Err(e) => seen.push(Seen::Error(e)),
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&s, data)) = data.split_first() else { return };
    let whole = run(data, data.len().max(1));
    let split = run(data, usize::from(s % 31) + 1);
    assert_eq!(whole, split);
});
