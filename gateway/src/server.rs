//! Pingora bootstrap: the proxy listener, the admin listener, and a graceful
//! shutdown that stops accepting on SIGTERM, lets in-flight requests finish,
//! and exits as soon as they have (at most after the grace period).

use crate::admin::Admin;
use crate::edge::{Cap, Edge};

/// The most connections the admin listener keeps open at once, in all and
/// from one client address (so one client cannot shut out the probes).
pub const ADMIN_CONNECTIONS: Cap = Cap {
    total: 1024,
    per_peer: 32,
};
use crate::health::HealthChecks;
use crate::proxy::Gateway;
use crate::reload::Source;
use crate::State;
use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
use skygate_config::Config;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the gateway on `config` (read from `source`, which reloads read
/// again) until SIGTERM or SIGINT.
pub fn run(config: Config, source: Source) -> Result<(), String> {
    for w in &config.warnings {
        log::warn!("config: {w}");
    }
    // Fail early with a clear message instead of inside Pingora's bootstrap.
    let tls_listen = config
        .server
        .tls
        .as_ref()
        .map(|t| ("server.tls.listen", t.listen));
    let listeners: Vec<_> = [
        ("listen", config.listen),
        ("admin.listen", config.admin.listen),
    ]
    .into_iter()
    .chain(tls_listen)
    .collect();
    // Again after the command line's overrides (`--listen`, `--admin-listen`).
    if let Some((what, message)) = skygate_config::listener_clash(&listeners) {
        return Err(format!("{what}: {message}"));
    }
    for &(what, addr) in &listeners {
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))?;
    }
    let state = Arc::new(State::new(config, source));
    let cfg = state.snapshot().config.clone();
    if cfg.server.access_log == skygate_config::AccessLog::Stdout {
        crate::access_log::start();
    }

    let conf = ServerConf {
        threads: cfg.server.threads,
        // Pingora sleeps this long after SIGTERM, then stops its runtimes.
        // Our drain watcher exits as soon as in-flight requests are done, or
        // after `grace_period`, once the last spans and logs are out (at most
        // 5 + 2 + 5 + 2 s): Pingora's bound lies past that, so the exporter
        // still runs when the watcher asks it for the last spans.
        grace_period_seconds: Some(cfg.server.grace_period.as_secs().max(1) + 15),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // The gateway (`proxy.rs`), behind the connection loop that adds the
    // client-side timeouts (`edge.rs`).
    let gateway = Gateway {
        state: state.clone(),
    };
    let mut proxy = Service::new(
        "skygate-proxy".to_string(),
        Edge::new(gateway, state.clone(), None),
    );
    proxy.add_tcp(&cfg.listen.to_string());
    if let (Some(t), Some(settings)) = (&cfg.server.tls, crate::tls::settings(&cfg)?) {
        proxy.add_tls_with_settings(&t.listen.to_string(), None, settings);
    }
    proxy.threads = Some(cfg.server.threads);

    // The admin API behind the same client-side timeouts, and at most
    // ADMIN_CONNECTIONS connections at once (operators, probes and
    // scrapers need few; an attacker's many must neither starve the process
    // of descriptors nor, from one address, take the probes' places).
    let mut admin = Service::new(
        "skygate-admin".to_string(),
        Edge::new(
            Admin {
                state: state.clone(),
            },
            state.clone(),
            Some(ADMIN_CONNECTIONS),
        ),
    );
    admin.add_tcp(&cfg.admin.listen.to_string());
    admin.threads = Some(1);

    let health = pingora_core::services::background::background_service(
        "health checks",
        HealthChecks {
            state: state.clone(),
        },
    );

    let prewarm = pingora_core::services::background::background_service(
        "prewarm",
        crate::prewarm::Prewarmer {
            state: state.clone(),
        },
    );

    let policy_watch = pingora_core::services::background::background_service(
        "policy watch",
        crate::reload::PolicyWatch {
            state: state.clone(),
        },
    );

    let redis = pingora_core::services::background::background_service(
        "redis",
        RedisLink {
            redis: state.shared.redis.clone(),
        },
    );

    let admin_sync = pingora_core::services::background::background_service(
        "shared admin state",
        AdminSync {
            state: state.clone(),
        },
    );

    let credentials = pingora_core::services::background::background_service(
        "cloud credentials",
        Credentials {
            aws: state.registry.clouds().aws.clone(),
            entra: state.registry.clouds().entra.clone(),
            gcp: state.registry.clouds().gcp.clone(),
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(credentials);
    server.add_service(redis);
    server.add_service(admin_sync);
    server.add_service(pingora_core::services::background::background_service(
        "idle upstream connections",
        IdleSweep {
            state: state.clone(),
        },
    ));
    server.add_service(pingora_core::services::background::background_service(
        "traces",
        crate::telemetry::Exporter {
            state: state.clone(),
        },
    ));
    server.add_service(health);
    server.add_service(prewarm);
    server.add_service(policy_watch);
    log::info!(
        "skygate listening on {}{} (admin {}), {} routes, {} backends",
        cfg.listen,
        cfg.server
            .tls
            .as_ref()
            .map_or(String::new(), |t| format!(" and {} (TLS)", t.listen)),
        cfg.admin.listen,
        cfg.routes.len(),
        cfg.backends.len()
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Drain { state }),
    });
    crate::access_log::flush_and_stop();
    skygate_plugins::policy::audit::flush();
    crate::log_sink::flush(Duration::from_secs(2));
    Ok(())
}

/// Signal handling: SIGHUP reloads the config, SIGTERM drains, SIGINT and
/// SIGQUIT stop at once.
///
/// Draining: `/readyz` fails at once; the listeners stay open for
/// `server.drain_delay` (load balancers see the failing check and stop
/// sending), then close; in-flight requests get up to `server.grace_period`
/// to finish (both as of the current config).
struct Drain {
    state: Arc<State>,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::hangup()),
        ) else {
            log::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading the config");
                    let state = self.state.clone();
                    let done = tokio::task::spawn_blocking(move || state.reload()).await;
                    match done {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => log::error!("reload refused; still running the previous config:\n{e}"),
                        Err(e) => log::error!("reload failed: {e}"),
                    }
                }
                _ = term.recv() => return self.drain(&mut int).await,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = quit.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

impl Drain {
    async fn drain(&self, int: &mut tokio::signal::unix::Signal) -> ShutdownSignal {
        let server = self.state.snapshot().config.server.clone();
        let (delay, grace) = (server.drain_delay, server.grace_period);
        self.state.draining.store(true, Ordering::Release);
        if !delay.is_zero() {
            log::info!("SIGTERM: /readyz now fails; still serving for {delay:?} (drain_delay)");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
        log::info!(
            "SIGTERM: no new connections; waiting for in-flight requests (at most {grace:?})"
        );
        let state = self.state.clone();
        let watcher = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                let start = Instant::now();
                // Let Pingora stop its listeners first.
                std::thread::sleep(Duration::from_millis(100));
                while state.in_flight.load(Ordering::Acquire) > 0 && start.elapsed() < grace {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Time's up: what is still in flight ends within a second
                // (a body at its next chunk, a stream with an error event;
                // a request still waiting for its answer with a 503) and is
                // logged; two seconds more at most, for them.
                if state.in_flight.load(Ordering::Acquire) > 0 {
                    state.cutoff.store(true, Ordering::Relaxed);
                    let cut = Instant::now();
                    while state.in_flight.load(Ordering::Acquire) > 0
                        && cut.elapsed() < Duration::from_secs(2)
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                let left = state.in_flight.load(Ordering::Acquire);
                log::info!(
                    "drained in {:?} ({left} requests still in flight); exiting",
                    start.elapsed()
                );
                // The spans of the last requests, then the logs.
                if let Some(o) = &state.snapshot().config.telemetry.otlp {
                    crate::telemetry::flush_at_exit(
                        (o.timeout + Duration::from_secs(1)).min(Duration::from_secs(5)),
                    );
                }
                crate::access_log::flush_and_stop();
                skygate_plugins::policy::audit::flush();
                crate::log_sink::flush(Duration::from_secs(2));
                std::process::exit(0);
            });
        if let Err(e) = watcher {
            log::error!("drain watcher did not start ({e}); Pingora's grace period applies");
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Keeps the shared Redis connection up (`state.redis`), off the request
/// path: requests never wait for a connect.
struct RedisLink {
    redis: std::sync::Arc<skygate_state::Redis>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for RedisLink {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        tokio::select! {
            () = self.redis.maintain() => {}
            () = self.redis.send_settles() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Closes idle upstream connections that expired or that their backend
/// closed, every second (`Upstream::sweep_idle`).
struct IdleSweep {
    state: std::sync::Arc<crate::State>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for IdleSweep {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.state.upstream.sweep_idle(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Keeps run-time weights and drains in step with the other replicas
/// (`replicas.rs`).
struct AdminSync {
    state: std::sync::Arc<crate::State>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for AdminSync {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        tokio::select! {
            () = crate::replicas::run(self.state.clone()) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Keeps cloud credentials fresh (AWS's standard chain), off the request
/// path: requests read the current ones and never fetch.
struct Credentials {
    aws: std::sync::Arc<skygate_backends::kinds::aws::AwsChain>,
    entra: std::sync::Arc<skygate_backends::kinds::azure::EntraChain>,
    gcp: std::sync::Arc<skygate_backends::kinds::gcp::GcpChain>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for Credentials {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        tokio::select! {
            () = self.aws.maintain() => {}
            () = self.entra.maintain() => {}
            () = self.gcp.maintain() => {}
            _ = shutdown.changed() => {}
        }
    }
}
