//! `server:`: process settings (threads, shutdown, access log, downstream
//! timeouts, the memory budget for buffered request bodies).

use crate::load::{key, path_of, Cx};
use crate::raw::Text;
use crate::runtime::{AccessLog, Server, ServerTimeouts};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Worker threads of the proxy listener (default: one per CPU).
    pub threads: Option<usize>,
    /// How long in-flight requests may run on after SIGTERM (default 5s).
    pub grace_period: Option<Text>,
    /// After SIGTERM, how long to keep serving with /readyz failing before
    /// the listeners close (default 0s).
    pub drain_delay: Option<Text>,
    /// Access log destination: `stdout` (default) or `off`.
    pub access_log: Option<String>,
    /// Downstream (client-side) timeouts.
    pub timeouts: Option<RawServerTimeouts>,
    /// Most bytes of request bodies buffered at once, server-wide (default 256MiB).
    pub body_budget: Option<Text>,
    /// How long a request waits for room in the body budget before a 503 (default 1s).
    pub body_budget_wait: Option<Text>,
    /// An HTTPS listener beside `listen`.
    pub tls: Option<crate::section::tls::RawTlsListener>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServerTimeouts {
    /// Connection open → its first request header read (default 10s).
    pub header_read: Option<Text>,
    /// Longest pause between two pieces of a request body (default 30s → 408).
    pub body_read: Option<Text>,
    /// Kept alive: a response → the next request's header read (default 60s).
    pub keepalive: Option<Text>,
    /// Longest wait for the client to take response bytes (default 30s).
    pub write: Option<Text>,
}

/// Default server-wide budget for buffered request bodies: 256 MiB.
pub const DEFAULT_BODY_BUDGET: usize = 256 << 20;

impl Cx<'_> {
    pub(crate) fn server(&mut self, s: RawServer) -> Server {
        let p = [key("server")];
        let threads = match s.threads {
            Some(0) | Some(1025..) => {
                self.err(
                    &path_of(&p, &[key("threads")]),
                    "must be between 1 and 1024",
                );
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let grace_period = self.duration(
            s.grace_period.as_ref(),
            Duration::from_secs(5),
            &path_of(&p, &[key("grace_period")]),
        );
        let drain_delay = self.duration_from(
            s.drain_delay.as_ref(),
            Duration::ZERO,
            &path_of(&p, &[key("drain_delay")]),
            true,
        );
        let access_log = match s.access_log.as_deref() {
            None | Some("stdout") => AccessLog::Stdout,
            Some("off") => AccessLog::Off,
            Some(other) => {
                self.err(
                    &path_of(&p, &[key("access_log")]),
                    format!("`{other}` is not allowed: use stdout or off"),
                );
                AccessLog::Stdout
            }
        };
        let t = s.timeouts.unwrap_or_default();
        let tp = path_of(&p, &[key("timeouts")]);
        let d = ServerTimeouts::default();
        let timeouts = ServerTimeouts {
            header_read: self.duration(
                t.header_read.as_ref(),
                d.header_read,
                &path_of(&tp, &[key("header_read")]),
            ),
            body_read: self.duration(
                t.body_read.as_ref(),
                d.body_read,
                &path_of(&tp, &[key("body_read")]),
            ),
            keepalive: self.duration(
                t.keepalive.as_ref(),
                d.keepalive,
                &path_of(&tp, &[key("keepalive")]),
            ),
            write: self.duration(t.write.as_ref(), d.write, &path_of(&tp, &[key("write")])),
        };
        let body_budget = match s.body_budget.as_ref().map(|t| crate::parse_size(&t.0)) {
            None => DEFAULT_BODY_BUDGET,
            Some(Ok(n)) if (1 << 20..=1 << 40).contains(&n) => n,
            Some(Ok(_)) => {
                self.err(
                    &path_of(&p, &[key("body_budget")]),
                    "must be between 1MiB and 1024GiB",
                );
                DEFAULT_BODY_BUDGET
            }
            Some(Err(msg)) => {
                self.err(&path_of(&p, &[key("body_budget")]), msg);
                DEFAULT_BODY_BUDGET
            }
        };
        let body_budget_wait = self.duration_from(
            s.body_budget_wait.as_ref(),
            Duration::from_secs(1),
            &path_of(&p, &[key("body_budget_wait")]),
            true,
        );
        let tls = s.tls.and_then(|t| self.tls(t));
        Server {
            tls,
            threads,
            grace_period,
            drain_delay,
            access_log,
            timeouts,
            body_budget,
            body_budget_wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;
    use std::time::Duration;

    const BASE: &str = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://a/v1 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] }\n";

    #[test]
    fn zero_is_allowed_only_where_it_means_off() {
        let ok = load_str(
            &format!("{BASE}server: {{ drain_delay: 0s, grace_period: 2s }}\n"),
            "z.yaml",
            &|_| None,
        )
        .unwrap();
        assert_eq!(ok.server.drain_delay, Duration::ZERO);
        assert_eq!(ok.server.grace_period, Duration::from_secs(2));
        let errs = load_str(
            &format!("{BASE}server: {{ drain_delay: soon, grace_period: 0s }}\n"),
            "z.yaml",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("server.drain_delay: `soon` is not a duration"),
            "{errs}"
        );
        assert!(
            errs.contains("server.grace_period: must be greater than zero"),
            "{errs}"
        );
    }

    #[test]
    fn downstream_timeouts_and_body_budget() {
        let c = load_str(BASE, "d.yaml", &|_| None).unwrap();
        assert_eq!(c.server.timeouts.header_read, Duration::from_secs(10));
        assert_eq!(c.server.timeouts.body_read, Duration::from_secs(30));
        assert_eq!(c.server.timeouts.keepalive, Duration::from_secs(60));
        assert_eq!(c.server.body_budget, 256 << 20);
        let c = load_str(
            &format!("{BASE}server: {{ timeouts: {{ header_read: 2s, body_read: 500ms, keepalive: 5s }}, body_budget: 64MiB, body_budget_wait: 0s }}\n"),
            "d.yaml",
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.server.timeouts.body_read, Duration::from_millis(500));
        assert_eq!(c.server.body_budget, 64 << 20);
        assert_eq!(c.server.body_budget_wait, Duration::ZERO);
        let errs = load_str(
            &format!("{BASE}server: {{ threads: 100000, timeouts: {{ keepalive: 18446744073709551615s }}, body_budget: 1KiB }}\n"),
            "d.yaml",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("server.threads: must be between 1 and 1024"),
            "{errs}"
        );
        assert!(
            errs.contains("server.timeouts.keepalive: `18446744073709551615s` is too long"),
            "{errs}"
        );
        assert!(
            errs.contains("server.body_budget: must be between 1MiB"),
            "{errs}"
        );
    }
}
