//! The framework floor for the load harness: Pingora's stock proxy path
//! (`upstream_peer`, nothing read in `request_filter`) in front of one
//! address. It cannot route by model and breaks on bodies over 64 KiB that
//! were read early; it only answers "what does Pingora itself cost here?".
//!
//!     pingora-baseline LISTEN UPSTREAM THREADS

// A benchmark tool: it stops with a message when started wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;

struct Baseline(SocketAddr);

#[async_trait]
impl ProxyHttp for Baseline {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _s: &mut Session,
        _c: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream, threads) =
        (&args[1], args[2].parse().unwrap(), args[3].parse().unwrap());
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(&server.configuration, Baseline(upstream));
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever();
}
