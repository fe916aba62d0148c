//! The decoder never panics, and feeding the same bytes in different splits
//! yields the same frames, body bytes and errors. After each End, the frame
//! is still readable (`ended_frame`) with the header its Header event had,
//! until more input is fed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::codec::{Decoder, Event, Limits};
use tether_proto::wire::Flags;

#[derive(Debug, PartialEq)]
enum Seen {
    Header(Vec<u8>),
    Body(Vec<u8>),
    End(Option<[u8; 16]>),
    Error(tether_proto::DecodeError),
}

fn run(data: &[u8], step: usize) -> Vec<Seen> {
    let mut hb = [0u8; 256];
    let mut dec = Decoder::new(
        &mut hb[..],
        Limits {
            max_header: 200,
            max_body: 4096,
        },
    );
    let mut seen: Vec<Seen> = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for chunk in data.chunks(step) {
        let mut rest = chunk;
        loop {
            let fed = !rest.is_empty();
            let (n, r) = dec.handle_bytes(rest);
            assert!(n <= rest.len());
            rest = &rest[n..];
            let ended = matches!(r, Ok(Some(Event::End { .. })));
            match r {
                Ok(Some(Event::Header(f))) => {
                    let _ = f.parse();
                    current = Some(f.header.to_vec());
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
                Err(e) => {
                    current = None;
                    seen.push(Seen::Error(e))
                }
            }
            if ended {
                let f = dec.ended_frame().expect("the ended frame is readable");
                assert_eq!(Some(f.header), current.as_deref());
                let sealed = f.prefix.flags.contains(Flags::SEALED);
                assert_eq!(Some(&Seen::End(None)) != seen.last(), sealed);
                assert!(dec.frame().is_none());
            } else if fed {
                assert!(dec.ended_frame().is_none(), "input was fed");
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&s, data)) = data.split_first() else {
        return;
    };
    let whole = run(data, data.len().max(1));
    let split = run(data, usize::from(s % 31) + 1);
    assert_eq!(whole, split);
});
