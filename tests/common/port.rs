//! Free ports for servers that the tests start as child processes.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the kernel's ephemeral range the tests take theirs
/// from.
const SPAN: u32 = 10_000;

/// A port on 127.0.0.1 that is free now and that nothing else in the
/// machine is handed meanwhile, until a server binds it.
///
/// A port bound to `:0` and released at once (what this did before) comes
/// from the kernel's range of ephemeral ports, from which every outgoing
/// connection takes its own: between the release and the server's bind,
/// a client's connection could take it, or another test's server, and a
/// test then spoke to the wrong server (one got 401). So the ports come
/// from the `SPAN` ports just below that range, which the kernel never
/// hands out by itself, each process starting at a place of its own and
/// never giving one twice; each is checked free by a bind.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low();
    if low <= SPAN + 1024 {
        return kernel_port();
    }
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low - SPAN + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_port()
}

/// The first port of the kernel's ephemeral range (Linux's default if it
/// cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn kernel_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
}
