//! The simulated device over the virtual wire: deterministic, virtual
//! time, no privileges. The net is shared ([`Rc`]) so that a case can hold
//! several connections at once; each [`Wire`] names its connection by
//! handle and borrows the net only for the length of one call.

use std::cell::RefCell;
use std::rc::Rc;

use tether_sim::smoltcp::time::Duration;
use tether_sim::smoltcp::wire::Ipv4Address;
use tether_sim::virt::{NetError, TcpConn, VirtualConfig, VirtualNet};
use tether_sim::{Key, SimConfig};

use super::{device_invariants, KEY};
use crate::conformance::run::Target;
use crate::conformance::Server;
use crate::peer::{Link, Peer};

/// One connection on a shared virtual wire.
#[derive(Debug)]
pub struct Wire {
    net: Rc<RefCell<VirtualNet>>,
    conn: TcpConn,
}

impl Link for Wire {
    fn send(&mut self, mut b: &[u8]) -> Result<(), String> {
        let mut net = self.net.borrow_mut();
        while !b.is_empty() {
            let n = net.tcp_write(self.conn, b).map_err(|e| e.to_string())?;
            b = &b[n..];
        }
        net.step();
        Ok(())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let mut net = self.net.borrow_mut();
        net.tcp_read(self.conn, buf).map_err(|e| e.to_string())
    }
    fn close_write(&mut self) {
        self.net.borrow_mut().tcp_shutdown(self.conn);
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.net.borrow_mut().close_tcp(self.conn);
    }
}

/// The simulated device of one configuration on its own virtual wire.
#[derive(Debug)]
pub struct VirtTarget {
    net: Rc<RefCell<VirtualNet>>,
    key: Option<[u8; 32]>,
}

impl VirtTarget {
    /// Boot a device of configuration `server`.
    pub fn start(server: Server) -> VirtTarget {
        let mut device = SimConfig {
            key: server.keyed().then_some(Key(KEY)),
            ..SimConfig::default()
        };
        if server.short_deadlines() {
            device.handshake_timeout_ms = 1_000;
            device.idle_timeout_ms = 2_000;
        }
        let net = VirtualNet::new(VirtualConfig {
            device,
            ..VirtualConfig::default()
        });
        VirtTarget {
            net: Rc::new(RefCell::new(net)),
            key: server.keyed().then_some(KEY),
        }
    }

    /// The device's counters and state, for reports.
    pub fn describe(&self) -> String {
        format!("{:?}", self.net.borrow().device.dev.stats())
    }
}

impl Target for VirtTarget {
    fn name(&self) -> &'static str {
        "virtual wire"
    }
    fn key(&self) -> Option<[u8; 32]> {
        self.key
    }
    fn connect(&self, peer: u8) -> Result<Peer<'static>, String> {
        let from = (peer > 0).then(|| Ipv4Address::new(192, 168, 69, 100 + peer));
        // Both of the device's connection slots may still be closing.
        for _ in 0..50 {
            let mut net = self.net.borrow_mut();
            match net.open_tcp(from) {
                Ok(conn) => {
                    let net = self.net.clone();
                    return Ok(Peer::new(Wire { net, conn }));
                }
                Err(NetError::Reset) => net.advance(Duration::from_millis(20)),
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
        Err("connect: refused for a second of virtual time".into())
    }
    fn invariants(&self, p: &mut Peer<'_>) -> Result<(), String> {
        device_invariants(p)
    }
}
