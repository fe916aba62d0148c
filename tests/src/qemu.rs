//! The firmware image (`firmware-qemu/`) booted in QEMU's `mps2-an386`:
//! built with its own workspace for thumbv7em-none-eabihf, given a
//! provisioning block, its LAN9118 on a TAP inside a [`Netns`], UART0 on a
//! unix socket and UART1 (the log) in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::tap::Netns;

/// The device's address (the TAP's host side is .100).
pub const DEV_IP: &str = "192.168.69.2";

/// Where QEMU loads the provisioning block (firmware-qemu/src/prov.rs).
pub const PROV_ADDR: u32 = 0x003f_f000;

/// Why QEMU cannot run here, if it cannot.
pub fn missing_qemu() -> Option<String> {
    match Command::new("qemu-system-arm").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("qemu-system-arm is not installed (make test installs it with apt-get)".into()),
    }
}

/// The firmware image, built once per test process (release, as `make` builds it).
pub fn image() -> PathBuf {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-qemu");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // Run in its directory: its .cargo/config.toml selects the target.
        let st = Command::new(cargo)
            .args(["build", "--release", "--quiet"])
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .status()
            .expect("run cargo build for firmware-qemu");
        assert!(st.success(), "building firmware-qemu failed");
        dir.join("target/thumbv7em-none-eabihf/release/tether-firmware-qemu")
    })
    .clone()
}

/// The 128-byte provisioning block (layout in firmware-qemu/src/prov.rs):
/// a key if any, the seed, 192.168.69.2/24 (the default, so no address
/// flag) and the time.
pub fn prov_block(key: Option<[u8; 32]>, seed: [u8; 32], unix_ms: u64) -> Vec<u8> {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut b = vec![0u8; 128];
    b[..4].copy_from_slice(b"TPRV");
    b[4..6].copy_from_slice(&1u16.to_le_bytes());
    b[6..8].copy_from_slice(&128u16.to_le_bytes());
    let mut flags = 1u32 << 2;
    if let Some(k) = key {
        flags |= 1;
        b[12..44].copy_from_slice(&k);
    }
    b[8..12].copy_from_slice(&flags.to_le_bytes());
    b[44..76].copy_from_slice(&seed);
    b[88..96].copy_from_slice(&unix_ms.to_le_bytes());
    let c = CRC.checksum(&b[..124]);
    b[124..].copy_from_slice(&c.to_le_bytes());
    b
}

/// 32 bytes from the OS's random source.
pub fn random_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    let mut f = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut f, &mut s).expect("read /dev/urandom");
    s
}

/// A running QEMU; killed on drop.
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    /// UART0's unix socket (the serial link).
    pub uart0: PathBuf,
    /// UART1's output (the device log).
    pub log: PathBuf,
    /// When it was started.
    pub started: Instant,
}

impl Qemu {
    /// Boot `image` with `prov` in `ns` (its TAP `tap0`), files in `dir`.
    pub fn boot(ns: &Netns, image: &Path, prov: &[u8], dir: &Path) -> Qemu {
        let prov_path = dir.join("prov.bin");
        std::fs::write(&prov_path, prov).expect("write the provisioning block");
        let uart0 = dir.join("uart0.sock");
        let log = dir.join("uart1.log");
        let mut c = ns.exec(Path::new("qemu-system-arm"));
        c.args([
            "-M",
            "mps2-an386",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-kernel")
        .arg(image)
        .arg("-device")
        .arg(format!(
            "loader,file={},addr={PROV_ADDR:#x}",
            prov_path.display()
        ))
        .arg("-serial")
        .arg(format!("unix:{},server=on,wait=off", uart0.display()))
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args([
            "-nic",
            "tap,ifname=tap0,script=no,downscript=no,model=lan9118",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let started = Instant::now();
        let child = c.spawn().expect("spawn qemu-system-arm");
        Qemu {
            child,
            uart0,
            log,
            started,
        }
    }

    /// The device log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether QEMU still runs (it exits on a panic: the firmware resets and
    /// QEMU runs with -no-reboot).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Connect to UART0 (the socket appears once QEMU has started).
    pub fn connect_uart0(&self, limit: Duration) -> std::os::unix::net::UnixStream {
        let end = Instant::now() + limit;
        loop {
            match std::os::unix::net::UnixStream::connect(&self.uart0) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(20)))
                        .expect("timeout");
                    return s;
                }
                Err(e) if Instant::now() > end => panic!("UART0 socket: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
