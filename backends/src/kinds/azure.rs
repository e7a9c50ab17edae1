//! Azure: `azure_openai` (deployment paths or the v1 API; `api-key` or a
//! Microsoft Entra ID bearer token) and `azure_functions` (HTTP triggers
//! with a function key), and the Entra ID token chain.
//!
//! Entra ID tokens (scope `https://cognitiveservices.azure.com/.default`),
//! in azure-identity's order, the first that is configured:
//! 1. a client secret: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`;
//! 2. workload identity (AKS): `AZURE_FEDERATED_TOKEN_FILE` with
//!    `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`;
//! 3. managed identity: App Service's `IDENTITY_ENDPOINT` and
//!    `IDENTITY_HEADER`, else the instance metadata service
//!    (`AZURE_POD_IDENTITY_AUTHORITY_HOST` overrides its address;
//!    `AZURE_CLIENT_ID` picks a user-assigned identity).
//!
//! `AZURE_AUTHORITY_HOST` overrides `https://login.microsoftonline.com`.
//! Tokens are renewed in the background, never on the request path.

use super::renew::{renew_time, Renewal};
use super::{insert_bearer, map_http_failure, no_credentials, path_segment, MapErrors, Synth};
use crate::adapter::{base_header, internal, Call, Prepared};
use crate::fetch::Fetcher;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header;
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, AzureOpenaiConf, Backend, ErrorKind, Operation};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The resource Azure OpenAI tokens are for.
const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
const RESOURCE: &str = "https://cognitiveservices.azure.com";
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A bearer token and when it expires.
pub struct Token {
    pub value: String,
    pub expires: SystemTime,
    pub source: &'static str,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("source", &self.source)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The process's Entra ID token chain.
pub struct EntraChain {
    current: ArcSwapOption<Token>,
    renewal: Renewal,
    env: Env,
    fetcher: Fetcher,
}

impl std::fmt::Debug for EntraChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraChain").finish_non_exhaustive()
    }
}

impl EntraChain {
    pub fn from_process() -> Self {
        Self::new(Box::new(|k| std::env::var(k).ok()))
    }

    pub fn new(env: Env) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            renewal: Renewal::new("Entra ID token"),
            env,
            fetcher: Fetcher::default(),
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// Marks the chain as needed (an `auth: entra` backend exists).
    pub fn want(&self) {
        self.renewal.want();
    }

    /// The current token, unless it has expired.
    pub fn get(&self) -> Option<Arc<Token>> {
        self.current
            .load_full()
            .filter(|t| t.expires > SystemTime::now())
    }

    pub async fn maintain(&self) {
        self.renewal.maintain(|| self.refresh()).await;
    }

    async fn refresh(&self) -> Result<Duration, String> {
        let now = SystemTime::now();
        if let Some(at) = self.renewal.renew_at() {
            if at > now && self.current.load().is_some() {
                return Ok(at.duration_since(now).unwrap_or_default());
            }
        }
        let token = self.fetch().await?;
        let at = renew_time(now, token.expires);
        if self
            .current
            .load()
            .as_ref()
            .is_none_or(|t| t.source != token.source)
        {
            log::info!("Entra ID tokens from {}", token.source);
        }
        self.renewal.renewed(Some(at));
        self.current.store(Some(Arc::new(token)));
        Ok(at
            .duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_millis(100)))
    }

    async fn fetch(&self) -> Result<Token, String> {
        let authority = self
            .var("AZURE_AUTHORITY_HOST")
            .unwrap_or_else(|| "https://login.microsoftonline.com".into());
        let authority = authority.trim_end_matches('/');
        let (tenant, client) = (self.var("AZURE_TENANT_ID"), self.var("AZURE_CLIENT_ID"));
        if let (Some(tenant), Some(client), Some(secret)) =
            (&tenant, &client, self.var("AZURE_CLIENT_SECRET"))
        {
            let form = format!(
                "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
                path_segment(client),
                path_segment(&secret),
                path_segment(SCOPE)
            );
            return self
                .token_endpoint(authority, tenant, form, "a client secret")
                .await;
        }
        if let (Some(tenant), Some(client), Some(file)) =
            (&tenant, &client, self.var("AZURE_FEDERATED_TOKEN_FILE"))
        {
            let assertion = std::fs::read_to_string(&file)
                .map_err(|e| format!("the federated token file `{file}`: {e}"))?;
            let form = format!(
                "grant_type=client_credentials&client_id={}&client_assertion_type={}&client_assertion={}&scope={}",
                path_segment(client),
                path_segment("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                path_segment(assertion.trim()),
                path_segment(SCOPE)
            );
            return self
                .token_endpoint(authority, tenant, form, "workload identity")
                .await;
        }
        self.managed_identity(client.as_deref()).await
    }

    async fn token_endpoint(
        &self,
        authority: &str,
        tenant: &str,
        form: String,
        source: &'static str,
    ) -> Result<Token, String> {
        let url = format!("{authority}/{}/oauth2/v2.0/token", path_segment(tenant));
        let r = self
            .fetcher
            .send(
                "POST",
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                Bytes::from(form),
                FETCH_TIMEOUT,
            )
            .await
            .map_err(|e| format!("Entra ID ({source}): {e}"))?;
        parse_token(&r.body, r.status, source)
    }

    async fn managed_identity(&self, client: Option<&str>) -> Result<Token, String> {
        let client_q = client.map_or(String::new(), |c| format!("&client_id={}", path_segment(c)));
        let r = if let (Some(endpoint), Some(secret)) =
            (self.var("IDENTITY_ENDPOINT"), self.var("IDENTITY_HEADER"))
        {
            let url = format!(
                "{endpoint}?api-version=2019-08-01&resource={}{client_q}",
                path_segment(RESOURCE)
            );
            self.fetcher
                .send(
                    "GET",
                    &url,
                    &[("x-identity-header", &secret)],
                    Bytes::new(),
                    FETCH_TIMEOUT,
                )
                .await
        } else {
            let host = self
                .var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                .unwrap_or_else(|| "http://169.254.169.254".into());
            let url = format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}{client_q}",
                host.trim_end_matches('/'),
                path_segment(RESOURCE)
            );
            self.fetcher
                .send(
                    "GET",
                    &url,
                    &[("metadata", "true")],
                    Bytes::new(),
                    Duration::from_secs(2),
                )
                .await
        }
        .map_err(|e| {
            format!("no client secret, workload identity or managed identity answered ({e})")
        })?;
        parse_token(&r.body, r.status, "a managed identity")
    }
}

/// `{"access_token", "expires_in" | "expires_on"}` of a token endpoint.
fn parse_token(body: &[u8], status: u16, source: &'static str) -> Result<Token, String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if status != 200 {
        let why = v
            .get("error_description")
            .or_else(|| v.get("error"))
            .and_then(|e| e.as_str())
            .unwrap_or("no reason given");
        return Err(format!(
            "Entra ID ({source}) refused: status {status}: {}",
            skygate_config::clip(why)
        ));
    }
    let value = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("Entra ID ({source}) answered without a token"))?
        .to_string();
    let num = |k: &str| {
        v.get(k).and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        })
    };
    let expires = match (num("expires_on"), num("expires_in")) {
        (Some(on), _) => SystemTime::UNIX_EPOCH + Duration::from_secs(on),
        (None, Some(secs)) => SystemTime::now() + Duration::from_secs(secs),
        (None, None) => SystemTime::now() + Duration::from_secs(3600),
    };
    Ok(Token {
        value,
        expires,
        source,
    })
}

#[derive(Debug)]
pub struct AzureOpenaiAdapter {
    pub conf: AzureOpenaiConf,
    pub entra: Option<Arc<EntraChain>>,
}

impl AzureOpenaiAdapter {
    pub fn new(conf: &AzureOpenaiConf, entra: &Arc<EntraChain>) -> Self {
        if conf.entra {
            entra.want();
        }
        Self {
            conf: conf.clone(),
            entra: conf.entra.then(|| entra.clone()),
        }
    }

    pub fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        if call.operation == Operation::Function {
            return Err(internal(
                "an Azure OpenAI backend cannot serve a function route",
            ));
        }
        let model = call.model.unwrap_or("");
        let deployment = self
            .conf
            .deployments
            .get(model)
            .map_or(model, String::as_str);
        let (path, body) = if self.conf.v1 {
            let body = if deployment == model {
                call.body.clone()
            } else {
                with_model(call.body, deployment)?
            };
            (
                format!(
                    "{}/openai/v1{}",
                    backend.url.base_path,
                    call.operation.upstream_suffix()
                ),
                body,
            )
        } else {
            // API versions before 2024-08-01 refuse `stream_options` (a
            // 400), which the gateway adds to every chat stream: left out,
            // the stream comes back without its usage.
            // (The key may be written escaped: no byte search first.)
            let body = if refuses_stream_options(&self.conf.api_version) {
                crate::json::without_member(call.body, "stream_options")
            } else {
                call.body.clone()
            };
            (
                format!(
                    "{}/openai/deployments/{}{}?api-version={}",
                    backend.url.base_path,
                    path_segment(deployment),
                    call.operation.upstream_suffix(),
                    path_segment(&self.conf.api_version)
                ),
                body,
            )
        };
        let mut h = base_header(backend, &http::Method::POST, &path, call, body.len())?;
        if let Some(chain) = &self.entra {
            let token = chain
                .get()
                .ok_or_else(|| no_credentials(&backend.name, "Entra ID token"))?;
            insert_bearer(&mut h, &token.value)?;
        }
        Ok(Prepared {
            header: h,
            body,
            reply: Some(Box::new(MapErrors::new(
                &backend.name,
                call,
                map_azure_openai,
            ))),
        })
    }
}

/// An Azure OpenAI API version that refuses `stream_options` (those
/// before 2024-08-01; a version is a date, `YYYY-MM-DD[-preview]`).
pub fn refuses_stream_options(api_version: &str) -> bool {
    api_version < "2024-08-01"
}

/// The body with its top-level `model` set to `model`, every other member
/// kept as sent (`json::with_member`).
fn with_model(body: &[u8], model: &str) -> Result<Bytes, ApiError> {
    let name = serde_json::value::to_raw_value(model).map_err(internal)?;
    crate::json::with_member(body, "model", &name)
        .ok_or_else(|| ApiError::new(ErrorKind::InvalidJson, "the body is not a JSON object"))
}

/// Azure OpenAI's failures: a deployment or API version that does not
/// exist (404) is the gateway's configuration, so a 502; the rest as any
/// HTTP platform (content-filter 400s pass on as they are).
fn map_azure_openai(backend: &str, header: &ResponseHeader, body: &[u8]) -> Option<Synth> {
    if header.status.as_u16() == 404 {
        return Some(Synth::error(
            502,
            "upstream_error",
            "backend_error",
            &format!("backend `{backend}` (Azure OpenAI): no such deployment or API version (404)"),
        ));
    }
    map_http_failure(backend, "Azure OpenAI", header, body)
}

/// `azure_functions`: `{endpoint}{rest of the client path}`, the function
/// key in `x-functions-key` (or `code=` with `key_in: query`).
#[derive(Debug)]
pub struct AzureFunctionsAdapter {
    pub key_in_query: bool,
}

impl AzureFunctionsAdapter {
    pub fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        let mut path = format!("{}{}", backend.url.base_path, call.path_suffix);
        if path.is_empty() || path.starts_with('?') {
            path.insert(0, '/');
        }
        if let (true, Some(key)) = (self.key_in_query, &backend.api_key) {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str("code=");
            path.push_str(&path_segment(key.expose()));
        }
        let mut h = base_header(backend, call.method, &path, call, call.body.len())?;
        if let Some(v) = call.client.headers.get(header::CONTENT_ENCODING) {
            h.insert_header(header::CONTENT_ENCODING, v.clone())
                .map_err(internal)?;
        }
        Ok(Prepared {
            header: h,
            body: call.body.clone(),
            reply: Some(Box::new(MapErrors::new(
                &backend.name,
                call,
                |b, h, body| map_http_failure(b, "Azure Functions", h, body),
            ))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers() {
        let t = parse_token(
            br#"{"access_token":"tok","expires_in":"3599","token_type":"Bearer"}"#,
            200,
            "x",
        )
        .unwrap();
        assert_eq!(t.value, "tok");
        assert!(t.expires > SystemTime::now() + Duration::from_secs(3500));
        let t = parse_token(
            br#"{"access_token":"tok","expires_on":1700000000}"#,
            200,
            "x",
        )
        .unwrap();
        assert_eq!(
            t.expires,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        let e = parse_token(br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret"}"#, 401, "x").unwrap_err();
        assert!(e.contains("AADSTS7000215"), "{e}");
        assert!(!format!("{t:?}").contains("tok\""));
    }

    #[test]
    fn stream_options_go_to_versions_that_take_them() {
        assert!(refuses_stream_options("2024-06-01"));
        assert!(refuses_stream_options("2024-05-01-preview"));
        assert!(!refuses_stream_options("2024-08-01-preview"));
        assert!(!refuses_stream_options("2024-10-21"));
        let body = Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"n":1.0}"#,
        );
        let out = String::from_utf8(crate::json::without_member(&body, "stream_options").to_vec())
            .unwrap();
        assert!(
            !out.contains("stream_options") && out.contains("1.0"),
            "{out}"
        );
        let plain = Bytes::from_static(br#"{"model":"m"}"#);
        assert_eq!(crate::json::without_member(&plain, "stream_options"), plain);
    }

    #[test]
    fn v1_model_rewrite_keeps_other_values_exactly() {
        let b = with_model(
            br#"{"model":"gpt-4o","n":1.0,"big":12345678901234567890,"messages":[]}"#,
            "prod-4o",
        )
        .unwrap();
        let s = String::from_utf8(b.to_vec()).unwrap();
        assert!(s.contains(r#""model":"prod-4o""#), "{s}");
        assert!(
            s.contains("12345678901234567890") && s.contains("1.0"),
            "{s}"
        );
    }
}
