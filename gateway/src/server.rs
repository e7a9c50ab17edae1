//! Pingora bootstrap: the proxy listener, the admin listener, and a graceful
//! shutdown that stops accepting on SIGTERM, lets in-flight requests finish,
//! and exits as soon as they have (at most after the grace period).

use crate::admin::Admin;
use crate::edge::Edge;
use crate::proxy::Gateway;
use crate::runtime::Snapshot;
use crate::State;
use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
use skygate_config::Config;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the gateway on `config` until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), String> {
    // Fail early with a clear message instead of inside Pingora's bootstrap.
    for (what, addr) in [
        ("listen", config.listen),
        ("admin.listen", config.admin.listen),
    ] {
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))?;
    }
    let snapshot = Snapshot::build(config)?;
    let cfg = snapshot.config.clone();
    let state = Arc::new(State::new(snapshot));
    if cfg.server.access_log == skygate_config::AccessLog::Stdout {
        crate::access_log::start();
    }

    let conf = ServerConf {
        threads: cfg.server.threads,
        // Pingora sleeps this long after SIGTERM; our drain watcher exits as
        // soon as in-flight requests are done, so this is only the upper bound.
        grace_period_seconds: Some(cfg.server.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Pingora's proxy app, behind the connection loop that adds the
    // client-side timeouts (`edge.rs`).
    let gateway = Gateway {
        state: state.clone(),
    };
    let mut proxy = Service::new(
        "skygate-proxy".to_string(),
        Edge::new(
            pingora_proxy::http_proxy(&server.configuration, gateway),
            state.clone(),
        ),
    );
    proxy.add_tcp(&cfg.listen.to_string());
    proxy.threads = Some(cfg.server.threads);

    let mut admin = Service::new(
        "skygate-admin".to_string(),
        Admin {
            state: state.clone(),
        },
    );
    admin.add_tcp(&cfg.admin.listen.to_string());
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    log::info!(
        "skygate listening on {} (admin {}), {} routes, {} backends",
        cfg.listen,
        cfg.admin.listen,
        cfg.routes.len(),
        cfg.backends.len()
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Drain {
            state,
            grace: cfg.server.grace_period,
            delay: cfg.server.drain_delay,
        }),
    });
    crate::access_log::flush_and_stop();
    Ok(())
}

/// Signal handling: SIGTERM drains, SIGINT and SIGQUIT stop at once.
///
/// Draining: `/readyz` fails at once; the listeners stay open for
/// `drain_delay` (load balancers see the failing check and stop sending),
/// then close; in-flight requests get up to `grace` to finish.
struct Drain {
    state: Arc<State>,
    grace: Duration,
    delay: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            log::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {
                self.state.draining.store(true, Ordering::Release);
                if !self.delay.is_zero() {
                    log::info!("SIGTERM: /readyz now fails; still serving for {:?} (drain_delay)", self.delay);
                    tokio::select! {
                        _ = tokio::time::sleep(self.delay) => {}
                        _ = int.recv() => return ShutdownSignal::FastShutdown,
                    }
                }
                log::info!("SIGTERM: no new connections; waiting for in-flight requests (at most {:?})", self.grace);
                let state = self.state.clone();
                let grace = self.grace;
                let watcher = std::thread::Builder::new().name("drain".into()).spawn(move || {
                    let start = Instant::now();
                    // Let Pingora stop its listeners first.
                    std::thread::sleep(Duration::from_millis(100));
                    while state.in_flight.load(Ordering::Acquire) > 0 && start.elapsed() < grace {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let left = state.in_flight.load(Ordering::Acquire);
                    log::info!("drained in {:?} ({left} requests still in flight); exiting", start.elapsed());
                    crate::access_log::flush_and_stop();
                    std::process::exit(0);
                });
                if let Err(e) = watcher {
                    log::error!("drain watcher did not start ({e}); Pingora's grace period applies");
                }
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
