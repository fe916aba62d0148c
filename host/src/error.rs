//! Errors of the client operations; each message says what to do next.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tether_proto::ErrorCode;

/// What went wrong on the client side of a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host name could not be resolved.
    #[error("cannot resolve host '{host}': {source}; check the spelling, or use an IP address")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Nothing listens on the port.
    #[error("connection to {host} ({addr}) refused{tries}: no tether server is listening there; start one with `tether serve --listen ADDR:PORT`, check the port (default {port}), or retry with --retries N", port = tether_proto::DEFAULT_PORT, tries = if *attempts > 1 { format!(" ({attempts} attempts)") } else { String::new() })]
    Refused {
        /// The host as given.
        host: String,
        /// The address tried.
        addr: std::net::SocketAddr,
        /// Attempts made.
        attempts: u32,
    },
    /// The TCP connect did not complete in time.
    #[error("connecting to {host} timed out after {after:?}: the host may be down or a firewall drops the traffic; check the address, or raise --connect-timeout")]
    ConnectTimeout {
        /// The host.
        host: String,
        /// The timeout.
        after: Duration,
    },
    /// No route to the host or network.
    #[error("{host} is unreachable ({source}): check the address and the network")]
    Unreachable {
        /// The host.
        host: String,
        /// The OS error.
        source: io::Error,
    },
    /// Another error while connecting.
    #[error("cannot connect to {host}: {source}")]
    Connect {
        /// The host.
        host: String,
        /// The OS error.
        source: io::Error,
    },
    /// The peer answered with something that is not tether.
    #[error("{host} does not speak tether ({detail}): check the port (tether's default is {port})", port = tether_proto::DEFAULT_PORT)]
    NotTether {
        /// The host.
        host: String,
        /// What was seen.
        detail: String,
    },
    /// The connection was reset before the handshake completed.
    #[error("{host} reset the connection during the handshake ({detail}): the server may be refusing a flood of connections, or it is not a tether server; retry with --retries N, or check the port")]
    HandshakeReset {
        /// The host.
        host: String,
        /// The transport's error.
        detail: String,
    },
    /// The peer did not complete the handshake in time.
    #[error("{host} accepted the connection but did not answer the tether handshake within {after:?}: it may not be a tether server (check the port) or it may be overloaded; raise --connect-timeout to wait longer")]
    HandshakeTimeout {
        /// The host.
        host: String,
        /// The timeout.
        after: Duration,
    },
    /// The server refused the connection with an Error.
    #[error("{host} refused the connection: {message} [{}]{hint}", code_name(*code), hint = hint(*code))]
    Rejected {
        /// The host.
        host: String,
        /// The code.
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// The server answered a request with an Error.
    #[error("server: {message} [{}]{}", code_name(*code), unsaid_hint(*code, message))]
    Remote {
        /// The code.
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// On a sealed session, a frame failed its check.
    #[error("integrity check failed: the connection was tampered with or corrupted ({detail}; server {host}); run the command again, and check the network path if it recurs")]
    Integrity {
        /// The host.
        host: String,
        /// What failed.
        detail: String,
    },
    /// A key is set but the server does not authenticate.
    #[error("{host} does not authenticate, but a key is set: refusing an unprotected session (a man in the middle could have removed authentication); start the server with the same key (`tether serve --key-file PATH`), or pass --insecure to connect without protection")]
    Unauthenticated {
        /// The host.
        host: String,
    },
    /// Encryption was required (`--encrypt`) and the server does not offer it.
    #[error("{host} does not offer encryption, which --encrypt (or TETHER_ENCRYPT) requires; nothing was sent but the handshake. {}", if *authenticates { "The server authenticates but may run `tether serve --no-encrypt`, be an older tether, or be a device (devices do not encrypt): drop --encrypt to use integrity protection only (every frame sealed, not encrypted), or have its operator offer encryption" } else { "It does not authenticate at all (it has no key): start it with the same key (`tether serve --key-file PATH`), which also offers encryption" })]
    NoEncryption {
        /// The host.
        host: String,
        /// Whether the server authenticates (has a key).
        authenticates: bool,
    },
    /// The server could not prove it holds the key.
    #[error("{host} did not prove that it holds the key: it is not the server you meant, or its key differs from yours; check both key files")]
    ServerProof {
        /// The host.
        host: String,
    },
    /// The connection broke.
    #[error("connection to {host} lost: {detail}; run the command again (transfers resume where they stopped)")]
    Lost {
        /// The host.
        host: String,
        /// Why.
        detail: String,
    },
    /// The peer sent something the protocol does not allow here.
    #[error("protocol error from {host}: {detail}; the server may run an incompatible version")]
    Protocol {
        /// The host.
        host: String,
        /// What was wrong.
        detail: String,
    },
    /// A local file operation failed.
    #[error("{what} '{}': {source}", path.display())]
    Local {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The local destination exists.
    #[error("'{}' already exists: pass --force to replace it", .0.display())]
    Exists(PathBuf),
    /// The data did not verify.
    #[error("SHA-256 mismatch for '{path}': expected {expected}, got {got}; nothing was renamed into place; run the command again")]
    DigestMismatch {
        /// The file.
        path: String,
        /// Digest announced by the sender.
        expected: String,
        /// Digest computed here.
        got: String,
    },
    /// The request cannot be sent as asked.
    #[error("{0}")]
    Usage(String),
    /// No UDP reply after every attempt.
    #[error("no reply from {host} after {attempts} attempt(s) of {timeout:?} each{why}: check that `tether serve` runs there, or raise --timeout / --retries")]
    NoReply {
        /// The host.
        host: String,
        /// Attempts made.
        attempts: u32,
        /// Timeout per attempt.
        timeout: Duration,
        /// Extra detail (port unreachable).
        why: String,
    },
}

/// The code's name (`NOT_FOUND`), or its number.
pub fn code_name(code: ErrorCode) -> String {
    match code.name() {
        Some(n) => n.to_string(),
        None => format!("error code {}", code.0),
    }
}

/// [`hint`], unless the server's `message` says it already.
fn unsaid_hint(code: ErrorCode, message: &str) -> &'static str {
    let h = hint(code);
    if message.contains(h.trim_start_matches("; ")) {
        ""
    } else {
        h
    }
}

/// What to do about an error code, as a sentence fragment.
pub fn hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::EXEC_DISABLED => "; start the server with --allow-exec to run commands",
        ErrorCode::NOT_FOUND => "; check the path with `tether ls HOST [DIR]`",
        ErrorCode::EXISTS => "; pass --force to replace it",
        ErrorCode::PATH_REFUSED => {
            "; paths are relative to the server's --root and may not leave it (no '..', no absolute paths, no links pointing out)"
        }
        ErrorCode::IS_DIRECTORY => "; name a file, or list the directory with `tether ls`",
        ErrorCode::NOT_DIRECTORY => "; a component of the path is a file",
        ErrorCode::BUSY => "; try again later",
        ErrorCode::NO_SPACE => "; free space on the server",
        ErrorCode::PERMISSION_DENIED => "; check the permissions under the server's root",
        ErrorCode::EXEC_FAILED => "; check the command name and that it exists on the server",
        ErrorCode::DIGEST_MISMATCH => "; run the command again",
        ErrorCode::TOO_LARGE => "; shorten the request",
        ErrorCode::UNSUPPORTED_VERSION => "; update the older side",
        ErrorCode::AUTH_REQUIRED => {
            "; get the server's key file and pass --key-file PATH (or set TETHER_KEY_FILE=PATH)"
        }
        ErrorCode::AUTH_FAILED => {
            "; client and server must use the same key file (`tether keygen` writes one)"
        }
        ErrorCode::INTEGRITY => {
            "; the connection was tampered with or corrupted: run the command again"
        }
        ErrorCode::READ_ONLY => "; the server was started with --read-only",
        ErrorCode::NOT_ALLOWED => {
            "; ask the server's operator to add the program with --allow-cmd"
        }
        _ => "",
    }
}

impl Error {
    /// Wrap a local I/O error.
    pub fn local(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Local {
            what,
            path: path.into(),
            source,
        }
    }
}
