//! Keys, certificates and CMS: the local CA, TLS certificates, the token keypair, sealed secrets.

pub mod ca; // the local CA and the TLS server certificate
pub mod cms; // CMS EnvelopedData/SignedData, S/MIME, certificate chains and making certificates
pub mod scep; // SCEP (RFC 8894) messages: CA side and client side
pub mod secret;
pub mod token_keypair; // the RSA keypair and certificate an ADE server token is encrypted to
