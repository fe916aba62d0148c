//! Chunk buffers that circulate between the network task and a blocking
//! file thread, so a transfer of any size uses a fixed amount of memory.

use std::sync::mpsc;

/// A chunk: a buffer and how many of its bytes are valid.
#[derive(Debug)]
pub struct Chunk {
    /// The buffer (its length is the pool's chunk size).
    pub buf: Vec<u8>,
    /// Valid bytes.
    pub len: usize,
}

impl Chunk {
    /// The valid bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Hands out buffers of one size and takes them back through [`Returner`]s.
#[derive(Debug)]
pub struct Pool {
    size: usize,
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
}

/// Gives buffers back to their [`Pool`] (from any thread).
#[derive(Debug, Clone)]
pub struct Returner(mpsc::Sender<Vec<u8>>);

impl Returner {
    /// Give a buffer back (dropped if the pool is gone).
    pub fn give(&self, buf: Vec<u8>) {
        let _ = self.0.send(buf);
    }
}

impl Pool {
    /// A pool of `size`-byte buffers.
    pub fn new(size: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        Pool { size, tx, rx }
    }

    /// A returned buffer, or a new one.
    pub fn take(&self) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(b) if b.len() == self.size => b,
            _ => vec![0u8; self.size],
        }
    }

    /// A handle that returns buffers here.
    pub fn returner(&self) -> Returner {
        Returner(self.tx.clone())
    }

    /// The buffer size.
    pub fn size(&self) -> usize {
        self.size
    }
}
