//! Benchmark: server CPU time per `Idle` connect and per check-in (`TokenUpdate`), through the
//! same adapters the HTTP server uses, including `Mdm-Signature` verification, the chain check
//! to the SCEP CA and the store. Requests are signed once, outside the measured loop, so only
//! the server's work is counted. Prints figures; asserts nothing.
//!
//! Run: `cargo run --example bench_mdm [iterations]`

#[path = "../tests/common/mdm_app.rs"]
mod app;

use std::time::Instant;

use http::HeaderMap;
use orchard::mdm::checkin::Checkin;
use orchard::mdm::command::{PushMagic, Report, Status};

/// CPU time (user + system) this thread has used, from /proc (clock ticks of 10 ms).
fn thread_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 * 10.0
}

fn measure(name: &str, n: u32, mut call: impl FnMut() -> u16) {
    let (cpu0, wall0) = (thread_cpu_ms(), Instant::now());
    for _ in 0..n {
        let status = call();
        if status != 200 {
            eprintln!("{name}: unexpected status {status}");
            return;
        }
    }
    let cpu = thread_cpu_ms() - cpu0;
    let wall = wall0.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{name:<28} {n:>6} requests  CPU {:>8.3} ms/request  wall {:>8.3} ms/request",
        cpu / f64::from(n),
        wall / f64::from(n)
    );
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return;
        }
    };
    let app = app::App::new();
    let mac = rt.block_on(app::enrolled_mac(&app, 1));

    let idle = Report::build(&mac.udid(), Status::Idle, None, plist::Dictionary::new());
    let mut idle_headers = HeaderMap::new();
    let Ok(sig) = mac.sign(&idle) else { return };
    if let Ok(v) = sig.parse() {
        idle_headers.insert("mdm-signature", v);
    }
    measure("connect Idle (empty queue)", n, || {
        app.endpoints
            .connect(&idle_headers, &idle, &[])
            .status()
            .as_u16()
    });

    let Ok(magic) = PushMagic::parse(&mac.push_magic) else {
        return;
    };
    let token_update = Checkin::TokenUpdate {
        udid: mac.udid(),
        topic: app::TOPIC.into(),
        token: mac.push_token.clone(),
        push_magic: magic,
        awaiting_configuration: false,
        user_id: None,
    }
    .to_plist();
    let mut tu_headers = HeaderMap::new();
    let Ok(sig) = mac.sign(&token_update) else {
        return;
    };
    if let Ok(v) = sig.parse() {
        tu_headers.insert("mdm-signature", v);
    }
    measure("check-in TokenUpdate", n, || {
        app.endpoints
            .checkin(&tu_headers, &token_update, &[])
            .status()
            .as_u16()
    });
}
