//! `backends.NAME`: where requests go: kind, URL, credentials, labels,
//! timeouts, pool, TLS, and the failure isolation around each backend
//! (circuit breaker, bulkhead, active health check).

use crate::load::{key, parse_endpoint, path_of, read_ca_file, Cx};
use crate::locate::Seg;
use crate::raw::Text;
use crate::runtime::{
    AwsConf, AwsKeys, AzureOpenaiConf, Backend, BackendKind, BackendLimits, BreakerConfig,
    CloudRunConf, Endpoint, HealthCheck, LambdaConf, LambdaPayload, OpenwhiskConf, Platform,
    SagemakerConf, Timeouts,
};
use crate::Secret;
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub kind: String,
    /// Where the backend is. The AWS kinds derive it from `region` unless
    /// `endpoint` overrides it; `url` is the same field's older name.
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub api_key: Option<String>,
    pub api_key_header: Option<String>,
    pub cloud: Option<String>,
    pub region: Option<String>,
    pub timeouts: Option<RawTimeouts>,
    pub pool: Option<RawPool>,
    pub tls: Option<RawTls>,
    pub breaker: Option<RawBreaker>,
    pub limits: Option<RawLimits>,
    pub health_check: Option<RawHealthCheck>,
    /// Send the caller's identity as a signed JWT with this audience
    /// (`true`: the backend's name).
    pub identity: Option<RawIdentity>,
    /// The data classification this backend may receive (for policies).
    pub classification: Option<String>,
    /// `false`: the backend refuses `stream_options`, which the gateway
    /// adds to every chat stream to count its tokens; streams to it go
    /// without it (and report no usage).
    pub stream_usage: Option<bool>,
    /// AWS kinds: credentials from the config (else the standard chain).
    pub credentials: Option<RawAwsKeys>,
    /// `bedrock`: the model id (e.g. `amazon.nova-micro-v1:0`).
    pub model_id: Option<String>,
    /// `aws_lambda`: the function's name or ARN, its version or alias, the
    /// payload shape, response streaming and the log tail.
    pub function: Option<String>,
    pub qualifier: Option<String>,
    pub payload: Option<String>,
    pub response_stream: Option<bool>,
    pub log_tail: Option<bool>,
    /// `aws_lambda_url`: `none | iam`; `azure_openai`: `api_key | entra`.
    pub auth: Option<String>,
    /// `sagemaker`: the endpoint and production variant.
    pub endpoint_name: Option<String>,
    pub target_variant: Option<String>,
    /// `azure_openai`: `api_version`, model → deployment, `api: deployments | v1`.
    pub api_version: Option<String>,
    pub deployments: Option<std::collections::BTreeMap<String, String>>,
    pub api: Option<String>,
    /// `azure_functions`: `key_in: header | query`.
    pub key_in: Option<String>,
    /// `openwhisk`: namespace, action, web action.
    pub namespace: Option<String>,
    pub action: Option<String>,
    pub web: Option<bool>,
    /// `gcp_cloud_run`: the ID token's audience and a service-account key file.
    pub audience: Option<String>,
    pub credentials_file: Option<String>,
    /// Prewarm pings and the warmth model.
    pub prewarm: Option<super::prewarm::RawPrewarm>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// `identity: true`, or `identity: { audience: ... }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawIdentity {
    On(bool),
    Audience { audience: String },
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file of the CAs that sign this backend's certificate (instead of
    /// the system's roots). Relative paths start at the config file's folder.
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<Text>,
    pub first_byte: Option<Text>,
    pub idle: Option<Text>,
    pub total: Option<Text>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub idle_timeout: Option<Text>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<u64>,
    pub failure_ratio: Option<f64>,
    pub window: Option<Text>,
    pub min_requests: Option<u64>,
    pub cooldown: Option<Text>,
    pub half_open_trials: Option<u64>,
    pub max_throttle: Option<Text>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(alias = "max_inflight")]
    pub max_in_flight: Option<u64>,
    pub queue_timeout: Option<Text>,
}

/// One status code or a list of them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawStatuses {
    One(u16),
    Many(Vec<u16>),
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub method: Option<String>,
    pub path: Option<String>,
    pub expect_status: Option<RawStatuses>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub healthy_threshold: Option<u64>,
    pub unhealthy_threshold: Option<u64>,
}

impl Cx<'_> {
    pub(crate) fn backend(&mut self, name: &str, mut b: RawBackend) -> Option<Backend> {
        let p = vec![key("backends"), key(name)];
        let named = self.name_ok(name, &p);
        let kind = BackendKind::parse(&b.kind);
        if kind.is_none() {
            self.err(
                &path_of(&p, &[key("kind")]),
                format!(
                    "`{}` is not a backend kind{}: use one of {}",
                    crate::clip(&b.kind),
                    crate::load::hint(
                        &b.kind,
                        &BackendKind::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                    ),
                    BackendKind::ALLOWED
                ),
            );
        }
        let aws = match kind {
            Some(k) if k.is_aws() => self.aws(&mut b, &p),
            _ => None,
        };
        let url = self.backend_url(kind, &mut b, aws.as_ref(), &p);
        let platform = match kind {
            Some(k) => self.platform(k, &mut b, url.as_ref(), &p),
            None => None,
        };
        let header_name = b.api_key_header.as_deref().unwrap_or(match kind {
            Some(BackendKind::AzureOpenai) => "api-key",
            Some(BackendKind::AzureFunctions) => "x-functions-key",
            _ => "authorization",
        });
        let api_key_header = match http::HeaderName::from_bytes(header_name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(
                    &path_of(&p, &[key("api_key_header")]),
                    format!("`{header_name}` is not a valid header name"),
                );
                None
            }
        };
        if b.api_key_header.is_some() && b.api_key.is_none() {
            self.err(
                &path_of(&p, &[key("api_key_header")]),
                "set without `api_key`: there is no key to send",
            );
        }
        let t = b.timeouts.unwrap_or_default();
        let tp = path_of(&p, &[key("timeouts")]);
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: self.duration(
                t.connect.as_ref(),
                d.connect,
                &path_of(&tp, &[key("connect")]),
            ),
            first_byte: self.duration(
                t.first_byte.as_ref(),
                d.first_byte,
                &path_of(&tp, &[key("first_byte")]),
            ),
            idle: self.duration(t.idle.as_ref(), d.idle, &path_of(&tp, &[key("idle")])),
            total: self.duration(t.total.as_ref(), d.total, &path_of(&tp, &[key("total")])),
        };
        if t.first_byte.is_some() && timeouts.first_byte > timeouts.total {
            self.warn(
                &path_of(&tp, &[key("first_byte")]),
                format!(
                    "longer than `total` ({:?}): a request waits at most `total` for its first byte",
                    timeouts.total
                ),
            );
        }
        let pool = b.pool.unwrap_or_default();
        let pool_idle_timeout = self.duration(
            pool.idle_timeout.as_ref(),
            Duration::from_secs(60),
            &path_of(&p, &[key("pool"), key("idle_timeout")]),
        );
        let tls_ca = match b.tls.and_then(|t| t.ca_file) {
            None => None,
            Some(f) => {
                let fp = path_of(&p, &[key("tls"), key("ca_file")]);
                if url.as_ref().is_some_and(|u| !u.tls) {
                    self.err(
                        &fp,
                        "set for an http:// backend: use an https:// url, or drop `tls`",
                    );
                }
                match read_ca_file(&self.base.join(&f)) {
                    Ok(certs) => Some(certs),
                    Err(why) => {
                        self.err(&fp, format!("`{f}`: {why}"));
                        None
                    }
                }
            }
        };
        let breaker = self.breaker(
            b.breaker.unwrap_or_default(),
            &path_of(&p, &[key("breaker")]),
        );
        let limits = self.limits(b.limits.unwrap_or_default(), &path_of(&p, &[key("limits")]));
        let health_check = b.health_check.map(|h| {
            let default_path = match (kind, &url) {
                (Some(BackendKind::OpenAi), Some(u)) => Some(format!("{}/models", u.base_path)),
                _ => None,
            };
            self.health_check(h, default_path, &path_of(&p, &[key("health_check")]))
        });
        let prewarm = self.prewarm(kind, b.prewarm.take(), &path_of(&p, &[key("prewarm")]));
        if !named {
            return None;
        }
        Some(Backend {
            name: name.to_string(),
            kind: kind?,
            url: url?,
            api_key: b.api_key.map(Secret::new),
            api_key_header: api_key_header?,
            cloud: b.cloud,
            region: b.region,
            timeouts,
            pool_idle_timeout,
            tls_ca,
            breaker,
            limits,
            health_check: health_check.flatten(),
            classification: b.classification,
            stream_usage: b.stream_usage.unwrap_or(true),
            identity_audience: match b.identity {
                None | Some(RawIdentity::On(false)) => None,
                Some(RawIdentity::On(true)) => Some(name.to_string()),
                Some(RawIdentity::Audience { audience }) => Some(audience),
            },
            aws,
            platform: platform?,
            prewarm,
        })
    }

    /// `url` or `endpoint` (one of them); for the AWS kinds, by default the
    /// service's regional endpoint.
    fn backend_url(
        &mut self,
        kind: Option<BackendKind>,
        b: &mut RawBackend,
        aws: Option<&AwsConf>,
        p: &[Seg],
    ) -> Option<Endpoint> {
        let (field, given) = match (b.url.take(), b.endpoint.take()) {
            (Some(_), Some(_)) => {
                self.err(
                    &path_of(p, &[key("endpoint")]),
                    "set with `url`: they are the same setting, keep one",
                );
                return None;
            }
            (Some(u), None) => ("url", Some(u)),
            (None, e) => ("endpoint", e),
        };
        let text = match (given, kind) {
            (Some(u), _) => u,
            (None, Some(BackendKind::AwsLambda)) => {
                format!("https://lambda.{}.amazonaws.com", aws?.region)
            }
            (None, Some(BackendKind::Bedrock)) => {
                format!("https://bedrock-runtime.{}.amazonaws.com", aws?.region)
            }
            (None, Some(BackendKind::Sagemaker)) => {
                format!("https://runtime.sagemaker.{}.amazonaws.com", aws?.region)
            }
            // An unknown kind is the error (reported): whether it needs a
            // URL is not known.
            (None, None) => return None,
            (None, _) => {
                self.err(
                    &path_of(
                        p,
                        &[key(
                            if kind.is_some_and(|k| {
                                matches!(k, BackendKind::OpenAi | BackendKind::HttpFunction)
                            }) {
                                "url"
                            } else {
                                "endpoint"
                            },
                        )],
                    ),
                    "missing: where the backend is, e.g. https://models.example.com/v1",
                );
                return None;
            }
        };
        match parse_endpoint(&text) {
            Ok(u) => Some(u),
            Err(msg) => {
                self.err(&path_of(p, &[key(field)]), msg);
                None
            }
        }
    }

    /// `region` and `credentials` of an AWS kind.
    fn aws(&mut self, b: &mut RawBackend, p: &[Seg]) -> Option<AwsConf> {
        let region = match b.region.clone() {
            Some(r)
                if !r.is_empty()
                    && r.len() <= 64
                    && r.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') =>
            {
                r
            }
            Some(r) => {
                self.err(
                    &path_of(p, &[key("region")]),
                    format!("`{r}` is not an AWS region: e.g. us-east-1"),
                );
                return None;
            }
            None => {
                self.err(
                    &path_of(p, &[key("region")]),
                    "missing: the AWS region to call and sign for, e.g. us-east-1",
                );
                return None;
            }
        };
        let keys = b.credentials.take().and_then(|c| {
            let cp = path_of(p, &[key("credentials")]);
            if c.access_key_id.trim().is_empty() || c.secret_access_key.trim().is_empty() {
                self.err(
                    &cp,
                    "`access_key_id` and `secret_access_key` must not be empty (drop `credentials` to use the standard chain)",
                );
                return None;
            }
            Some(AwsKeys {
                access_key_id: c.access_key_id,
                secret_access_key: Secret::new(c.secret_access_key),
                session_token: c.session_token.filter(|t| !t.is_empty()).map(Secret::new),
            })
        });
        Some(AwsConf { region, keys })
    }

    /// Kind-specific settings; each is refused on a kind that does not take it.
    fn platform(
        &mut self,
        kind: BackendKind,
        b: &mut RawBackend,
        url: Option<&Endpoint>,
        p: &[Seg],
    ) -> Option<Platform> {
        use BackendKind as K;
        let mut ok = true;
        let fields: [(bool, &str, &[K]); 21] = [
            (b.audience.is_some(), "audience", &[K::GcpCloudRun]),
            (
                b.credentials_file.is_some(),
                "credentials_file",
                &[K::GcpCloudRun],
            ),
            (
                b.credentials.is_some(),
                "credentials",
                &[K::AwsLambda, K::AwsLambdaUrl, K::Bedrock, K::Sagemaker],
            ),
            (b.model_id.is_some(), "model_id", &[K::Bedrock]),
            (b.function.is_some(), "function", &[K::AwsLambda]),
            (b.qualifier.is_some(), "qualifier", &[K::AwsLambda]),
            (b.payload.is_some(), "payload", &[K::AwsLambda]),
            (
                b.response_stream.is_some(),
                "response_stream",
                &[K::AwsLambda, K::Sagemaker],
            ),
            (b.log_tail.is_some(), "log_tail", &[K::AwsLambda]),
            (b.auth.is_some(), "auth", &[K::AwsLambdaUrl, K::AzureOpenai]),
            (b.endpoint_name.is_some(), "endpoint_name", &[K::Sagemaker]),
            (
                b.target_variant.is_some(),
                "target_variant",
                &[K::Sagemaker],
            ),
            (b.api_version.is_some(), "api_version", &[K::AzureOpenai]),
            (b.deployments.is_some(), "deployments", &[K::AzureOpenai]),
            (b.api.is_some(), "api", &[K::AzureOpenai]),
            (b.key_in.is_some(), "key_in", &[K::AzureFunctions]),
            (b.namespace.is_some(), "namespace", &[K::Openwhisk]),
            (b.action.is_some(), "action", &[K::Openwhisk]),
            (b.web.is_some(), "web", &[K::Openwhisk]),
            (
                b.api_key_header.is_some(),
                "api_key_header",
                &[K::OpenAi, K::HttpFunction],
            ),
            (
                b.api_key.is_some(),
                "api_key",
                &[
                    K::OpenAi,
                    K::HttpFunction,
                    K::AzureOpenai,
                    K::AzureFunctions,
                    K::Openwhisk,
                ],
            ),
        ];
        if kind.is_aws() {
            for (set, field, why) in [
                (b.health_check.is_some(), "health_check", "an unsigned probe cannot call an AWS API (the breaker watches these backends; `prewarm` pings them signed)"),
                (b.identity.is_some(), "identity", "the caller's identity token would go to AWS, which cannot use it"),
            ] {
                if set {
                    self.err(&path_of(p, &[key(field)]), format!("not a setting of a `{}` backend: {why}", kind.as_str()));
                    ok = false;
                }
            }
        }
        for (set, field, kinds) in fields {
            if set && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                self.err(
                    &path_of(p, &[key(field)]),
                    format!(
                        "not a setting of a `{}` backend (only {})",
                        kind.as_str(),
                        names.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let valid = |s: &str, max: usize, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        };
        let platform = match kind {
            K::OpenAi | K::HttpFunction => Platform::Plain,
            K::Bedrock => {
                let id = b.model_id.take().unwrap_or_default();
                if id.is_empty()
                    || id.len() > 2048
                    || !id.bytes().all(|c| c.is_ascii_graphic())
                    || id == "."
                    || id == ".."
                {
                    self.err(
                        &path_of(p, &[key("model_id")]),
                        format!(
                            "{}: the Bedrock model id or inference profile, e.g. amazon.nova-micro-v1:0",
                            if id.is_empty() { "missing".to_string() } else { format!("`{id}` is not a model id") }
                        ),
                    );
                    return None;
                }
                Platform::Bedrock { model_id: id }
            }
            K::AwsLambda => {
                let function = b.function.take().unwrap_or_default();
                if !valid(&function, 170, b"-_:") {
                    self.err(
                        &path_of(p, &[key("function")]),
                        if function.is_empty() {
                            "missing: the function's name or ARN, e.g. my-function".to_string()
                        } else {
                            format!("`{function}` is not a function name or ARN (letters, digits, `-`, `_`, `:`)")
                        },
                    );
                    ok = false;
                }
                let qualifier = b.qualifier.take();
                if let Some(q) = &qualifier {
                    if !valid(q, 128, b"-_$") {
                        self.err(
                            &path_of(p, &[key("qualifier")]),
                            format!(
                                "`{q}` is not a version or alias (letters, digits, `-`, `_`, `$`)"
                            ),
                        );
                        ok = false;
                    }
                }
                let payload = match b.payload.as_deref() {
                    None | Some("raw") => LambdaPayload::Raw,
                    Some("http_event") => LambdaPayload::HttpEvent,
                    Some(other) => {
                        self.err(
                            &path_of(p, &[key("payload")]),
                            format!("`{other}` is not a payload shape: use raw or http_event"),
                        );
                        ok = false;
                        LambdaPayload::Raw
                    }
                };
                let response_stream = b.response_stream.unwrap_or(false);
                if response_stream && payload == LambdaPayload::HttpEvent {
                    self.err(
                        &path_of(p, &[key("response_stream")]),
                        "needs `payload: raw` (a streamed answer has no statusCode envelope)",
                    );
                    ok = false;
                }
                Platform::Lambda(LambdaConf {
                    function,
                    qualifier,
                    payload,
                    response_stream,
                    log_tail: b.log_tail.unwrap_or(false),
                })
            }
            K::AwsLambdaUrl => {
                let iam = match b.auth.as_deref() {
                    None | Some("iam") => true,
                    Some("none") => false,
                    Some(other) => {
                        self.err(
                            &path_of(p, &[key("auth")]),
                            format!("`{other}` is not a function URL auth type: use iam or none"),
                        );
                        ok = false;
                        true
                    }
                };
                Platform::LambdaUrl { iam }
            }
            K::Sagemaker => {
                let name = b.endpoint_name.take().unwrap_or_default();
                if !valid(&name, 63, b"-") {
                    self.err(
                        &path_of(p, &[key("endpoint_name")]),
                        if name.is_empty() {
                            "missing: the SageMaker endpoint's name".to_string()
                        } else {
                            format!("`{name}` is not an endpoint name (letters, digits, `-`)")
                        },
                    );
                    ok = false;
                }
                let target_variant = b.target_variant.take();
                if let Some(v) = &target_variant {
                    if !valid(v, 63, b"-") {
                        self.err(
                            &path_of(p, &[key("target_variant")]),
                            format!("`{v}` is not a variant name (letters, digits, `-`)"),
                        );
                        ok = false;
                    }
                }
                Platform::Sagemaker(SagemakerConf {
                    endpoint_name: name,
                    target_variant,
                    response_stream: b.response_stream.unwrap_or(false),
                })
            }
            K::AzureOpenai => {
                let entra = match b.auth.as_deref() {
                    None | Some("api_key") => false,
                    Some("entra") => true,
                    Some(other) => {
                        self.err(
                            &path_of(p, &[key("auth")]),
                            format!(
                                "`{other}` is not an Azure OpenAI auth type: use api_key or entra"
                            ),
                        );
                        ok = false;
                        false
                    }
                };
                if !entra && b.api_key.is_none() {
                    self.err(
                        &path_of(p, &[key("api_key")]),
                        "missing: the resource's key (sent as `api-key`), or set `auth: entra`",
                    );
                    ok = false;
                }
                if entra && b.api_key.is_some() {
                    self.err(
                        &path_of(p, &[key("api_key")]),
                        "set with `auth: entra`: Entra ID tokens replace the key; keep one",
                    );
                    ok = false;
                }
                let v1 = match b.api.as_deref() {
                    None | Some("deployments") => false,
                    Some("v1") => true,
                    Some(other) => {
                        self.err(
                            &path_of(p, &[key("api")]),
                            format!("`{other}` is not an Azure OpenAI API: use deployments or v1"),
                        );
                        ok = false;
                        false
                    }
                };
                let api_version = b.api_version.take().unwrap_or_else(|| "2024-10-21".into());
                if !valid(&api_version, 32, b"-.") {
                    self.err(
                        &path_of(p, &[key("api_version")]),
                        format!("`{api_version}` is not an API version, e.g. 2024-10-21"),
                    );
                    ok = false;
                } else if api_version.as_str() < "2024-08-01" && !v1 {
                    // As the backend's `refuses_stream_options`.
                    self.warn(
                        &path_of(p, &[key("api_version")]),
                        format!("`{api_version}` refuses `stream_options`: streams to this backend go without it, so they report no usage (no tokens counted; token limits keep their estimate); 2024-10-21 or later has it"),
                    );
                }
                let deployments = b.deployments.take().unwrap_or_default();
                for (model, d) in &deployments {
                    if !valid(d, 64, b"-_.") {
                        self.err(
                            &path_of(p, &[key("deployments"), key(model)]),
                            format!(
                                "`{d}` is not a deployment name (letters, digits, `-`, `_`, `.`)"
                            ),
                        );
                        ok = false;
                    }
                }
                Platform::AzureOpenai(AzureOpenaiConf {
                    api_version,
                    deployments,
                    v1,
                    entra,
                })
            }
            K::AzureFunctions => {
                let key_in_query = match b.key_in.as_deref() {
                    None | Some("header") => false,
                    Some("query") => true,
                    Some(other) => {
                        self.err(
                            &path_of(p, &[key("key_in")]),
                            format!(
                                "`{other}` is not where a function key goes: use header or query"
                            ),
                        );
                        ok = false;
                        false
                    }
                };
                Platform::AzureFunctions { key_in_query }
            }
            K::GcpCloudRun => {
                let audience = match (b.audience.take(), url) {
                    (Some(a), _) if !a.trim().is_empty() => a,
                    (Some(_), _) => {
                        self.err(&path_of(p, &[key("audience")]), "must not be empty");
                        return None;
                    }
                    (None, Some(u)) => format!(
                        "{}://{}",
                        if u.tls { "https" } else { "http" },
                        u.authority()
                    ),
                    (None, None) => return None,
                };
                let credentials_file = b.credentials_file.take().map(|f| self.base.join(f));
                if let Some(f) = &credentials_file {
                    if let Err(e) = std::fs::metadata(f) {
                        self.err(
                            &path_of(p, &[key("credentials_file")]),
                            format!("`{}`: {e}", f.display()),
                        );
                        ok = false;
                    }
                }
                Platform::GcpCloudRun(CloudRunConf {
                    audience,
                    credentials_file,
                })
            }
            K::Openwhisk => {
                let web = b.web.unwrap_or(false);
                let namespace = b.namespace.take().unwrap_or_else(|| "_".into());
                if !valid(&namespace, 256, b"-_@.") {
                    self.err(
                        &path_of(p, &[key("namespace")]),
                        format!("`{namespace}` is not a namespace"),
                    );
                    ok = false;
                }
                let action = b.action.take().unwrap_or_default();
                let parts = action.split('/').count();
                if !valid(&action, 256, b"-_@./")
                    || parts > 2
                    || action.split('/').any(str::is_empty)
                {
                    self.err(
                        &path_of(p, &[key("action")]),
                        if action.is_empty() {
                            "missing: the action, e.g. chat or mypackage/chat".to_string()
                        } else {
                            format!("`{action}` is not an action (`action` or `package/action`)")
                        },
                    );
                    ok = false;
                }
                if !web && b.api_key.is_none() {
                    self.err(
                        &path_of(p, &[key("api_key")]),
                        "missing: the namespace's `uuid:key` for basic auth (or `web: true` for a web action)",
                    );
                    ok = false;
                }
                if !web && b.api_key.as_deref().is_some_and(|k| !k.contains(':')) {
                    self.err(
                        &path_of(p, &[key("api_key")]),
                        "an OpenWhisk key is `uuid:key` (as `wsk property get --auth` prints it)",
                    );
                    ok = false;
                }
                Platform::Openwhisk(OpenwhiskConf {
                    namespace,
                    action,
                    web,
                })
            }
        };
        ok.then_some(platform)
    }

    fn breaker(&mut self, r: RawBreaker, p: &[Seg]) -> BreakerConfig {
        let d = BreakerConfig::default();
        let at = |k: &str| path_of(p, &[key(k)]);
        let consecutive_failures = self.int_in(
            r.consecutive_failures,
            d.consecutive_failures.into(),
            (0, 1_000_000),
            &at("consecutive_failures"),
        ) as u32;
        let failure_ratio = self.ratio(r.failure_ratio, d.failure_ratio, &at("failure_ratio"));
        let window = self.duration(r.window.as_ref(), d.window, &at("window"));
        if window < Duration::from_millis(100) {
            self.err(&at("window"), "must be at least 100ms");
        }
        BreakerConfig {
            enabled: r.enabled.unwrap_or(d.enabled),
            consecutive_failures,
            failure_ratio,
            window,
            min_requests: self.int_in(
                r.min_requests,
                d.min_requests.into(),
                (1, 1_000_000),
                &at("min_requests"),
            ) as u32,
            cooldown: self.duration(r.cooldown.as_ref(), d.cooldown, &at("cooldown")),
            half_open_trials: self.int_in(
                r.half_open_trials,
                d.half_open_trials.into(),
                (1, 1_000),
                &at("half_open_trials"),
            ) as u32,
            max_throttle: self.duration(
                r.max_throttle.as_ref(),
                d.max_throttle,
                &at("max_throttle"),
            ),
        }
    }

    fn limits(&mut self, r: RawLimits, p: &[Seg]) -> BackendLimits {
        BackendLimits {
            max_in_flight: self.int_in(
                r.max_in_flight,
                0,
                (0, 1_000_000),
                &path_of(p, &[key("max_in_flight")]),
            ) as u32,
            queue_timeout: self.duration_from(
                r.queue_timeout.as_ref(),
                Duration::ZERO,
                &path_of(p, &[key("queue_timeout")]),
                true,
            ),
        }
    }

    fn health_check(
        &mut self,
        r: RawHealthCheck,
        default_path: Option<String>,
        p: &[Seg],
    ) -> Option<HealthCheck> {
        let at = |k: &str| path_of(p, &[key(k)]);
        let d = HealthCheck::defaults();
        let method = match r.method.as_deref() {
            None => http::Method::GET,
            Some(m) => match m.to_ascii_uppercase().as_str() {
                "GET" => http::Method::GET,
                "HEAD" => http::Method::HEAD,
                "POST" => http::Method::POST,
                "OPTIONS" => http::Method::OPTIONS,
                _ => {
                    self.err(
                        &at("method"),
                        format!("`{m}` is not allowed: use GET, HEAD, POST or OPTIONS"),
                    );
                    http::Method::GET
                }
            },
        };
        let path = match r.path.or(default_path) {
            Some(path) if path.starts_with('/') && path.parse::<http::Uri>().is_ok() => path,
            Some(path) => {
                self.err(
                    &at("path"),
                    format!("`{path}` is not a path: it must start with `/`, e.g. /healthz"),
                );
                return None;
            }
            None => {
                self.err(&at("path"), "missing: a path to probe (only `openai` backends have a default, `{url}/models`)");
                return None;
            }
        };
        let expect_status = match r.expect_status {
            None => vec![200],
            Some(RawStatuses::One(s)) => vec![s],
            Some(RawStatuses::Many(v)) => v,
        };
        if expect_status.is_empty() || expect_status.iter().any(|s| !(100..=599).contains(s)) {
            self.err(
                &at("expect_status"),
                "must be a status code (100-599) or a non-empty list of them",
            );
        }
        let interval = self.duration(r.interval.as_ref(), d.interval, &at("interval"));
        if interval < Duration::from_millis(100) {
            self.err(&at("interval"), "must be at least 100ms");
        }
        Some(HealthCheck {
            method,
            path,
            expect_status,
            interval,
            timeout: self.duration(r.timeout.as_ref(), d.timeout, &at("timeout")),
            healthy_threshold: self.int_in(
                r.healthy_threshold,
                d.healthy_threshold.into(),
                (1, 1_000),
                &at("healthy_threshold"),
            ) as u32,
            unhealthy_threshold: self.int_in(
                r.unhealthy_threshold,
                d.unhealthy_threshold.into(),
                (1, 1_000),
                &at("unhealthy_threshold"),
            ) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;
    use std::time::Duration;

    fn with_backend(extra: &str) -> String {
        format!("listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nbackends:\n  a: {{ kind: openai, url: http://a/v1{extra} }}\nroutes:\n  r: {{ match: {{ path: /v1/embeddings, models: [e] }}, targets: [ {{ backend: a }} ] }}\n")
    }

    /// A first-byte timeout longer than the whole request's works (the
    /// total wins) but says something the config does not do: a warning.
    #[test]
    fn a_first_byte_timeout_beyond_the_total_is_a_warning() {
        let c = load_str(
            &with_backend(", timeouts: { first_byte: 5m, total: 1m }"),
            "b.yaml",
            &|_| None,
        )
        .unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.path == "backends.a.timeouts.first_byte"
                    && w.message.contains("longer than `total`")),
            "{:?}",
            c.warnings
        );
        let c = load_str(
            &with_backend(", timeouts: { first_byte: 30s, total: 1m }"),
            "b.yaml",
            &|_| None,
        )
        .unwrap();
        assert!(
            c.warnings
                .iter()
                .all(|w| w.path == "auth" || w.path == "admin"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn isolation_defaults() {
        let c = load_str(&with_backend(""), "b.yaml", &|_| None).unwrap();
        let b = &c.backends[0];
        assert!(b.breaker.enabled);
        assert_eq!(b.breaker.consecutive_failures, 5);
        assert_eq!(b.limits.max_in_flight, 0);
        assert!(b.health_check.is_none());
        let c = load_str(
            &with_backend(", health_check: {}, limits: { max_inflight: 8, queue_timeout: 50ms }, breaker: { cooldown: 2s, failure_ratio: 0.25 }"),
            "b.yaml",
            &|_| None,
        )
        .unwrap();
        let b = &c.backends[0];
        let h = b.health_check.as_ref().unwrap();
        assert_eq!(h.path, "/v1/models");
        assert_eq!(h.expect_status, [200]);
        assert_eq!(b.limits.max_in_flight, 8);
        assert_eq!(b.limits.queue_timeout, Duration::from_millis(50));
        assert_eq!(b.breaker.cooldown, Duration::from_secs(2));
        assert_eq!(b.breaker.failure_ratio, 0.25);
    }

    #[test]
    fn absurd_isolation_values_are_errors() {
        let errs = load_str(
            &with_backend(", health_check: { path: nope, expect_status: [700] }, breaker: { failure_ratio: 3, half_open_trials: 0, window: 1ms }, limits: { max_in_flight: 2000000 }"),
            "b.yaml",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "backends.a.health_check.path: `nope` is not a path",
            "backends.a.breaker.failure_ratio: must be between 0.0 and 1.0",
            "backends.a.breaker.half_open_trials: must be between 1 and 1000",
            "backends.a.breaker.window: must be at least 100ms",
            "backends.a.limits.max_in_flight: must be between 0 and 1000000",
        ] {
            assert!(errs.contains(needle), "missing {needle}: {errs}");
        }
    }

    fn platform_config(backend: &str) -> String {
        format!("listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nbackends:\n  a: {backend}\nroutes:\n  r: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: a }} ] }}\n")
    }

    #[test]
    fn aws_kinds_take_region_endpoint_and_their_own_fields() {
        use crate::{BackendKind, LambdaPayload, Platform};
        let c = load_str(
            &platform_config(
                "{ kind: bedrock, region: us-east-1, model_id: \"amazon.nova-micro-v1:0\" }",
            ),
            "b.yaml",
            &|_| None,
        )
        .unwrap();
        let b = &c.backends[0];
        assert_eq!(b.kind, BackendKind::Bedrock);
        assert_eq!(b.url.host, "bedrock-runtime.us-east-1.amazonaws.com");
        assert!(b.url.tls);
        assert_eq!(b.aws.as_ref().unwrap().region, "us-east-1");
        assert!(b.aws.as_ref().unwrap().keys.is_none());
        assert_eq!(
            b.platform,
            Platform::Bedrock {
                model_id: "amazon.nova-micro-v1:0".into()
            }
        );
        let c = load_str(
            &platform_config("{ kind: aws_lambda, region: eu-west-1, endpoint: \"http://127.0.0.1:9/x\", function: f, qualifier: live, payload: http_event, log_tail: true, credentials: { access_key_id: AK, secret_access_key: SK } }"),
            "b.yaml",
            &|_| None,
        )
        .unwrap();
        let b = &c.backends[0];
        assert_eq!(
            (b.url.host.as_str(), b.url.port, b.url.base_path.as_str()),
            ("127.0.0.1", 9, "/x")
        );
        let Platform::Lambda(l) = &b.platform else {
            panic!()
        };
        assert_eq!(l.payload, LambdaPayload::HttpEvent);
        assert_eq!(l.qualifier.as_deref(), Some("live"));
        assert!(l.log_tail && !l.response_stream);
        assert_eq!(
            b.aws
                .as_ref()
                .unwrap()
                .keys
                .as_ref()
                .unwrap()
                .secret_access_key
                .expose(),
            "SK"
        );
        assert!(
            !format!("{b:?}").contains("SK\""),
            "the secret never prints"
        );
    }

    #[test]
    fn bad_platform_settings_say_where_and_why() {
        for (backend, needle) in [
            ("{ kind: bedrock, model_id: m }", "backends.a.region: missing"),
            ("{ kind: bedrock, region: US_EAST, model_id: m }", "backends.a.region: `US_EAST` is not an AWS region"),
            ("{ kind: bedrock, region: us-east-1 }", "backends.a.model_id: missing"),
            ("{ kind: aws_lambda, region: us-east-1 }", "backends.a.function: missing"),
            ("{ kind: aws_lambda, region: us-east-1, function: \"a b\" }", "backends.a.function: `a b` is not a function name"),
            ("{ kind: aws_lambda, region: us-east-1, function: f, payload: xml }", "backends.a.payload: `xml` is not a payload shape"),
            ("{ kind: aws_lambda, region: us-east-1, function: f, payload: http_event, response_stream: true }", "backends.a.response_stream: needs `payload: raw`"),
            ("{ kind: openai, url: \"http://a/v1\", model_id: m }", "backends.a.model_id: not a setting of a `openai` backend"),
            ("{ kind: bedrock, region: us-east-1, model_id: m, function: f }", "backends.a.function: not a setting of a `bedrock` backend"),
            ("{ kind: openai, url: \"http://a/v1\", endpoint: \"http://b/v1\" }", "backends.a.endpoint: set with `url`"),
            ("{ kind: openai }", "backends.a.url: missing"),
            ("{ kind: azure_openai }", "backends.a.endpoint: missing"),
            ("{ kind: azure_openai, endpoint: \"https://r.openai.azure.com\" }", "backends.a.api_key: missing"),
            ("{ kind: azure_openai, endpoint: \"https://r\", auth: entra, api_key: k }", "backends.a.api_key: set with `auth: entra`"),
            ("{ kind: azure_openai, endpoint: \"https://r\", api_key: k, api: v2 }", "backends.a.api: `v2` is not an Azure OpenAI API"),
            ("{ kind: azure_openai, endpoint: \"https://r\", api_key: k, deployments: { m: \"a b\" } }", "backends.a.deployments.m: `a b` is not a deployment name"),
            ("{ kind: azure_functions, endpoint: \"https://f/api\", key_in: body }", "backends.a.key_in: `body` is not where a function key goes"),
            ("{ kind: openwhisk, endpoint: \"https://ow\", action: a }", "backends.a.api_key: missing"),
            ("{ kind: openwhisk, endpoint: \"https://ow\", action: a, api_key: nocolon }", "backends.a.api_key: an OpenWhisk key is `uuid:key`"),
            ("{ kind: openwhisk, endpoint: \"https://ow\", action: \"a/b/c\", web: true }", "backends.a.action: `a/b/c` is not an action"),
            ("{ kind: sagemaker, region: us-east-1 }", "backends.a.endpoint_name: missing"),
            ("{ kind: aws_lambda_url, region: us-east-1 }", "backends.a.endpoint: missing"),
            ("{ kind: aws_lambda_url, region: us-east-1, endpoint: \"https://x.lambda-url.us-east-1.on.aws\", auth: sso }", "backends.a.auth: `sso` is not a function URL auth type"),
            ("{ kind: sagemaker, region: us-east-1, endpoint_name: e, api_key: k }", "backends.a.api_key: not a setting of a `sagemaker` backend"),
            ("{ kind: bedrock, region: us-east-1, model_id: m, credentials: { access_key_id: \"\", secret_access_key: s } }", "backends.a.credentials: `access_key_id` and `secret_access_key` must not be empty"),
        ] {
            let errs = load_str(&platform_config(backend), "b.yaml", &|_| None)
                .unwrap_err()
                .to_string();
            assert!(errs.contains(needle), "{backend}: missing {needle}: {errs}");
        }
    }
}
