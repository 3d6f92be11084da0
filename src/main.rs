//! The `holdfast` command line: `serve`, `config check` and `--version`. Configuration errors
//! print one line naming the key and exit 2 before anything starts.

use clap::{Parser, Subcommand};
use holdfast::config::Config;
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
                    eprintln!("holdfast: {e}");
                    return ExitCode::from(2);
                }
            };
            let tls = match tls_for(&cfg) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("holdfast: {e}");
                    return ExitCode::from(2);
                }
            };
            match holdfast::engine::run(cfg, tls) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("holdfast: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Check { file, sets },
        } => match Config::load(Some(&file), &sets)
            .map_err(|e| e.to_string())
            .and_then(|c| tls_for(&c))
        {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("holdfast: {e}");
                ExitCode::from(2)
            }
        },
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
