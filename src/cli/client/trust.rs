//! `--ca-cert`: which `https://` servers the client trusts, and the TLS it
//! opens to check them. The certificates of the file are trusted as CAs,
//! and each one also as a server's own certificate, byte for byte: the
//! self-signed certificate that `openssl req -x509` makes carries
//! basicConstraints CA:TRUE (OpenSSL 3's default), which webpki refuses as
//! a server's certificate (`CaUsedAsEndEntity`), while curl's `--cacert`
//! takes it. ureq's TLS cannot be given a verifier of its own, so with
//! `--ca-cert` the client's connections go through [`CaCerts::connector`]:
//! ureq's proxy and TCP steps, then TLS (rustls) with [`Verifier`].

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
    StreamOwned,
};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};

/// The certificates of `--ca-cert`, as the TLS settings that trust them.
#[derive(Clone)]
pub struct CaCerts {
    /// The file, to name it when a server's certificate is refused.
    path: String,
    config: Arc<ClientConfig>,
}

impl fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCerts").field("path", &self.path).finish()
    }
}

impl CaCerts {
    /// Every certificate of a PEM file (for clap: a file that cannot be
    /// read or used is a usage error).
    pub fn read(path: &str) -> Result<CaCerts, String> {
        let pem = std::fs::read(path).map_err(|error| format!("cannot read {path}: {error}"))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("{path} is not valid PEM: {error}"))?;
        if certs.is_empty() {
            return Err(format!("{path} holds no certificate"));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in &certs {
            roots.add(cert.clone()).map_err(|error| {
                format!("{path} holds a certificate that cannot be used: {error}")
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|error| format!("the certificates of {path} cannot be used: {error}"))?;
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("no TLS version to use: {error}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier { webpki, own: certs }))
            .with_no_client_auth();
        Ok(CaCerts {
            path: path.to_owned(),
            config: Arc::new(config),
        })
    }

    /// The file the certificates came from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// How a client trusting these certificates connects: as ureq's own
    /// chain does (a CONNECT proxy if one is set, else TCP), then TLS with
    /// these settings for an `https://` URL.
    pub fn connector(&self) -> impl Connector {
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(Tls(self.config.clone()))
    }
}

/// Whether a refusal is webpki's of a CA certificate shown as a server's
/// own (which rustls passes on as an "other" error).
pub fn is_ca_used_as_end_entity(error: &CertificateError) -> bool {
    matches!(error, CertificateError::Other(other)
        if matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity)))
}

/// webpki's verifier over the file's certificates as CAs, which also takes
/// a server certificate that is one of them, byte for byte, as curl does.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The file's certificates, to compare with a server's.
    own: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verified {
            // webpki checks a server certificate's dates before its basic
            // constraints, so one refused for being a CA is in date; its
            // name is still to be checked.
            Err(rustls::Error::InvalidCertificate(error))
                if is_ca_used_as_end_entity(&error)
                    && self
                        .own
                        .iter()
                        .any(|own| own.as_ref() == end_entity.as_ref()) =>
            {
                verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Opens TLS over the connection before it for an `https://` URL, as
/// ureq's `RustlsConnector` does with settings of its own.
#[derive(Debug)]
struct Tls(Arc<ClientConfig>);

impl<In: Transport> Connector<In> for Tls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default();
        // An IPv6 address comes in brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ureq::Error::Tls("the server's host is not a name TLS can check"))?;
        let mut connection = ClientConnection::new(self.0.clone(), name)?;
        let mut socket = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        socket.set_timeout(details.timeout);
        connection
            .complete_io(&mut socket)
            .map_err(handshake_failed)?;
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned::new(connection, socket),
        })))
    }
}

/// A failed handshake: rustls's refusal as itself, so that a refused
/// certificate can be told apart.
fn handshake_failed(error: io::Error) -> ureq::Error {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ureq::Error::Rustls(tls.clone()),
        None => ureq::Error::from(error),
    }
}

/// A TLS connection, as ureq's `RustlsTransport`.
struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
