//! Nonces and TCP initial sequence numbers from a CSPRNG (ChaCha20) seeded
//! once per boot from the provisioning block's 32 random bytes. One stream
//! for the whole boot: no nonce repeats across connections, and a fresh
//! seed every boot means none repeats across boots. A real board seeds it
//! from its TRNG instead (or draws from the TRNG directly).

use core::cell::RefCell;

use critical_section::Mutex;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

static RNG: Mutex<RefCell<Option<ChaCha20Rng>>> = Mutex::new(RefCell::new(None));

/// Seed the generator (once, at boot).
pub fn seed(seed: [u8; 32]) {
    critical_section::with(|cs| {
        RNG.borrow(cs).replace(Some(ChaCha20Rng::from_seed(seed)));
    });
}

/// Fill `out` with random bytes.
///
/// # Panics
/// Before [`seed`]: nothing may draw a nonce without a seed.
pub fn fill(out: &mut [u8]) {
    critical_section::with(|cs| {
        RNG.borrow(cs)
            .borrow_mut()
            .as_mut()
            .expect("the CSPRNG is seeded at boot")
            .fill_bytes(out)
    })
}

/// 16 random bytes: a handshake nonce.
pub fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    fill(&mut n);
    n
}

/// A random u64 (embassy-net's seed for TCP sequence numbers and ports).
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}
