//! Board logic for tether's QEMU `mps2-an386` firmware that does not need
//! the hardware: the LAN9118 driver over a register [`lan9118::Bus`], the
//! CMSDK UART's registers, the provisioning block, and the `push`/`fetch`
//! jobs' arguments. `no_std`; its unit
//! tests run on the host (`cargo test --lib --target x86_64-unknown-linux-gnu`).
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod cmsdk;
pub mod job;
pub mod lan9118;
pub mod prov;
