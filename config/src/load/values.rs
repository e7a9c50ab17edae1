//! Value parsers shared by every section: durations, sizes, upstream URLs and
//! CA files. Each returns a message that says what is allowed.

use crate::runtime::Endpoint;
use std::path::Path;
use std::time::Duration;

/// The longest duration any field accepts. Durations are added to
/// `Instant`s on the request path; bounding them here keeps that addition
/// far from overflow (it is `checked_add` as well).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `250ms`, `5s`, `2m`, `1h` (at most [`MAX_DURATION`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_upto(s, MAX_DURATION)
}

/// [`parse_duration`] for a field that allows up to `max` (also in days,
/// `7d`, where `max` is more than a day).
pub fn parse_duration_upto(s: &str, max: Duration) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let days = max > MAX_DURATION;
    let bad = || {
        let units = if days {
            "ms, s, m, h, d"
        } else {
            "ms, s, m, h"
        };
        format!("`{s}` is not a duration: use a number and a unit ({units}), e.g. 30s")
    };
    let too_long = || format!("`{s}` is too long: at most {}", human(max));
    let n: u64 = num.parse().map_err(|_| {
        if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
            too_long()
        } else {
            bad()
        }
    })?;
    let ms_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" if days => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(ms_per_unit).ok_or_else(too_long)?;
    let d = Duration::from_millis(ms);
    if d > max {
        return Err(too_long());
    }
    Ok(d)
}

/// `max` as the config writes it: `24h`, `30d`, `90s`.
fn human(max: Duration) -> String {
    let s = max.as_secs();
    match s {
        _ if s > 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s >= 3_600 && s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{}ms", max.as_millis()),
    }
}

/// Parses `512`, `64KiB`, `8MiB`, `1GiB` (also KB, MB, GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || {
        format!("`{s}` is not a size: use bytes or a unit (KiB, MiB, GiB, KB, MB, GB), e.g. 8MiB")
    };
    let n: usize = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses a backend base URL.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| {
        format!(
            "`{}` is not a usable URL: {why} (e.g. https://models.example.com/v1)",
            crate::redact_url(s)
        )
    };
    let uri: http::Uri = s.parse().map_err(|_| bad("it does not parse"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let host = uri.host().ok_or_else(|| bad("it has no host"))?;
    if uri.query().is_some() {
        return Err(bad("it must not have a query"));
    }
    if s.contains('#') {
        return Err(bad("it must not have a fragment (`#...`)"));
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    if authority.contains('@') {
        return Err(bad(
            "it must not carry credentials (`user:password@`): the backend's `auth` settings send them",
        ));
    }
    // What follows the authority's last `:`, unless that colon is inside an
    // IPv6 address's brackets. `http` reads a port beyond 65535 as none at
    // all, which would send the traffic to port 80 or 443 instead.
    let port_text = authority
        .rsplit_once(':')
        .filter(|(_, p)| !p.contains(']'))
        .map(|(_, p)| p);
    let port = match port_text {
        None | Some("") => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad("its port must be 1 to 65535")),
        },
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Endpoint {
        tls,
        host,
        port,
        base_path: uri.path().trim_end_matches('/').to_string(),
    })
}

/// Reads a PEM file of CA certificates into DER.
pub fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("8 parsecs").is_err());
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        assert!(parse_duration("2").is_err());
        // Days only where a field allows a day or more.
        let e = parse_duration("1d").unwrap_err();
        assert!(e.contains("(ms, s, m, h)"), "{e}");
        let month = Duration::from_secs(30 * 86_400);
        assert_eq!(parse_duration_upto("30d", month).unwrap(), month);
        assert_eq!(
            parse_duration_upto("48h", month).unwrap(),
            Duration::from_secs(48 * 3600)
        );
        let e = parse_duration_upto("31d", month).unwrap_err();
        assert!(e.contains("at most 30d"), "{e}");
    }

    #[test]
    fn absurd_durations_are_refused_not_wrapped() {
        for s in [
            "18446744073709551615s",
            "18446744073709551616s",
            "99999999999999999999999h",
            "307445734561825861m",
            "25h",
            "86400001ms",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("at most 24h"), "{s}: {e}");
        }
    }

    /// A backend URL is taken whole or refused: never a part of it quietly
    /// dropped (a port beyond 65535 once became port 80).
    #[test]
    fn backend_urls_are_taken_whole_or_refused() {
        let ok = |u: &str| {
            let e = parse_endpoint(u).unwrap();
            (e.tls, e.host, e.port, e.base_path)
        };
        assert_eq!(
            ok("https://models.example.com/v1/"),
            (true, "models.example.com".into(), 443, "/v1".into())
        );
        assert_eq!(
            ok("http://127.0.0.1:8080/v1"),
            (false, "127.0.0.1".into(), 8080, "/v1".into())
        );
        assert_eq!(ok("http://[::1]:9000").2, 9000);
        assert_eq!(ok("http://[::1]/v1").2, 80);
        assert_eq!(ok("http://[::1]").1, "::1");
        assert_eq!(ok("https://h:65535").2, 65535);
        for (u, why) in [
            ("http://127.0.0.1:99999/v1", "port must be 1 to 65535"),
            ("https://h:65536", "port must be 1 to 65535"),
            ("http://h:0/v1", "port must be 1 to 65535"),
            ("http://[::1]:70000", "port must be 1 to 65535"),
            ("http://h:+80", "port must be 1 to 65535"),
            ("http://user:pass@h/v1", "must not carry credentials"),
            ("http://h/v1#frag", "must not have a fragment"),
            ("http://h/v1?x=1", "must not have a query"),
            ("ftp://h", "scheme must be http or https"),
        ] {
            let e = parse_endpoint(u).unwrap_err();
            assert!(e.contains(why), "{u}: {e}");
        }
        // The refused URL is not echoed with its secrets (it may have come
        // from an environment variable).
        for (u, secret) in [
            ("http://user:PW-CANARY@h/v1", "PW-CANARY"),
            ("https://f.azurewebsites.net/api/x?code=FNKEY", "FNKEY"),
        ] {
            let e = parse_endpoint(u).unwrap_err();
            assert!(!e.contains(secret) && e.contains("***"), "{e}");
        }
    }
}
