//! The server's session protection state; frames are written by the
//! shared [`outgoing`](crate::outgoing) module.

use crate::handshake::{ServerHandshake, SessionKeys};

pub(crate) use crate::outgoing::Staging;

/// Authentication and sealing state of a connection.
#[derive(Debug, Clone)]
pub(crate) enum Security {
    /// Before Hello, and until Auth verified on a keyed server.
    Handshake(ServerHandshake),
    /// No key: nothing is authenticated or sealed.
    Plain,
    /// Authenticated: every frame both ways is sealed (and maybe encrypted).
    Sealed(SessionKeys),
}

impl Security {
    /// Whether frames are encrypted.
    pub(crate) fn encrypted(&self) -> bool {
        matches!(self, Security::Sealed(k) if k.encrypted())
    }

    /// The keys outgoing frames are protected with, once authenticated.
    pub(crate) fn keys(&mut self) -> Option<&mut SessionKeys> {
        match self {
            Security::Sealed(k) => Some(k),
            _ => None,
        }
    }

    /// The same, to read.
    pub(crate) fn keys_ref(&self) -> Option<&SessionKeys> {
        match self {
            Security::Sealed(k) => Some(k),
            _ => None,
        }
    }
}
