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
