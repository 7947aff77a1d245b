//! Apple's DEP API errors, typed. Apple answers with a status and a bare code string (sometimes
//! JSON-quoted or wrapped in `{"code": ...}`), so an answer is classified by status plus substring,
//! as nanodep and commandment do. Each error carries the sentence an admin needs
//! ([`DepError::admin_message`]).
//! <https://developer.apple.com/documentation/devicemanagement/interpreting-error-codes>

use std::time::Duration;

/// The DEP endpoint a request went to (also the `endpoint` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Session,
    Account,
    FetchDevices,
    SyncDevices,
    DeviceDetails,
    DefineProfile,
    GetProfile,
    AssignProfile,
    RemoveProfile,
    Disown,
}

impl Endpoint {
    pub const ALL: [Endpoint; 10] = [
        Endpoint::Session,
        Endpoint::Account,
        Endpoint::FetchDevices,
        Endpoint::SyncDevices,
        Endpoint::DeviceDetails,
        Endpoint::DefineProfile,
        Endpoint::GetProfile,
        Endpoint::AssignProfile,
        Endpoint::RemoveProfile,
        Endpoint::Disown,
    ];

    /// A short stable name, used as the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Session => "session",
            Endpoint::Account => "account",
            Endpoint::FetchDevices => "fetch_devices",
            Endpoint::SyncDevices => "sync_devices",
            Endpoint::DeviceDetails => "device_details",
            Endpoint::DefineProfile => "define_profile",
            Endpoint::GetProfile => "get_profile",
            Endpoint::AssignProfile => "assign_profile",
            Endpoint::RemoveProfile => "remove_profile",
            Endpoint::Disown => "disown",
        }
    }

    /// The path under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Session => "/session",
            Endpoint::Account => "/account",
            Endpoint::FetchDevices => "/server/devices",
            Endpoint::SyncDevices => "/devices/sync",
            Endpoint::DeviceDetails => "/devices",
            Endpoint::DefineProfile | Endpoint::GetProfile => "/profile",
            Endpoint::AssignProfile | Endpoint::RemoveProfile => "/profile/devices",
            Endpoint::Disown => "/devices/disown",
        }
    }

    /// The HTTP method the client uses. Assign uses `PUT`, which Apple accepts alongside `POST`
    /// (`/account` lists both) and which every client in production uses.
    pub fn method(self) -> http::Method {
        match self {
            Endpoint::Session | Endpoint::Account | Endpoint::GetProfile => http::Method::GET,
            Endpoint::AssignProfile => http::Method::PUT,
            Endpoint::RemoveProfile => http::Method::DELETE,
            _ => http::Method::POST,
        }
    }
}

/// A define-profile field Apple refused (400 with a `CONFIG_*`/`*_INVALID` code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileField {
    /// `CONFIG_NAME_REQUIRED`
    NameRequired,
    /// `CONFIG_NAME_INVALID`
    NameInvalid,
    /// `CONFIG_URL_REQUIRED`
    UrlRequired,
    /// `CONFIG_URL_INVALID`
    UrlInvalid,
    /// `DEPARTMENT_REQUIRED` (old simulator)
    DepartmentRequired,
    /// `DEPARTMENT_INVALID`
    DepartmentInvalid,
    /// `FLAGS_INVALID`
    FlagsInvalid,
    /// `LOCALE_INVALID`
    LocaleInvalid,
    /// `MAGIC_INVALID`
    MagicInvalid,
    /// `SUPPORT_EMAIL_INVALID`
    SupportEmailInvalid,
    /// `SUPPORT_PHONE_REQUIRED` (old simulator)
    SupportPhoneRequired,
    /// `SUPPORT_PHONE_INVALID`
    SupportPhoneInvalid,
}

impl ProfileField {
    pub const ALL: [ProfileField; 12] = [
        ProfileField::NameRequired,
        ProfileField::NameInvalid,
        ProfileField::UrlRequired,
        ProfileField::UrlInvalid,
        ProfileField::DepartmentRequired,
        ProfileField::DepartmentInvalid,
        ProfileField::FlagsInvalid,
        ProfileField::LocaleInvalid,
        ProfileField::MagicInvalid,
        ProfileField::SupportEmailInvalid,
        ProfileField::SupportPhoneRequired,
        ProfileField::SupportPhoneInvalid,
    ];

    /// Apple's code string.
    pub fn code(self) -> &'static str {
        match self {
            ProfileField::NameRequired => "CONFIG_NAME_REQUIRED",
            ProfileField::NameInvalid => "CONFIG_NAME_INVALID",
            ProfileField::UrlRequired => "CONFIG_URL_REQUIRED",
            ProfileField::UrlInvalid => "CONFIG_URL_INVALID",
            ProfileField::DepartmentRequired => "DEPARTMENT_REQUIRED",
            ProfileField::DepartmentInvalid => "DEPARTMENT_INVALID",
            ProfileField::FlagsInvalid => "FLAGS_INVALID",
            ProfileField::LocaleInvalid => "LOCALE_INVALID",
            ProfileField::MagicInvalid => "MAGIC_INVALID",
            ProfileField::SupportEmailInvalid => "SUPPORT_EMAIL_INVALID",
            ProfileField::SupportPhoneRequired => "SUPPORT_PHONE_REQUIRED",
            ProfileField::SupportPhoneInvalid => "SUPPORT_PHONE_INVALID",
        }
    }

    fn fix(self) -> &'static str {
        match self {
            ProfileField::NameRequired => "the profile needs a name",
            ProfileField::NameInvalid => "the profile name must be 1 to 125 characters",
            ProfileField::UrlRequired => "the profile needs an enrollment URL",
            ProfileField::UrlInvalid => "the enrollment URL must be 1 to 2000 characters",
            ProfileField::DepartmentRequired => "the profile needs a department name",
            ProfileField::DepartmentInvalid => "the department name must be at most 125 characters",
            ProfileField::FlagsInvalid => {
                "a profile that cannot be removed must also be supervised: turn on supervision or allow removal"
            }
            ProfileField::LocaleInvalid => {
                "the language must be an ISO 639 code and the region an ISO 3166 code"
            }
            ProfileField::MagicInvalid => "the organisation magic must be at most 256 characters",
            ProfileField::SupportEmailInvalid => {
                "the support email address must be at most 250 characters"
            }
            ProfileField::SupportPhoneRequired => "the profile needs a support phone number",
            ProfileField::SupportPhoneInvalid => {
                "the support phone number must be at most 50 characters"
            }
        }
    }
}

/// Everything that can go wrong talking to Apple's DEP API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepError {
    /// 403 `T_C_NOT_SIGNED`.
    #[error("Apple: terms and conditions not accepted (T_C_NOT_SIGNED)")]
    TermsNotSigned,
    /// 403 `ACCESS_DENIED`.
    #[error("Apple: access denied (ACCESS_DENIED)")]
    AccessDenied,
    /// 401/403 `token_rejected`, `signature_invalid`, or 401 on `/session`: the token is revoked,
    /// replaced or wrong.
    #[error("Apple rejected the server token ({code})")]
    TokenRejected { code: String },
    /// 403 `token_expired`.
    #[error("Apple: the server token has expired (token_expired)")]
    TokenExpired,
    /// The token's own expiry date has passed; nothing was sent.
    #[error("the server token expired on {expiry}")]
    TokenPastExpiry { expiry: String },
    /// 400 `EXPIRED_CURSOR`: the cursor is older than 7 days.
    #[error("Apple: the sync cursor has expired (EXPIRED_CURSOR)")]
    ExpiredCursor,
    /// 400 `INVALID_CURSOR`.
    #[error("Apple: the sync cursor is invalid (INVALID_CURSOR)")]
    InvalidCursor,
    /// 400 `EXHAUSTED_CURSOR`: the fetch already returned everything; continue with sync.
    #[error("Apple: the fetch cursor is exhausted (EXHAUSTED_CURSOR)")]
    ExhaustedCursor,
    /// 400 `CURSOR_REQUIRED`.
    #[error("Apple: sync needs a cursor (CURSOR_REQUIRED)")]
    CursorRequired,
    /// 400 define-profile validation codes.
    #[error("Apple refused the profile ({})", .0.code())]
    Profile(ProfileField),
    /// 400 `DEVICE_ID_REQUIRED`.
    #[error("Apple: no serial numbers given (DEVICE_ID_REQUIRED)")]
    DeviceIdRequired,
    /// 400 `PROFILE_UUID_REQUIRED`.
    #[error("Apple: no profile UUID given (PROFILE_UUID_REQUIRED)")]
    ProfileUuidRequired,
    /// 404, or 400 `PROFILE_NOT_FOUND`.
    #[error("Apple: profile not found")]
    ProfileNotFound,
    /// 400 `USER_AGENT_MISSING` / `USER_AGENT_INVALID`.
    #[error("Apple refused the User-Agent ({code})")]
    UserAgent { code: String },
    /// 400 `MALFORMED_REQUEST_BODY`.
    #[error("Apple: malformed request body")]
    MalformedRequest,
    /// 400 on `/session` (OAuth parameters Apple does not accept).
    #[error("Apple refused the OAuth request: {body}")]
    OAuthRequest { body: String },
    /// Any other 4xx, not retried.
    #[error("Apple answered {status} on {endpoint}: {body}")]
    Rejected {
        endpoint: &'static str,
        status: u16,
        body: String,
    },
    /// 429/503 still refused after waiting, or asked to wait longer than the cap.
    #[error("Apple is throttling requests (HTTP {status})")]
    Throttled {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// 5xx after the retries.
    #[error("Apple's server failed (HTTP {status}): {body}")]
    Server { status: u16, body: String },
    /// Connection, TLS or timeout failure after the retries.
    #[error("cannot reach Apple's DEP service: {0}")]
    Network(String),
    /// An answer that is not the JSON Apple documents.
    #[error("Apple's answer could not be read: {0}")]
    InvalidResponse(String),
    /// Refused before sending: more serials than Apple takes in one call.
    #[error("{count} serial numbers given; Apple takes at most {max} per call")]
    TooManySerials { count: usize, max: usize },
    /// The configured base URL cannot be used.
    #[error("the DEP base URL is invalid: {0}")]
    BaseUrl(String),
}

impl DepError {
    /// Classifies a non-200 answer from Apple by status and code substring.
    pub fn from_response(endpoint: Endpoint, status: u16, body: &str) -> DepError {
        let has = |code: &str| body.contains(code);
        if has("T_C_NOT_SIGNED") {
            return DepError::TermsNotSigned;
        }
        if has("USER_AGENT_MISSING") {
            return DepError::UserAgent {
                code: "USER_AGENT_MISSING".into(),
            };
        }
        if has("USER_AGENT_INVALID") {
            return DepError::UserAgent {
                code: "USER_AGENT_INVALID".into(),
            };
        }
        match status {
            400 => {
                let cursor = [
                    ("EXPIRED_CURSOR", DepError::ExpiredCursor),
                    ("INVALID_CURSOR", DepError::InvalidCursor),
                    ("EXHAUSTED_CURSOR", DepError::ExhaustedCursor),
                    ("CURSOR_REQUIRED", DepError::CursorRequired),
                    ("DEVICE_ID_REQUIRED", DepError::DeviceIdRequired),
                    ("PROFILE_UUID_REQUIRED", DepError::ProfileUuidRequired),
                    ("PROFILE_NOT_FOUND", DepError::ProfileNotFound),
                    ("MALFORMED_REQUEST_BODY", DepError::MalformedRequest),
                ];
                if let Some((_, e)) = cursor.into_iter().find(|(c, _)| has(c)) {
                    return e;
                }
                if let Some(f) = ProfileField::ALL.into_iter().find(|f| has(f.code())) {
                    return DepError::Profile(f);
                }
                if endpoint == Endpoint::Session {
                    return DepError::OAuthRequest { body: short(body) };
                }
            }
            401 | 403 => {
                if has("ACCESS_DENIED") {
                    return DepError::AccessDenied;
                }
                if has("token_expired") {
                    return DepError::TokenExpired;
                }
                for code in ["token_rejected", "signature_invalid"] {
                    if has(code) {
                        return DepError::TokenRejected { code: code.into() };
                    }
                }
                // A 401 that survived a fresh session, or any refusal of /session, means the
                // token itself is not accepted.
                if status == 401 || endpoint == Endpoint::Session {
                    return DepError::TokenRejected {
                        code: format!("HTTP {status}"),
                    };
                }
            }
            404 if matches!(
                endpoint,
                Endpoint::AssignProfile | Endpoint::GetProfile | Endpoint::DefineProfile
            ) =>
            {
                return DepError::ProfileNotFound;
            }
            429 | 503 => {
                return DepError::Throttled {
                    status,
                    retry_after: None,
                };
            }
            500..=599 => {
                return DepError::Server {
                    status,
                    body: short(body),
                };
            }
            _ => {}
        }
        DepError::Rejected {
            endpoint: endpoint.name(),
            status,
            body: short(body),
        }
    }

    /// The plain sentence an admin reads, saying what happened and what to do.
    pub fn admin_message(&self) -> String {
        const NEW_TOKEN: &str = "an administrator must download a new server token for this MDM server in Apple School Manager or Apple Business Manager and upload it here";
        match self {
            DepError::TermsNotSigned => "Apple says the terms and conditions are not accepted: an administrator must sign in to Apple School Manager or Apple Business Manager and accept them.".into(),
            DepError::AccessDenied => format!("Apple says this server token has no access to the account: {NEW_TOKEN}."),
            DepError::TokenRejected { .. } => format!("Apple rejected the server token (it was revoked, replaced by a newer one, or is wrong): {NEW_TOKEN}."),
            DepError::TokenExpired => format!("Apple says the server token has expired: {NEW_TOKEN}."),
            DepError::TokenPastExpiry { expiry } => format!("The server token expired on {expiry}: {NEW_TOKEN}."),
            DepError::ExpiredCursor => "Apple says the sync position is more than 7 days old: Orchard will run a full device fetch; nothing needs to be done.".into(),
            DepError::InvalidCursor => "Apple did not recognise the sync position: Orchard will run a full device fetch; nothing needs to be done.".into(),
            DepError::ExhaustedCursor => "Apple has already sent every device for this fetch: Orchard continues with incremental sync; nothing needs to be done.".into(),
            DepError::CursorRequired => "Apple needs a sync position for incremental sync: Orchard will run a full device fetch; nothing needs to be done.".into(),
            DepError::Profile(f) => format!("Apple refused the enrollment profile ({}): {}. Change the profile and save it again.", f.code(), f.fix()),
            DepError::DeviceIdRequired => "Apple says no serial numbers were given: choose at least one device.".into(),
            DepError::ProfileUuidRequired => "Apple says no profile was given: choose an enrollment profile.".into(),
            DepError::ProfileNotFound => "Apple does not know this enrollment profile: save the profile again so Orchard defines it at Apple, then retry.".into(),
            DepError::UserAgent { code } => format!("Apple refused Orchard's User-Agent ({code}): this is a bug in Orchard; please report it."),
            DepError::MalformedRequest => "Apple could not read Orchard's request: this is a bug in Orchard; please report it.".into(),
            DepError::OAuthRequest { .. } => "Apple refused Orchard's sign-in request: this is a bug in Orchard; please report it.".into(),
            DepError::Rejected { endpoint, status, .. } => format!("Apple refused the request ({endpoint}, HTTP {status}): check the serial numbers and profile, then retry."),
            DepError::Throttled { retry_after, .. } => match retry_after {
                Some(d) => format!("Apple is limiting requests: Orchard will try again in {} seconds; nothing needs to be done.", d.as_secs().max(1)),
                None => "Apple is limiting requests: Orchard will try again at the next sync; nothing needs to be done.".into(),
            },
            DepError::Server { status, .. } => format!("Apple's service had an error (HTTP {status}): Orchard will try again at the next sync; if it lasts, check Apple's system status page."),
            DepError::Network(_) => "Orchard cannot reach Apple's DEP service (mdmenrollment.apple.com): check this server's internet connection, DNS and firewall.".into(),
            DepError::InvalidResponse(_) => "Apple's answer could not be read: Orchard will try again at the next sync; if it lasts, please report it.".into(),
            DepError::TooManySerials { max, .. } => format!("Apple takes at most {max} devices per request: choose fewer devices."),
            DepError::BaseUrl(_) => "The DEP service address in the settings is not a valid URL: fix it in the configuration.".into(),
        }
    }

    /// Whether the cursor must be dropped and a full fetch started.
    pub fn needs_full_fetch(&self) -> bool {
        matches!(
            self,
            DepError::ExpiredCursor | DepError::InvalidCursor | DepError::CursorRequired
        )
    }

    /// Whether the token itself is unusable until an admin acts.
    pub fn needs_admin(&self) -> bool {
        matches!(
            self,
            DepError::TermsNotSigned
                | DepError::AccessDenied
                | DepError::TokenRejected { .. }
                | DepError::TokenExpired
                | DepError::TokenPastExpiry { .. }
        )
    }
}

/// At most 200 characters of an answer body without the JSON quotes, for errors and logs.
fn short(body: &str) -> String {
    body.trim().trim_matches('"').chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_reference_code() {
        use DepError as E;
        let cases: Vec<(Endpoint, u16, &str, DepError)> = vec![
            (Endpoint::Session, 403, "T_C_NOT_SIGNED", E::TermsNotSigned),
            (
                Endpoint::Account,
                403,
                r#"{"code":"T_C_NOT_SIGNED"}"#,
                E::TermsNotSigned,
            ),
            (Endpoint::Session, 403, "ACCESS_DENIED", E::AccessDenied),
            (
                Endpoint::Session,
                403,
                "token_rejected",
                E::TokenRejected {
                    code: "token_rejected".into(),
                },
            ),
            (
                Endpoint::Account,
                401,
                "token_rejected",
                E::TokenRejected {
                    code: "token_rejected".into(),
                },
            ),
            (
                Endpoint::Session,
                403,
                "signature_invalid",
                E::TokenRejected {
                    code: "signature_invalid".into(),
                },
            ),
            (
                Endpoint::Session,
                401,
                "UNAUTHORIZED",
                E::TokenRejected {
                    code: "HTTP 401".into(),
                },
            ),
            (Endpoint::Session, 403, "token_expired", E::TokenExpired),
            (
                Endpoint::Session,
                400,
                "oauth_parameters_absent",
                E::OAuthRequest {
                    body: "oauth_parameters_absent".into(),
                },
            ),
            (
                Endpoint::SyncDevices,
                400,
                "\"EXPIRED_CURSOR\"",
                E::ExpiredCursor,
            ),
            (
                Endpoint::SyncDevices,
                400,
                "INVALID_CURSOR",
                E::InvalidCursor,
            ),
            (
                Endpoint::FetchDevices,
                400,
                "EXHAUSTED_CURSOR",
                E::ExhaustedCursor,
            ),
            (
                Endpoint::SyncDevices,
                400,
                "CURSOR_REQUIRED",
                E::CursorRequired,
            ),
            (
                Endpoint::Disown,
                400,
                "DEVICE_ID_REQUIRED",
                E::DeviceIdRequired,
            ),
            (
                Endpoint::AssignProfile,
                400,
                "PROFILE_UUID_REQUIRED",
                E::ProfileUuidRequired,
            ),
            (
                Endpoint::AssignProfile,
                404,
                "NOT_FOUND",
                E::ProfileNotFound,
            ),
            (
                Endpoint::GetProfile,
                400,
                "PROFILE_NOT_FOUND",
                E::ProfileNotFound,
            ),
            (
                Endpoint::Account,
                400,
                "USER_AGENT_MISSING",
                E::UserAgent {
                    code: "USER_AGENT_MISSING".into(),
                },
            ),
            (
                Endpoint::Account,
                400,
                "USER_AGENT_INVALID",
                E::UserAgent {
                    code: "USER_AGENT_INVALID".into(),
                },
            ),
            (
                Endpoint::DeviceDetails,
                400,
                "MALFORMED_REQUEST_BODY",
                E::MalformedRequest,
            ),
            (
                Endpoint::Session,
                429,
                "TOO_MANY_REQUESTS",
                E::Throttled {
                    status: 429,
                    retry_after: None,
                },
            ),
            (
                Endpoint::Account,
                503,
                "",
                E::Throttled {
                    status: 503,
                    retry_after: None,
                },
            ),
            (
                Endpoint::Account,
                500,
                "oops",
                E::Server {
                    status: 500,
                    body: "oops".into(),
                },
            ),
            (
                Endpoint::Account,
                401,
                "UNAUTHORIZED",
                E::TokenRejected {
                    code: "HTTP 401".into(),
                },
            ),
            (
                Endpoint::Account,
                403,
                "FORBIDDEN",
                E::Rejected {
                    endpoint: "account",
                    status: 403,
                    body: "FORBIDDEN".into(),
                },
            ),
            (
                Endpoint::Account,
                405,
                "METHOD_NOT_ALLOWED",
                E::Rejected {
                    endpoint: "account",
                    status: 405,
                    body: "METHOD_NOT_ALLOWED".into(),
                },
            ),
            (
                Endpoint::DeviceDetails,
                404,
                "NOT_FOUND",
                E::Rejected {
                    endpoint: "device_details",
                    status: 404,
                    body: "NOT_FOUND".into(),
                },
            ),
        ];
        for (endpoint, status, body, want) in cases {
            assert_eq!(
                DepError::from_response(endpoint, status, body),
                want,
                "{status} {body}"
            );
        }
        for f in ProfileField::ALL {
            assert_eq!(
                DepError::from_response(Endpoint::DefineProfile, 400, &format!("\"{}\"", f.code())),
                DepError::Profile(f)
            );
        }
    }

    #[test]
    fn admin_messages_say_what_to_do() {
        assert_eq!(
            DepError::TermsNotSigned.admin_message(),
            "Apple says the terms and conditions are not accepted: an administrator must sign in to Apple School Manager or Apple Business Manager and accept them."
        );
        assert!(
            DepError::Profile(ProfileField::FlagsInvalid)
                .admin_message()
                .contains("supervised")
        );
        assert!(
            DepError::Throttled {
                status: 429,
                retry_after: Some(Duration::from_secs(30))
            }
            .admin_message()
            .contains("30 seconds")
        );
        assert!(DepError::TokenRejected { code: "x".into() }.needs_admin());
        assert!(DepError::ExpiredCursor.needs_full_fetch());
        assert!(!DepError::ExhaustedCursor.needs_full_fetch());
    }
}
