//! HTTPS: the certificate and key come from PEM files (`--tls-cert`,
//! `--tls-key`) and are read again whenever either file changes, so a
//! renewed certificate (certbot, cert-manager, a cron job) takes effect
//! without a restart. Connections already open keep the certificate they
//! were made with; each new handshake gets the current one.
//!
//! A replacement that does not load (half-written, a key that does not
//! match) is logged and ignored: the server keeps the last good pair rather
//! than stop answering. Changes are found by polling the files' size and
//! modification time, which also sees a replacement by rename, as tools that
//! write atomically do.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// How often the files are checked for a change.
const POLL: Duration = Duration::from_secs(1);

/// The certificate every new handshake is given.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// An acceptor for `files`, with a task that reloads them when they change
/// (the task holds only a weak reference to the certificate it updates, so
/// it ends once the acceptor is gone).
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let current = Arc::new(Current(ArcSwap::from_pointee(load(files, &provider)?)));
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    // HTTP/1.1 only, as the server speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio::spawn(reload(files.clone(), provider, Arc::downgrade(&current)));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reads the certificate chain and its key.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("cannot read certificates from {}", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read a private key from {}", files.key.display()))?;
    CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "the key in {} does not go with the certificate in {}",
            files.key.display(),
            files.cert.display()
        )
    })
}

/// What identifies a version of a file.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

async fn reload(files: TlsFiles, provider: Arc<CryptoProvider>, current: std::sync::Weak<Current>) {
    let stamps = |files: &TlsFiles| (stamp(&files.cert), stamp(&files.key));
    let mut seen = stamps(&files);
    loop {
        tokio::time::sleep(POLL).await;
        let Some(current) = current.upgrade() else {
            return;
        };
        let now = stamps(&files);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&files, &provider) {
            Ok(key) => {
                current.0.store(Arc::new(key));
                tracing::info!(cert = %files.cert.display(), "loaded the changed TLS certificate");
            }
            // Perhaps half-written: the rest of the write changes the
            // files again, and they are tried again then.
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "the changed TLS files do not load; still serving the previous certificate"
            ),
        }
    }
}
