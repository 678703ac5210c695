//! The black-box tests of everything but the v1 API's own suite (`api`), the
//! storage suite (`store`) and cluster mode (`cluster`), as one test binary.
//!
//! Each file below was a test binary of its own. One binary builds in a
//! fraction of the time: every binary compiled `common` and the generic code
//! it used from the server's dependencies again, and was linked on its own:
//! about 370 s of compile time for the 24 against 92 s for this one
//! (`cargo test --no-run --timings`, 2 cores shared with other builds,
//! 2026-12-07). The files stay where they were, so `tests/crash.rs` is
//! still the crash tests; their tests are named `crash::…` here (`cargo test
//! --test suite crash::`).

mod common;

mod backup;
mod cli;
mod compact;
mod consistency;
mod crash;
mod damage;
mod disk_full;
mod engine_contract;
mod large_delete;
mod limits;
#[path = "linearizability/main.rs"]
mod linearizability;
mod memory;
mod metrics;
mod pykv_import;
mod read_after_write;
mod readme;
mod replay;
mod smoke;
mod tls;
mod top;
mod transfer;
mod upgrade;
mod uploads;
mod wal_damage;
mod watch;
mod watch_cli;
