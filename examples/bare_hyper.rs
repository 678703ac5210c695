//! A bare hyper 1 HTTP/1.1 server that answers every request with the same
//! fixed 100-byte body, and nothing else: no routing, no authentication, no
//! storage, no logs, no metrics.
//!
//! It exists as the yardstick for `bench/run.sh`. The benchmark loads it the
//! same way as kvs (same wrk, same connections, same machine, in the same
//! run), so kvs's GET throughput can be stated as a share of what hyper and
//! tokio alone reach here. That share is what the HTTP front end and the
//! store cost, with the noise of a shared machine largely divided out.
//!
//! Usage: `cargo run --release --example bare_hyper -- 127.0.0.1:8080`
//! (the listen address is the first argument; default `127.0.0.1:8080`).

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The answer to every request: 100 bytes, like the benchmark's values.
const BODY: &[u8; 100] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz!\n";

async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(BODY))))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
        .parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(address))
}

async fn serve(address: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(address).await?;
    eprintln!("bare_hyper listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: keep serving.
                eprintln!("accept failed: {error}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // Keep-alive is hyper's default for HTTP/1.1.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
