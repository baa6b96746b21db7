//! `switchyard check --config FILE` (like `nginx -t`): a valid file passes with exit
//! status 0; a file with mistakes fails with status 1 and one line per problem on
//! stderr, `FILE: key.path: what is wrong`, every problem and not only the first.
//! With `--diff-against OLD` both files are checked, then what a reload from OLD would
//! change is printed, one line per change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A configuration file in a fresh directory under the system's temp dir, removed
/// when dropped.
struct TempConfig {
    dir: PathBuf,
    file: PathBuf,
}

impl TempConfig {
    fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-check-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let file = dir.join("switchyard.toml");
        std::fs::write(&file, text).expect("write config");
        TempConfig { dir, file }
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Outcome {
    /// The file as the binary names it in its messages.
    file: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

fn run_check(path: &Path) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run switchyard check");
    Outcome {
        file: path.display().to_string(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check(text: &str) -> Outcome {
    let cfg = TempConfig::new(text);
    run_check(&cfg.file)
}

/// Asserts the check failed with status 1 and reported each `(key path, message
/// fragment)` as a line `FILE: key.path: ...fragment...`.
fn assert_reports(out: &Outcome, expected: &[(&str, &str)]) {
    assert_eq!(
        out.code,
        Some(1),
        "exit status; stdout {:?}, stderr {:?}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stdout.contains("valid"),
        "an invalid file is not called valid: {:?}",
        out.stdout
    );
    let lines = out.lines();
    for (path, fragment) in expected {
        let prefix = format!("{}: {path}: ", out.file);
        assert!(
            lines.iter().any(|l| l
                .strip_prefix(&prefix)
                .is_some_and(|m| m.contains(fragment))),
            "expected a line `{prefix}...{fragment}...`; stderr was:\n{}",
            out.stderr
        );
    }
}

/// Like `assert_reports`, and nothing else is reported.
fn assert_exactly(out: &Outcome, expected: &[(&str, &str)]) {
    assert_reports(out, expected);
    assert_eq!(
        out.lines().len(),
        expected.len(),
        "exactly {} problem(s) expected; stderr was:\n{}",
        expected.len(),
        out.stderr
    );
}

/// A valid file; each mistake below is one edit of it.
const BASE: &str = r#"
[[listener]]
name = "public"
listen = "127.0.0.1:0"

[[route]]
path = "/"
upstream = "api"

[upstream.api]
servers = [
  { addr = "127.0.0.1:9001" },
  { addr = "127.0.0.1:9002" },
  { addr = "127.0.0.1:9003" },
]
"#;

/// `BASE` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in BASE");
    BASE.replacen(from, to, 1)
}

// ===== valid files =====

#[test]
fn valid_file_passes_with_exit_0() {
    let text = r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "public"
listen = "127.0.0.1:0"

[[listener]]
name = "internal"
listen = "127.0.0.1:0"

[[route]]
path = "/"
upstream = "bots"
set_headers = { "X-Instance-ID" = "$upstream_addr", "X-Via" = "switchyard ${host}$$", "X-Drop" = "" }

[[route]]
host = "api.example.com"
path = "/v1/"
upstream = "api"
connect_timeout = "250ms"
read_timeout = "5s"
send_timeout = "1m"

[[route]]
listener = "internal"
host = "*.bots.example.com"
upstream = "bots"

[upstream.bots]
balance = "round_robin"
keepalive = 16
servers = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", weight = 3 }]

[upstream.api]
servers = [{ addr = "localhost:9003", weight = 1000 }]
"#;
    let out = check(text);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        format!("{}: configuration is valid\n", out.file)
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn base_of_the_mistake_tests_is_valid() {
    let out = check(BASE);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stderr, "");
}

#[test]
fn repository_config_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchyard.toml");
    assert!(path.exists(), "{} does not exist", path.display());
    let out = run_check(&path);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        format!("{}: configuration is valid\n", out.file)
    );
}

// ===== one mistake each =====

#[test]
fn invalid_server_address_names_its_index() {
    let out = check(&edit(r#"{ addr = "127.0.0.1:9003" }"#, r#"{ addr = "x" }"#));
    assert_exactly(
        &out,
        &[(
            "upstream.api.servers[2].addr",
            r#"invalid socket address "x""#,
        )],
    );
}

#[test]
fn invalid_listen_address() {
    let out = check(&edit(
        r#"listen = "127.0.0.1:0""#,
        r#"listen = "localhost""#,
    ));
    assert_exactly(
        &out,
        &[(
            "listener[0].listen",
            r#"invalid socket address "localhost""#,
        )],
    );
}

#[test]
fn unknown_top_level_key() {
    let out = check(&format!("bogus = 1\n{BASE}"));
    assert_exactly(
        &out,
        &[(
            "bogus",
            "unknown key (expected one of: access_log, admin, listener, resolver, route, upstream)",
        )],
    );
}

#[test]
fn unknown_key_inside_a_route() {
    let out = check(&edit(r#"path = "/""#, "path = \"/\"\nbogus = 1"));
    assert_exactly(&out, &[("route[0].bogus", "unknown field `bogus`")]);
}

#[test]
fn wrong_type_for_weight() {
    let out = check(&edit(
        r#"{ addr = "127.0.0.1:9001" }"#,
        r#"{ addr = "127.0.0.1:9001", weight = "x" }"#,
    ));
    // Exactly this one line is asserted by the ignored test below.
    assert_reports(
        &out,
        &[(
            "upstream.api.servers[0].weight",
            r#"invalid type: string "x", expected u32"#,
        )],
    );
}

#[test]
fn invalid_duration() {
    let out = check(&edit(
        r#"path = "/""#,
        "path = \"/\"\nread_timeout = \"5 parsecs\"",
    ));
    assert_exactly(
        &out,
        &[("route[0].read_timeout", r#"invalid duration "5 parsecs""#)],
    );
}

#[test]
fn zero_duration() {
    let out = check(&edit(
        r#"path = "/""#,
        "path = \"/\"\nconnect_timeout = \"0s\"",
    ));
    assert_exactly(
        &out,
        &[("route[0].connect_timeout", "must be greater than zero")],
    );
}

#[test]
fn route_naming_an_unknown_upstream() {
    let out = check(&edit(r#"upstream = "api""#, r#"upstream = "apu""#));
    assert_exactly(&out, &[("route[0].upstream", r#"no upstream named "apu""#)]);
}

#[test]
fn route_naming_an_unknown_listener() {
    let out = check(&edit(r#"path = "/""#, "path = \"/\"\nlistener = \"pubic\""));
    assert_exactly(
        &out,
        &[("route[0].listener", r#"no listener named "pubic""#)],
    );
}

#[test]
fn duplicate_listener_name() {
    let out = check(&format!(
        "{BASE}\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n"
    ));
    assert_exactly(
        &out,
        &[("listener[1].name", r#"duplicate listener name "public""#)],
    );
}

#[test]
fn weight_out_of_range() {
    let text = edit(
        r#"{ addr = "127.0.0.1:9001" }"#,
        r#"{ addr = "127.0.0.1:9001", weight = 0 }"#,
    )
    .replacen(
        r#"{ addr = "127.0.0.1:9003" }"#,
        r#"{ addr = "127.0.0.1:9003", weight = 1001 }"#,
        1,
    );
    let out = check(&text);
    assert_exactly(
        &out,
        &[
            (
                "upstream.api.servers[0].weight",
                "must be between 1 and 1000, got 0",
            ),
            (
                "upstream.api.servers[2].weight",
                "must be between 1 and 1000, got 1001",
            ),
        ],
    );
}

#[test]
fn unknown_balance_algorithm() {
    let out = check(&edit(
        "[upstream.api]",
        "[upstream.api]\nbalance = \"fastest\"",
    ));
    assert_exactly(
        &out,
        &[(
            "upstream.api.balance",
            // The list of names grows as algorithms are added.
            r#"unknown algorithm "fastest" (expected one of: "#,
        )],
    );
}

#[test]
fn empty_servers_list() {
    let text = BASE.replace(
        r#"servers = [
  { addr = "127.0.0.1:9001" },
  { addr = "127.0.0.1:9002" },
  { addr = "127.0.0.1:9003" },
]"#,
        "servers = []",
    );
    assert!(text.contains("servers = []"));
    let out = check(&text);
    assert_exactly(
        &out,
        &[(
            "upstream.api.servers",
            "an upstream needs at least one server",
        )],
    );
}

#[test]
fn invalid_host_pattern() {
    let text = edit(
        r#"path = "/""#,
        "path = \"/\"\nhost = \"api.example.com:8080\"",
    ) + "\n[[route]]\nhost = \"a*.example.com\"\npath = \"/v1/\"\nupstream = \"api\"\n";
    let out = check(&text);
    assert_exactly(
        &out,
        &[
            ("route[0].host", r#"invalid host "api.example.com:8080""#),
            ("route[1].host", r#"invalid host "a*.example.com""#),
        ],
    );
}

#[test]
fn invalid_header_name_and_unknown_variable_in_set_headers() {
    let out = check(&edit(
        r#"path = "/""#,
        "path = \"/\"\nset_headers = { \"Bad Header\" = \"1\", \"X-Id\" = \"$nope\" }",
    ));
    assert_exactly(
        &out,
        &[
            (
                r#"route[0].set_headers."Bad Header""#,
                "not a valid header name",
            ),
            (
                r#"route[0].set_headers."X-Id""#,
                r#"unknown variable "$nope""#,
            ),
        ],
    );
}

#[test]
fn toml_syntax_error_reports_the_line() {
    // Line 7 opens a route table without closing it.
    let text = "\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\n[[route]\nupstream = \"api\"\n";
    assert_eq!(text.lines().nth(6), Some("[[route]"));
    let out = check(text);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    let prefix = format!("{}: line 7, column ", out.file);
    assert!(
        lines[0].starts_with(&prefix) && lines[0].contains(": TOML syntax error: "),
        "expected `{prefix}N: TOML syntax error: ...`, got {:?}",
        lines[0]
    );
}

// ===== several mistakes =====

#[test]
fn three_mistakes_are_all_reported() {
    let text = edit(r#"listen = "127.0.0.1:0""#, r#"listen = "nowhere""#)
        .replacen(
            r#"path = "/""#,
            "path = \"/\"\nread_timeout = \"5 parsecs\"",
            1,
        )
        .replacen(r#"{ addr = "127.0.0.1:9003" }"#, r#"{ addr = "x" }"#, 1);
    let out = check(&text);
    assert_exactly(
        &out,
        &[
            ("listener[0].listen", r#"invalid socket address "nowhere""#),
            ("route[0].read_timeout", r#"invalid duration "5 parsecs""#),
            (
                "upstream.api.servers[2].addr",
                r#"invalid socket address "x""#,
            ),
        ],
    );
}

// ===== files that cannot be read =====

#[test]
fn missing_file_is_named() {
    let cfg = TempConfig::new("");
    let missing = cfg.dir.join("does-not-exist.toml");
    let out = run_check(&missing);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    let prefix = format!("{}: cannot read file: ", missing.display());
    assert!(
        lines[0].starts_with(&prefix) && lines[0].contains("No such file"),
        "expected `{prefix}No such file ...`, got {:?}",
        lines[0]
    );
}

// ===== bugs =====
//
// validate.rs deserialises each `[[listener]]` and each `[upstream.NAME]` as a whole
// with serde; the first type error or unknown key anywhere inside one drops the
// whole element. Its other problems are then never checked, and routes that refer
// to it are reported as naming something that does not exist.

#[test]
fn wrong_type_in_an_upstream_is_the_only_problem_reported() {
    let out = check(&edit(
        r#"{ addr = "127.0.0.1:9001" }"#,
        r#"{ addr = "127.0.0.1:9001", weight = "x" }"#,
    ));
    assert_exactly(
        &out,
        &[(
            "upstream.api.servers[0].weight",
            r#"invalid type: string "x", expected u32"#,
        )],
    );
}

#[test]
fn wrong_type_in_a_listener_is_the_only_problem_reported() {
    let out = check(
        &edit(r#"listen = "127.0.0.1:0""#, "listen = 8080").replacen(
            r#"path = "/""#,
            "path = \"/\"\nlistener = \"public\"",
            1,
        ),
    );
    assert_exactly(
        &out,
        &[("listener[0].listen", "invalid type: integer `8080`")],
    );
}

#[test]
fn a_mistake_in_one_server_does_not_hide_another_servers_mistake() {
    let out = check(
        &edit(
            r#"{ addr = "127.0.0.1:9001" }"#,
            r#"{ addr = "127.0.0.1:9001", wieght = 2 }"#,
        )
        .replacen(r#"{ addr = "127.0.0.1:9003" }"#, r#"{ addr = "x" }"#, 1),
    );
    assert_reports(
        &out,
        &[
            ("upstream.api.servers[0].wieght", "unknown field `wieght`"),
            (
                "upstream.api.servers[2].addr",
                r#"invalid socket address "x""#,
            ),
        ],
    );
}

#[test]
fn routes_with_different_invalid_hosts_are_not_duplicates() {
    let text = edit(
        r#"path = "/""#,
        "path = \"/\"\nhost = \"api.example.com:8080\"",
    ) + "\n[[route]]\nhost = \"a*.example.com\"\npath = \"/\"\nupstream = \"api\"\n";
    let out = check(&text);
    assert_exactly(
        &out,
        &[
            ("route[0].host", r#"invalid host "api.example.com:8080""#),
            ("route[1].host", r#"invalid host "a*.example.com""#),
        ],
    );
}

// ===== --diff-against: what a reload would change =====

/// `switchyard check --config NEW --diff-against OLD`.
fn check_diff(old: &str, new: &str) -> (Outcome, TempConfig, TempConfig) {
    let (old, new) = (TempConfig::new(old), TempConfig::new(new));
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(&new.file)
        .arg("--diff-against")
        .arg(&old.file)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run switchyard check --diff-against");
    let out = Outcome {
        file: new.file.display().to_string(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (out, old, new)
}

/// Asserts a successful diff printed exactly `expected`, one change per line.
fn assert_changes(out: &Outcome, expected: &[&str]) {
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stderr, "");
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn diff_against_identical_file_prints_no_changes() {
    let (out, ..) = check_diff(BASE, BASE);
    assert_changes(&out, &["no changes"]);
}

#[test]
fn diff_against_reports_a_changed_weight() {
    let new = edit(
        r#"{ addr = "127.0.0.1:9002" }"#,
        r#"{ addr = "127.0.0.1:9002", weight = 3 }"#,
    );
    let (out, ..) = check_diff(BASE, &new);
    assert_changes(
        &out,
        &["changed upstream api, server 127.0.0.1:9002: weight 1 → 3"],
    );
}

#[test]
fn diff_against_reports_an_added_server() {
    let new = edit(
        r#"  { addr = "127.0.0.1:9003" },"#,
        r#"  { addr = "127.0.0.1:9003" },
  { addr = "127.0.0.1:9004", backup = true },"#,
    );
    let (out, ..) = check_diff(BASE, &new);
    assert_changes(
        &out,
        &["added upstream api, server 127.0.0.1:9004 (weight 1, backup)"],
    );
}

#[test]
fn diff_against_reports_a_removed_route() {
    let old = edit(
        "[upstream.api]",
        "[[route]]\nhost = \"*.example.com\"\npath = \"/webhook/\"\nupstream = \"api\"\n\n[upstream.api]",
    );
    let (out, ..) = check_diff(&old, BASE);
    assert_changes(
        &out,
        &["removed route[1] (host *.example.com, path /webhook/, upstream api)"],
    );
}

#[test]
fn diff_against_with_an_invalid_new_file_reports_its_problems() {
    let new = edit(r#"{ addr = "127.0.0.1:9003" }"#, r#"{ addr = "x" }"#);
    let (out, ..) = check_diff(BASE, &new);
    assert_exactly(
        &out,
        &[(
            "upstream.api.servers[2].addr",
            r#"invalid socket address "x""#,
        )],
    );
    assert_eq!(out.stdout, "", "no diff for an invalid file");
}

#[test]
fn diff_against_an_invalid_old_file_reports_its_problems() {
    let old = edit("upstream = \"api\"", "upstream = \"apii\"");
    let (mut out, old_cfg, _new) = check_diff(&old, BASE);
    out.file = old_cfg.file.display().to_string();
    assert_exactly(
        &out,
        &[("route[0].upstream", r#"no upstream named "apii""#)],
    );
    assert_eq!(out.stdout, "", "no diff against an invalid file");
}

// ===== config dump: the effective configuration =====

/// `switchyard config dump` with `args`, in `dir`.
fn run_dump(dir: &Path, args: &[&std::ffi::OsStr]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["config", "dump"])
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run switchyard config dump");
    Outcome {
        file: String::new(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Dumps `cfg`'s file, with `--show-secrets` if asked.
fn dump(cfg: &TempConfig, show_secrets: bool) -> Outcome {
    let mut args = vec![cfg.file.as_os_str(), "--config".as_ref()];
    args.swap(0, 1);
    if show_secrets {
        args.push("--show-secrets".as_ref());
    }
    let mut out = run_dump(&cfg.dir, &args);
    out.file = cfg.file.display().to_string();
    out
}

/// A file that leaves most keys to their defaults, with an admin token.
const SPARSE: &str = r#"
[admin]
listen = "127.0.0.1:0"
token = "s3cret-token"

[[listener]]
name = "public"
listen = "127.0.0.1:0"

[[route]]
path = "/api/"
upstream = "api"
read_timeout = "30s"

[[route]]
path_exact = "/health"
respond = { body = "ok\n" }

[upstream.api]
balance = "hash"
servers = [{ addr = "127.0.0.1:9001" }, { addr = "localhost:9002", weight = 2 }]
health_check = {}
"#;

#[test]
fn dump_prints_the_configuration_with_defaults_filled_in() {
    let cfg = TempConfig::new(SPARSE);
    let out = dump(&cfg, false);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stderr, "");
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("# ") && first.contains(&out.file),
        "the first line is a comment naming the file: {first:?}"
    );
    for expected in [
        "[[route]]\naccess_log = true\npath = \"/api/\"\nupstream = \"api\"\nconnect_timeout = \"1m\"\nread_timeout = \"30s\"\n",
        "next_upstream = [\"error\", \"timeout\"]\n",
        "retry_body_limit = \"64KiB\"\n",
        "path_exact = \"/health\"\n\n[route.respond]\nstatus = 200\nbody = \"\"\"\nok\n\"\"\"\ncontent_type = \"text/plain; charset=utf-8\"\n",
        "[upstream.api]\nbalance = \"hash\"\nkeepalive = 32\nhash_key = \"client_ip\"\n",
        "interval = \"5s\"\n",
        "expect_status = \"200-399\"\n",
        "tls = false\n",
        "max_response_header_size = \"32KiB\"\n",
        // The server as written, once, though the name may resolve to two addresses.
        "addr = \"localhost:9002\"\nweight = 2\n",
    ] {
        assert!(
            out.stdout.contains(expected),
            "no {expected:?} in:\n{}",
            out.stdout
        );
    }
    assert_eq!(out.stdout.matches("localhost:9002").count(), 1);
}

#[test]
fn dump_redacts_the_admin_token_unless_asked_and_the_placeholder_is_refused() {
    let cfg = TempConfig::new(SPARSE);
    let redacted = dump(&cfg, false);
    assert_eq!(redacted.code, Some(0), "stderr: {}", redacted.stderr);
    assert!(
        !redacted.stdout.contains("s3cret-token"),
        "{}",
        redacted.stdout
    );
    assert!(redacted.stdout.contains("token = \"<redacted>\"\n"));
    // The placeholder is not a token: the dump as a file does not load.
    let out = check(&redacted.stdout);
    assert_exactly(&out, &[("admin.token", "is the placeholder")]);

    let shown = dump(&cfg, true);
    assert_eq!(shown.code, Some(0), "stderr: {}", shown.stderr);
    assert!(shown.stdout.contains("token = \"s3cret-token\"\n"));
}

#[test]
fn dump_parses_back_to_the_same_configuration() {
    let cfg = TempConfig::new(SPARSE);
    let first = dump(&cfg, true);
    assert_eq!(first.code, Some(0), "stderr: {}", first.stderr);
    // Reloading from the original to its dump changes nothing...
    let (out, ..) = check_diff(SPARSE, &first.stdout);
    assert_changes(&out, &["no changes"]);
    // ...and the dump of the dump is the dump (but for the file named on top).
    let again = TempConfig::new(&first.stdout);
    let second = dump(&again, true);
    let body = |o: &Outcome| o.stdout.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&second), body(&first));
}

#[test]
fn dump_of_an_invalid_file_reports_its_problems_like_check() {
    let cfg = TempConfig::new(&edit(r#"{ addr = "127.0.0.1:9003" }"#, r#"{ addr = "x" }"#));
    let out = dump(&cfg, false);
    assert_exactly(
        &out,
        &[(
            "upstream.api.servers[2].addr",
            r#"invalid socket address "x""#,
        )],
    );
    assert_eq!(out.stdout, "", "nothing is dumped from an invalid file");
}

#[test]
fn dump_reads_config_switchyard_toml_by_default() {
    let out = run_dump(Path::new(env!("CARGO_MANIFEST_DIR")), &[]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(first.contains("config/switchyard.toml"), "{first:?}");
    assert!(out.stdout.contains("[upstream.bots.health_check]"));
}

/// `--no-lookup` checks a file away from its network: its `resolve = true` names
/// are not looked up (here the file's resolver is a port nobody answers on, which
/// without the flag is a warning after the query times out).
#[test]
fn no_lookup_leaves_discovered_names_alone() {
    let text = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
                [[route]]\nupstream = \"bots\"\n\n\
                [resolver]\nservers = [\"127.0.0.1:9\"]\ntimeout = \"200ms\"\n\n\
                [upstream.bots]\nservers = [{ addr = \"bots.example.test:8000\", resolve = true }]\n";
    let cfg = TempConfig::new(text);
    let run = |flags: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check")
            .args(flags)
            .arg("--config")
            .arg(&cfg.file)
            .env_remove("RUST_LOG")
            .output()
            .expect("run switchyard check")
    };
    let looked = run(&[]);
    assert_eq!(looked.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&looked.stderr);
    assert!(
        stderr.contains("warning: upstream.bots: bots.example.test:8000"),
        "{stderr}"
    );
    let offline = run(&["--no-lookup"]);
    assert_eq!(offline.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&offline.stderr), "");
    assert!(String::from_utf8_lossy(&offline.stdout).contains("configuration is valid"));
}
