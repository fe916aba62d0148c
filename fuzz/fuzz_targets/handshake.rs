//! The shared handshake (`ClientHandshake` / `ServerHandshake`) with keys,
//! limits, capabilities, nonces and agents from the input, and a man in
//! the middle that may replace Hello, alter HelloAck, forge either proof,
//! or send messages out of order.
//!
//! Checked: no panic; the server yields session keys exactly when the Auth
//! proof equals HMAC(K, "tether-v1 client" | T) over the headers it saw
//! (computed here from their encoded bytes, as PROTOCOL.md section 5 says),
//! and the client likewise for AuthOk; a Hello or HelloAck changed in
//! flight makes the honest proof fail; an honest run with equal keys
//! succeeds and both sides' session keys interoperate (and refuse replays
//! and altered frames); negotiated limits are the smaller of both and at
//! least 64, and max_requests, max_name and max_path are announced as the
//! server set them; a repeated or early message is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::handshake::{
    client_proof, server_proof, ClientHandshake, HandshakeError, Opener, ServerHandshake,
    ServerPolicy, SessionKeys, Transcript, MIN_LIMIT,
};
use tether_proto::message::Proof;
use tether_proto::{Caps, Header, Hello, HelloAck, Message};

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for b in &mut a {
            *b = self.u8();
        }
        a
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn str(&mut self) -> &'a str {
        let n = usize::from(self.u8() % 24).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        core::str::from_utf8(s).unwrap_or("agent")
    }
    fn hello(&mut self) -> Hello<'a> {
        Hello {
            version: self.u8(),
            max_header: self.u16(),
            max_chunk: self.u32(),
            caps: Caps(self.u32()),
            nonce: self.bytes(),
            agent: self.str(),
        }
    }
}

/// T over the encoded header bytes (request id 0) of `hello` then `ack`.
fn transcript(hello: &Hello<'_>, ack: &HelloAck<'_>) -> [u8; 32] {
    let mut t = Transcript::new();
    let mut buf = [0u8; 512];
    for h in [
        Header::new(0, Message::Hello(hello.clone())),
        Header::new(0, Message::HelloAck(ack.clone())),
    ] {
        t.add(h.emit(&mut buf).expect("a handshake header fits 512 bytes"));
    }
    t.finish()
}

/// Sealed traffic both ways verifies, and a replayed or altered frame does not.
fn keys_interoperate(client: &mut SessionKeys, server: &mut SessionKeys) {
    one_way(client, server);
    one_way(server, client);
}

fn one_way(a: &mut SessionKeys, b: &mut SessionKeys) {
    {
        let mut t = a.seal.begin(b"head");
        t.update(b"body");
        let tag = t.finish();
        let mut v = b.open.begin(b"head");
        v.update(b"body");
        assert!(Opener::verify(v, &tag), "session keys disagree");
        let mut v = b.open.begin(b"head");
        v.update(b"body");
        assert!(!Opener::verify(v, &tag), "a replayed frame verified");
        let mut t = a.seal.begin(b"head");
        t.update(b"body");
        let tag = t.finish();
        let mut v = b.open.begin(b"head");
        v.update(b"bodY");
        assert!(!Opener::verify(v, &tag), "an altered frame verified");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let sel = inp.u8();
    let server_key = (sel & 1 != 0).then(|| inp.bytes::<32>());
    let client_key = match (sel >> 1) % 3 {
        0 => None,
        1 => server_key.or_else(|| Some(inp.bytes())),
        _ => Some(inp.bytes()),
    };
    let mitm = inp.u8();
    let (c_nonce, c_mh, c_mc, c_caps) = (inp.bytes(), inp.u16(), inp.u32(), Caps(inp.u32()));
    let c_agent = inp.str();
    let mut c = ClientHandshake::new(client_key, c_nonce, c_mh, c_mc, c_caps, c_agent);
    let policy = ServerPolicy {
        max_header: inp.u16(),
        max_chunk: inp.u32(),
        caps: Caps(inp.u32()),
        max_requests: inp.u16(),
        max_name: inp.u16(),
        max_path: inp.u16(),
    };
    let (s_nonce, s_agent) = (inp.bytes(), inp.str());
    let mut s = ServerHandshake::new(server_key);

    if mitm & 0x10 != 0 {
        // Out of order: Auth and AuthOk before the Hellos.
        let p = Proof { mac: inp.bytes() };
        assert_eq!(s.handle_auth(&p).err(), Some(HandshakeError::OutOfOrder));
        assert_eq!(c.handle_auth_ok(&p).err(), Some(HandshakeError::OutOfOrder));
    }

    // Hello, possibly replaced on the way.
    let sent = if mitm & 1 != 0 {
        inp.hello()
    } else {
        c.hello().clone()
    };
    let ack = match s.handle_hello(&sent, &policy, s_nonce, s_agent) {
        Ok(a) => a,
        Err(e) => {
            if sent.version < 1 {
                assert_eq!(e, HandshakeError::Version(sent.version));
            }
            return;
        }
    };
    assert!(sent.version >= 1);
    assert_eq!(ack.version, 1);
    assert!(ack.max_header <= sent.max_header && ack.max_header <= policy.max_header);
    assert!(ack.max_chunk <= sent.max_chunk && ack.max_chunk <= policy.max_chunk);
    assert!(u32::from(ack.max_header) >= MIN_LIMIT && ack.max_chunk >= MIN_LIMIT);
    // The server's own limits are announced as they are.
    assert_eq!(
        (ack.max_requests, ack.max_name, ack.max_path),
        (policy.max_requests, policy.max_name, policy.max_path)
    );
    assert_eq!(s.needs_auth(), server_key.is_some());
    if server_key.is_some() {
        assert!(ack.caps.contains(Caps::AUTH_PSK) && sent.caps.contains(Caps::AUTH_PSK));
        assert_eq!(
            ack.caps.contains(Caps::SEAL),
            sent.caps.contains(Caps::SEAL)
        );
    }
    if !ack.caps.contains(Caps::AUTH_PSK) {
        assert!(!ack.caps.contains(Caps::SEAL) && !ack.caps.contains(Caps::ENCRYPT));
    }
    assert_eq!(
        s.handle_hello(&sent, &policy, s_nonce, s_agent).err(),
        Some(HandshakeError::OutOfOrder),
        "a second Hello was accepted"
    );

    // HelloAck, possibly altered on the way.
    let mut got = ack.clone();
    if mitm & 2 != 0 {
        let x = inp.u8() | 1;
        match inp.u8() % 6 {
            0 => got.version ^= x,
            1 => got.max_header ^= u16::from(x),
            2 => got.max_chunk ^= u32::from(x),
            3 => got.caps.0 ^= u32::from(x),
            4 => got.nonce[usize::from(x) % 16] ^= x,
            _ => got.agent = inp.str(),
        }
    }
    let t_server = transcript(&sent, &ack);
    let t_client = transcript(c.hello(), &got);
    let tampered = sent != *c.hello() || got != ack;

    let proof = match c.handle_hello_ack(&got) {
        Ok(Some(p)) => {
            let k = client_key.expect("a proof needs a key");
            assert!(got.caps.contains(Caps::AUTH_PSK));
            assert_eq!(p.mac, client_proof(&k, &t_client));
            Some(p)
        }
        Ok(None) => {
            assert!(client_key.is_none() && !got.caps.contains(Caps::AUTH_PSK));
            None
        }
        Err(_) => None,
    };
    let forged = mitm & 4 != 0 || proof.is_none();
    let proof = match proof {
        Some(p) if mitm & 4 == 0 => p,
        _ => Proof { mac: inp.bytes() },
    };

    // Auth: keys only for the right proof over what the server saw.
    let res = s.handle_auth(&proof);
    let Some(k) = server_key else {
        assert_eq!(res.err(), Some(HandshakeError::OutOfOrder));
        return;
    };
    let valid = proof.mac == client_proof(&k, &t_server);
    assert_eq!(
        res.is_ok(),
        valid,
        "server keys without a valid proof, or refused one"
    );
    if !forged && client_key == server_key {
        assert_eq!(
            valid, !tampered,
            "tampering went unnoticed or an honest run failed"
        );
    }
    let Ok((reply, mut skeys)) = res else {
        assert!(s.needs_auth());
        return;
    };
    assert!(!s.needs_auth());
    assert_eq!(
        s.handle_auth(&proof).err(),
        Some(HandshakeError::OutOfOrder),
        "a replayed Auth was accepted"
    );
    assert_eq!(reply.mac, server_proof(&k, &t_server));

    // AuthOk, possibly forged.
    let reply = if mitm & 8 != 0 {
        Proof { mac: inp.bytes() }
    } else {
        reply
    };
    let cres = c.handle_auth_ok(&reply);
    match client_key {
        Some(ck) => {
            // The client has a transcript once HelloAck's version was right.
            let ok = got.version == 1 && reply.mac == server_proof(&ck, &t_client);
            assert_eq!(cres.is_ok(), ok, "client keys without the server's proof");
        }
        None => assert_eq!(cres.as_ref().err(), Some(&HandshakeError::OutOfOrder)),
    }
    if let Ok(mut ckeys) = cres {
        keys_interoperate(&mut ckeys, &mut skeys);
    }
});
