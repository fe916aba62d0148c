//! The connection handshake, shared by every client and server (host and device).
//!
//! ```text
//! client                                   server
//!   Hello{version, limits, caps, nonce_c}  ->
//!                                          <- HelloAck{version, limits, caps, nonce_s}
//!   (only when HelloAck.caps has AUTH_PSK)
//!   Auth{HMAC(K, "tether-v1 client" | T)}  ->
//!                                          <- AuthOk{HMAC(K, "tether-v1 server" | T)}
//! ```
//!
//! `T` is the transcript: SHA-256 over the raw header bytes of Hello followed
//! by those of HelloAck, so both nonces, both capability sets and the limits
//! are bound to the proofs and cannot be downgraded unseen. `K` is the
//! pre-shared key (32 bytes). Proofs are compared in constant time.
//!
//! After a successful exchange with SEAL negotiated, every frame in each
//! direction carries a 16-byte tag: `HMAC-SHA256(K_dir, seq_le64 | prefix |
//! header | body)[..16]`, with `K_c2s = HMAC(K, "tether-v1 c2s" | T)` and
//! `K_s2c = HMAC(K, "tether-v1 s2c" | T)`, and `seq` counting that
//! direction's sealed frames from 0. See [`Sealer`] and [`Opener`].
//!
//! Call order for a server: [`negotiate`] on Hello, send HelloAck, then
//! [`Transcript`] + [`client_proof`]/[`server_proof`] on Auth.

#[cfg(feature = "encrypt")]
use chacha20poly1305::aead::{AeadInOut, KeyInit as AeadKeyInit};
#[cfg(feature = "encrypt")]
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{KeyInit, Mac};
use sha2::{Digest as _, Sha256};

use crate::message::{Caps, Hello, HelloAck, Proof};
use crate::wire::{Flags, TAG_LEN, VERSION};

/// Pre-shared key length in bytes.
pub const KEY_LEN: usize = 32;

type HmacSha256 = hmac::Hmac<Sha256>;

/// What a server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Largest header the server accepts.
    pub max_header: u16,
    /// Largest body per frame the server accepts.
    pub max_chunk: u32,
    /// Capabilities the server has (AUTH_PSK: it requires authentication).
    pub caps: Caps,
    /// Most requests in flight per connection (announced in HelloAck).
    pub max_requests: u16,
    /// Longest name accepted (announced in HelloAck).
    pub max_name: u16,
    /// Longest path accepted (announced in HelloAck).
    pub max_path: u16,
}

/// Why a Hello was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HandshakeError {
    /// The client's version is older than 1 (given).
    Version(u8),
    /// Limits too small to carry the protocol (header < 64 or chunk < 64 bytes).
    Limits,
    /// The server requires authentication and the client did not offer it.
    AuthRequired,
    /// A proof did not verify: the keys differ.
    BadProof,
    /// The client holds a key but the server does not authenticate: refused,
    /// since a man in the middle could have stripped authentication.
    NotAuthenticated,
    /// A handshake message arrived out of order.
    OutOfOrder,
    /// The client requires encryption and the server does not offer it.
    NoEncryption,
}

impl HandshakeError {
    /// The error code to answer with.
    pub fn code(self) -> crate::ErrorCode {
        use crate::ErrorCode as C;
        match self {
            HandshakeError::Version(_) => C::UNSUPPORTED_VERSION,
            HandshakeError::Limits => C::BAD_LENGTH,
            HandshakeError::AuthRequired => C::AUTH_REQUIRED,
            HandshakeError::BadProof => C::AUTH_FAILED,
            HandshakeError::NotAuthenticated => C::AUTH_REQUIRED,
            HandshakeError::OutOfOrder => C::UNEXPECTED,
            HandshakeError::NoEncryption => C::AUTH_FAILED,
        }
    }
}

impl core::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HandshakeError::Version(v) => {
                write!(f, "client speaks version {v}, server needs {VERSION}")
            }
            HandshakeError::Limits => write!(f, "negotiated limits are below 64 bytes"),
            HandshakeError::AuthRequired => {
                write!(
                    f,
                    "this server requires a pre-shared key (set TETHER_KEY_FILE or --key-file)"
                )
            }
            HandshakeError::BadProof => write!(f, "authentication failed: the keys differ"),
            HandshakeError::NotAuthenticated => write!(
                f,
                "the server does not authenticate, but a key is configured: refusing an unauthenticated session"
            ),
            HandshakeError::OutOfOrder => write!(f, "handshake message out of order"),
            HandshakeError::NoEncryption => write!(
                f,
                "encryption was required but the server does not offer it (a device may not; drop --encrypt to use integrity protection only)"
            ),
        }
    }
}

impl core::error::Error for HandshakeError {}

/// Smallest header and chunk limits a peer may announce.
pub const MIN_LIMIT: u32 = 64;

/// The server's answer to `hello`: the limits both sides use are the smaller
/// of the two; capabilities are the server's, with SEAL/ENCRYPT only if the
/// client offered them too.
pub fn negotiate<'a>(
    hello: &Hello<'_>,
    policy: &ServerPolicy,
    nonce: [u8; 16],
    agent: &'a str,
) -> Result<HelloAck<'a>, HandshakeError> {
    if hello.version < VERSION {
        return Err(HandshakeError::Version(hello.version));
    }
    let max_header = hello.max_header.min(policy.max_header);
    let max_chunk = hello.max_chunk.min(policy.max_chunk);
    if u32::from(max_header) < MIN_LIMIT || max_chunk < MIN_LIMIT {
        return Err(HandshakeError::Limits);
    }
    let mut caps = policy.caps;
    if caps.contains(Caps::AUTH_PSK) && !hello.caps.contains(Caps::AUTH_PSK) {
        return Err(HandshakeError::AuthRequired);
    }
    let optional = Caps::SEAL.union(Caps::ENCRYPT);
    caps = Caps(caps.0 & !optional.0).union(caps.intersection(hello.caps).intersection(optional));
    if !CAN_ENCRYPT {
        caps = Caps(caps.0 & !Caps::ENCRYPT.0);
    }
    if !caps.contains(Caps::AUTH_PSK) {
        caps = Caps(caps.0 & !optional.0);
    }
    Ok(HelloAck {
        version: VERSION,
        max_header,
        max_chunk,
        caps,
        nonce,
        agent,
        max_requests: policy.max_requests,
        max_name: policy.max_name,
        max_path: policy.max_path,
    })
}

/// Running SHA-256 over the handshake headers.
#[derive(Debug, Clone, Default)]
pub struct Transcript(Sha256);

impl Transcript {
    /// An empty transcript.
    pub fn new() -> Self {
        Transcript(Sha256::new())
    }
    /// Add one frame's raw header bytes (Hello first, then HelloAck).
    pub fn add(&mut self, header_bytes: &[u8]) {
        self.0.update(header_bytes);
    }
    /// Add a header by its (canonical) encoding, without a buffer: the same
    /// bytes as [`Transcript::add`] of the header as sent or received.
    pub fn add_header(&mut self, header: &crate::Header<'_>) {
        let _ = postcard::serialize_with_flavor::<_, _, ()>(header, HashFlavor(&mut self.0));
    }
    /// The transcript hash.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

struct HashFlavor<'a>(&'a mut Sha256);

impl postcard::ser_flavors::Flavor for HashFlavor<'_> {
    type Output = ();
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update([data]);
        Ok(())
    }
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The client's proof over transcript hash `t`.
pub fn client_proof(key: &[u8; KEY_LEN], t: &[u8; 32]) -> [u8; 32] {
    hmac(key, &[b"tether-v1 client", t])
}

/// The server's proof over transcript hash `t`.
pub fn server_proof(key: &[u8; KEY_LEN], t: &[u8; 32]) -> [u8; 32] {
    hmac(key, &[b"tether-v1 server", t])
}

/// Constant-time comparison of two proofs.
pub fn proofs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Which way a sealed frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ClientToServer,
    /// Server to client.
    ServerToClient,
}

/// The per-direction frame key.
pub fn direction_key(key: &[u8; KEY_LEN], t: &[u8; 32], dir: Direction) -> [u8; 32] {
    let label: &[u8] = match dir {
        Direction::ClientToServer => b"tether-v1 c2s",
        Direction::ServerToClient => b"tether-v1 s2c",
    };
    hmac(key, &[label, t])
}

/// Computes tags for outgoing frames of one direction.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: [u8; 32],
    seq: u64,
}

/// A tag being computed over one frame (prefix, header, then body bytes).
#[derive(Debug, Clone)]
pub struct TagBuilder(HmacSha256);

impl TagBuilder {
    /// Add body bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The tag.
    pub fn finish(self) -> [u8; TAG_LEN] {
        let full: [u8; 32] = self.0.finalize().into_bytes().into();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}

impl Sealer {
    /// A sealer with its direction key, starting at sequence 0.
    pub fn new(direction_key: [u8; 32]) -> Self {
        Sealer {
            key: direction_key,
            seq: 0,
        }
    }
    /// Start the tag of the next frame: `head` is its prefix and header as sent.
    pub fn begin(&mut self, head: &[u8]) -> TagBuilder {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        m.update(&self.seq.to_le_bytes());
        m.update(head);
        self.seq = self.seq.wrapping_add(1);
        TagBuilder(m)
    }
    /// Start the tag of a received frame (its prefix is re-emitted, which is
    /// byte-exact for any frame the decoder accepted).
    pub fn begin_frame(&mut self, frame: &crate::codec::Frame<'_>) -> TagBuilder {
        let mut prefix = [0u8; crate::wire::PREFIX_LEN];
        frame.prefix.emit(
            &mut crate::wire::Prefix::new_unchecked(&mut prefix[..]),
            frame.header,
        );
        let mut b = self.begin(&prefix);
        b.update(frame.header);
        b
    }
    /// Sequence number the next frame gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }
}

/// Verifies tags of incoming frames of one direction: a frame replayed,
/// reordered, dropped, spliced or truncated fails.
#[derive(Debug, Clone)]
pub struct Opener(Sealer);

impl Opener {
    /// An opener with its direction key, expecting sequence 0 first.
    pub fn new(direction_key: [u8; 32]) -> Self {
        Opener(Sealer::new(direction_key))
    }
    /// Start checking the next frame: `head` is its prefix and header as received.
    pub fn begin(&mut self, head: &[u8]) -> TagBuilder {
        self.0.begin(head)
    }
    /// Start checking a frame the decoder produced.
    pub fn begin_frame(&mut self, frame: &crate::codec::Frame<'_>) -> TagBuilder {
        self.0.begin_frame(frame)
    }
    /// Whether `tag` matches the computed one (constant time).
    pub fn verify(builder: TagBuilder, tag: &[u8; TAG_LEN]) -> bool {
        let want = builder.finish();
        let mut diff = 0u8;
        for (x, y) in want.iter().zip(tag) {
            diff |= x ^ y;
        }
        diff == 0
    }
}

/// The sealing state of an authenticated session, one side's view: a
/// [`Sealer`] for frames it sends and an [`Opener`] for frames it receives.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// Tags outgoing frames.
    pub seal: Sealer,
    /// Checks incoming frames.
    pub open: Opener,
    /// With ENCRYPT negotiated: encrypts outgoing frames (used instead of `seal`).
    pub encrypt: Option<FrameCipher>,
    /// With ENCRYPT negotiated: decrypts incoming frames (used instead of `open`).
    pub decrypt: Option<FrameCipher>,
}

impl SessionKeys {
    /// Whether frames are encrypted (flags SEALED | ENCRYPTED both ways).
    pub fn encrypted(&self) -> bool {
        self.encrypt.is_some()
    }

    /// Why an incoming frame with `flags` lacks the protection this
    /// session requires (PROTOCOL.md 5.3), or `None` when it has it.
    pub fn protection_fault(&self, flags: Flags) -> Option<&'static str> {
        match (self.encrypted(), flags.contains(Flags::SEALED)) {
            (true, _) if flags.contains(Flags::ENCRYPTED) => None,
            (true, true) => {
                Some("a frame arrived sealed but not encrypted on an encrypted session")
            }
            (true, false) => Some("a frame arrived unsealed on an encrypted session"),
            (false, true) => None,
            (false, false) => Some("a frame arrived unsealed on an authenticated session"),
        }
    }
}

/// Whole-frame authenticated encryption, one direction (ENCRYPT negotiated).
///
/// ChaCha20-Poly1305 (RustCrypto `chacha20poly1305`, RFC 8439) with the
/// direction's encryption key, nonce = 4 zero bytes ‖ the u64 little-endian
/// frame sequence number, associated data = the frame's first 14 prefix
/// bytes (magic, version, flags, lengths), plaintext = header ‖ body. The
/// 16-byte AEAD tag is the frame's tag; lengths are unchanged (a stream
/// cipher), and the prefix checksum is computed over the ciphertext header.
/// A receiver buffers one frame (at most `max_header + max_chunk` bytes),
/// opens it, and only then parses the header.
#[cfg(feature = "encrypt")]
#[derive(Clone)]
pub struct FrameCipher {
    aead: ChaCha20Poly1305,
    seq: u64,
}

/// Built without the `encrypt` feature: no cipher can exist, ENCRYPT is
/// never negotiated, and the code paths that would use one vanish.
#[cfg(not(feature = "encrypt"))]
#[derive(Debug, Clone)]
pub enum FrameCipher {}

#[cfg(not(feature = "encrypt"))]
impl FrameCipher {
    /// Never called: there is no value to call it on.
    pub fn seal_in_place(
        &mut self,
        _repr: &crate::wire::PrefixRepr,
        _header_and_body: &mut [u8],
    ) -> [u8; TAG_LEN] {
        match *self {}
    }

    /// Never called: there is no value to call it on.
    pub fn open_in_place(
        &mut self,
        _repr: &crate::wire::PrefixRepr,
        _header_and_body: &mut [u8],
        _tag: &[u8; TAG_LEN],
    ) -> bool {
        match *self {}
    }
}

/// Whether this build can encrypt (the `encrypt` feature).
pub const CAN_ENCRYPT: bool = cfg!(feature = "encrypt");

#[cfg(feature = "encrypt")]
impl core::fmt::Debug for FrameCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameCipher")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "encrypt")]
impl FrameCipher {
    /// A cipher with a direction's encryption key, starting at sequence 0.
    pub fn new(key: [u8; 32]) -> Self {
        FrameCipher {
            aead: ChaCha20Poly1305::new(&key.into()),
            seq: 0,
        }
    }

    fn nonce(&mut self) -> chacha20poly1305::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.seq.to_le_bytes());
        self.seq = self.seq.wrapping_add(1);
        n.into()
    }

    /// Encrypt `header_and_body` in place for a frame described by `repr`
    /// (whose flags must include SEALED | ENCRYPTED); returns the tag.
    pub fn seal_in_place(
        &mut self,
        repr: &crate::wire::PrefixRepr,
        header_and_body: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let nonce = self.nonce();
        let ad = repr.covered_bytes();
        // Encryption fails only for messages over 256 GiB; frames are bounded far below.
        match self
            .aead
            .encrypt_inout_detached(&nonce, &ad, header_and_body.into())
        {
            Ok(tag) => tag.into(),
            Err(_) => [0; TAG_LEN],
        }
    }

    /// Decrypt `header_and_body` in place; `false` (and the buffer left as
    /// ciphertext or garbage, never to be used) if the tag does not verify:
    /// altered, replayed, reordered, spliced or truncated.
    pub fn open_in_place(
        &mut self,
        repr: &crate::wire::PrefixRepr,
        header_and_body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        let nonce = self.nonce();
        let ad = repr.covered_bytes();
        self.aead
            .decrypt_inout_detached(&nonce, &ad, header_and_body.into(), &(*tag).into())
            .is_ok()
    }
}

fn keys(
    key: &[u8; KEY_LEN],
    t: &[u8; 32],
    send: Direction,
    recv: Direction,
    encrypt: bool,
) -> SessionKeys {
    #[cfg(feature = "encrypt")]
    let cipher = |dir| {
        let label: &[u8] = match dir {
            Direction::ClientToServer => b"tether-v1 enc c2s",
            Direction::ServerToClient => b"tether-v1 enc s2c",
        };
        encrypt.then(|| FrameCipher::new(hmac(key, &[label, t])))
    };
    #[cfg(not(feature = "encrypt"))]
    let cipher = |_: Direction| {
        let _ = encrypt;
        None
    };
    SessionKeys {
        seal: Sealer::new(direction_key(key, t, send)),
        open: Opener::new(direction_key(key, t, recv)),
        encrypt: cipher(send),
        decrypt: cipher(recv),
    }
}

/// The client side of the handshake, sans-IO.
///
/// Call order: [`ClientHandshake::hello`] → send it as request 0 → on
/// HelloAck, [`ClientHandshake::handle_hello_ack`]: `Ok(None)` means the
/// session is open unauthenticated; `Ok(Some(proof))` means send
/// `Auth(proof)` and pass the server's AuthOk to
/// [`ClientHandshake::handle_auth_ok`], which yields the [`SessionKeys`].
#[derive(Debug, Clone)]
pub struct ClientHandshake<'a> {
    key: Option<[u8; KEY_LEN]>,
    hello: Hello<'a>,
    transcript: Transcript,
    t: Option<[u8; 32]>,
    encrypt: bool,
}

impl<'a> ClientHandshake<'a> {
    /// Start a handshake. With a key, Hello offers AUTH_PSK and SEAL, and the
    /// client will refuse a server that does not authenticate. With
    /// `Caps::ENCRYPT` in `caps` (and a key) the client requires encryption
    /// and refuses a server that does not offer it.
    pub fn new(
        key: Option<[u8; KEY_LEN]>,
        nonce: [u8; 16],
        max_header: u16,
        max_chunk: u32,
        caps: Caps,
        agent: &'a str,
    ) -> Self {
        let caps = if key.is_some() {
            caps.union(Caps::AUTH_PSK).union(Caps::SEAL)
        } else {
            caps
        };
        let hello = Hello {
            version: VERSION,
            max_header,
            max_chunk,
            caps,
            nonce,
            agent,
        };
        let mut transcript = Transcript::new();
        transcript.add_header(&crate::Header::new(0, crate::Message::Hello(hello.clone())));
        ClientHandshake {
            key,
            hello,
            transcript,
            t: None,
            encrypt: false,
        }
    }

    /// The Hello to send (request id 0).
    pub fn hello(&self) -> &Hello<'a> {
        &self.hello
    }

    /// The server's HelloAck arrived. Returns the Auth proof to send, if the
    /// server requires authentication.
    pub fn handle_hello_ack(
        &mut self,
        ack: &HelloAck<'_>,
    ) -> Result<Option<Proof>, HandshakeError> {
        if self.t.is_some() {
            return Err(HandshakeError::OutOfOrder);
        }
        if ack.version != VERSION {
            return Err(HandshakeError::Version(ack.version));
        }
        let mut tr = self.transcript.clone();
        tr.add_header(&crate::Header::new(
            0,
            crate::Message::HelloAck(ack.clone()),
        ));
        let t = tr.finish();
        self.t = Some(t);
        let wanted = self.hello.caps.contains(Caps::ENCRYPT);
        if self.key.is_some() && wanted && !ack.caps.contains(Caps::ENCRYPT) {
            return Err(HandshakeError::NoEncryption);
        }
        self.encrypt = ack.caps.contains(Caps::ENCRYPT);
        match (&self.key, ack.caps.contains(Caps::AUTH_PSK)) {
            (Some(k), true) => Ok(Some(Proof {
                mac: client_proof(k, &t),
            })),
            (None, true) => Err(HandshakeError::AuthRequired),
            (Some(_), false) => Err(HandshakeError::NotAuthenticated),
            (None, false) => Ok(None),
        }
    }

    /// The server's AuthOk arrived: check its proof and derive the session keys.
    pub fn handle_auth_ok(&mut self, proof: &Proof) -> Result<SessionKeys, HandshakeError> {
        let (Some(k), Some(t)) = (&self.key, &self.t) else {
            return Err(HandshakeError::OutOfOrder);
        };
        if !proofs_equal(&server_proof(k, t), &proof.mac) {
            return Err(HandshakeError::BadProof);
        }
        Ok(keys(
            k,
            t,
            Direction::ClientToServer,
            Direction::ServerToClient,
            self.encrypt,
        ))
    }
}

/// The server side of the handshake, sans-IO.
///
/// Call order: on Hello, [`ServerHandshake::handle_hello`] returns the
/// HelloAck to send; then, if [`ServerHandshake::needs_auth`], the next frame
/// must be Auth: [`ServerHandshake::handle_auth`] returns the AuthOk proof to
/// send and the [`SessionKeys`]. Any other frame before that is refused with
/// `AUTH_REQUIRED`.
#[derive(Debug, Clone)]
pub struct ServerHandshake {
    key: Option<[u8; KEY_LEN]>,
    t: Option<[u8; 32]>,
    authed: bool,
    encrypt: bool,
}

impl ServerHandshake {
    /// A server handshake; with a key, authentication is required.
    pub fn new(key: Option<[u8; KEY_LEN]>) -> Self {
        ServerHandshake {
            key,
            t: None,
            authed: false,
            encrypt: false,
        }
    }

    /// Hello arrived: negotiate (adding AUTH_PSK and SEAL to the policy when a
    /// key is set) and return the HelloAck to send.
    pub fn handle_hello<'a>(
        &mut self,
        hello: &Hello<'_>,
        policy: &ServerPolicy,
        nonce: [u8; 16],
        agent: &'a str,
    ) -> Result<HelloAck<'a>, HandshakeError> {
        if self.t.is_some() {
            return Err(HandshakeError::OutOfOrder);
        }
        let mut policy = *policy;
        if self.key.is_some() {
            policy.caps = policy.caps.union(Caps::AUTH_PSK).union(Caps::SEAL);
        }
        let ack = negotiate(hello, &policy, nonce, agent)?;
        self.encrypt = ack.caps.contains(Caps::ENCRYPT);
        let mut tr = Transcript::new();
        tr.add_header(&crate::Header::new(0, crate::Message::Hello(hello.clone())));
        tr.add_header(&crate::Header::new(
            0,
            crate::Message::HelloAck(ack.clone()),
        ));
        self.t = Some(tr.finish());
        Ok(ack)
    }

    /// Whether the client must still send Auth.
    pub fn needs_auth(&self) -> bool {
        self.key.is_some() && !self.authed
    }

    /// Auth arrived: verify it; returns the AuthOk proof and the session keys.
    pub fn handle_auth(&mut self, proof: &Proof) -> Result<(Proof, SessionKeys), HandshakeError> {
        let (Some(k), Some(t)) = (&self.key, &self.t) else {
            return Err(HandshakeError::OutOfOrder);
        };
        if self.authed {
            return Err(HandshakeError::OutOfOrder);
        }
        if !proofs_equal(&client_proof(k, t), &proof.mac) {
            return Err(HandshakeError::BadProof);
        }
        self.authed = true;
        let reply = Proof {
            mac: server_proof(k, t),
        };
        Ok((
            reply,
            keys(
                k,
                t,
                Direction::ServerToClient,
                Direction::ClientToServer,
                self.encrypt,
            ),
        ))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn hello(caps: Caps) -> Hello<'static> {
        Hello {
            version: 1,
            max_header: 8192,
            max_chunk: 1 << 20,
            caps,
            nonce: [1; 16],
            agent: "t",
        }
    }

    #[test]
    fn negotiates_smaller_limits_and_optional_caps() {
        let policy = ServerPolicy {
            max_header: 512,
            max_chunk: 1024,
            caps: Caps::EXEC.union(Caps::AUTH_PSK).union(Caps::SEAL),
            max_requests: 64,
            max_name: 255,
            max_path: 4095,
        };
        let ack = negotiate(&hello(Caps::AUTH_PSK), &policy, [2; 16], "s").unwrap();
        assert_eq!((ack.max_header, ack.max_chunk), (512, 1024));
        assert!(!ack.caps.contains(Caps::SEAL), "client did not offer SEAL");
        let ack = negotiate(
            &hello(Caps::AUTH_PSK.union(Caps::SEAL)),
            &policy,
            [2; 16],
            "s",
        )
        .unwrap();
        assert!(ack.caps.contains(Caps::SEAL));
        assert_eq!(
            negotiate(&hello(Caps::empty()), &policy, [2; 16], "s"),
            Err(HandshakeError::AuthRequired)
        );
    }

    #[test]
    fn proofs_depend_on_key_and_transcript() {
        let k = [7u8; 32];
        let mut t = Transcript::new();
        t.add(b"hello");
        t.add(b"ack");
        let t = t.finish();
        assert_ne!(client_proof(&k, &t), server_proof(&k, &t));
        assert!(proofs_equal(&client_proof(&k, &t), &client_proof(&k, &t)));
        assert!(!proofs_equal(
            &client_proof(&k, &t),
            &client_proof(&[8u8; 32], &t)
        ));
    }

    #[test]
    fn sealed_frame_round_trip_through_the_decoder() {
        use crate::codec::{encode_head, Decoder, Event, Limits};
        use crate::wire::Flags;
        use crate::{Header, Message};
        let dk = [9u8; 32];
        let mut sealer = Sealer::new(dk);
        let mut buf = [0u8; 128];
        let head = encode_head(&Header::new(5, Message::Data), 3, Flags::SEALED, &mut buf).unwrap();
        let mut tb = sealer.begin(head);
        tb.update(b"abc");
        let tag = tb.finish();
        let mut wire = [0u8; 128];
        let n = head.len();
        wire[..n].copy_from_slice(head);
        wire[n..n + 3].copy_from_slice(b"abc");
        wire[n + 3..n + 3 + TAG_LEN].copy_from_slice(&tag);
        let total = n + 3 + TAG_LEN;
        for flip in [None, Some(n + 1)] {
            let mut w = wire;
            if let Some(i) = flip {
                w[i] ^= 1; // corrupt a body byte: the CRC does not see it, the tag does
            }
            let mut hb = [0u8; 64];
            let mut dec = Decoder::new(
                &mut hb[..],
                Limits {
                    max_header: 64,
                    max_body: 64,
                },
            );
            let mut opener = Opener::new(dk);
            let mut rest = &w[..total];
            let mut tb = None;
            let mut ok = None;
            while ok.is_none() {
                let (used, r) = dec.handle_bytes(rest);
                rest = &rest[used..];
                match r.unwrap() {
                    Some(Event::Header(f)) => tb = Some(opener.begin_frame(&f)),
                    Some(Event::Body(b)) => tb.as_mut().unwrap().update(b),
                    Some(Event::End { tag: Some(t) }) => {
                        ok = Some(Opener::verify(tb.take().unwrap(), &t))
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(ok, Some(flip.is_none()));
        }
    }

    #[test]
    fn client_and_server_agree_and_wrong_keys_fail() {
        let policy = ServerPolicy {
            max_header: 512,
            max_chunk: 1024,
            caps: Caps::EXEC,
            max_requests: 64,
            max_name: 255,
            max_path: 4095,
        };
        for (ck, sk, want) in [
            (Some([1u8; 32]), Some([1u8; 32]), Ok(())),
            (
                Some([1u8; 32]),
                Some([2u8; 32]),
                Err(HandshakeError::BadProof),
            ),
            (None, Some([2u8; 32]), Err(HandshakeError::AuthRequired)),
            (Some([1u8; 32]), None, Err(HandshakeError::NotAuthenticated)),
            (None, None, Ok(())),
        ] {
            let mut c = ClientHandshake::new(ck, [5; 16], 8192, 65536, Caps::empty(), "c");
            let mut s = ServerHandshake::new(sk);
            let ack = match s.handle_hello(c.hello(), &policy, [6; 16], "s") {
                Ok(a) => a,
                Err(e) => {
                    assert_eq!(Err(e), want);
                    continue;
                }
            };
            let proof = match c.handle_hello_ack(&ack) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    assert_eq!(want, Ok(()));
                    assert!(!s.needs_auth());
                    continue;
                }
                Err(e) => {
                    assert_eq!(Err(e), want);
                    continue;
                }
            };
            let (ok, mut skeys) = match s.handle_auth(&proof) {
                Ok(x) => x,
                Err(e) => {
                    assert_eq!(Err(e), want);
                    continue;
                }
            };
            let mut ckeys = c.handle_auth_ok(&ok).unwrap();
            assert_eq!(want, Ok(()));
            // c -> s sealed frame verifies.
            let mut tb = ckeys.seal.begin(b"frame");
            tb.update(b"body");
            let tag = tb.finish();
            let mut vb = skeys.open.begin(b"frame");
            vb.update(b"body");
            assert!(Opener::verify(vb, &tag));
            // A replayed Auth is refused.
            assert_eq!(
                s.handle_auth(&proof).unwrap_err(),
                HandshakeError::OutOfOrder
            );
        }
    }

    #[test]
    fn encryption_is_negotiated_and_round_trips_whole_frames() {
        use crate::codec::{encode_head, Decoder, Event, Limits};
        use crate::wire::{Flags, PrefixRepr};
        use crate::{Header, Message};
        let key = Some([4u8; 32]);
        let offer = ServerPolicy {
            max_header: 512,
            max_chunk: 1024,
            caps: Caps::ENCRYPT,
            max_requests: 64,
            max_name: 255,
            max_path: 4095,
        };
        let no_offer = ServerPolicy {
            caps: Caps::empty(),
            ..offer
        };
        // A server that does not offer it: a client that requires it refuses.
        let mut c = ClientHandshake::new(key, [1; 16], 512, 1024, Caps::ENCRYPT, "c");
        let mut s = ServerHandshake::new(key);
        let ack = s.handle_hello(c.hello(), &no_offer, [2; 16], "s").unwrap();
        assert_eq!(c.handle_hello_ack(&ack), Err(HandshakeError::NoEncryption));
        // A client that does not ask: not encrypted even if offered.
        let mut c = ClientHandshake::new(key, [1; 16], 512, 1024, Caps::empty(), "c");
        let mut s = ServerHandshake::new(key);
        let ack = s.handle_hello(c.hello(), &offer, [2; 16], "s").unwrap();
        let p = c.handle_hello_ack(&ack).unwrap().unwrap();
        let (ok, sk) = s.handle_auth(&p).unwrap();
        assert!(!sk.encrypted() && !c.handle_auth_ok(&ok).unwrap().encrypted());
        // Both: a sealed, encrypted frame through the decoder.
        let mut c = ClientHandshake::new(key, [1; 16], 512, 1024, Caps::ENCRYPT, "c");
        let mut s = ServerHandshake::new(key);
        let ack = s.handle_hello(c.hello(), &offer, [2; 16], "s").unwrap();
        let p = c.handle_hello_ack(&ack).unwrap().unwrap();
        let (ok, mut sk) = s.handle_auth(&p).unwrap();
        let mut ck = c.handle_auth_ok(&ok).unwrap();
        assert!(ck.encrypted() && sk.encrypted());
        let h = Header::new(
            3,
            Message::Echo {
                text: "secret text",
            },
        );
        let flags = Flags::SEALED.union(Flags::ENCRYPTED);
        let mut buf = [0u8; 128];
        let hl = encode_head(&h, 4, flags, &mut buf).unwrap().len() - 18;
        let mut plain = [0u8; 64];
        plain[..hl].copy_from_slice(&buf[18..18 + hl]);
        plain[hl..hl + 4].copy_from_slice(b"body");
        let repr = PrefixRepr {
            version: 1,
            flags,
            header_len: hl as u16,
            body_len: 4,
        };
        let tag = ck
            .encrypt
            .as_mut()
            .unwrap()
            .seal_in_place(&repr, &mut plain[..hl + 4]);
        assert!(
            !plain[..hl + 4].windows(6).any(|w| w == b"secret"),
            "ciphertext hides the text"
        );
        let mut wire = [0u8; 128];
        repr.emit(
            &mut crate::wire::Prefix::new_unchecked(&mut wire[..18]),
            &plain[..hl],
        );
        wire[18..18 + hl + 4].copy_from_slice(&plain[..hl + 4]);
        wire[18 + hl + 4..18 + hl + 4 + TAG_LEN].copy_from_slice(&tag);
        let n = 18 + hl + 4 + TAG_LEN;
        // Not accepted until encryption is switched on.
        let mut hb = [0u8; 64];
        let mut dec = Decoder::new(
            &mut hb[..],
            Limits {
                max_header: 64,
                max_body: 64,
            },
        );
        assert!(dec.handle_bytes(&wire[..n]).1.is_err());
        let mut dec = Decoder::new(
            &mut hb[..],
            Limits {
                max_header: 64,
                max_body: 64,
            },
        );
        dec.set_encryption(true);
        let mut got = [0u8; 64];
        let mut len = 0;
        let mut rest = &wire[..n];
        let mut fr = None;
        loop {
            let (u, r) = dec.handle_bytes(rest);
            rest = &rest[u..];
            match r.unwrap() {
                Some(Event::Header(f)) => {
                    fr = Some(f.prefix);
                    got[..hl].copy_from_slice(f.header);
                    len = hl;
                }
                Some(Event::Body(b)) => {
                    got[len..len + b.len()].copy_from_slice(b);
                    len += b.len();
                }
                Some(Event::End { tag: Some(t) }) => {
                    let mut tampered = got;
                    tampered[0] ^= 1;
                    let mut replay = sk.decrypt.clone().unwrap();
                    assert!(!replay.open_in_place(fr.as_ref().unwrap(), &mut tampered[..len], &t));
                    assert!(sk.decrypt.as_mut().unwrap().open_in_place(
                        fr.as_ref().unwrap(),
                        &mut got[..len],
                        &t
                    ));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(Header::parse(&got[..hl]).unwrap(), h);
        assert_eq!(&got[hl..len], b"body");
        // The same frame again (replay) fails: the sequence moved on.
        let mut again = [0u8; 64];
        again[..hl + 4].copy_from_slice(&wire[18..18 + hl + 4]);
        assert!(!sk
            .decrypt
            .as_mut()
            .unwrap()
            .open_in_place(&repr, &mut again[..hl + 4], &tag));
    }

    #[test]
    fn transcript_binds_the_hello_fields() {
        let policy = ServerPolicy {
            max_header: 512,
            max_chunk: 1024,
            caps: Caps::EXEC,
            max_requests: 64,
            max_name: 255,
            max_path: 4095,
        };
        let mut c = ClientHandshake::new(Some([1; 32]), [5; 16], 8192, 65536, Caps::empty(), "c");
        let mut s = ServerHandshake::new(Some([1; 32]));
        let mut ack = s.handle_hello(c.hello(), &policy, [6; 16], "s").unwrap();
        // A man in the middle lowers the chunk size: proofs no longer match.
        ack.max_chunk = 64;
        let proof = c.handle_hello_ack(&ack).unwrap().unwrap();
        assert_eq!(s.handle_auth(&proof).unwrap_err(), HandshakeError::BadProof);
    }

    #[test]
    fn transcript_hash_equals_hash_of_encoded_bytes() {
        let h = crate::Header::new(0, crate::Message::Echo { text: "abc" });
        let mut buf = [0u8; 32];
        let bytes = h.emit(&mut buf).unwrap();
        let mut a = Transcript::new();
        a.add(bytes);
        let mut b = Transcript::new();
        b.add_header(&h);
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn replayed_frame_fails_the_tag() {
        let dk = [3u8; 32];
        let mut s = Sealer::new(dk);
        let mut o = Opener::new(dk);
        let mut b = s.begin(b"head");
        b.update(b"body");
        let tag = b.finish();
        let mut c = o.begin(b"head");
        c.update(b"body");
        assert!(Opener::verify(c, &tag));
        // Same frame again: sequence 1 now, so it fails.
        let mut c = o.begin(b"head");
        c.update(b"body");
        assert!(!Opener::verify(c, &tag));
    }
}
