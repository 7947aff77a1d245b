//! Keys, certificates and CMS: the local CA, TLS certificates, the token keypair, sealed secrets.

pub mod secret;
