//! Shared test support: the real-registry harness, the token issuer and the fault proxy.
#![allow(dead_code)]
pub mod fault_proxy;
pub mod registry;

/// Whether `tool` can be run. When it cannot, prints why and returns false so the test can
/// return early, except under `CI=true`, where a missing tool fails the test loudly.
pub fn require_tool(tool: &str, args: &[&str]) -> bool {
    let ok = std::process::Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("`{tool}` is required under CI=true but cannot be run");
        }
        eprintln!("skipping: `{tool}` is not installed");
    }
    ok
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A free TCP port on 127.0.0.1 (bound, read, released: a small race we accept in tests).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 works");
    l.local_addr()
        .expect("a bound socket has an address")
        .port()
}
