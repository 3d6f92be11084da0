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
            match holdfast::engine::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("holdfast: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Check { file, sets },
        } => match Config::load(Some(&file), &sets) {
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
