//! Reload of a large configuration: 2 000 upstreams of 4 servers each, two routes
//! to each (a host route and a path route), metrics on. Measures, per reload, the
//! three steps `Control::apply` takes besides binding listeners — reading and
//! validating the file (`load`), the change list (`diff`) and building and swapping
//! the snapshot (`apply`) — and the process's resident memory after each reload
//! and at its peak (`VmRSS`, `VmHWM` of /proc/self/status).
//!
//! Each reload moves one server of every tenth upstream to a new port (the next
//! reload another tenth), so every reload has a diff to print, servers to drop and
//! servers to create, as an operator's deploys do.
//!
//! A plain timing program rather than criterion: one reload of this size takes
//! long enough to time alone, and the memory figure is about the sequence of
//! reloads, not one repeated in isolation.
//!
//! `cargo bench --bench reload` (release); `RELOAD_UPSTREAMS` and `RELOAD_ROUNDS`
//! change the size (2 000) and the number of reloads (30).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use switchyard::config::{diff, Config};
use switchyard::state::Shared;

/// Servers per upstream.
const SERVERS: usize = 4;

fn main() {
    let upstreams = env("RELOAD_UPSTREAMS", 2_000);
    let rounds = env("RELOAD_ROUNDS", 30);
    let source = Path::new("/etc/switchyard/bench.toml");

    let text = config_text(upstreams, 0);
    let rss_start = status("VmRSS:");
    let t = Instant::now();
    let first = Config::parse(source, &text).expect("the generated configuration is valid");
    let first_load = t.elapsed();
    let t = Instant::now();
    let shared = Shared::new(first, 2).expect("no access log to open");
    let first_build = t.elapsed();
    println!(
        "{upstreams} upstreams, {} servers, {} routes; {} KiB of TOML",
        upstreams * SERVERS,
        upstreams * 2,
        text.len() / 1024
    );
    println!(
        "first load {}, first build {}; RSS {} → {} KiB",
        ms(first_load),
        ms(first_build),
        rss_start,
        status("VmRSS:")
    );

    let (mut load, mut diffs, mut apply, mut whole) = (vec![], vec![], vec![], vec![]);
    let mut lines = 0;
    for round in 1..=rounds {
        let text = config_text(upstreams, round);
        let start = Instant::now();
        let config = Config::parse(source, &text).expect("the generated configuration is valid");
        let parsed = Instant::now();
        let changes = diff(&shared.config(), &config);
        let diffed = Instant::now();
        shared.apply(config).expect("no access log to open");
        let applied = Instant::now();
        load.push(parsed - start);
        diffs.push(diffed - parsed);
        apply.push(applied - diffed);
        whole.push(applied - start);
        lines = changes.len();
        if round == 1 || round % 5 == 0 {
            println!(
                "reload {round:>2}: {} ({} changes); RSS {} KiB, peak {} KiB",
                ms(applied - start),
                changes.len(),
                status("VmRSS:"),
                status("VmHWM:")
            );
        }
    }
    println!(
        "per reload (median / max of {rounds}): load {}, diff {}, apply {}, whole {}; {lines} changes",
        stats(&mut load),
        stats(&mut diffs),
        stats(&mut apply),
        stats(&mut whole),
    );
    println!(
        "after {rounds} reloads: RSS {} KiB, peak RSS {} KiB",
        status("VmRSS:"),
        status("VmHWM:")
    );
}

/// The configuration of reload `round`: upstream `i`'s last server is on a port
/// of its own in the rounds where `i % 10 == round % 10` (round 0: none).
fn config_text(upstreams: usize, round: usize) -> String {
    let mut s = String::from(
        "[admin]\nlisten = \"127.0.0.1:9901\"\n\n\
         [[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\n",
    );
    for i in 0..upstreams {
        let _ = write!(
            s,
            "[[route]]\nhost = \"u{i}.example.com\"\nupstream = \"u{i}\"\n\n\
             [[route]]\npath = \"/svc/u{i}/\"\nupstream = \"u{i}\"\nread_timeout = \"30s\"\n\n"
        );
    }
    for i in 0..upstreams {
        let _ = write!(s, "[upstream.u{i}]\nservers = [\n");
        for j in 0..SERVERS {
            // 10.a.b.c: a distinct address per server.
            let n = i * SERVERS + j;
            let port = if j == SERVERS - 1 && round > 0 && i % 10 == round % 10 {
                20_000 + round
            } else {
                8_000
            };
            let _ = writeln!(
                s,
                "  {{ addr = \"10.{}.{}.{}:{port}\" }},",
                n >> 16,
                (n >> 8) & 0xff,
                n & 0xff
            );
        }
        s.push_str("]\n\n");
    }
    s
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/self/status` figure in KiB (0 where there is none).
fn status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn stats(v: &mut [Duration]) -> String {
    v.sort();
    match (v.get(v.len() / 2), v.last()) {
        (Some(median), Some(max)) => format!("{} / {}", ms(*median), ms(*max)),
        _ => "none".to_owned(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
