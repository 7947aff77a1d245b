//! The S/MIME text wrapper (RFC 8551) around a CMS message, as in Apple's `.p7m` server tokens.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::CmsError;

/// Largest S/MIME file accepted; real server tokens are about 2 KiB.
const MAX_SMIME_LEN: usize = 1 << 20;

/// Extracts the DER/BER CMS bytes from an S/MIME message: MIME headers (CRLF or LF line ends,
/// folded lines allowed), a blank line, then the base64 body.
///
/// The `Content-Type` header must be `application/pkcs7-mime` (or the older
/// `application/x-pkcs7-mime`), and the transfer encoding, if named, must be base64.
pub fn smime_unwrap(text: &[u8]) -> Result<Vec<u8>, CmsError> {
    if text.len() > MAX_SMIME_LEN {
        return Err(CmsError::NotSmime("it is larger than 1 MiB".into()));
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| CmsError::NotSmime("it is binary, not text".into()))?;
    let trimmed = text.trim_start();
    if let Some(rest) = trimmed.strip_prefix("-----BEGIN ") {
        let label = rest.split("-----").next().unwrap_or_default();
        return Err(CmsError::PemNotSmime {
            label: label.chars().take(40).collect(),
        });
    }
    let normalized = trimmed.replace("\r\n", "\n");
    let (head, body) = normalized
        .split_once("\n\n")
        .ok_or_else(|| CmsError::NotSmime("there is no blank line after the headers".into()))?;

    let mut content_type = None;
    let mut encoding = None;
    for (name, value) in unfold_headers(head)? {
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value),
            "content-transfer-encoding" => encoding = Some(value),
            _ => {}
        }
    }
    let content_type =
        content_type.ok_or_else(|| CmsError::NotSmime("it has no Content-Type header".into()))?;
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media != "application/pkcs7-mime" && media != "application/x-pkcs7-mime" {
        return Err(CmsError::NotSmime(format!(
            "its Content-Type is {media}, not application/pkcs7-mime"
        )));
    }
    if let Some(enc) = encoding
        && !enc.trim().eq_ignore_ascii_case("base64")
    {
        return Err(CmsError::NotSmime(format!(
            "its transfer encoding is {}, not base64",
            enc.trim()
        )));
    }
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(CmsError::Base64("the body is empty".into()));
    }
    STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| CmsError::Base64(e.to_string()))
}

/// Wraps DER CMS EnvelopedData as an S/MIME message the way Apple's servers write `.p7m`
/// tokens: BouncyCastle-style headers, CRLF line ends, base64 in 76-column lines.
pub fn smime_wrap(der: &[u8]) -> String {
    let mut out = String::from(
        "Content-Type: application/pkcs7-mime; name=\"smime.p7m\"; smime-type=enveloped-data\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
         Content-Description: S/MIME Encrypted Message\r\n\r\n",
    );
    let b64 = STANDARD.encode(der);
    for chunk in b64.as_bytes().chunks(76) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// Splits a header block into (name, value) pairs, joining folded continuation lines.
fn unfold_headers(head: &str) -> Result<Vec<(String, String)>, CmsError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            let last = headers
                .last_mut()
                .ok_or_else(|| CmsError::NotSmime("it starts with a continuation line".into()))?;
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| CmsError::NotSmime("a header line has no colon".into()))?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(CmsError::NotSmime("a header name is invalid".into()));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/apple-dep/synthetic"
    );

    fn token() -> Vec<u8> {
        std::fs::read(format!("{DIR}/token_aes128_der_smime.p7m")).expect("vector")
    }

    #[test]
    fn wrap_then_unwrap_is_identity_and_matches_apple_layout() {
        let der = smime_unwrap(&token()).expect("unwrap");
        let text = smime_wrap(&der);
        assert_eq!(smime_unwrap(text.as_bytes()).expect("again"), der);
        // Same bytes as the OpenSSL-made vector, which imitates Apple's layout.
        assert_eq!(text.as_bytes(), token().as_slice());
    }

    #[test]
    fn lf_line_ends_and_folded_headers_are_accepted() {
        let der = smime_unwrap(&token()).expect("unwrap");
        let lf = smime_wrap(&der).replace("\r\n", "\n");
        assert_eq!(smime_unwrap(lf.as_bytes()).expect("lf"), der);
        let folded = lf.replacen("; name=", ";\n\tname=", 1);
        assert_eq!(smime_unwrap(folded.as_bytes()).expect("folded"), der);
    }

    #[test]
    fn a_pem_certificate_is_refused_by_name() {
        let cert = std::fs::read(format!("{DIR}/dep_cert.pem")).expect("vector");
        let err = smime_unwrap(&cert).expect_err("a certificate");
        assert_eq!(
            err,
            CmsError::PemNotSmime {
                label: "CERTIFICATE".into()
            }
        );
        assert!(err.to_string().contains(".p7m"));
    }

    #[test]
    fn wrong_content_type_missing_blank_line_and_bad_base64() {
        let text = String::from_utf8(token()).expect("utf8");
        let plain = text.replace("application/pkcs7-mime", "text/plain");
        assert!(
            matches!(smime_unwrap(plain.as_bytes()), Err(CmsError::NotSmime(m)) if m.contains("text/plain"))
        );
        let no_blank = text.replace("\r\n\r\n", "\r\n");
        assert!(matches!(
            smime_unwrap(no_blank.as_bytes()),
            Err(CmsError::NotSmime(_))
        ));
        let bad = text.replacen("MII", "M*I", 1);
        assert!(matches!(
            smime_unwrap(bad.as_bytes()),
            Err(CmsError::Base64(_))
        ));
        assert!(matches!(
            smime_unwrap(&[0xff, 0xfe, 0x00]),
            Err(CmsError::NotSmime(_))
        ));
        assert!(matches!(smime_unwrap(b""), Err(CmsError::NotSmime(_))));
    }
}
