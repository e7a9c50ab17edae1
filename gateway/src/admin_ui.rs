//! `GET /admin/ui`: the operator status page, three static files embedded
//! in the binary (no build step anywhere). The page holds no data and no
//! secret: it asks for the admin token, keeps it in the tab's
//! `sessionStorage` only, and reads and changes everything through the
//! admin API with it, so it is served without the token; every call it
//! makes needs one (and passes the admin policy like any other).

use http::Response;

const HTML: &str = include_str!("../assets/admin-ui.html");
const JS: &str = include_str!("../assets/admin-ui.js");
const CSS: &str = include_str!("../assets/admin-ui.css");

/// Only this origin's own script, style and API calls; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's file at `path` (`/admin/ui`, `/admin/ui/app.js`,
/// `/admin/ui/app.css`), or `None`.
pub fn asset(segs: &[&str]) -> Option<Response<Vec<u8>>> {
    let (body, content_type) = match segs {
        ["admin", "ui"] => (HTML, "text/html; charset=utf-8"),
        ["admin", "ui", "app.js"] => (JS, "text/javascript; charset=utf-8"),
        ["admin", "ui", "app.css"] => (CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(body.as_bytes().to_vec());
    let h = r.headers_mut();
    for (name, value) in [
        ("content-type", content_type),
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-cache"),
    ] {
        h.insert(name, http::HeaderValue::from_static(value));
    }
    h.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_own_script_and_style_and_nothing_else() {
        let page = asset(&["admin", "ui"]).map(|r| String::from_utf8_lossy(r.body()).to_string());
        let page = page.unwrap_or_default();
        assert!(page.contains("/admin/ui/app.js") && page.contains("/admin/ui/app.css"));
        // No outside address: the page works offline and leaks nothing.
        for text in [HTML, JS, CSS] {
            for word in ["https://", "http://"] {
                let outside = text
                    .match_indices(word)
                    .any(|(i, _)| !text[i..].starts_with("http://www.w3.org/2000/svg"));
                assert!(!outside, "an outside URL in an admin UI asset");
            }
            assert!(!text.contains("localStorage.setItem") && !text.contains("document.cookie"));
        }
        assert!(asset(&["admin", "ui", "other.js"]).is_none());
    }
}
