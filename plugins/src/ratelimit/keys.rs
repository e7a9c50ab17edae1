//! Which limits apply to a request, and which counter of each it charges.

use crate::RequestCtx;
use skygate_config::{LimitMatch, Per};
use std::borrow::Cow;

/// Whether every list of the limit's `match` admits the request.
pub(super) fn matches(m: &LimitMatch, ctx: &RequestCtx) -> bool {
    if !m.models.is_empty() && !ctx.model.as_ref().is_some_and(|x| m.models.contains(x)) {
        return false;
    }
    if m.principals.is_empty() && m.tenants.is_empty() && m.groups.is_empty() {
        return true;
    }
    let Some(id) = &ctx.identity else {
        return false;
    };
    let p = &id.principal;
    (m.principals.is_empty() || m.principals.contains(&p.id))
        && (m.tenants.is_empty() || p.tenant.as_ref().is_some_and(|t| m.tenants.contains(t)))
        && (m.groups.is_empty() || p.groups.iter().any(|g| m.groups.contains(g)))
}

/// The counter's partition: one part per `per` dimension. `None` when the
/// request has no value for one (a tenant limit and a caller without a
/// tenant): the limit does not apply to it.
pub(super) fn partition<'a>(
    per: &[Per],
    ctx: &'a RequestCtx,
    route: &'a str,
) -> Option<smallvec::SmallVec<[Cow<'a, str>; 4]>> {
    let mut out = smallvec::SmallVec::new();
    for p in per {
        match p {
            Per::Principal => match &ctx.identity {
                Some(id) => {
                    // Two issuers' `alice` are two principals.
                    if let Some(iss) = &id.principal.issuer {
                        out.push(Cow::Borrowed(iss.as_str()));
                    }
                    out.push(Cow::Borrowed(id.principal.id.as_str()));
                }
                // No authentication configured: the caller is its address.
                None => out.push(Cow::Owned(format!("ip:{}", ip(ctx)?))),
            },
            Per::Tenant => out.push(Cow::Borrowed(
                ctx.identity.as_ref()?.principal.tenant.as_deref()?,
            )),
            Per::Route => out.push(Cow::Borrowed(route)),
            Per::Model => out.push(Cow::Borrowed(ctx.model.as_deref().unwrap_or(""))),
            Per::ClientIp => out.push(Cow::Owned(ip(ctx)?.to_string())),
            Per::Global => {}
        }
    }
    Some(out)
}

/// The caller's address; an IPv6 one as its /64 (one host gets a /64, so
/// counting each address would give it 2^64 counters).
fn ip(ctx: &RequestCtx) -> Option<std::net::IpAddr> {
    Some(match ctx.client_ip.or(ctx.peer)? {
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(prefix.into())
        }
        v4 => v4,
    })
}

/// The Redis key of a counter: `{prefix}:rl:{name:unit:part...}`, the whole
/// counter in one hash tag (each script touches one key, so it runs on a
/// cluster too). Parts are escaped so none can end the tag or blur the
/// separators.
pub(super) fn redis_key(prefix: &str, parts: &[&str]) -> String {
    let mut k =
        String::with_capacity(prefix.len() + 8 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    k.push_str(prefix);
    k.push_str(":rl:{");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(':');
        }
        for c in p.chars() {
            match c {
                '{' | '}' | ':' | '%' => {
                    k.push_str(&format!("%{:02X}", c as u32));
                }
                c if c.is_control() => k.push_str(&format!("%{:02X}", c as u32)),
                c => k.push(c),
            }
        }
    }
    k.push('}');
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_keys_are_one_tag_and_unambiguous() {
        assert_eq!(
            redis_key("skygate", &["lim", "requests_per_minute", "a:b", "c"]),
            "skygate:rl:{lim:requests_per_minute:a%3Ab:c}"
        );
        assert_ne!(redis_key("p", &["a:b", "c"]), redis_key("p", &["a", "b:c"]));
        assert_eq!(redis_key("p", &["}{"]), "p:rl:{%7D%7B}");
    }
}
