//! The `kvs` binary: the server and its command-line client. All logic is in
//! the library; this only maps the outcome to an exit code.

/// mimalloc instead of glibc's malloc. malloc and free were about 10% of the
/// server's CPU samples on the GET path, and glibc's arena lock showed up in
/// the profile; the same binary with jemalloc preloaded (`LD_PRELOAD`) served
/// 13% more GETs at 64 connections (bench/README.md). mimalloc gives the same
/// kind of thread-local fast path and builds from its crate with the C
/// compiler alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kvs::cli::main()
}
