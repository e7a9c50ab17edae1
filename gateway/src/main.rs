//! The `skygate` command.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: fewer cycles per request on the
/// hot path's short-lived allocations (benches/README.md, "Operations").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Keep the demo's rate limits in this Redis (`redis://HOST:PORT`),
        /// shared by every demo process started with the same URL.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Check a config file; print every error (file:line: field: problem).
    #[command(alias = "check")]
    Validate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the config file's JSON Schema (for editors: see the README).
    Schema,
    /// Run one simulated serverless model backend.
    Sim(Box<skygate_backends::sim::SimArgs>),
    /// Mint a JWT from the demo issuer (`skygate demo` trusts it; its key is public: demos only).
    DemoToken {
        #[arg(long, default_value = "alice")]
        sub: String,
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// A group (repeat for more).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Client API keys: mint one, or hash one for `auth.api_keys[].key_sha256`.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Cedar policies: evaluate them offline, as the gateway would.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Decide one request (from flags) or many (--cases FILE.json) with the
    /// config's policies. Exit status 1 when an --expect / "expect" is not
    /// met, 2 when the check could not be made (a bad config, case or flag).
    Check(Box<CheckArgs>),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The gateway's config file (its policies, keys, routes, backends).
    #[arg(long, required_unless_present = "demo", conflicts_with = "demo")]
    config: Option<PathBuf>,
    /// Check against the demo's config and policies (policies/demo.cedar),
    /// as `skygate demo` runs them.
    #[arg(long)]
    demo: bool,
    /// A JSON array of cases (docs/security.md); replaces the flags below.
    #[arg(long)]
    cases: Option<PathBuf>,
    /// The principal's id (an API key's `principal`, a JWT subject, an mTLS identity).
    #[arg(long)]
    principal: Option<String>,
    /// A client API key of the config: its principal.
    #[arg(long)]
    api_key: Option<String>,
    /// How the principal authenticated: api_key (default), user (JWT) or service (mTLS).
    #[arg(long = "type")]
    kind: Option<String>,
    /// A user's JWT issuer (default: the only one configured).
    #[arg(long)]
    issuer: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// A group (repeat for more).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// An attribute, key=value (repeat for more).
    #[arg(long = "attr")]
    attributes: Vec<String>,
    /// invoke, stream, embed, use_backend or admin.
    #[arg(long)]
    action: Option<String>,
    /// The resource: `Skygate::Model::"gpt-4o"` (or Route, Backend,
    /// AdminApi), or model:NAME, route:NAME, backend:NAME, admin:PART.
    #[arg(long)]
    resource: Option<String>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    route: Option<String>,
    #[arg(long)]
    backend: Option<String>,
    /// For `admin`: routes, backends, reload, metrics or cache.
    #[arg(long)]
    admin_api: Option<String>,
    /// For `admin`: a request that changes something (not GET).
    #[arg(long)]
    write: bool,
    #[arg(long)]
    client_ip: Option<std::net::IpAddr>,
    #[arg(long)]
    mtls: bool,
    /// UTC hour, 0..23 (default: now).
    #[arg(long)]
    hour: Option<u8>,
    /// 1 = Monday .. 7 = Sunday (default: today, UTC).
    #[arg(long)]
    weekday: Option<u8>,
    #[arg(long, default_value_t = 0)]
    request_bytes: u64,
    #[arg(long, default_value_t = 0)]
    estimated_tokens: u64,
    /// allow or deny.
    #[arg(long)]
    expect: Option<String>,
}

/// `skygate policy check`: `Ok(false)` when a case did not get the
/// decision it expected.
fn policy_check(a: CheckArgs) -> Result<bool, String> {
    use skygate::policy_check::{Case, When, Who};
    let cases = match &a.cases {
        Some(path) => skygate::policy_check::read_cases(path)?,
        None => {
            let mut attributes = std::collections::BTreeMap::new();
            for kv in &a.attributes {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--attr `{kv}`: use key=value"))?;
                attributes.insert(k.to_string(), v.to_string());
            }
            vec![Case {
                name: Some("request".into()),
                principal: Who {
                    kind: a.kind,
                    id: a.principal,
                    api_key: a.api_key,
                    issuer: a.issuer,
                    tenant: a.tenant,
                    groups: a.groups,
                    attributes,
                },
                action: a.action.ok_or("--action is required (or --cases)")?,
                resource: a.resource,
                model: a.model,
                route: a.route,
                backend: a.backend,
                admin_api: a.admin_api,
                write: a.write,
                context: When {
                    client_ip: a.client_ip,
                    mtls: a.mtls.then_some(true),
                    hour: a.hour,
                    weekday: a.weekday,
                    request_bytes: a.request_bytes,
                    estimated_tokens: a.estimated_tokens,
                },
                expect: a.expect,
            }]
        }
    };
    match &a.config {
        Some(path) => {
            let config = skygate::reload::Source::File {
                path: path.clone(),
                listen: None,
                admin_listen: None,
            }
            .load()
            .map_err(|e| format!("{e}\n{} error(s) in the config", e.0.len()))?;
            skygate::policy_check::run(&config, &cases)
        }
        None => skygate::demo::with_config(|c| skygate::policy_check::run(c, &cases))?,
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Mint a random API key; prints the key (give it to the client) and its
    /// SHA-256 (put it in the config as `key_sha256`).
    New {
        /// Text before the random part.
        #[arg(long, default_value = "sk-skygate-")]
        prefix: String,
    },
    /// Print the SHA-256 of a key, for `key_sha256`. Without KEY, reads it
    /// from standard input (so it stays out of the shell's history).
    Hash { key: Option<String> },
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    // Through a background writer: a stderr nobody reads must not block a
    // request, the signal handler or the exit (`log_sink.rs`).
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,skygate=info,skygate_backends=info"),
    )
    .target(env_logger::Target::Pipe(Box::new(
        skygate::log_sink::Sink::start(),
    )))
    .write_style(if std::io::stderr().is_terminal() {
        env_logger::WriteStyle::Always
    } else {
        env_logger::WriteStyle::Never
    })
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
            redis,
        } => skygate::demo::run(listen, admin_listen, redis),
        Command::Validate { config } => match (skygate::reload::Source::File {
            path: config.clone(),
            listen: None,
            admin_listen: None,
        })
        .load()
        {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
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
        Command::Schema => serde_json::to_string_pretty(&skygate_config::schema::json_schema())
            .map(|s| println!("{s}"))
            .map_err(|e| format!("schema: {e}")),
        Command::Sim(args) => {
            skygate_backends::sim::run_cli(&args).map_err(|e| format!("sim: {e}"))
        }
        Command::DemoToken {
            sub,
            tenant,
            groups,
            ttl,
        } => skygate::demo::demo_token(&sub, &tenant, &groups, std::time::Duration::from_secs(ttl))
            .map(|t| println!("{t}")),
        Command::Policy(PolicyCommand::Check(args)) => {
            // 1: a case was not met; 2: no answer (as clap's usage errors).
            let code = match policy_check(*args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("some cases did not get the expected decision");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            };
            skygate::log_sink::flush(std::time::Duration::from_secs(2));
            return code;
        }
        Command::Keys(KeysCommand::New { prefix }) => {
            let key = skygate::keys::mint(&prefix);
            println!("key:        {key}");
            println!(
                "key_sha256: {}",
                skygate_config::to_hex(&skygate_config::sha256(key.as_bytes()))
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Hash { key }) => {
            let key = match key {
                Some(k) => Ok(k),
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map(|_| line.trim_end_matches(['\r', '\n']).to_string())
                        .map_err(|e| format!("reading the key from standard input: {e}"))
                }
            };
            key.and_then(|k| {
                if k.is_empty() {
                    return Err("no key given".to_string());
                }
                println!(
                    "{}",
                    skygate_config::to_hex(&skygate_config::sha256(k.as_bytes()))
                );
                Ok(())
            })
        }
    };
    // What was logged reaches stderr before the process ends.
    skygate::log_sink::flush(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
