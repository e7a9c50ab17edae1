//! The `skygate` command.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "skygate",
    version,
    about = "An AI gateway in front of serverless model backends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway on a config file (SIGHUP or `POST /admin/reload` reads it again).
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Proxy listener, instead of the file's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin listener, instead of the file's `admin.listen`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Run the gateway with three simulated serverless backends, on the bundled demo config.
    Demo {
        /// Proxy listener (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin listener (default 127.0.0.1:9090).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Check a config file; print every error (file:line: field: problem).
    Validate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one simulated serverless model backend.
    Sim(skygate_backends::sim::SimArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,skygate=info,skygate_backends=info"),
    )
    .target(env_logger::Target::Stderr)
    .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            listen,
            admin_listen,
        } => {
            let source = skygate::reload::Source::File {
                path: config,
                listen,
                admin_listen,
            };
            source
                .load()
                .map_err(|e| format!("{e}\n{} error(s) in the config", e.0.len()))
                .and_then(|c| skygate::server::run(c, source))
        }
        Command::Demo {
            listen,
            admin_listen,
        } => skygate::demo::run(listen, admin_listen),
        Command::Validate { config } => match skygate_config::load_file(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} backends, {} routes)",
                    config.display(),
                    c.backends.len(),
                    c.routes.len()
                );
                Ok(())
            }
            Err(e) => Err(format!("{e}\n{} error(s) in the config", e.0.len())),
        },
        Command::Sim(args) => {
            skygate_backends::sim::run_cli(&args).map_err(|e| format!("sim: {e}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
