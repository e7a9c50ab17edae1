//! Skygate's config: YAML parsed into raw serde types ([`raw`]), then validated
//! into runtime types ([`runtime`]) with every error reported at once
//! ([`error`]). Also home to the few types every crate shares: [`Secret`] and
//! the edge error [`ApiError`].

pub mod api_error;
pub mod error;
mod load;
pub mod locate;
pub mod raw;
pub mod runtime;
pub mod schema;
mod secret;
mod section;
pub mod sse;
mod text;

pub use api_error::{clip, ApiError, ErrorKind, Fault, Retry, ECHO_LIMIT};
pub use error::{ConfigError, ConfigErrors};
pub use load::{
    listener_clash, load_file, load_str, load_str_in, parse_duration, parse_size, MAX_DURATION,
};
pub use runtime::*;
pub use secret::{bearer_token, parse_sha256_hex, pem_der, sha256, to_hex, Secret};
pub use section::policy::expand_files;
pub use text::{did_you_mean, percent_decode, push_ip, push_num, push_socket_addr, redact_url};
