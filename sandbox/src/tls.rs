//! The sandbox's own CA and server certificate, and the rustls configurations that use them.
//! Imports nothing of the crate.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A generated CA plus a server certificate it signed.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    /// Server certificate chain (leaf).
    pub server_chain: Vec<CertificateDer<'static>>,
    /// Server private key, PKCS#8 DER.
    pub server_key: Vec<u8>,
}

/// DNS names on the server certificate. `*.example.localhost` is outside every service's domain:
/// tests point hostile answers (a redirect, a `cellAddress`) there, and the request log shows
/// whether anything followed them.
pub const SERVER_DNS_NAMES: [&str; 4] =
    ["localhost", "*.sandbox.localhost", "*.managedhsm.sandbox.localhost", "*.example.localhost"];

/// Generate a fresh CA and server certificate.
pub fn generate() -> Result<Pki, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "rootkey-sandbox CA");
    ca_params.distinguished_name.push(DnType::OrganizationName, "rootkey-operator sandbox");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(SERVER_DNS_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.subject_alt_names.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    params.distinguished_name.push(DnType::CommonName, "sandbox.localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        server_chain: vec![cert.der().clone()],
        server_key: key.serialize_der(),
    })
}

/// A rustls server config for the sandbox listener (HTTP/1.1 only).
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pki.server_chain.clone(), key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A rustls client config trusting only the given CA (for tests and the self-test).
pub fn client_config(ca: &CertificateDer<'static>) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    client_config_trusting(std::slice::from_ref(ca))
}

/// A rustls client config trusting exactly these CAs.
pub fn client_config_trusting(cas: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone())?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
