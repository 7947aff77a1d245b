//! The DEP client against the in-process DEP simulator: every endpoint, every error code of the
//! reference, sessions, retries, and the failure list of Apple's old simulator.

use std::sync::Arc;
use std::time::Duration;

use orchard::apple::dep::types::Device;
use orchard::apple::dep::{
    Client, ClientOptions, DepError, DeviceStatus, Endpoint, Profile, ProfileField, RetryPolicy,
    ServerToken,
};
use orchard::clock::{Clock as _, ManualClock, SharedClock};
use orchard::metrics::Metrics;
use orchard::sim::dep::{DepSim, Fault, SimOptions, TokenMode};

struct Env {
    sim: DepSim,
    client: Client,
    clock: Arc<ManualClock>,
    metrics: Metrics,
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(40),
        retry_after_cap: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    }
}

fn start_time() -> time::OffsetDateTime {
    time::macros::datetime!(2026-09-01 08:00:00 UTC)
}

async fn spawn(opts: SimOptions) -> Env {
    let clock = ManualClock::new(start_time());
    let shared: SharedClock = clock.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = DepSim::start(listener, shared.clone(), opts).await.unwrap();
    let metrics = Metrics::new();
    let client = client_for(&sim, sim.token.clone(), &metrics, shared, "orchard/test");
    Env {
        sim,
        client,
        clock,
        metrics,
    }
}

fn client_for(
    sim: &DepSim,
    token: ServerToken,
    metrics: &Metrics,
    clock: SharedClock,
    user_agent: &str,
) -> Client {
    let opts = ClientOptions {
        base_url: sim.base_url.clone(),
        user_agent: user_agent.into(),
        retry: fast_retry(),
        ..Default::default()
    };
    Client::new(opts, token, metrics.clone(), clock).unwrap()
}

async fn with_devices(n: usize) -> Env {
    spawn(SimOptions {
        devices: n,
        ..Default::default()
    })
    .await
}

fn advance(env: &Env, d: time::Duration) {
    env.clock.advance(d);
}

fn serials(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn profile() -> Profile {
    Profile {
        profile_name: "Staff Macs".into(),
        url: "https://orchard.school.example/enroll".into(),
        is_supervised: Some(true),
        is_mdm_removable: Some(false),
        await_device_configured: Some(true),
        department: Some("IT".into()),
        support_phone_number: Some("+44 20 7946 0001".into()),
        support_email_address: Some("it@school.example".into()),
        org_magic: Some("orchard".into()),
        language: Some("en".into()),
        region: Some("GB".into()),
        skip_setup_items: serials(&["AppleID", "Siri", "TOS"]),
        ..Default::default()
    }
}

#[tokio::test]
async fn account_reports_the_server_and_page_limits() {
    let env = with_devices(0).await;
    let account = env.client.account().await.unwrap();
    assert_eq!(account.server_uuid, "5E1A7F00D0C5411B9E5E5A1B0C0FFEE1");
    assert!(account.is_school());
    let limit = account.limit_for("/server/devices").unwrap();
    assert_eq!((limit.default, limit.maximum), (1000, 5000));
    assert!(account.limit_for("/devices/sync").is_some());
    assert_eq!(env.sim.world.sessions_issued(), 1);
    let text = env.metrics.render();
    assert!(
        text.contains(r#"orchard_dep_requests_total{endpoint="account",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"orchard_dep_requests_total{endpoint="session",status="200"} 1"#));
}

#[tokio::test]
async fn fetch_pages_until_exhausted() {
    let env = with_devices(25).await;
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = env
            .client
            .fetch_devices(cursor.as_deref(), Some(10))
            .await
            .unwrap();
        pages.push((page.devices.len(), page.more_to_follow));
        for d in &page.devices {
            assert!(d.op_type.is_none(), "fetch carries no op_type");
            assert_eq!(d.device_family.as_deref(), Some("Mac"));
            assert!(d.model.as_deref().is_some_and(|m| m.starts_with("Mac")));
            assert!(d.description.is_some() && d.color.is_some());
            assert_eq!(d.serial_number.len(), 10);
        }
        seen.extend(page.devices.into_iter().map(|d| d.serial_number));
        cursor = Some(page.cursor);
        if !page.more_to_follow {
            break;
        }
    }
    assert_eq!(pages, [(10, true), (10, true), (5, false)]);
    assert_eq!(seen, env.sim.world.serials());
    let err = env
        .client
        .fetch_devices(cursor.as_deref(), Some(10))
        .await
        .unwrap_err();
    assert_eq!(err, DepError::ExhaustedCursor);
    assert!(!err.needs_full_fetch());
    let err = env
        .client
        .fetch_devices(Some("bm90IGEgY3Vyc29y"), None)
        .await
        .unwrap_err();
    assert_eq!(err, DepError::InvalidCursor);
    assert!(err.needs_full_fetch());
}

#[tokio::test]
async fn fetch_limit_is_capped_by_the_account_maximum() {
    let env = spawn(SimOptions {
        devices: 30,
        page_default: 4,
        page_max: 8,
        ..Default::default()
    })
    .await;
    assert_eq!(
        env.client
            .fetch_devices(None, None)
            .await
            .unwrap()
            .devices
            .len(),
        4
    );
    assert_eq!(
        env.client
            .fetch_devices(None, Some(100))
            .await
            .unwrap()
            .devices
            .len(),
        8
    );
}

#[tokio::test]
async fn sync_returns_every_change_with_op_type_and_date() {
    let env = with_devices(5).await;
    let fetched = env.client.fetch_devices(None, None).await.unwrap();
    assert!(!fetched.more_to_follow);
    let first = fetched.cursor;
    let empty = env.client.sync_devices(&first, None).await.unwrap();
    assert!(empty.devices.is_empty() && !empty.more_to_follow);

    let w = &env.sim.world;
    let all = w.serials();
    advance(&env, time::Duration::minutes(1));
    let added = w.add_macs(2);
    advance(&env, time::Duration::minutes(1));
    assert!(w.modify(&all[0], |d| d.asset_tag = Some("LIB-001".into())));
    advance(&env, time::Duration::minutes(1));
    assert!(w.modify(&all[0], |d| d.asset_tag = Some("LIB-002".into())));
    assert!(w.move_away(&all[1]));
    assert!(w.release(&all[2]));
    assert!(!w.modify("NOSUCHSERIAL", |_| {}));

    let page = env.client.sync_devices(&first, Some(100)).await.unwrap();
    let ops: Vec<(String, String)> = page
        .devices
        .iter()
        .map(|d| (d.serial_number.clone(), d.op_type.clone().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            (added[0].clone(), "added".into()),
            (added[1].clone(), "added".into()),
            (all[0].clone(), "modified".into()),
            (all[0].clone(), "modified".into()),
            (all[1].clone(), "deleted".into()),
            (all[2].clone(), "deleted".into()),
        ]
    );
    // Duplicates resolve by serial, latest op_date wins.
    let dup: Vec<&Device> = page
        .devices
        .iter()
        .filter(|d| d.serial_number == all[0])
        .collect();
    assert_eq!(dup[1].asset_tag.as_deref(), Some("LIB-002"));
    assert!(dup[0].op_date <= dup[1].op_date);
    assert_eq!(
        page.devices[0].op_date,
        Some(start_time() + time::Duration::minutes(1))
    );

    // Paging through the same changes with a small limit.
    let p1 = env.client.sync_devices(&first, Some(4)).await.unwrap();
    assert!(p1.more_to_follow && p1.devices.len() == 4);
    let p2 = env.client.sync_devices(&p1.cursor, Some(4)).await.unwrap();
    assert!(!p2.more_to_follow && p2.devices.len() == 2);

    // A later sync with the newest cursor sees only newer changes.
    assert!(w.move_here(&all[1]));
    let newer = env.client.sync_devices(&page.cursor, None).await.unwrap();
    assert_eq!(newer.devices.len(), 1);
    assert_eq!(newer.devices[0].op_type.as_deref(), Some("added"));
    assert!(w.device(&all[1]).is_some());
    assert!(w.device(&all[2]).is_none());
}

#[tokio::test]
async fn sync_cursor_errors() {
    let env = with_devices(3).await;
    assert_eq!(
        env.client.sync_devices("", None).await.unwrap_err(),
        DepError::CursorRequired
    );
    assert_eq!(
        env.client.sync_devices("garbage!", None).await.unwrap_err(),
        DepError::InvalidCursor
    );
    let cursor = env.client.fetch_devices(None, None).await.unwrap().cursor;
    // A cursor with one changed character is not Apple's any more.
    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        env.client.sync_devices(&tampered, None).await.unwrap_err(),
        DepError::InvalidCursor
    );
    advance(&env, time::Duration::days(7) - time::Duration::minutes(1));
    let still = env.client.sync_devices(&cursor, None).await.unwrap();
    advance(&env, time::Duration::minutes(2));
    let err = env.client.sync_devices(&cursor, None).await.unwrap_err();
    assert_eq!(err, DepError::ExpiredCursor);
    assert!(err.needs_full_fetch());
    assert!(err.admin_message().contains("7 days"));
    // The cursor from the sync a minute before expiry is fresh.
    assert!(env.client.sync_devices(&still.cursor, None).await.is_ok());
}

#[tokio::test]
async fn device_details_for_known_and_unknown_serials() {
    let env = with_devices(2).await;
    let mut asked = env.sim.world.serials();
    asked.push("C02UNKNOWN01".into());
    let details = env.client.device_details(&asked).await.unwrap();
    assert_eq!(details.devices.len(), 3);
    assert_eq!(
        details.devices[&asked[0]].response_status.as_deref(),
        Some("SUCCESS")
    );
    assert_eq!(details.devices[&asked[0]].os.as_deref(), Some("OSX"));
    assert_eq!(
        details.devices["C02UNKNOWN01"].response_status.as_deref(),
        Some("NOT_ACCESSIBLE")
    );
    assert_eq!(
        env.client.device_details(&[]).await.unwrap_err(),
        DepError::DeviceIdRequired
    );
}

#[tokio::test]
async fn define_get_assign_remove_disown() {
    let env = with_devices(4).await;
    let w = &env.sim.world;
    let all = w.serials();
    let mut p = profile();
    p.devices = vec![all[0].clone()];
    let defined = env.client.define_profile(&p).await.unwrap();
    assert_eq!(defined.profile_uuid.len(), 32);
    assert_eq!(defined.devices[&all[0]], DeviceStatus::Success);

    let got = env.client.get_profile(&defined.profile_uuid).await.unwrap();
    assert_eq!(
        got.profile_uuid.as_deref(),
        Some(defined.profile_uuid.as_str())
    );
    assert_eq!(got.skip_setup_items, p.skip_setup_items);
    assert_eq!(got.is_mdm_removable, Some(false));
    assert_eq!(got.department.as_deref(), Some("IT"));
    assert!(got.devices.is_empty());

    w.fail_assign(&all[2]);
    let mut asked = vec![all[1].clone(), all[2].clone(), "NOTOURS0001".into()];
    asked.sort();
    let assigned = env
        .client
        .assign_profile(&defined.profile_uuid, &asked)
        .await
        .unwrap();
    assert_eq!(
        assigned.profile_uuid.as_deref(),
        Some(defined.profile_uuid.as_str())
    );
    assert_eq!(assigned.devices[&all[1]], DeviceStatus::Success);
    assert_eq!(assigned.devices[&all[2]], DeviceStatus::Failed);
    assert_eq!(assigned.devices["NOTOURS0001"], DeviceStatus::NotAccessible);
    assert_eq!(assigned.retry_after_seconds, None);
    let d = w.device(&all[1]).unwrap();
    assert_eq!(d.profile_status.as_deref(), Some("assigned"));
    assert_eq!(
        d.profile_uuid.as_deref(),
        Some(defined.profile_uuid.as_str())
    );
    assert!(w.mark_pushed(&all[1]));
    assert_eq!(
        w.device(&all[1]).unwrap().profile_status.as_deref(),
        Some("pushed")
    );

    let removed = env
        .client
        .remove_profile(&serials(&[&all[1], "NOTOURS0001"]))
        .await
        .unwrap();
    assert_eq!(removed.devices[&all[1]], DeviceStatus::Success);
    assert_eq!(removed.devices["NOTOURS0001"], DeviceStatus::NotAccessible);
    assert_eq!(
        w.device(&all[1]).unwrap().profile_status.as_deref(),
        Some("removed")
    );

    let disowned = env
        .client
        .disown(&serials(&[&all[3], "NOTOURS0001"]))
        .await
        .unwrap();
    assert_eq!(disowned.devices[&all[3]], DeviceStatus::Success);
    assert_eq!(disowned.devices["NOTOURS0001"], DeviceStatus::NotAccessible);
    assert!(w.device(&all[3]).is_none());
    assert_eq!(w.device_count(), 3);
}

#[tokio::test]
async fn assign_throttling_and_limits() {
    let env = with_devices(5).await;
    let w = &env.sim.world;
    let all = w.serials();
    let uuid = env
        .client
        .define_profile(&profile())
        .await
        .unwrap()
        .profile_uuid;
    w.throttle_assign(Some((2, 90)));
    let out = env.client.assign_profile(&uuid, &all).await.unwrap();
    let throttled = out
        .devices
        .values()
        .filter(|s| **s == DeviceStatus::Throttled)
        .count();
    let ok = out
        .devices
        .values()
        .filter(|s| **s == DeviceStatus::Success)
        .count();
    assert_eq!((ok, throttled), (2, 3));
    assert_eq!(out.retry_after_seconds, Some(90));

    let before = w.requests(Endpoint::AssignProfile);
    let too_many: Vec<String> = (0..1001).map(|i| format!("SER{i:07}")).collect();
    let err = env
        .client
        .assign_profile(&uuid, &too_many)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DepError::TooManySerials {
            count: 1001,
            max: 1000
        }
    );
    assert_eq!(
        w.requests(Endpoint::AssignProfile),
        before,
        "nothing was sent"
    );
    for call in [
        env.client.remove_profile(&too_many).await,
        env.client.disown(&too_many).await,
    ] {
        assert!(matches!(call, Err(DepError::TooManySerials { .. })));
    }
    assert!(matches!(
        env.client.device_details(&too_many).await,
        Err(DepError::TooManySerials { .. })
    ));
    let exactly: Vec<String> = too_many[..1000].to_vec();
    w.throttle_assign(None);
    let out = env.client.assign_profile(&uuid, &exactly).await.unwrap();
    assert_eq!(out.devices.len(), 1000);

    assert_eq!(
        env.client
            .assign_profile("0000000000000000000000000000DEAD", &all)
            .await
            .unwrap_err(),
        DepError::ProfileNotFound
    );
    assert_eq!(
        env.client.assign_profile("", &all).await.unwrap_err(),
        DepError::ProfileUuidRequired
    );
    assert_eq!(
        env.client.assign_profile(&uuid, &[]).await.unwrap_err(),
        DepError::DeviceIdRequired
    );
    assert_eq!(
        env.client.remove_profile(&[]).await.unwrap_err(),
        DepError::DeviceIdRequired
    );
    assert_eq!(
        env.client.disown(&[]).await.unwrap_err(),
        DepError::DeviceIdRequired
    );
    assert_eq!(
        env.client
            .get_profile("0000000000000000000000000000DEAD")
            .await
            .unwrap_err(),
        DepError::ProfileNotFound
    );
    assert_eq!(
        env.client.get_profile("").await.unwrap_err(),
        DepError::ProfileUuidRequired
    );
}

#[tokio::test]
async fn profile_validation_codes() {
    let env = with_devices(1).await;
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(Profile, ProfileField)> = vec![
        (
            Profile {
                profile_name: String::new(),
                ..profile()
            },
            ProfileField::NameRequired,
        ),
        (
            Profile {
                profile_name: long(126),
                ..profile()
            },
            ProfileField::NameInvalid,
        ),
        (
            Profile {
                url: String::new(),
                ..profile()
            },
            ProfileField::UrlRequired,
        ),
        (
            Profile {
                url: "enroll here".into(),
                ..profile()
            },
            ProfileField::UrlInvalid,
        ),
        (
            Profile {
                url: format!("https://a.example/{}", long(2000)),
                ..profile()
            },
            ProfileField::UrlInvalid,
        ),
        (
            Profile {
                department: Some(long(126)),
                ..profile()
            },
            ProfileField::DepartmentInvalid,
        ),
        (
            Profile {
                is_supervised: Some(false),
                ..profile()
            },
            ProfileField::FlagsInvalid,
        ),
        (
            Profile {
                is_supervised: None,
                ..profile()
            },
            ProfileField::FlagsInvalid,
        ),
        (
            Profile {
                language: Some("English".into()),
                ..profile()
            },
            ProfileField::LocaleInvalid,
        ),
        (
            Profile {
                region: Some("gb".into()),
                ..profile()
            },
            ProfileField::LocaleInvalid,
        ),
        (
            Profile {
                org_magic: Some(long(257)),
                ..profile()
            },
            ProfileField::MagicInvalid,
        ),
        (
            Profile {
                support_email_address: Some(long(251)),
                ..profile()
            },
            ProfileField::SupportEmailInvalid,
        ),
        (
            Profile {
                support_phone_number: Some(long(51)),
                ..profile()
            },
            ProfileField::SupportPhoneInvalid,
        ),
    ];
    for (p, field) in cases {
        let err = env.client.define_profile(&p).await.unwrap_err();
        assert_eq!(err, DepError::Profile(field), "{field:?}");
        assert!(err.admin_message().contains(field.code()));
    }
    // Limits are inclusive.
    let edge = Profile {
        profile_name: long(125),
        department: Some(long(125)),
        org_magic: Some(long(256)),
        support_email_address: Some(long(250)),
        support_phone_number: Some(long(50)),
        ..profile()
    };
    let ok = env.client.define_profile(&edge).await.unwrap();
    assert!(env.sim.world.profile(&ok.profile_uuid).is_some());
    // The old simulator's extra codes, scripted.
    for field in [
        ProfileField::DepartmentRequired,
        ProfileField::SupportPhoneRequired,
    ] {
        env.sim
            .world
            .push_fault(Endpoint::DefineProfile, Fault::once(400, field.code()));
        assert_eq!(
            env.client.define_profile(&profile()).await.unwrap_err(),
            DepError::Profile(field)
        );
    }
    assert_eq!(
        env.sim.world.profile_count(),
        1,
        "refused profiles are not stored"
    );
}

#[tokio::test]
async fn session_expiry_means_transparent_reauth() {
    let env = with_devices(1).await;
    env.client.account().await.unwrap();
    env.client.account().await.unwrap();
    assert_eq!(env.sim.world.sessions_issued(), 1, "the session is reused");
    advance(&env, time::Duration::minutes(6));
    env.client.account().await.unwrap();
    assert_eq!(
        env.sim.world.sessions_issued(),
        2,
        "expired session replaced"
    );
    // Apple's service restarted and forgot sessions: 403 FORBIDDEN, then a new session.
    env.sim.world.forget_sessions();
    env.client.account().await.unwrap();
    assert_eq!(env.sim.world.sessions_issued(), 3);
    // Only one re-auth per call: a second 401 is an error.
    env.sim
        .world
        .push_fault(Endpoint::Account, Fault::once(401, "UNAUTHORIZED").times(2));
    let err = env.client.account().await.unwrap_err();
    assert!(matches!(err, DepError::TokenRejected { .. }), "{err:?}");
    assert_eq!(env.sim.world.sessions_issued(), 4);
}

#[tokio::test]
async fn rotated_session_header_is_followed() {
    let env = spawn(SimOptions {
        devices: 3,
        rotate_sessions: true,
        ..Default::default()
    })
    .await;
    for _ in 0..5 {
        env.client.account().await.unwrap();
    }
    assert_eq!(
        env.sim.world.sessions_issued(),
        1,
        "the new X-ADM-Auth-Session was used"
    );
}

#[tokio::test]
async fn token_modes_and_expiry() {
    let env = with_devices(1).await;
    env.sim.world.set_token_mode(TokenMode::TermsNotSigned);
    let err = env.client.account().await.unwrap_err();
    assert_eq!(err, DepError::TermsNotSigned);
    assert_eq!(
        err.admin_message(),
        "Apple says the terms and conditions are not accepted: an administrator must sign in to Apple School Manager or Apple Business Manager and accept them."
    );
    env.sim.world.set_token_mode(TokenMode::Revoked);
    let err = env.client.fetch_devices(None, None).await.unwrap_err();
    assert!(matches!(err, DepError::TokenRejected { .. }), "{err:?}");
    assert!(err.needs_admin());
    env.sim.world.set_token_mode(TokenMode::Active);
    env.client.account().await.unwrap();

    // A wrong token: Apple refuses the session.
    let mut wrong = env.sim.token.clone();
    wrong.access_secret = "AS_0000".into();
    let other = client_for(
        &env.sim,
        wrong,
        &env.metrics,
        env.clock.clone(),
        "orchard/test",
    );
    let err = other.account().await.unwrap_err();
    assert_eq!(
        err,
        DepError::TokenRejected {
            code: "signature_invalid".into()
        }
    );

    // Apple says the token expired.
    env.sim
        .world
        .push_fault(Endpoint::Account, Fault::once(403, "token_expired"));
    assert_eq!(
        env.client.account().await.unwrap_err(),
        DepError::TokenExpired
    );
    env.sim
        .world
        .push_fault(Endpoint::Session, Fault::once(403, "ACCESS_DENIED"));
    env.sim.world.forget_sessions();
    assert_eq!(
        env.client.account().await.unwrap_err(),
        DepError::AccessDenied
    );

    // Past its own expiry the client sends nothing.
    let before = env.sim.world.requests(Endpoint::Account);
    env.clock.set(env.sim.token.access_token_expiry);
    assert!(matches!(
        env.client.account().await.unwrap_err(),
        DepError::TokenPastExpiry { .. }
    ));
    assert_eq!(env.sim.world.requests(Endpoint::Account), before);
}

#[tokio::test]
async fn sim_refuses_expired_token_even_for_a_careless_client() {
    let clock = ManualClock::new(start_time());
    let shared: SharedClock = clock.clone();
    let expiry = start_time() + time::Duration::days(1);
    let token = orchard::sim::dep::random_token(expiry);
    let sim = DepSim::bind(
        "127.0.0.1:0".parse().unwrap(),
        shared,
        SimOptions {
            token: Some(token.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The client believes the token lasts longer than Apple does.
    let mut believed = token.clone();
    believed.access_token_expiry = expiry + time::Duration::days(30);
    let client = client_for(
        &sim,
        believed,
        &Metrics::new(),
        clock.clone(),
        "orchard/test",
    );
    client.account().await.unwrap();
    clock.advance(time::Duration::days(2));
    assert_eq!(client.account().await.unwrap_err(), DepError::TokenExpired);
}

#[tokio::test]
async fn user_agent_is_required() {
    let env = with_devices(0).await;
    for (ua, code) in [
        ("curl/8.5.0", "USER_AGENT_INVALID"),
        ("Go-http-client/1.1", "USER_AGENT_INVALID"),
        ("orchard", "USER_AGENT_INVALID"),
    ] {
        let c = client_for(
            &env.sim,
            env.sim.token.clone(),
            &env.metrics,
            env.clock.clone(),
            ua,
        );
        assert_eq!(
            c.account().await.unwrap_err(),
            DepError::UserAgent { code: code.into() },
            "{ua}"
        );
    }
    let (status, body) = raw(&env, "GET", "/account", &[], "").await;
    assert_eq!((status, body.as_str()), (400, "\"USER_AGENT_MISSING\""));
}

/// A request without the client, to show what the simulator refuses.
async fn raw(
    env: &Env,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(env.sim.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", env.sim.addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Signs in by hand; returns the User-Agent and session headers for [`raw`] calls.
async fn raw_session(env: &Env, nonce: &str) -> ((&'static str, String), (&'static str, String)) {
    let now = env.clock.now().unix_timestamp();
    let ua = ("user-agent", "orchard/test".to_string());
    let auth = signed_header(env, nonce, now, &env.sim.token.access_secret);
    let (status, body) = raw(
        env,
        "GET",
        "/session",
        &[ua.clone(), ("authorization", auth)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let session = v["auth_session_token"].as_str().unwrap().to_string();
    (ua, ("x-adm-auth-session", session))
}

fn signed_header(env: &Env, nonce: &str, timestamp: i64, secret: &str) -> String {
    use orchard::apple::dep::oauth::OAuthParams;
    let t = &env.sim.token;
    let params = OAuthParams {
        consumer_key: t.consumer_key.clone(),
        token: t.access_token.clone(),
        nonce: nonce.into(),
        timestamp: timestamp.to_string(),
    };
    let url = url::Url::parse(&format!("{}/session", env.sim.base_url)).unwrap();
    let sig = params.signature("GET", &url, &t.consumer_secret, secret);
    params.authorization_header(&sig)
}

#[tokio::test]
async fn oauth_checks_on_session() {
    let env = with_devices(0).await;
    let ua = ("user-agent", "orchard/test".to_string());
    let now = start_time().unix_timestamp();
    let secret = env.sim.token.access_secret.clone();
    let good = signed_header(&env, "nonce-1", now, &secret);
    let (status, body) = raw(
        &env,
        "GET",
        "/session",
        &[ua.clone(), ("authorization", good.clone())],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("auth_session_token"));
    // The same nonce again is a replay.
    let (status, body) = raw(
        &env,
        "GET",
        "/session",
        &[ua.clone(), ("authorization", good)],
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (401, "\"nonce_used\""));
    // Wrong secret, stale and future timestamps.
    let bad = signed_header(&env, "nonce-2", now, "AS_wrong");
    assert_eq!(
        raw(
            &env,
            "GET",
            "/session",
            &[ua.clone(), ("authorization", bad)],
            ""
        )
        .await
        .0,
        401
    );
    let stale = signed_header(&env, "nonce-3", now - 3600, &secret);
    let (status, body) = raw(
        &env,
        "GET",
        "/session",
        &[ua.clone(), ("authorization", stale)],
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (401, "\"timestamp_refused\""));
    let future = signed_header(&env, "nonce-4", now + 3600, &secret);
    assert_eq!(
        raw(
            &env,
            "GET",
            "/session",
            &[ua.clone(), ("authorization", future)],
            ""
        )
        .await
        .0,
        401
    );
    // Parameters Apple answers 400 for.
    let (status, _) = raw(&env, "GET", "/session", std::slice::from_ref(&ua), "").await;
    assert_eq!(status, 400);
    let dup = format!(
        "{}, oauth_nonce=\"x\"",
        signed_header(&env, "nonce-5", now, &secret)
    );
    let (status, body) = raw(
        &env,
        "GET",
        "/session",
        &[ua.clone(), ("authorization", dup)],
        "",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (400, "\"DUPLICATED_OAUTH_PARAMETER\"")
    );
    let plain = signed_header(&env, "nonce-6", now, &secret).replace("HMAC-SHA1", "PLAINTEXT");
    assert_eq!(
        raw(
            &env,
            "GET",
            "/session",
            &[ua.clone(), ("authorization", plain)],
            ""
        )
        .await
        .0,
        400
    );
    // Only the successful call made a session.
    assert_eq!(env.sim.world.sessions_issued(), 1);
    // Without a session, API calls are refused; wrong methods and paths too.
    assert_eq!(
        raw(&env, "GET", "/account", std::slice::from_ref(&ua), "")
            .await
            .0,
        401
    );
    assert_eq!(
        raw(
            &env,
            "GET",
            "/server/devices",
            std::slice::from_ref(&ua),
            ""
        )
        .await
        .0,
        405
    );
    assert_eq!(
        raw(&env, "GET", "/nothing", std::slice::from_ref(&ua), "")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn malformed_bodies_are_refused() {
    let env = with_devices(0).await;
    let (ua, session) = raw_session(&env, "nonce-x").await;
    for (method, path, body) in [
        ("POST", "/server/devices", "{not json"),
        ("POST", "/devices", "[]"),
        ("POST", "/profile", "{\"profile_name\": 5}"),
        ("PUT", "/profile/devices", "{\"devices\": \"X\"}"),
    ] {
        let (status, text) = raw(&env, method, path, &[ua.clone(), session.clone()], body).await;
        assert_eq!(
            (status, text.as_str()),
            (400, "\"MALFORMED_REQUEST_BODY\""),
            "{path}"
        );
    }
    assert_eq!(env.sim.world.profile_count(), 0);
}

#[tokio::test]
async fn retry_after_and_backoff() {
    let env = with_devices(1).await;
    let w = &env.sim.world;
    env.client.account().await.unwrap();

    // 429 with Retry-After seconds: waited, then success.
    w.push_fault(
        Endpoint::Account,
        Fault::once(429, "TOO_MANY_REQUESTS").retry_after("1"),
    );
    let t = std::time::Instant::now();
    env.client.account().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(
        env.metrics
            .render()
            .contains(r#"orchard_dep_requests_total{endpoint="account",status="429"} 1"#)
    );

    // 503 with an HTTP date (the manual clock is "now").
    let date = httpdate::fmt_http_date((start_time() + time::Duration::seconds(1)).into());
    w.push_fault(Endpoint::Account, Fault::once(503, "").retry_after(&date));
    env.client.account().await.unwrap();

    // Longer than the cap: no waiting, the caller learns when to come back.
    let before = w.requests(Endpoint::Account);
    w.push_fault(
        Endpoint::Account,
        Fault::once(429, "TOO_MANY_REQUESTS").retry_after("3600"),
    );
    let t = std::time::Instant::now();
    let err = env.client.account().await.unwrap_err();
    assert_eq!(
        err,
        DepError::Throttled {
            status: 429,
            retry_after: Some(Duration::from_secs(3600))
        }
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(w.requests(Endpoint::Account), before + 1);

    // Throttled on every attempt: three tries, then the error.
    let before = w.requests(Endpoint::Account);
    w.push_fault(
        Endpoint::Account,
        Fault::once(429, "TOO_MANY_REQUESTS").times(3),
    );
    assert!(matches!(
        env.client.account().await.unwrap_err(),
        DepError::Throttled {
            status: 429,
            retry_after: None
        }
    ));
    assert_eq!(w.requests(Endpoint::Account), before + 3);

    // 5xx: backoff then success; three in a row is an error.
    let before = w.requests(Endpoint::Account);
    w.push_fault(Endpoint::Account, Fault::once(500, "INTERNAL").times(2));
    env.client.account().await.unwrap();
    assert_eq!(w.requests(Endpoint::Account), before + 3);
    w.push_fault(Endpoint::Account, Fault::once(502, "BAD GATEWAY").times(3));
    assert!(matches!(
        env.client.account().await.unwrap_err(),
        DepError::Server { status: 502, .. }
    ));

    // Other 4xx are not retried.
    let before = w.requests(Endpoint::FetchDevices);
    w.push_fault(Endpoint::FetchDevices, Fault::once(400, "SOMETHING_ELSE"));
    assert!(matches!(
        env.client.fetch_devices(None, None).await.unwrap_err(),
        DepError::Rejected { status: 400, .. }
    ));
    assert_eq!(w.requests(Endpoint::FetchDevices), before + 1);
}

#[tokio::test]
async fn network_errors_are_retried_then_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let clock: SharedClock = ManualClock::new(start_time());
    let metrics = Metrics::new();
    let opts = ClientOptions {
        base_url: format!("http://{addr}"),
        user_agent: "orchard/test".into(),
        retry: fast_retry(),
        ..Default::default()
    };
    let token = orchard::sim::dep::random_token(start_time() + time::Duration::days(1));
    let client = Client::new(opts, token, metrics.clone(), clock).unwrap();
    let err = client.account().await.unwrap_err();
    assert!(matches!(err, DepError::Network(_)), "{err:?}");
    assert!(err.admin_message().contains("cannot reach"));
    assert!(
        metrics
            .render()
            .contains(r#"orchard_dep_requests_total{endpoint="session",status="network_error"} 3"#)
    );
    // A bad base URL is refused at construction.
    for bad in ["ftp://x", "not a url", "https://x/?q=1"] {
        let opts = ClientOptions {
            base_url: bad.into(),
            ..ClientOptions::default()
        };
        let token = orchard::sim::dep::random_token(start_time());
        let clock: SharedClock = ManualClock::new(start_time());
        assert!(matches!(
            Client::new(opts, token, Metrics::new(), clock),
            Err(DepError::BaseUrl(_))
        ));
    }
    assert_eq!(
        ClientOptions::default().base_url,
        "https://mdmenrollment.apple.com"
    );
    assert!(ClientOptions::default().user_agent.starts_with("orchard/"));
}

/// Every scripted failure of Apple's old simulator (commandment `config_failures.json`), answered by
/// our simulator and classified by the client.
#[tokio::test]
async fn old_simulator_failure_list() {
    let list: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/apple-dep/config_failures.json")).unwrap();
    let env = with_devices(3).await;
    let serial = env.sim.world.serials()[0].clone();
    let uuid = env
        .client
        .define_profile(&profile())
        .await
        .unwrap()
        .profile_uuid;
    let cursor = env.client.fetch_devices(None, None).await.unwrap().cursor;
    let mut covered = 0;
    for (key, endpoint) in [
        ("get_session_responses", Endpoint::Session),
        ("get_account_responses", Endpoint::Account),
        ("post_server_devices_responses", Endpoint::FetchDevices),
        ("post_devices_sync_responses", Endpoint::SyncDevices),
        ("post_devices_responses", Endpoint::DeviceDetails),
        ("post_devices_disown_responses", Endpoint::Disown),
        ("post_profile_responses", Endpoint::DefineProfile),
        ("put_profile_devices_responses", Endpoint::AssignProfile),
        ("get_profile_responses", Endpoint::GetProfile),
        ("delete_profile_devices_responses", Endpoint::RemoveProfile),
    ] {
        for item in list[key].as_array().unwrap() {
            let name = item["response"].as_str().unwrap();
            let (status, body, want): (u16, String, Result<(), DepError>) = match name {
                "success" | "not_accessible" | "failed" => {
                    let code = name.to_ascii_uppercase();
                    let body = match endpoint {
                        Endpoint::DeviceDetails => format!(
                            r#"{{"devices":{{"{serial}":{{"serial_number":"{serial}","response_status":"{code}"}}}}}}"#
                        ),
                        Endpoint::DefineProfile => format!(
                            r#"{{"profile_uuid":"{uuid}","devices":{{"{serial}":"{code}"}}}}"#
                        ),
                        _ => format!(
                            r#"{{"profile_uuid":"{uuid}","devices":{{"{serial}":"{code}"}}}}"#
                        ),
                    };
                    (200, body, Ok(()))
                }
                "bad_request" => (
                    400,
                    "BAD_REQUEST".into(),
                    Err(DepError::OAuthRequest {
                        body: "BAD_REQUEST".into(),
                    }),
                ),
                "forbidden_access_denied" => {
                    (403, "ACCESS_DENIED".into(), Err(DepError::AccessDenied))
                }
                "forbidden_t_c_not_signed" => {
                    (403, "T_C_NOT_SIGNED".into(), Err(DepError::TermsNotSigned))
                }
                "too_many_requests" => (429, "TOO_MANY_REQUESTS".into(), Ok(())),
                // A stale session: one re-auth and the call goes through.
                "unauthorized" if endpoint != Endpoint::Session => {
                    (401, "UNAUTHORIZED".into(), Ok(()))
                }
                "unauthorized" => (
                    401,
                    "UNAUTHORIZED".into(),
                    Err(DepError::TokenRejected {
                        code: "HTTP 401".into(),
                    }),
                ),
                "forbidden" => (403, "FORBIDDEN".into(), Ok(())),
                "invalid_method" => (
                    405,
                    "METHOD_NOT_ALLOWED".into(),
                    Err(DepError::Rejected {
                        endpoint: endpoint.name(),
                        status: 405,
                        body: "METHOD_NOT_ALLOWED".into(),
                    }),
                ),
                "not_found" => (
                    404,
                    "NOT_FOUND".into(),
                    Err(DepError::Rejected {
                        endpoint: endpoint.name(),
                        status: 404,
                        body: "NOT_FOUND".into(),
                    }),
                ),
                "bad_request_malformed_request_body" => (
                    400,
                    "MALFORMED_REQUEST_BODY".into(),
                    Err(DepError::MalformedRequest),
                ),
                "bad_request_invalid_cursor" => {
                    (400, "INVALID_CURSOR".into(), Err(DepError::InvalidCursor))
                }
                "bad_request_exhausted_cursor" => (
                    400,
                    "EXHAUSTED_CURSOR".into(),
                    Err(DepError::ExhaustedCursor),
                ),
                "bad_request_cursor_required" => {
                    (400, "CURSOR_REQUIRED".into(), Err(DepError::CursorRequired))
                }
                "bad_request_device_id_required" => (
                    400,
                    "DEVICE_ID_REQUIRED".into(),
                    Err(DepError::DeviceIdRequired),
                ),
                "bad_request_profile_uuid_required" => (
                    400,
                    "PROFILE_UUID_REQUIRED".into(),
                    Err(DepError::ProfileUuidRequired),
                ),
                "bad_request_profile_not_found" => (
                    400,
                    "PROFILE_NOT_FOUND".into(),
                    Err(DepError::ProfileNotFound),
                ),
                "bad_request_config_url_required" => (
                    400,
                    "CONFIG_URL_REQUIRED".into(),
                    Err(DepError::Profile(ProfileField::UrlRequired)),
                ),
                "bad_request_config_name_required" => (
                    400,
                    "CONFIG_NAME_REQUIRED".into(),
                    Err(DepError::Profile(ProfileField::NameRequired)),
                ),
                "bad_request_department_required" => (
                    400,
                    "DEPARTMENT_REQUIRED".into(),
                    Err(DepError::Profile(ProfileField::DepartmentRequired)),
                ),
                "bad_request_support_phone_required" => (
                    400,
                    "SUPPORT_PHONE_REQUIRED".into(),
                    Err(DepError::Profile(ProfileField::SupportPhoneRequired)),
                ),
                other => panic!("failure {other} of {key} is not covered"),
            };
            env.sim.world.forget_sessions();
            let sent = if status == 200 {
                body
            } else {
                format!("\"{body}\"")
            };
            env.sim
                .world
                .push_fault(endpoint, Fault::once(status, &sent));
            let got: Result<(), DepError> = match endpoint {
                Endpoint::Session | Endpoint::Account => env.client.account().await.map(drop),
                Endpoint::FetchDevices => env.client.fetch_devices(None, None).await.map(drop),
                Endpoint::SyncDevices => env.client.sync_devices(&cursor, None).await.map(drop),
                Endpoint::DeviceDetails => env
                    .client
                    .device_details(std::slice::from_ref(&serial))
                    .await
                    .map(|d| {
                        if status == 200 {
                            assert_eq!(
                                d.devices[&serial].response_status.as_deref(),
                                Some(name.to_ascii_uppercase().as_str())
                            );
                        }
                    }),
                Endpoint::Disown => env
                    .client
                    .disown(std::slice::from_ref(&serial))
                    .await
                    .map(drop),
                Endpoint::DefineProfile => env.client.define_profile(&profile()).await.map(drop),
                Endpoint::AssignProfile => env
                    .client
                    .assign_profile(&uuid, std::slice::from_ref(&serial))
                    .await
                    .map(drop),
                Endpoint::GetProfile => env.client.get_profile(&uuid).await.map(drop),
                Endpoint::RemoveProfile => env
                    .client
                    .remove_profile(std::slice::from_ref(&serial))
                    .await
                    .map(drop),
            };
            assert_eq!(got, want, "{key} {name}");
            covered += 1;
        }
    }
    assert_eq!(covered, 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_at_a_time_per_token() {
    let env = with_devices(50).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = env.client.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                client.fetch_devices(None, Some(5)).await.map(drop)
            } else {
                client.account().await.map(drop)
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(env.sim.world.max_concurrent_requests(), 1);
    assert_eq!(
        env.sim.world.sessions_issued(),
        1,
        "clones share the session"
    );
}

#[tokio::test]
async fn over_tls_with_a_trusted_simulator_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], private)
    .unwrap();
    let clock = ManualClock::new(start_time());
    let sim = DepSim::bind(
        "127.0.0.1:0".parse().unwrap(),
        clock.clone(),
        SimOptions {
            devices: 3,
            tls: Some(Arc::new(config)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(sim.base_url.starts_with("https://"));
    let metrics = Metrics::new();
    // Without trusting the simulator's certificate the TLS handshake fails.
    let untrusting = client_for(
        &sim,
        sim.token.clone(),
        &metrics,
        clock.clone(),
        "orchard/test",
    );
    assert!(matches!(
        untrusting.account().await,
        Err(DepError::Network(_))
    ));
    let opts = ClientOptions {
        base_url: sim.base_url.clone(),
        user_agent: "orchard/test".into(),
        retry: fast_retry(),
        extra_roots: vec![cert],
    };
    let client = Client::new(opts, sim.token.clone(), metrics, clock).unwrap();
    let page = client.fetch_devices(None, None).await.unwrap();
    assert_eq!(page.devices.len(), 3);
}

#[tokio::test]
async fn throttling_answers_follow_the_protocol_version() {
    let env = with_devices(3).await;
    let uuid = env
        .client
        .define_profile(&profile())
        .await
        .unwrap()
        .profile_uuid;
    env.sim.world.throttle_assign(Some((1, 60)));
    let (ua, session) = raw_session(&env, "nonce-v").await;
    let serials = env.sim.world.serials();
    let body = serde_json::json!({ "profile_uuid": uuid, "devices": serials }).to_string();
    let mut answers = Vec::new();
    for version in ["8", "9", "10"] {
        let headers = [
            ua.clone(),
            session.clone(),
            ("x-server-protocol-version", version.to_string()),
        ];
        let (status, text) = raw(&env, "PUT", "/profile/devices", &headers, &body).await;
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let statuses: Vec<String> = v["devices"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        answers.push((
            statuses.iter().any(|s| s == "THROTTLED"),
            v.get("retry_after_seconds").cloned(),
        ));
    }
    assert_eq!(
        answers,
        [
            (false, None),
            (true, None),
            (true, Some(serde_json::json!(60))),
        ]
    );
}

/// The token the simulator accepts, written as Apple's portal does, opens with the key it was
/// encrypted for and parses back to the same token.
#[tokio::test]
async fn simulator_writes_a_p7m_that_decrypts() {
    use orchard::pki::cms;
    let env = with_devices(0).await;
    let cert = cms::load_certificate(include_bytes!("fixtures/apple-dep/dep_cert.pem")).unwrap();
    let key = cms::load_rsa_private_key(include_bytes!("fixtures/apple-dep/dep_key.pem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = orchard::sim::dep::write_token(
        &env.sim.token,
        &cert,
        dir.path(),
        "Orchard Simulated MDM",
        start_time(),
    )
    .unwrap();
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        "Orchard_Simulated_MDM_Token_2026-09-01_smime.p7m"
    );
    let text = std::fs::read(&path).unwrap();
    assert!(text.starts_with(b"Content-Type: application/pkcs7-mime"));
    let der = cms::smime_unwrap(&text).unwrap();
    let plain = cms::decrypt_enveloped(&der, &key, &cert).unwrap();
    let token = ServerToken::from_message(std::str::from_utf8(&plain).unwrap()).unwrap();
    assert_eq!(token, env.sim.token);
}

/// Apple's one service answers for every MDM server: a second server of the organisation has its
/// own token, name, UUID and devices, and each token sees only its own.
#[tokio::test]
async fn a_second_mdm_server_has_its_own_token_account_and_devices() {
    let env = with_devices(3).await;
    let staff = env.sim.add_server("Staff Macs", 2);
    assert_ne!(staff.token().consumer_key, env.sim.token.consumer_key);
    let shared: SharedClock = env.clock.clone();
    let client = client_for(
        &env.sim,
        staff.token(),
        &env.metrics,
        shared,
        "orchard/test",
    );
    let account = client.account().await.unwrap();
    let first = env.client.account().await.unwrap();
    assert_eq!(account.server_name, "Staff Macs");
    assert_ne!(account.server_uuid, first.server_uuid);
    assert_eq!(account.org_name, first.org_name);
    let mut theirs: Vec<String> = client
        .fetch_devices(None, None)
        .await
        .unwrap()
        .devices
        .into_iter()
        .map(|d| d.serial_number)
        .collect();
    theirs.sort();
    let mut expected = staff.serials();
    expected.sort();
    assert_eq!(theirs, expected);
    let ours = env.client.fetch_devices(None, None).await.unwrap().devices;
    assert_eq!(ours.len(), 3);
    assert!(ours.iter().all(|d| !expected.contains(&d.serial_number)));
}

/// "Download Token" again in ABM/ASM: the same consumer key with new secrets and expiry; the
/// previous token stops working.
#[tokio::test]
async fn a_renewed_token_replaces_the_previous_one() {
    let env = with_devices(1).await;
    let old = env.sim.token.clone();
    let expiry = start_time() + time::Duration::days(400);
    let new = env.sim.world.renew_token(expiry);
    assert_eq!(new.consumer_key, old.consumer_key);
    assert_ne!(new.access_token, old.access_token);
    assert_eq!(new.access_token_expiry, expiry);
    assert_eq!(env.sim.world.token(), new);
    let shared: SharedClock = env.clock.clone();
    let renewed = client_for(&env.sim, new, &env.metrics, shared.clone(), "orchard/test");
    assert_eq!(
        renewed
            .fetch_devices(None, None)
            .await
            .unwrap()
            .devices
            .len(),
        1
    );
    let stale = client_for(&env.sim, old, &env.metrics, shared, "orchard/test");
    assert!(
        matches!(stale.account().await, Err(DepError::TokenRejected { .. })),
        "the previous token is refused"
    );
}

/// Every answer takes the configured latency (a lower bound only: a slow machine only adds).
#[tokio::test]
async fn answers_take_the_configured_latency() {
    let env = spawn(SimOptions {
        latency: Duration::from_millis(150),
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    env.client.account().await.unwrap(); // `/session`, then `/account`
    assert!(started.elapsed() >= Duration::from_millis(300));
    env.sim.set_latency(Duration::from_millis(400));
    let started = std::time::Instant::now();
    env.client.account().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
}
