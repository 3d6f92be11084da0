//! The `holdfast` command line: `serve`, `config check`, `tune check` and `--version`. Configuration errors
//! print one line naming the key and exit 2 before anything starts.

use clap::{Parser, Subcommand};
use holdfast::config::Config;
use holdfast::log;
use holdfast::log::writer::AccessLog;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "A server for very many long-lived connections"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded defaults unless --config / --set say otherwise).
    Serve {
        /// A TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Override one key, e.g. --set http.keepalive_timeout=5s (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Host tuning tools.
    Tune {
        #[command(subcommand)]
        command: TuneCommand,
    },
}

#[derive(Subcommand)]
enum TuneCommand {
    /// Compare this host's sysctls and limits with what N connections need; prints the fix for
    /// each shortfall. Exit 0 when everything fits, 1 otherwise.
    Check {
        /// How many connections this host should hold.
        #[arg(long, value_name = "N")]
        connections: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read the host from another /proc tree (for tests).
        #[arg(long, value_name = "DIR", default_value = "/proc", hide = true)]
        proc_root: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: prints `ok` or the first error.
    Check {
        file: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, sets } => {
            let cfg = match Config::load(config.as_deref(), &sets) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            let process = match holdfast::engine::child_role() {
                Ok(role) => role.map(|r| r.index),
                Err(e) => {
                    log::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            log::init(cfg.log.level, cfg.log.format, process);
            let supervised = process.is_some();
            if cfg.server.processes > 1 && !supervised {
                return supervise(&cfg);
            }
            let tls = match tls_for(&cfg) {
                Ok(t) => t,
                Err(e) => {
                    log::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            let target = if supervised {
                holdfast::engine::child_access_target(&cfg.log.access)
            } else {
                cfg.log.access.clone()
            };
            let log = &cfg.log;
            let access = match AccessLog::start(&target, log.format, log.access_sample, process) {
                Ok(a) => a,
                Err(e) => {
                    log::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            let app = std::sync::Arc::new(holdfast::app::Node::new(&cfg));
            match holdfast::engine::run(cfg, tls, access, app) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Tune {
            command:
                TuneCommand::Check {
                    connections,
                    json,
                    proc_root,
                },
        } => {
            let outcome = holdfast::tune::run(&proc_root, connections, json);
            print!("{}", outcome.stdout);
            if let Some(e) = outcome.error {
                log::error!("tune check: {e}");
            }
            ExitCode::from(outcome.code)
        }
        Command::Config {
            command: ConfigCommand::Check { file, sets },
        } => match Config::load(Some(&file), &sets)
            .map_err(|e| e.to_string())
            .and_then(|c| AccessLog::check(&c.log.access).and_then(|_| tls_for(&c)))
        {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                log::error!("{e}");
                ExitCode::from(2)
            }
        },
    }
}

/// `server.processes` > 1: this process supervises that many server processes. Certificate and
/// key files and the access log's path are checked here first, so a bad one is still exit 2
/// before anything starts.
fn supervise(cfg: &Config) -> ExitCode {
    if cfg.tls.cert.is_some()
        && let Err(e) = tls_for(cfg)
    {
        log::error!("{e}");
        return ExitCode::from(2);
    }
    if let Err(e) = AccessLog::check(&cfg.log.access) {
        log::error!("{e}");
        return ExitCode::from(2);
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match holdfast::engine::supervise(cfg, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The TLS state when a TLS listener is configured: certificate files and the ticket key file
/// are read here, so that a bad one is a configuration error (exit 2) before anything binds.
fn tls_for(cfg: &Config) -> Result<Option<holdfast::proto::tls::TlsShared>, String> {
    if cfg.server.tls_listen.is_empty() {
        return Ok(None);
    }
    holdfast::proto::tls::TlsShared::new(&cfg.tls).map(Some)
}
