//! kvs: a small, secure, fast key/value server with an HTTP API.
//!
//! The layers, from the outside in: [`cli`] (the one binary's commands),
//! [`server`] (start, bootstrap, shutdown), [`http`] (routing, auth and
//! handlers), [`store`] (the storage trait and its embedded engine), and
//! [`domain`] (the parsed types everything shares); [`backup`] is the
//! backup format, which the server writes and `kvs restore` reads; `files`
//! the file steps they share (files made private, directory syncs). Dependencies point
//! inwards only: `store` knows nothing of HTTP, `domain` nothing of either.

pub mod backup;
pub mod cli;
pub mod config;
pub mod domain;
mod files;
pub mod http;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
