use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard::config::{Config, Secrets};
use switchyard::server::DEFAULT_DRAIN_TIMEOUT;

/// The configuration file used when none is given.
const DEFAULT_CONFIG: &str = "config/switchyard.toml";

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A fast Layer-7 load-balancing reverse proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default command).
    Run {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        drain_timeout: Duration,
        /// Worker threads, like nginx's `worker_processes` (default: one per CPU
        /// available to the process, cgroup quotas included).
        #[arg(long)]
        workers: Option<usize>,
        /// Do not reload when the configuration file changes (SIGHUP and the admin
        /// API still reload).
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a configuration file, like `nginx -t`.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also validate OLD and print what reloading from OLD to the new file would
        /// change, one line per change (a dry run of a reload).
        #[arg(long, value_name = "OLD")]
        diff_against: Option<PathBuf>,
        /// Do not look up the `resolve = true` names (they are looked up by
        /// default, and each that gives no server is a warning): for checking a
        /// file away from the network it will run in.
        #[arg(long)]
        no_lookup: bool,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Translate an nginx, HAProxy or ingress-nginx configuration into this one's:
    /// the TOML on stdout (or -o FILE), what could not be carried over exactly on
    /// stderr as FILE:LINE: directive: message. Exits 0 when everything was
    /// translated exactly, 3 when something was dropped or approximated, 1 when
    /// the input cannot be read.
    Import {
        /// nginx, haproxy or ingress.
        #[arg(value_parser = ["nginx", "haproxy", "ingress"])]
        format: String,
        /// The main file (nginx.conf, haproxy.cfg), or the Ingress and Service
        /// manifests.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the TOML (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Start three sample origins and the proxy in front of them.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run one sample origin (used by the benchmarks).
    #[command(hide = true)]
    Origin {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "origin")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a file and print the configuration it gives as TOML: every key with
    /// its value, defaults filled in. Invalid files fail as `check` does.
    Dump {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the admin token and the passwords in rate-limit store URLs.
        /// Without this flag each is printed as "<redacted>", which is a
        /// placeholder, not a usable secret: loading the dump as a configuration
        /// fails at its key until the real one is put back.
        #[arg(long)]
        show_secrets: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: DEFAULT_CONFIG.into(),
        drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        workers: None,
        no_watch: false,
    });
    match command {
        Command::Check {
            config,
            diff_against: None,
            no_lookup,
        } => match Config::load(&config) {
            Ok(c) => {
                let mut warnings = c.warnings();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let (false, Ok(rt)) = (no_lookup, rt) {
                    warnings.extend(rt.block_on(switchyard::discovery::check(&c)));
                }
                for w in warnings {
                    eprintln!("{}: warning: {w}", config.display());
                }
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Check {
            config,
            diff_against: Some(old),
            ..
        } => check_diff(&config, &old),
        Command::Config {
            command:
                ConfigCommand::Dump {
                    config,
                    show_secrets,
                },
        } => dump(&config, show_secrets),
        Command::Run {
            config,
            drain_timeout,
            workers,
            no_watch,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            control_runtime().block_on(run(config, drain_timeout, workers, None, !no_watch))
        }
        Command::Import {
            format,
            files,
            output,
        } => import(&format, &files, output.as_deref()),
        Command::Demo { listen } => control_runtime().block_on(async move {
            let (config, origins) = match switchyard::demo::prepare(listen).await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("demo: {e}");
                    return ExitCode::FAILURE;
                }
            };
            run(config, DEFAULT_DRAIN_TIMEOUT, None, Some(origins), false).await
        }),
        Command::Origin { listen, name } => runtime().block_on(async move {
            match switchyard::origin::spawn(listen, &name).await {
                Ok((addr, task)) => {
                    eprintln!("origin {name} on {addr}");
                    let _ = task.await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("origin: {listen}: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

/// `import FORMAT FILES [-o OUT]`.
fn import(format: &str, files: &[PathBuf], output: Option<&Path>) -> ExitCode {
    use switchyard::import::{self, Format};
    let format = Format::parse(format).expect("clap checked the format");
    let imported = match import::import(format, files) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(import::EXIT_INVALID);
        }
    };
    let sources: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let text = imported.doc.render(&format!(
        "Imported from {} by `switchyard import {}`.\nEach block names the lines it came from; check it with `switchyard check -c FILE`.",
        sources.join(", "),
        format.as_str()
    ));
    // What is written should load as it is. It may not here when it names
    // files (certificates) or hosts that exist only where the source ran: said,
    // and the exit status is then 3 as for anything to look at.
    let at = output.map_or_else(|| PathBuf::from("switchyard.toml"), Path::to_path_buf);
    let loads = match Config::parse(&at, &text) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("warning: the translation does not load here as it is:\n{e}");
            false
        }
    };
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &text) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(import::EXIT_INVALID);
            }
        }
        None => print!("{text}"),
    }
    let mut notes = imported.notes.clone();
    notes.sort_by(|a, b| a.at.cmp(&b.at));
    for n in &notes {
        eprintln!("{n}");
    }
    ExitCode::from(if loads {
        imported.status()
    } else {
        import::EXIT_NOTED
    })
}

/// `check --config NEW --diff-against OLD`: both files must be valid (the problems
/// of each are printed as `check` prints them); then one line per change, or
/// "no changes".
fn check_diff(new: &Path, old: &Path) -> ExitCode {
    let (new, old) = match (Config::load(new), Config::load(old)) {
        (Ok(new), Ok(old)) => (new, old),
        (new, old) => {
            for e in [new.err(), old.err()].into_iter().flatten() {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let changes = switchyard::config::diff(&old, &new);
    if changes.is_empty() {
        println!("no changes");
    }
    for c in changes {
        println!("{c}");
    }
    ExitCode::SUCCESS
}

/// `config dump`: the effective configuration on stdout, or the file's problems
/// on stderr (as `check` prints them) and exit status 1.
fn dump(path: &Path, show_secrets: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let secrets = if show_secrets {
        Secrets::Shown
    } else {
        Secrets::Redacted
    };
    match config.dump(secrets) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "{}: cannot write the configuration as TOML: {e}",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// The main thread's runtime: signals, shutdown and the demo's origins. The proxy
/// itself runs on its worker threads.
fn control_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

async fn run(
    config: Config,
    drain: Duration,
    workers: Option<usize>,
    demo_origins: Option<Vec<SocketAddr>>,
    watch: bool,
) -> ExitCode {
    let demo = demo_origins.is_some();
    // Handlers first: a SIGTERM that arrives as soon as "listening" is logged must
    // drain, not kill the process with the default action.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    for w in config.warnings() {
        tracing::warn!("{}: {w}", config.source.display());
    }
    let running = match switchyard::app::start(config, workers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(origins) = demo_origins {
        let proxy = running
            .addr("public")
            .expect("the demo has a public listener");
        println!(
            "{}",
            switchyard::demo::banner(proxy, running.admin, &origins)
        );
    }
    // The demo's file names origins that only exist in this process: no reloads.
    let _watcher = if watch && !demo {
        match switchyard::watch::watch(
            Arc::clone(&running.control),
            &tokio::runtime::Handle::current(),
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the configuration file; reload with SIGHUP or the admin API");
                None
            }
        }
    } else {
        None
    };
    let mut signals = signals;
    loop {
        match signals.next().await {
            Signal::Reload if !demo => {
                let _ = running.control.reload_async().await;
            }
            Signal::Reload => tracing::info!("the demo does not reload"),
            Signal::ReopenLog => running.shared.reopen_log(),
            Signal::Stop => break,
        }
    }
    tracing::info!("shutting down");
    running.shutdown(drain).await;
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT start a graceful shutdown; SIGHUP reloads; SIGUSR1 reopens
/// the access log (nginx's signals).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

enum Signal {
    Stop,
    Reload,
    ReopenLog,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
            _ = self.usr1.recv() => Signal::ReopenLog,
        }
    }
}
