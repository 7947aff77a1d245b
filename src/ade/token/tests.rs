//! Token service tests on the memory store, with the synthetic vectors of
//! `../shared/testdata/apple-dep/synthetic/` and tokens made here for the cases they lack.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::apple::dep::{Account, DepError, ServerToken};
use crate::clock::{Clock, ManualClock};
use crate::pki::cms::{Cipher, encrypt_enveloped, smime_wrap};
use crate::store::Store;

const APPLE_ID: &str = "it.admin@school.example";
const VECTORS: [&str; 3] = [
    "token_des3_ber_smime.p7m",
    "token_aes128_der_smime.p7m",
    "token_aes256_ber_smime.p7m",
];

/// A file of `../shared/testdata/apple-dep/synthetic/`, found from the crate upwards.
fn synthetic(name: &str) -> Vec<u8> {
    let rel = format!("shared/testdata/apple-dep/synthetic/{name}");
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join(&rel))
        .find(|path| path.exists())
        .and_then(|path| std::fs::read(path).ok())
        .unwrap_or_else(|| panic!("test data {rel} not found above the crate"))
}

fn vector_keypair() -> TokenKeypair {
    TokenKeypair::from_pem(&synthetic("dep_key.pem"), &synthetic("dep_cert.pem")).unwrap()
}

fn vector_token() -> ServerToken {
    ServerToken::from_json(std::str::from_utf8(&synthetic("token.json")).unwrap()).unwrap()
}

/// A token like Apple's for another MDM server (or a renewal, with the same consumer key).
fn token(consumer_key: &str, expiry: OffsetDateTime) -> ServerToken {
    ServerToken {
        consumer_key: consumer_key.to_string(),
        consumer_secret: "CS_0123456789abcdef".into(),
        access_token: "AT_0123456789abcdef".into(),
        access_secret: "AS_0123456789abcdef".into(),
        access_token_expiry: expiry,
    }
}

/// The `.p7m` Apple's portal would download for `token`, encrypted to `cert_pem`.
fn p7m(token: &ServerToken, cert_pem: &str) -> Vec<u8> {
    use x509_cert::der::DecodePem;
    let cert = x509_cert::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let der = encrypt_enveloped(token.to_message().as_bytes(), &cert, Cipher::Aes256Cbc).unwrap();
    smime_wrap(&der).into_bytes()
}

fn upload(file: Vec<u8>) -> Upload {
    Upload {
        apple_id: APPLE_ID.into(),
        file,
    }
}

/// Apple's `/account`, answering per consumer key; counts the calls.
#[derive(Default)]
struct FakeApple {
    answers: Mutex<HashMap<String, Result<Account, DepError>>>,
    calls: AtomicUsize,
}

impl FakeApple {
    fn server(&self, consumer_key: &str, name: &str, uuid: &str, org_type: &str) {
        let account = Account {
            server_name: name.into(),
            server_uuid: uuid.into(),
            org_name: format!("{name} organisation"),
            org_type: Some(org_type.into()),
            ..Account::default()
        };
        self.answer(consumer_key, Ok(account));
    }

    fn answer(&self, consumer_key: &str, answer: Result<Account, DepError>) {
        self.answers
            .lock()
            .unwrap()
            .insert(consumer_key.into(), answer);
    }
}

impl AccountLookup for Arc<FakeApple> {
    fn account(&self, token: ServerToken) -> BoxFuture<'static, Result<Account, DepError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .answers
            .lock()
            .unwrap()
            .get(&token.consumer_key)
            .cloned()
            .unwrap_or(Err(DepError::TokenRejected {
                code: "token_rejected".into(),
            }));
        Box::pin(async move { answer })
    }
}

struct Env {
    service: TokenService,
    store: Store,
    clock: Arc<ManualClock>,
    apple: Arc<FakeApple>,
    metrics: Metrics,
}

fn env() -> Env {
    let store = Store::memory();
    let clock = ManualClock::new(datetime!(2026-11-27 12:00 UTC));
    let apple = Arc::new(FakeApple::default());
    apple.server(
        &vector_token().consumer_key,
        "Orchard ASM",
        "6B1E5C0F8D1A4C3E9F7A2B6D0E4C8A1F",
        "edu",
    );
    let metrics = Metrics::new();
    let service = TokenService::with_accounts(
        Arc::new(store.clone()),
        Arc::new(SecretKey::ephemeral()),
        clock.clone(),
        ClientOptions {
            base_url: "http://127.0.0.1:9".into(),
            ..ClientOptions::default()
        },
        metrics.clone(),
        Arc::new(apple.clone()),
    );
    Env {
        service,
        store,
        clock,
        apple,
        metrics,
    }
}

/// Everything the token tables hold, to prove a refused input changed nothing.
fn dump(store: &Store) -> String {
    let tokens: Vec<_> = store
        .scan::<serde_json::Value>(TOKENS, b"")
        .collect::<Result<_, _>>()
        .unwrap();
    let keys: Vec<_> = store
        .scan::<serde_json::Value>(TOKEN_KEYS, b"")
        .collect::<Result<_, _>>()
        .unwrap();
    format!("{tokens:?}\n{keys:?}")
}

impl Env {
    async fn with_vector_token(&self) -> TokenView {
        self.service
            .import_keypair(KeyOwner::NewToken, &vector_keypair())
            .await
            .unwrap();
        self.service
            .add(&upload(synthetic("token_aes256_ber_smime.p7m")))
            .await
            .unwrap()
    }

    fn metric(&self, state: &str) -> f64 {
        self.metrics
            .value(TOKENS_METRIC, &[("state", state)])
            .unwrap_or(-1.0)
    }
}

#[tokio::test]
async fn public_key_is_staged_and_offered_again_until_a_token_uses_it() {
    let env = env();
    let first = env.service.public_key(KeyOwner::NewToken).await.unwrap();
    assert!(first.starts_with("-----BEGIN CERTIFICATE-----"));
    let again = env.service.public_key(KeyOwner::NewToken).await.unwrap();
    assert_eq!(first, again, "the staged key is offered again");
    let keys = env.store.token_keys(KeyOwner::NewToken).unwrap();
    assert!(keys.current.is_none() && keys.staged.is_some());
    assert!(env.store.tokens().unwrap().is_empty());

    // A token made for it is accepted, and the staged key becomes the token's key.
    let t = token("CK_generated", datetime!(2027-11-01 00:00 UTC));
    env.apple.server("CK_generated", "Mac lab", "AAAA", "edu");
    let view = env.service.add(&upload(p7m(&t, &first))).await.unwrap();
    let id = view.id.unwrap();
    assert_eq!(
        env.store.token_keys(KeyOwner::NewToken).unwrap(),
        TokenKeys::default()
    );
    let keys = env.store.token_keys(KeyOwner::Token(id)).unwrap();
    assert_eq!(keys.current.unwrap().cert_pem, first);
    assert!(keys.staged.is_none());

    // The next new token gets a fresh key.
    let next = env.service.public_key(KeyOwner::NewToken).await.unwrap();
    assert_ne!(next, first);
    // For renewal, the token's own certificate is offered while it is valid...
    assert_eq!(
        env.service.public_key(KeyOwner::Token(id)).await.unwrap(),
        first
    );
    assert!(
        env.store
            .token_keys(KeyOwner::Token(id))
            .unwrap()
            .staged
            .is_none()
    );
    // ...and once it has expired a new key is staged beside the working one, never over it.
    env.clock.advance(Duration::days(366));
    let renewal_key = env.service.public_key(KeyOwner::Token(id)).await.unwrap();
    assert_ne!(renewal_key, first);
    assert_eq!(
        env.service.public_key(KeyOwner::Token(id)).await.unwrap(),
        renewal_key
    );
    let keys = env.store.token_keys(KeyOwner::Token(id)).unwrap();
    assert_eq!(keys.current.unwrap().cert_pem, first);
    assert_eq!(keys.staged.unwrap().cert_pem, renewal_key);
}

#[tokio::test]
async fn every_vector_decrypts_with_the_staged_vector_key_and_is_kept() {
    for name in VECTORS {
        let env = env();
        env.service
            .import_keypair(KeyOwner::NewToken, &vector_keypair())
            .await
            .unwrap();
        let preview = env.service.preview(&upload(synthetic(name))).await.unwrap();
        assert_eq!(preview.id, None, "{name}");
        assert!(
            env.store.tokens().unwrap().is_empty(),
            "preview keeps nothing"
        );

        let view = env.service.add(&upload(synthetic(name))).await.unwrap();
        assert_eq!(view.server_name, "Orchard ASM", "{name}");
        assert_eq!(view.org_name, "Orchard ASM organisation");
        assert_eq!(view.portal, "Apple School Manager");
        assert_eq!(view.apple_id, APPLE_ID);
        assert_eq!(view.expires_at, datetime!(2035-01-01 00:00 UTC));
        assert_eq!(view.state, TokenState::Ok);
        let id = view.id.unwrap();
        let record = env.store.token(id).unwrap().unwrap();
        assert_eq!(record.consumer_key, vector_token().consumer_key);
        // The client gets the real OAuth values back.
        assert!(env.service.client(id).is_ok());
        // Secrets are sealed: nothing of them in the stored bytes, the view or the logs' Debug.
        let vector = vector_token();
        let shown = format!(
            "{}\n{}\n{:?}",
            dump(&env.store),
            serde_json::to_string(&view).unwrap(),
            record
        );
        for secret in [
            &vector.consumer_secret,
            &vector.access_token,
            &vector.access_secret,
        ] {
            assert!(!shown.contains(secret.as_str()), "{name} leaks a secret");
        }
        assert!(!shown.contains("PRIVATE KEY"));
        assert_eq!(
            env.store.token_keys(KeyOwner::NewToken).unwrap(),
            TokenKeys::default()
        );
        assert_eq!(
            env.store
                .token_keys(KeyOwner::Token(id))
                .unwrap()
                .current
                .unwrap()
                .cert_pem,
            vector_keypair().cert_pem()
        );
        assert_eq!(env.metric("ok"), 1.0);
    }
}

#[tokio::test]
async fn bad_uploads_are_refused_with_their_reason_and_change_nothing() {
    let env = env();
    // Before any key exists, a real token cannot be opened.
    let before = dump(&env.store);
    let err = env
        .service
        .add(&upload(synthetic("token_des3_ber_smime.p7m")))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::NoKey), "{err:?}");
    assert_eq!(dump(&env.store), before);

    env.service
        .import_keypair(KeyOwner::NewToken, &vector_keypair())
        .await
        .unwrap();
    let good = synthetic("token_des3_ber_smime.p7m");
    let text = String::from_utf8(good.clone()).unwrap();
    let body_at = text.find("\r\n\r\n").unwrap() + 4;
    let mut corrupted = text.clone();
    corrupted.replace_range(body_at + 200..body_at + 260, &"!".repeat(60));
    let other_key = TokenKeypair::generate(env.clock.now()).unwrap();
    let expired = token(
        &vector_token().consumer_key,
        datetime!(2026-11-01 00:00 UTC),
    );

    type Case = (&'static str, Upload, fn(&TokenError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "missing Apple ID",
            Upload {
                apple_id: "  ".into(),
                file: good.clone(),
            },
            |e| matches!(e, TokenError::AppleId(AppleIdError::Missing)),
        ),
        (
            "invalid Apple ID",
            Upload {
                apple_id: "admin".into(),
                file: good.clone(),
            },
            |e| matches!(e, TokenError::AppleId(AppleIdError::Invalid)),
        ),
        ("no file", upload(Vec::new()), |e| {
            matches!(e, TokenError::NoFile)
        }),
        ("oversized", upload(vec![b'A'; MAX_UPLOAD + 1]), |e| {
            matches!(e, TokenError::TooLarge { .. })
        }),
        (
            "the PEM certificate",
            upload(synthetic("dep_cert.pem")),
            |e| matches!(e, TokenError::Certificate),
        ),
        ("the private key", upload(synthetic("dep_key.pem")), |e| {
            matches!(e, TokenError::NotAToken { .. })
        }),
        ("a JSON file", upload(synthetic("token.json")), |e| {
            matches!(e, TokenError::NotAToken { .. })
        }),
        ("truncated", upload(good[..good.len() / 2].to_vec()), |e| {
            matches!(e, TokenError::Damaged { .. })
        }),
        ("corrupted", upload(corrupted.into_bytes()), |e| {
            matches!(e, TokenError::Damaged { .. })
        }),
        (
            "for another key",
            upload(p7m(&vector_token(), other_key.cert_pem())),
            |e| matches!(e, TokenError::WrongKey),
        ),
        (
            "expired",
            upload(p7m(&expired, vector_keypair().cert_pem())),
            |e| matches!(e, TokenError::Expired { .. }),
        ),
    ];
    let before = dump(&env.store);
    for (what, input, expected) in cases {
        let err = env.service.add(&input).await.unwrap_err();
        assert!(expected(&err), "{what}: {err:?}");
        assert!(!err.to_string().is_empty());
        let err = env.service.preview(&input).await.unwrap_err();
        assert!(expected(&err), "{what} (preview): {err:?}");
        assert_eq!(dump(&env.store), before, "{what} changed the store");
    }
    assert_eq!(
        env.apple.calls.load(Ordering::SeqCst),
        0,
        "Apple is not asked about a bad file"
    );

    // Apple refusing the token (terms not accepted) keeps nothing either.
    env.apple
        .answer(&vector_token().consumer_key, Err(DepError::TermsNotSigned));
    let err = env.service.add(&upload(good)).await.unwrap_err();
    assert!(matches!(err, TokenError::Apple(DepError::TermsNotSigned)));
    assert!(err.to_string().contains("accept"), "{err}");
    assert_eq!(dump(&env.store), before);
}

#[tokio::test]
async fn renewal_updates_the_same_token_and_may_bring_a_new_key() {
    let env = env();
    let added = env.with_vector_token().await;
    let id = added.id.unwrap();
    let consumer_key = vector_token().consumer_key;

    // Same server, same key, a year more.
    let renewed_token = token(&consumer_key, datetime!(2036-01-01 00:00 UTC));
    let view = env
        .service
        .renew(
            id,
            &Upload {
                apple_id: "new.admin@school.example".into(),
                file: p7m(&renewed_token, vector_keypair().cert_pem()),
            },
            Replace::No,
        )
        .await
        .unwrap();
    assert_eq!(view.id, Some(id));
    assert_eq!(view.expires_at, datetime!(2036-01-01 00:00 UTC));
    assert_eq!(view.apple_id, "new.admin@school.example");
    assert!(view.renewed_at.is_some());
    assert_eq!(env.store.tokens().unwrap().len(), 1);

    // A new key staged for this token; a token made for it promotes it.
    let staged = TokenKeypair::generate(env.clock.now()).unwrap();
    env.service
        .import_keypair(KeyOwner::Token(id), &staged)
        .await
        .unwrap();
    let again = token(&consumer_key, datetime!(2037-01-01 00:00 UTC));
    env.service
        .renew(id, &upload(p7m(&again, staged.cert_pem())), Replace::No)
        .await
        .unwrap();
    let keys = env.store.token_keys(KeyOwner::Token(id)).unwrap();
    assert_eq!(keys.current.unwrap().cert_pem, staged.cert_pem());
    assert!(keys.staged.is_none());

    // The old key no longer opens renewals; bad renewals change nothing.
    let before = dump(&env.store);
    let err = env
        .service
        .renew(
            id,
            &upload(p7m(&again, vector_keypair().cert_pem())),
            Replace::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::WrongKey), "{err:?}");
    let err = env
        .service
        .renew(
            id,
            &upload(p7m(
                &token(&consumer_key, datetime!(2026-01-01 00:00 UTC)),
                staged.cert_pem(),
            )),
            Replace::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Expired { .. }), "{err:?}");
    let err = env
        .service
        .renew(
            TokenId(999),
            &upload(p7m(&again, staged.cert_pem())),
            Replace::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::NotFound(_)), "{err:?}");
    assert_eq!(dump(&env.store), before);
}

#[tokio::test]
async fn a_token_of_another_server_is_refused_unless_the_replacement_is_confirmed() {
    let env = env();
    let id = env.with_vector_token().await.id.unwrap();
    env.clock.advance(Duration::days(1));
    // Sync state that a replacement must reset.
    env.store
        .update_token(id, &mut |t| {
            t.cursor = Some("MDowOjE1".into());
            t.device_count = 40;
        })
        .unwrap();
    let other = token("CK_other_server", datetime!(2027-06-01 00:00 UTC));
    env.apple
        .server("CK_other_server", "Office Macs", "BBBB", "org");
    let file = p7m(&other, vector_keypair().cert_pem());

    let before = dump(&env.store);
    let err = env
        .service
        .renew(id, &upload(file.clone()), Replace::No)
        .await
        .unwrap_err();
    match &err {
        TokenError::OtherServer { current, uploaded } => {
            assert_eq!(current, "Orchard ASM");
            assert_eq!(uploaded, "Office Macs");
        }
        other => panic!("{other:?}"),
    }
    let err = env
        .service
        .renew(
            id,
            &upload(file.clone()),
            Replace::Confirmed {
                typed_name: "Orchard".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::ConfirmMismatch { .. }), "{err:?}");
    assert_eq!(dump(&env.store), before, "refusals change nothing");

    // Same consumer key but Apple says another server: refused too.
    let same_key = token(
        &vector_token().consumer_key,
        datetime!(2036-01-01 00:00 UTC),
    );
    env.apple
        .server(&vector_token().consumer_key, "Renamed", "CCCC", "edu");
    let err = env
        .service
        .renew(
            id,
            &upload(p7m(&same_key, vector_keypair().cert_pem())),
            Replace::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::OtherServer { .. }), "{err:?}");
    assert_eq!(dump(&env.store), before);

    let view = env
        .service
        .renew(
            id,
            &upload(file),
            Replace::Confirmed {
                typed_name: " Orchard ASM ".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(view.server_name, "Office Macs");
    assert_eq!(view.portal, "Apple Business Manager");
    let record = env.store.token(id).unwrap().unwrap();
    assert_eq!(record.consumer_key, "CK_other_server");
    assert_eq!(record.cursor, None);
    assert_eq!(record.device_count, 0);
}

#[tokio::test]
async fn several_tokens_coexist_and_a_known_server_is_not_added_twice() {
    let env = env();
    let asm = env.with_vector_token().await;

    // The same token again, through Add: it names the token that has it.
    let err = env
        .service
        .add(&upload(synthetic("token_aes128_der_smime.p7m")))
        .await
        .unwrap_err();
    match err {
        TokenError::AlreadyAdded { id, server_name } => {
            assert_eq!(Some(id), asm.id);
            assert_eq!(server_name, "Orchard ASM");
        }
        other => panic!("{other:?}"),
    }

    // An ABM token made for a new key.
    let cert = env.service.public_key(KeyOwner::NewToken).await.unwrap();
    env.apple.server("CK_abm", "Office", "DDDD", "org");
    let abm = env
        .service
        .add(&upload(p7m(
            &token("CK_abm", datetime!(2027-01-10 00:00 UTC)),
            &cert,
        )))
        .await
        .unwrap();
    assert_eq!(abm.portal, "Apple Business Manager");
    // An admin who gave Apple the same public key for a third server: accepted, key shared.
    env.apple.server("CK_shared", "Library", "EEEE", "edu");
    let shared = env
        .service
        .add(&upload(p7m(
            &token("CK_shared", datetime!(2027-02-01 00:00 UTC)),
            &cert,
        )))
        .await
        .unwrap();
    let list = env.service.list().unwrap();
    let names: Vec<_> = list.iter().map(|t| t.server_name.as_str()).collect();
    assert_eq!(names, ["Orchard ASM", "Office", "Library"]);
    assert_eq!(
        env.store
            .token_keys(KeyOwner::Token(shared.id.unwrap()))
            .unwrap()
            .current
            .unwrap()
            .cert_pem,
        cert
    );
    // A server UUID Orchard already has (a renewal uploaded through Add) is refused.
    env.apple.server("CK_again", "Office", "DDDD", "org");
    let err = env
        .service
        .add(&upload(p7m(
            &token("CK_again", datetime!(2027-01-10 00:00 UTC)),
            &cert,
        )))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::AlreadyAdded { .. }), "{err:?}");
}

#[tokio::test]
async fn states_follow_time_and_terms_and_feed_the_metric() {
    let env = env();
    let id = env.with_vector_token().await.id.unwrap();
    let expiry = datetime!(2035-01-01 00:00 UTC);
    assert_eq!(env.service.get(id).unwrap().state, TokenState::Ok);

    env.clock.set(expiry - Duration::days(12));
    let view = env.service.get(id).unwrap();
    assert_eq!((view.state, view.days_left), (TokenState::Expiring, 12));
    env.service.list().unwrap();
    assert_eq!((env.metric("expiring"), env.metric("ok")), (1.0, 0.0));

    env.service.set_terms(id, false).await.unwrap();
    assert_eq!(
        env.service.get(id).unwrap().state,
        TokenState::TermsNotSigned
    );
    assert!(!env.service.get(id).unwrap().terms_accepted);
    assert_eq!(env.metric("terms_not_signed"), 1.0);
    env.service.set_terms(id, true).await.unwrap();
    assert_eq!(env.service.get(id).unwrap().state, TokenState::Expiring);

    env.clock.set(expiry);
    env.service.refresh_metrics().unwrap();
    assert_eq!(env.service.get(id).unwrap().state, TokenState::Expired);
    assert_eq!((env.metric("expired"), env.metric("expiring")), (1.0, 0.0));
    let err = env.service.client(id).err().unwrap();
    assert!(matches!(err, TokenError::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("1 Jan 2035"), "{err}");
    assert!(matches!(
        env.service.client(TokenId(12345)).err(),
        Some(TokenError::NotFound(_))
    ));
    assert!(matches!(
        env.service.set_terms(TokenId(12345), true).await,
        Err(TokenError::NotFound(_))
    ));
}

/// The production path: the real DEP client asks the DEP simulator's `/account`.
#[tokio::test]
async fn upload_asks_apple_through_the_dep_client() {
    use crate::sim::dep::{DepSim, SimOptions};
    let clock = ManualClock::new(datetime!(2026-11-27 12:00 UTC));
    let sim = DepSim::bind(
        "127.0.0.1:0".parse().unwrap(),
        clock.clone(),
        SimOptions {
            token: Some(vector_token()),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let store = Store::memory();
    let service = TokenService::new(
        Arc::new(store.clone()),
        Arc::new(SecretKey::ephemeral()),
        clock.clone(),
        ClientOptions {
            base_url: sim.base_url.clone(),
            ..ClientOptions::default()
        },
        Metrics::new(),
    );
    service
        .import_keypair(KeyOwner::NewToken, &vector_keypair())
        .await
        .unwrap();
    let view = service
        .add(&upload(synthetic("token_des3_ber_smime.p7m")))
        .await
        .unwrap();
    assert_eq!(view.org_name, "Example Primary School");
    assert_eq!(view.server_name, "Orchard Simulated MDM");
    assert_eq!(view.portal, "Apple School Manager");
    // The sync worker's client works with the stored secrets.
    let client = service.client(view.id.unwrap()).ok().unwrap();
    assert_eq!(
        client.account().await.unwrap().server_uuid,
        "5E1A7F00D0C5411B9E5E5A1B0C0FFEE1"
    );

    // A token Apple does not know (revoked) is refused and nothing is kept.
    let other = TokenService::new(
        Arc::new(Store::memory()),
        Arc::new(SecretKey::ephemeral()),
        clock.clone(),
        ClientOptions {
            base_url: sim.base_url.clone(),
            ..ClientOptions::default()
        },
        Metrics::new(),
    );
    other
        .import_keypair(KeyOwner::NewToken, &vector_keypair())
        .await
        .unwrap();
    let stranger = token("CK_unknown", datetime!(2027-06-01 00:00 UTC));
    let err = other
        .add(&upload(p7m(&stranger, vector_keypair().cert_pem())))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Apple(_)), "{err:?}");
    assert!(other.list().unwrap().is_empty());
}
