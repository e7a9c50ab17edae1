//! Small text helpers every crate shares.

/// `%XX` escapes decoded; anything else (a stray `%` too) kept as is.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Appends `n` in decimal. For keys and lines built per request: `write!`
/// runs a formatter per number (about ten times the instructions).
pub fn push_num(s: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Pushed as chars: `from_utf8` on the digits would check them again.
    s.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// Appends an address as `Display` writes it: IPv4 by hand (the usual
/// case, and `Display`'s padding support costs a thousand instructions),
/// IPv6 through `Display`.
pub fn push_ip(s: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_num(s, u64::from(o));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(s, "{v6}");
        }
    }
}

/// Appends a socket address as `Display` writes it (`[v6]:port` for IPv6).
pub fn push_socket_addr(s: &mut String, a: std::net::SocketAddr) {
    match a {
        std::net::SocketAddr::V4(v4) => push_ip(s, std::net::IpAddr::V4(*v4.ip())),
        std::net::SocketAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(s, "{v6}");
            return;
        }
    }
    s.push(':');
    push_num(s, u64::from(a.port()));
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_and_addresses_as_display_writes_them() {
        for n in [0u64, 7, 10, 99, 100, 12_345, u64::MAX] {
            let mut s = String::from("x");
            super::push_num(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
        for a in [
            "0.0.0.0:0",
            "203.0.113.9:51234",
            "255.255.255.255:65535",
            "[2001:db8::9]:443",
            "[::ffff:1.2.3.4]:8",
        ] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            super::push_socket_addr(&mut s, a);
            assert_eq!(s, a.to_string());
            let mut s = String::new();
            super::push_ip(&mut s, a.ip());
            assert_eq!(s, a.ip().to_string());
        }
    }

    #[test]
    fn decodes_escapes_and_keeps_strays() {
        use super::percent_decode;
        assert_eq!(percent_decode("a%20b%2F"), b"a b/");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        assert_eq!(percent_decode("%e2%82%ac"), "€".as_bytes());
    }
}

/// The candidate `word` most likely misspells, for a "did you mean"
/// hint: within two edits (one for words of up to four letters), or a
/// candidate that has `word` as one of its `_`-separated parts (`lambda`
/// for `aws_lambda`). `None` when nothing is that close.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    if word.is_empty() || word.len() > 64 {
        return None;
    }
    let most = if word.chars().count() < 8 { 1 } else { 2 };
    let near = candidates
        .iter()
        .map(|&c| (edits(&word, c), c))
        .filter(|&(d, _)| d <= most)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c);
    near.or_else(|| {
        // The fewest parts win (`lambda`: `aws_lambda` before
        // `aws_lambda_url`); a tie is no hint (`aws` could be any AWS kind).
        let mut parts: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|c| c.split('_').any(|p| p == word))
            .collect();
        parts.sort_by_key(|c| c.split('_').count());
        match parts.as_slice() {
            [c] => Some(c),
            [c, d, ..] if c.split('_').count() < d.split('_').count() => Some(c),
            _ => None,
        }
    })
}

/// Edit distance with adjacent transpositions (optimal string alignment:
/// `tagrets` is one edit from `targets`), for short words.
fn edits(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: the one before last (for transpositions), last, this.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (last[j - 1] + cost).min(last[j] + 1).min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
        }
        before = std::mem::replace(&mut last, row);
    }
    last[b.len()]
}

#[cfg(test)]
mod did_you_mean_tests {
    use super::did_you_mean;

    #[test]
    fn near_words_and_parts() {
        let kinds = [
            "openai",
            "http_function",
            "aws_lambda",
            "aws_lambda_url",
            "aws_bedrock",
            "aws_sagemaker",
        ];
        assert_eq!(did_you_mean("lambda", &kinds), Some("aws_lambda"));
        assert_eq!(did_you_mean("opnai", &kinds), Some("openai"));
        assert_eq!(did_you_mean("OpenAI", &kinds), Some("openai"));
        assert_eq!(did_you_mean("aws", &kinds), None, "three kinds have it");
        assert_eq!(did_you_mean("grpc", &kinds), None);
        let fields = ["match", "targets", "fallback", "retries"];
        assert_eq!(did_you_mean("tagrets", &fields), Some("targets"));
        assert_eq!(did_you_mean("retry", &fields), None);
        assert_eq!(did_you_mean("", &fields), None);
        // Two edits in a short word is another word.
        assert_eq!(did_you_mean("colour", &["cloud", "region"]), None);
        assert_eq!(
            did_you_mean("backend", &["backends", "routes"]),
            Some("backends")
        );
        assert_eq!(
            did_you_mean("helth_chek", &["health_check", "limits"]),
            Some("health_check")
        );
    }
}

/// A URL as logs and error messages may show it: credentials
/// (`user:pass@`, up to the last `@`, so a password with `/`, `?` or `#`
/// in it goes too) and the query and fragment (a function key's `?code=`,
/// a token after `#`) replaced by `***`; cut to 256 bytes. Anything that is
/// not a URL passes as it is, cut. (The same rule as the Redis log's
/// `shown`.)
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, rest),
    };
    let rest = match rest.find(['?', '#']) {
        Some(i) => format!("{}{}***", &rest[..i], &rest[i..=i]),
        None => rest.to_string(),
    };
    let out = format!(
        "{}{}{rest}",
        scheme.map(|s| format!("{s}://")).unwrap_or_default(),
        if userinfo { "***@" } else { "" }
    );
    crate::clip(&out).into_owned()
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn credentials_and_queries_are_hidden() {
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("http://user:pw@h:1/v1?code=KEY#x"),
            "http://***@h:1/v1?***"
        );
        // Passwords with `/`, `#` or `?` in them (base64 keys have `/`).
        for (url, secret) in [
            ("redis://:ab/cd+ef=@cache:6379", "ab/cd"),
            ("http://u:pa#ss@h/v1", "pa#ss"),
            ("https://u:se?cret@h/v1", "se?cret"),
            ("http://h/v1#access_token=XYZ", "XYZ"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url}: {shown}");
        }
        assert_eq!(
            redact_url("redis://:ab/cd+ef=@cache:6379"),
            "redis://***@cache:6379"
        );
        assert_eq!(
            redact_url("https://models.example.com/v1"),
            "https://models.example.com/v1"
        );
        assert_eq!(redact_url("nonsense"), "nonsense");
        assert_eq!(redact_url("a@b"), "***@b");
    }
}
