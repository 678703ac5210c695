//! The project's own black-box tests of the v1 HTTP API, as one test binary.
//!
//! Every test starts a server of its own (in this process, on port 0, with a
//! fresh data directory) and talks to it over HTTP only, so what is checked
//! here is what a client sees: status, error code, headers and bytes. The
//! contract these tests hold the server to is `api-v1.md`; each module takes
//! one concern of it:
//!
//! - `roles`: what each kind of token may and may not do, and the order in
//!   which refusals come;
//! - `public`: requests without any credential, refused everywhere but on
//!   the keys of a project an admin made `public`;
//! - `tokens`: minting, listing, revoking and expiring tokens;
//! - `in_flight`: requests whose body still arrives when their right goes
//!   (a token revoked, a project deleted or closed): they write nothing;
//! - `txn_body`: transaction bodies the one-pass reading could misread
//!   (field order, a field twice, a field the op does not allow);
//! - `txn_fuzz`: any transaction body is a 200 or a 4xx, never a 5xx;
//! - `validation`: every input the server refuses, and with which code;
//! - `errors`: unknown routes, wrong methods and the shape of every error;
//! - `values`: reading and writing values: bytes, headers, ETags and
//!   preconditions;
//! - `listing`: paged listings and deletes by prefix;
//! - `persistence`: what a restart keeps, and live moves between storages;
//! - `watch`: who may watch and wait for changes, and what ends them;
//! - `form`: the original kvs's form interface on the default project;
//! - `pykv`: the Simple-PyKV surface: its envelope, its 401s, its keys, and
//!   the storage it shares with v1;
//! - `json_text`: JSON values kept as sent, in and out: the stored text is
//!   the text a transaction sent, and every answer that inlines a JSON
//!   value writes the stored text as it is;
//! - `openapi`: the OpenAPI document against what the server sends;
//! - `ui`: the web view's page and assets: their headers, and no data on
//!   the page itself.
//!
//! `support` holds what these tests need beyond `tests/common`: contract
//! assertions, a raw HTTP exchange for requests a client library would
//! tidy up, and polling.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod errors;
mod form;
mod import;
mod in_flight;
mod json_text;
mod listing;
mod openapi;
mod persistence;
mod public;
mod pykv;
mod roles;
mod tokens;
mod txn_body;
mod txn_fuzz;
mod ui;
mod validation;
mod values;
mod watch;
