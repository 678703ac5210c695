//! The `kvs` binary: the server and its command-line client. All logic is in
//! the library; this only maps the outcome to an exit code.

fn main() -> std::process::ExitCode {
    kvs::cli::main()
}
