//! The UDP service: a thin wrapper over the shared [`crate::datagram`]
//! service with the device's clock and statistics.

use crate::datagram::{answer, TimeSource};
use crate::time::{format_time, TimeError, TIME_TEXT_MAX};

use super::clock::Clock;
use super::commands::Commands;
use super::store::Store;
use super::Device;

/// The device's time for one datagram: its clock at that moment and
/// [`format_time`] into a [`TIME_TEXT_MAX`]-byte buffer.
struct DeviceTime {
    unix_ms: u64,
    buf: [u8; TIME_TEXT_MAX],
}

impl TimeSource for DeviceTime {
    fn time(&mut self, format: &str) -> Result<(u64, &str), TimeError> {
        let text = format_time(self.unix_ms, format, &mut self.buf)?;
        Ok((self.unix_ms, text))
    }
}

impl<S: Store, C: Clock, K: Commands> Device<S, C, K> {
    /// Answer one UDP datagram: the reply is written to `out` (at most
    /// [`MAX_DATAGRAM`](crate::MAX_DATAGRAM) bytes are used) and its length returned; 0 means no
    /// reply (the datagram was itself a reply or an Error, which are never
    /// answered, so two peers cannot loop).
    pub fn handle_datagram(&mut self, datagram: &[u8], now_ms: u64, out: &mut [u8]) -> usize {
        use crate::datagram::Outcome;
        self.stats.datagrams += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let mut time = DeviceTime {
            unix_ms: self.time_ms(now_ms),
            buf: [0; TIME_TEXT_MAX],
        };
        let a = answer(datagram, out, &mut time);
        match a.outcome {
            Outcome::NotAFrame(_) => self.stats.bad_frames += 1,
            Outcome::BadHeader(_) => {
                self.stats.frames_in += 1;
                self.stats.bad_frames += 1;
            }
            _ => self.stats.frames_in += 1,
        }
        if a.outcome.is_error() {
            self.stats.errors_sent += 1;
        }
        if a.len > 0 {
            self.stats.frames_out += 1;
            self.stats.bytes_out += a.len as u64;
        }
        a.len
    }
}
