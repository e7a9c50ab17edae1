//! The simulator's platforms: besides the OpenAI API, it answers as AWS
//! Lambda (Invoke, InvokeWithResponseStream) and Amazon Bedrock (Converse,
//! ConverseStream), checking SigV4 as AWS does and answering in each
//! platform's own format: its envelopes, its errors and throttles, its
//! event-stream framing. It also plays STS (`AssumeRoleWithWebIdentity`),
//! issuing short-lived keys it then accepts, so credential rotation runs
//! against it.

use super::http1::{Request, Sink};
use super::model::SimSettings;
use super::{chat_response, lock, now_secs, token, Completion, Sim};
use crate::kinds::eventstream::{encode, encode_event};
use crate::sign::sigv4;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What the simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Platform {
    /// The OpenAI API (and generic function endpoints).
    #[default]
    Openai,
    /// AWS Lambda's Invoke API.
    AwsLambda,
    /// A Lambda function URL (IAM auth unless `url_auth: none`).
    AwsLambdaUrl,
    /// Amazon Bedrock's Converse API.
    Bedrock,
    /// SageMaker InvokeEndpoint (an OpenAI-compatible container).
    Sagemaker,
    /// Azure OpenAI (deployment paths and v1; `api-key` or Entra ID tokens).
    AzureOpenai,
    /// Azure Functions HTTP triggers (function keys).
    AzureFunctions,
    /// Apache OpenWhisk actions and web actions.
    Openwhisk,
    /// A Cloud Run service requiring Google-signed ID tokens (the
    /// simulator also plays Google's token endpoint and metadata server).
    GcpCloudRun,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::AwsLambda => "aws-lambda",
            Self::AwsLambdaUrl => "aws-lambda-url",
            Self::Bedrock => "bedrock",
            Self::Sagemaker => "sagemaker",
            Self::AzureOpenai => "azure-openai",
            Self::AzureFunctions => "azure-functions",
            Self::Openwhisk => "openwhisk",
            Self::GcpCloudRun => "gcp-cloud-run",
        }
    }

    fn service(self) -> Option<&'static str> {
        match self {
            Self::AwsLambda | Self::AwsLambdaUrl => Some("lambda"),
            Self::Bedrock => Some("bedrock"),
            Self::Sagemaker => Some("sagemaker"),
            _ => None,
        }
    }

    /// The platforms that answer in the OpenAI API once their own checks
    /// (auth, paths) pass.
    pub fn answers_openai(self) -> bool {
        matches!(self, Self::Openai | Self::AzureOpenai)
    }
}

/// A platform answer, before it is written.
pub(super) struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

fn aws_error(status: u16, kind: &str, message: &str) -> Answer {
    Answer {
        status,
        headers: vec![
            ("content-type", "application/json".into()),
            (
                "x-amzn-errortype",
                format!("{kind}:http://internal.amazon.com/coral/"),
            ),
            ("x-amzn-requestid", request_id()),
        ],
        body: json!({ "message": message }).to_string().into_bytes(),
    }
}

fn request_id() -> String {
    format!("{:08x}-sim", rand::random::<u32>())
}

/// Lambda's log tail: a `REPORT` line, with `Init Duration` on a cold start.
fn log_tail(cold: bool, id: &str) -> String {
    let init = if cold {
        "\tInit Duration: 412.31 ms"
    } else {
        ""
    };
    B64.encode(format!(
        "START RequestId: {id} Version: $LATEST\nEND RequestId: {id}\nREPORT RequestId: {id}\tDuration: 3.10 ms\tBilled Duration: 4 ms\tMemory Size: 1024 MB\tMax Memory Used: 88 MB{init}\n"
    ))
}

impl Sim {
    /// The secret of an access key the simulated AWS accepts: one of
    /// `aws_keys`, or one STS issued that has not expired.
    fn aws_secret(&self, s: &SimSettings, key: &str) -> Option<String> {
        if let Some(secret) = s.aws_keys.get(key) {
            return Some(secret.clone());
        }
        let issued = lock(&self.issued);
        issued
            .get(key)
            .filter(|(_, until)| *until > SystemTime::now())
            .map(|(secret, _)| secret.clone())
    }

    /// Checks a platform request's credentials; the platform's refusal if
    /// they do not pass.
    pub(super) fn check_auth(&self, req: &Request, s: &SimSettings) -> Option<Answer> {
        match self.platform {
            Platform::AzureOpenai => return self.azure_openai_check(req, s),
            Platform::AzureFunctions => return azure_functions_check(req, s),
            Platform::Openwhisk => return openwhisk_check(req, s),
            Platform::GcpCloudRun => return self.cloud_run_check(req, s),
            Platform::AwsLambdaUrl if s.url_auth == "none" => return None,
            _ => {}
        }
        let service = self.platform.service()?;
        if self.platform == Platform::AwsLambdaUrl {
            let sent = header(req, "x-amz-content-sha256");
            if sent != sigv4::payload_hash(&req.body) {
                self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                return Some(url_error(403, "AccessDeniedException", "Forbidden"));
            }
        }
        let (path, query) = match req.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.path.as_str(), None),
        };
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let host = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map_or("", |(_, v)| *v);
        let signed = sigv4::Request {
            method: &req.method,
            host,
            path,
            query,
            headers: &headers,
            body: &req.body,
        };
        match sigv4::verify(&signed, service, SystemTime::now(), |k| {
            self.aws_secret(s, k)
        }) {
            Ok(()) => None,
            Err(why) => {
                self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                let kind = if why.starts_with("unknown access key") {
                    "UnrecognizedClientException"
                } else {
                    "InvalidSignatureException"
                };
                if self.platform == Platform::AwsLambdaUrl {
                    return Some(url_error(403, "AccessDeniedException", "Forbidden"));
                }
                Some(aws_error(403, kind, &format!("The request signature we calculated does not match the signature you provided ({why})")))
            }
        }
    }

    /// The platform's throttling answer.
    pub(super) fn throttled(&self, s: &SimSettings) -> Answer {
        match self.platform {
            Platform::Openai => Answer {
                status: 429,
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("retry-after", s.retry_after_s.to_string()),
                ],
                body: json!({"error": {"message": "too many requests: every instance is busy", "type": "rate_limit_error", "code": "throttled"}}).to_string().into_bytes(),
            },
            Platform::AwsLambda => {
                let mut a = aws_error(429, "TooManyRequestsException", "Rate Exceeded.");
                a.body = json!({"Reason": "ConcurrentInvocationLimitExceeded", "Type": "User", "message": "Rate Exceeded."}).to_string().into_bytes();
                a
            }
            Platform::Bedrock | Platform::Sagemaker => aws_error(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            ),
            Platform::AwsLambdaUrl => url_error(429, "TooManyRequestsException", "Rate Exceeded."),
            Platform::AzureOpenai => Answer {
                status: 429,
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("retry-after", s.retry_after_s.to_string()),
                ],
                body: json!({"error": {"code": "429", "message": format!("Requests to the ChatCompletions_Create Operation have exceeded token rate limit of your current pricing tier. Please retry after {} second.", s.retry_after_s)}}).to_string().into_bytes(),
            },
            Platform::AzureFunctions => Answer {
                status: 429,
                headers: vec![("retry-after", s.retry_after_s.to_string())],
                body: Vec::new(),
            },
            Platform::GcpCloudRun => Answer {
                status: 429,
                headers: vec![("content-type", "text/html".into())],
                body: b"<html><body>Rate exceeded.</body></html>".to_vec(),
            },
            Platform::Openwhisk => Answer {
                status: 429,
                headers: vec![("content-type", "application/json".into())],
                body: json!({"error": "Too many requests in the last minute (count: 61, allowed: 60).", "code": "sim"}).to_string().into_bytes(),
            },
        }
    }

    /// Entra ID's token endpoint (`POST /{tenant}/oauth2/v2.0/token`):
    /// client credentials in, a bearer token Azure OpenAI then accepts.
    pub(super) fn entra_token(&self, req: &Request, s: &SimSettings) -> Answer {
        let form = String::from_utf8_lossy(&req.body);
        let field = |name: &str| {
            form.split('&')
                .find_map(|p| p.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .map(|v| String::from_utf8_lossy(&skygate_config::percent_decode(v)).into_owned())
        };
        self.stats.sts_calls.fetch_add(1, Ordering::Relaxed);
        let secret_ok = field("client_secret").is_some_and(|c| s.platform_keys.contains(&c));
        let assertion_ok = field("client_assertion").is_some_and(|a| !a.is_empty());
        if field("client_id").is_none() || !(secret_ok || assertion_ok) {
            return Answer {
                status: 401,
                headers: vec![("content-type", "application/json".into())],
                body: json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}).to_string().into_bytes(),
            };
        }
        let n = self.stats.sts_calls.load(Ordering::Relaxed);
        let token = format!("sim-entra-{n}-{:08x}", rand::random::<u32>());
        let until = SystemTime::now() + Duration::from_secs(s.sts_lifetime_s);
        lock(&self.issued).insert(format!("Bearer {token}"), (String::new(), until));
        Answer {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: json!({"token_type": "Bearer", "expires_in": s.sts_lifetime_s, "access_token": token}).to_string().into_bytes(),
        }
    }

    fn azure_openai_check(&self, req: &Request, s: &SimSettings) -> Option<Answer> {
        let key = header(req, "api-key");
        let bearer = header(req, "authorization");
        let issued = lock(&self.issued)
            .get(&bearer)
            .is_some_and(|(_, until)| *until > SystemTime::now());
        if !(s.platform_keys.contains(&key) || issued) {
            self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            return Some(Answer {
                status: 401,
                headers: vec![("content-type", "application/json".into())],
                body: json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}).to_string().into_bytes(),
            });
        }
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let deployment_path = path
            .strip_prefix("/openai/deployments/")
            .and_then(|r| r.split_once('/'))
            .is_some_and(|(d, op)| {
                !d.is_empty() && matches!(op, "chat/completions" | "embeddings")
            })
            && query
                .split('&')
                .any(|p| p.starts_with("api-version=") && p.len() > 12);
        let v1_path = matches!(
            path,
            "/openai/v1/chat/completions" | "/openai/v1/embeddings"
        );
        if !(deployment_path || v1_path) {
            return Some(Answer {
                status: 404,
                headers: vec![("content-type", "application/json".into())],
                body: json!({"error": {"code": "404", "message": "Resource not found"}})
                    .to_string()
                    .into_bytes(),
            });
        }
        if s.fail_with.as_deref() == Some("content_filter") {
            return Some(Answer {
                status: 400,
                headers: vec![("content-type", "application/json".into())],
                body: json!({"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.", "type": null, "param": "prompt", "code": "content_filter", "status": 400}}).to_string().into_bytes(),
            });
        }
        None
    }

    /// STS `AssumeRoleWithWebIdentity`: fresh keys for `sts_lifetime_s`.
    pub(super) fn sts(&self, req: &Request, s: &SimSettings) -> Answer {
        let form = String::from_utf8_lossy(&req.body);
        let field = |name: &str| {
            form.split('&')
                .find_map(|p| p.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .map(|v| String::from_utf8_lossy(&skygate_config::percent_decode(v)).into_owned())
        };
        self.stats.sts_calls.fetch_add(1, Ordering::Relaxed);
        let token = field("WebIdentityToken").unwrap_or_default();
        if token.is_empty() || field("RoleArn").is_none() {
            return Answer {
                status: 400,
                headers: vec![("content-type", "text/xml".into())],
                body: b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>No web identity token</Message></Error></ErrorResponse>".to_vec(),
            };
        }
        let n = self.stats.sts_calls.load(Ordering::Relaxed);
        let key = format!("ASIASIM{n:08}");
        let secret = format!("sim-secret-{:016x}", rand::random::<u64>());
        let until = SystemTime::now() + Duration::from_secs(s.sts_lifetime_s);
        lock(&self.issued).insert(key.clone(), (secret.clone(), until));
        let expiration = {
            let secs = until
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            iso8601(secs)
        };
        let xml = format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey><SessionToken>sim-session-{n}</SessionToken><Expiration>{expiration}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
        );
        Answer {
            status: 200,
            headers: vec![("content-type", "text/xml".into())],
            body: xml.into_bytes(),
        }
    }

    /// One platform call (auth and placement already passed).
    pub(super) async fn platform_answer<K: Sink>(
        &self,
        stream: &mut K,
        req: &Request,
        s: &SimSettings,
        instance: u64,
        cold: bool,
    ) -> std::io::Result<bool> {
        let mut sim_headers = vec![
            ("x-sim-backend", self.name.clone()),
            ("x-sim-instance", format!("{}-{instance}", self.name)),
            ("x-sim-cold-start", cold.to_string()),
            ("x-amzn-requestid", request_id()),
        ];
        let path = req.path.split('?').next().unwrap_or("");
        let answer = match self.platform {
            Platform::AwsLambda => {
                let streamed = path.ends_with("/response-streaming-invocations");
                if !(path.starts_with("/2015-03-31/functions/") && path.ends_with("/invocations")
                    || streamed)
                    || req.method != "POST"
                {
                    aws_error(404, "UnknownOperationException", "Unknown operation")
                } else if streamed {
                    return self.lambda_stream(stream, req, s, sim_headers, cold).await;
                } else {
                    self.lambda_invoke(req, s, cold)
                }
            }
            Platform::Bedrock => {
                let converse = path.starts_with("/model/") && path.ends_with("/converse");
                let converse_stream =
                    path.starts_with("/model/") && path.ends_with("/converse-stream");
                if req.method != "POST" || !(converse || converse_stream) {
                    aws_error(404, "UnknownOperationException", "Unknown operation")
                } else if let Some(a) = bedrock_invalid(req, s) {
                    a
                } else if converse_stream {
                    return self.bedrock_stream(stream, req, s, sim_headers).await;
                } else {
                    self.bedrock_converse(req, s).await
                }
            }
            Platform::AwsLambdaUrl => {
                if s.fail_with.as_deref() == Some("function")
                    || rand::random::<f64>() < s.error_rate
                {
                    url_error(502, "ServiceException", "Internal Server Error")
                } else if path.ends_with("/chat/completions") {
                    return self.openai_chat(stream, req, s, sim_headers).await;
                } else {
                    self.generic(req, s)
                }
            }
            Platform::Sagemaker => {
                let streamed = path.ends_with("/invocations-response-stream");
                let ok_path =
                    path.starts_with("/endpoints/") && (path.ends_with("/invocations") || streamed);
                if req.method != "POST" || !ok_path {
                    aws_error(404, "UnknownOperationException", "Unknown operation")
                } else if let Some(kind) = s.fail_with.as_deref() {
                    sagemaker_failure(kind)
                } else if rand::random::<f64>() < s.error_rate {
                    sagemaker_failure("ModelError")
                } else if streamed {
                    return self.sagemaker_stream(stream, req, s, sim_headers).await;
                } else {
                    let event: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                    Answer {
                        status: 200,
                        headers: vec![
                            ("content-type", "application/json".into()),
                            ("x-amzn-invoked-production-variant", "AllTraffic".into()),
                        ],
                        body: self
                            .function_result(&event, s, req.body.len())
                            .to_string()
                            .into_bytes(),
                    }
                }
            }
            Platform::AzureFunctions => {
                if s.fail_with.as_deref() == Some("function")
                    || rand::random::<f64>() < s.error_rate
                {
                    Answer {
                        status: 500,
                        headers: Vec::new(),
                        body: Vec::new(),
                    }
                } else {
                    self.generic(req, s)
                }
            }
            Platform::Openwhisk => self.openwhisk(req, s),
            Platform::GcpCloudRun => {
                if s.fail_with.as_deref() == Some("function")
                    || rand::random::<f64>() < s.error_rate
                {
                    Answer {
                        status: 500,
                        headers: vec![("content-type", "text/plain".into())],
                        body: b"Internal Server Error".to_vec(),
                    }
                } else if path.ends_with("/chat/completions") {
                    return self.openai_chat(stream, req, s, sim_headers).await;
                } else {
                    self.generic(req, s)
                }
            }
            Platform::Openai | Platform::AzureOpenai => {
                aws_error(500, "InternalFailure", "answered as the OpenAI API")
            }
        };
        if answer.status >= 500 {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        sim_headers.extend(answer.headers);
        stream
            .full(answer.status, &sim_headers, &answer.body)
            .await?;
        Ok(true)
    }

    /// The simulated function: an OpenAI chat request gets a completion,
    /// anything else the generic function answer.
    fn function_result(&self, event: &Value, s: &SimSettings, raw_len: usize) -> Value {
        if event.get("messages").is_some() {
            let model = event.get("model").and_then(Value::as_str).unwrap_or("sim");
            let c = completion(event, s, model, raw_len);
            return chat_response(&self.name, &c);
        }
        json!({"backend": self.name, "bytes": raw_len})
    }

    fn lambda_invoke(&self, req: &Request, s: &SimSettings, cold: bool) -> Answer {
        let Ok(event) = serde_json::from_slice::<Value>(&req.body) else {
            return aws_error(
                400,
                "InvalidRequestContentException",
                "Could not parse request body into json",
            );
        };
        let mut headers = vec![
            ("content-type", "application/json".to_string()),
            ("x-amz-executed-version", "$LATEST".to_string()),
        ];
        let tail = req
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-amz-log-type") && v == "Tail");
        if tail {
            headers.push(("x-amz-log-result", log_tail(cold, "sim")));
        }
        let fail =
            s.fail_with.as_deref() == Some("function") || rand::random::<f64>() < s.error_rate;
        if fail {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            headers.push(("x-amz-function-error", "Unhandled".into()));
            return Answer {
                status: 200,
                headers,
                body: json!({"errorMessage": "simulated failure in the handler", "errorType": "RuntimeError", "stackTrace": []}).to_string().into_bytes(),
            };
        }
        if let Some(kind) = s.fail_with.as_deref() {
            return aws_error(500, kind, "simulated platform failure");
        }
        let http_event = event.get("version").and_then(Value::as_str) == Some("2.0")
            && event.get("requestContext").is_some();
        let body = if http_event {
            let inner = event.get("body").and_then(Value::as_str).unwrap_or("");
            let raw = if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                B64.decode(inner).unwrap_or_default()
            } else {
                inner.as_bytes().to_vec()
            };
            let raw_path = event.get("rawPath").and_then(Value::as_str).unwrap_or("");
            if let Some(a) = workload(raw_path, &raw) {
                let envelope = json!({
                    "statusCode": a.status,
                    "headers": {"content-type": "application/json", "x-function": "sim"},
                    "body": String::from_utf8_lossy(&a.body),
                    "isBase64Encoded": false,
                });
                return Answer {
                    status: 200,
                    headers,
                    body: envelope.to_string().into_bytes(),
                };
            }
            let parsed: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let mut result = self.function_result(&parsed, s, raw.len());
            if parsed.get("messages").is_none() {
                result["path"] = event.get("rawPath").cloned().unwrap_or(Value::Null);
                result["method"] = event
                    .pointer("/requestContext/http/method")
                    .cloned()
                    .unwrap_or(Value::Null);
                result["base64"] = event.get("isBase64Encoded").cloned().unwrap_or(Value::Null);
            }
            json!({
                "statusCode": 200,
                "headers": {"content-type": "application/json", "x-function": "sim"},
                "body": result.to_string(),
                "isBase64Encoded": false,
            })
        } else {
            self.function_result(&event, s, req.body.len())
        };
        Answer {
            status: 200,
            headers,
            body: body.to_string().into_bytes(),
        }
    }

    async fn lambda_stream<K: Sink>(
        &self,
        stream: &mut K,
        req: &Request,
        s: &SimSettings,
        mut headers: Vec<(&'static str, String)>,
        cold: bool,
    ) -> std::io::Result<bool> {
        let Ok(event) = serde_json::from_slice::<Value>(&req.body) else {
            let a = aws_error(
                400,
                "InvalidRequestContentException",
                "Could not parse request body into json",
            );
            headers.extend(a.headers);
            stream.full(a.status, &headers, &a.body).await?;
            return Ok(true);
        };
        headers.push(("content-type", "application/vnd.amazon.eventstream".into()));
        headers.push(("x-amz-executed-version", "$LATEST".into()));
        stream.stream_head(200, &headers).await?;
        let model = event.get("model").and_then(Value::as_str).unwrap_or("sim");
        let c = completion(&event, s, model, req.body.len());
        if s.fail_with.as_deref() == Some("function_at_start") {
            // The handler throws before it writes anything.
            let done = json!({"ErrorCode": "Unhandled", "ErrorDetails": "simulated failure before the first byte", "LogResult": log_tail(cold, "sim")});
            stream
                .chunk(&encode_event("InvokeComplete", done.to_string().as_bytes()))
                .await?;
            stream.end().await?;
            return Ok(true);
        }
        let fail_at = (s.fail_with.as_deref() == Some("function")
            || rand::random::<f64>() < s.cut_rate)
            .then_some(c.tokens / 2);
        for piece in sse_chunks(&c, &format!("chatcmpl-{}", rand::random::<u32>())) {
            if let Some(at) = fail_at {
                if piece.index == at {
                    // The last payload and the failure in one write, as a
                    // busy network delivers them: both must reach the client.
                    let done = json!({"ErrorCode": "Function.ResponseStreamingError", "ErrorDetails": "simulated failure mid-stream", "LogResult": log_tail(cold, "sim")});
                    let mut both = encode_event("PayloadChunk", piece.text.as_bytes());
                    both.extend(encode_event("InvokeComplete", done.to_string().as_bytes()));
                    stream.chunk(&both).await?;
                    stream.end().await?;
                    return Ok(true);
                }
            }
            if s.token_delay_ms > 0 && piece.index > 0 {
                tokio::time::sleep(Duration::from_millis(s.token_delay_ms)).await;
            }
            stream
                .chunk(&encode_event("PayloadChunk", piece.text.as_bytes()))
                .await?;
        }
        let done = json!({"LogResult": log_tail(cold, "sim")});
        stream
            .chunk(&encode_event("InvokeComplete", done.to_string().as_bytes()))
            .await?;
        linger(s).await;
        stream.end().await?;
        Ok(true)
    }

    async fn bedrock_converse(&self, req: &Request, s: &SimSettings) -> Answer {
        if let Some(kind) = s.fail_with.as_deref() {
            return bedrock_failure(kind);
        }
        if rand::random::<f64>() < s.error_rate {
            return aws_error(500, "InternalServerException", "simulated model failure");
        }
        if s.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(s.latency_ms)).await;
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let n = max_tokens(&body, s);
        let text: String = (0..n).map(token).collect();
        let input = (req.body.len() / 4).max(1) as u64;
        let stop = if n < s.tokens {
            "max_tokens"
        } else {
            "end_turn"
        };
        Answer {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: json!({
                "output": {"message": {"role": "assistant", "content": [{"text": text.trim_end()}]}},
                "stopReason": stop,
                "usage": {"inputTokens": input, "outputTokens": n, "totalTokens": input + u64::from(n)},
                "metrics": {"latencyMs": s.latency_ms},
            })
            .to_string()
            .into_bytes(),
        }
    }

    async fn bedrock_stream<K: Sink>(
        &self,
        stream: &mut K,
        req: &Request,
        s: &SimSettings,
        mut headers: Vec<(&'static str, String)>,
    ) -> std::io::Result<bool> {
        // `stream:NAME`: the stream starts, then fails with NAME at once.
        let fail_at_start = s
            .fail_with
            .as_deref()
            .and_then(|f| f.strip_prefix("stream:"));
        if let (Some(kind), None) = (s.fail_with.as_deref(), fail_at_start) {
            let a = bedrock_failure(kind);
            headers.extend(a.headers);
            stream.full(a.status, &headers, &a.body).await?;
            return Ok(true);
        }
        headers.push(("content-type", "application/vnd.amazon.eventstream".into()));
        stream.stream_head(200, &headers).await?;
        if let Some(kind) = fail_at_start {
            let e = encode(
                &[
                    (":message-type", "exception"),
                    (":exception-type", kind),
                    (":content-type", "application/json"),
                ],
                br#"{"message":"simulated failure at the stream's start"}"#,
            );
            stream.chunk(&e).await?;
            stream.end().await?;
            return Ok(true);
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let n = max_tokens(&body, s);
        let cut_at = (rand::random::<f64>() < s.cut_rate).then_some(n / 2);
        stream
            .chunk(&encode_event("messageStart", br#"{"role":"assistant"}"#))
            .await?;
        for i in 0..n {
            if s.token_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(s.token_delay_ms)).await;
            }
            if cut_at == Some(i) {
                // This token and the failure in one write.
                let delta = json!({"contentBlockIndex": 0, "delta": {"text": token(i)}});
                let mut e = encode_event("contentBlockDelta", delta.to_string().as_bytes());
                e.extend(encode(
                    &[
                        (":message-type", "exception"),
                        (":exception-type", "modelStreamErrorException"),
                        (":content-type", "application/json"),
                    ],
                    br#"{"message":"simulated model failure mid-stream"}"#,
                ));
                stream.chunk(&e).await?;
                stream.end().await?;
                return Ok(true);
            }
            let delta = json!({"contentBlockIndex": 0, "delta": {"text": token(i)}});
            stream
                .chunk(&encode_event(
                    "contentBlockDelta",
                    delta.to_string().as_bytes(),
                ))
                .await?;
        }
        stream
            .chunk(&encode_event(
                "contentBlockStop",
                br#"{"contentBlockIndex":0}"#,
            ))
            .await?;
        let stop = if n < s.tokens {
            "max_tokens"
        } else {
            "end_turn"
        };
        stream
            .chunk(&encode_event(
                "messageStop",
                json!({"stopReason": stop}).to_string().as_bytes(),
            ))
            .await?;
        let input = (req.body.len() / 4).max(1) as u64;
        let meta = json!({"usage": {"inputTokens": input, "outputTokens": n, "totalTokens": input + u64::from(n)}, "metrics": {"latencyMs": 1}});
        stream
            .chunk(&encode_event("metadata", meta.to_string().as_bytes()))
            .await?;
        linger(s).await;
        stream.end().await?;
        Ok(true)
    }
}

impl Sim {
    /// A generic function's answer (raw HTTP platforms).
    fn generic(&self, req: &Request, s: &SimSettings) -> Answer {
        let path = req.path.split('?').next().unwrap_or("");
        if path.ends_with("/embeddings") {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            return Answer {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
                body: super::embeddings_response(&body, s.embedding_dim)
                    .to_string()
                    .into_bytes(),
            };
        }
        if let Some(a) = workload(path, &req.body) {
            return a;
        }
        let event: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut result = self.function_result(&event, s, req.body.len());
        if event.get("messages").is_none() {
            result["path"] = json!(req.path.split('?').next().unwrap_or(""));
            result["method"] = json!(req.method);
        }
        Answer {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: result.to_string().into_bytes(),
        }
    }

    /// An OpenAI chat answer over plain HTTP (a function URL's function
    /// that speaks OpenAI): JSON, or SSE when the request streams.
    async fn openai_chat<K: Sink>(
        &self,
        stream: &mut K,
        req: &Request,
        s: &SimSettings,
        mut headers: Vec<(&'static str, String)>,
    ) -> std::io::Result<bool> {
        let event: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let model = event.get("model").and_then(Value::as_str).unwrap_or("sim");
        let c = completion(&event, s, model, req.body.len());
        if event.get("stream").and_then(Value::as_bool) == Some(true) {
            headers.push(("content-type", "text/event-stream".into()));
            stream.stream_head(200, &headers).await?;
            for piece in sse_chunks(&c, &format!("chatcmpl-{}", rand::random::<u32>())) {
                if s.token_delay_ms > 0 && piece.index > 0 {
                    tokio::time::sleep(Duration::from_millis(s.token_delay_ms)).await;
                }
                stream.chunk(piece.text.as_bytes()).await?;
            }
            stream.end().await?;
            return Ok(true);
        }
        headers.push(("content-type", "application/json".into()));
        stream
            .full(
                200,
                &headers,
                chat_response(&self.name, &c).to_string().as_bytes(),
            )
            .await?;
        Ok(true)
    }

    async fn sagemaker_stream<K: Sink>(
        &self,
        stream: &mut K,
        req: &Request,
        s: &SimSettings,
        mut headers: Vec<(&'static str, String)>,
    ) -> std::io::Result<bool> {
        let event: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let model = event.get("model").and_then(Value::as_str).unwrap_or("sim");
        let c = completion(&event, s, model, req.body.len());
        headers.push(("content-type", "application/vnd.amazon.eventstream".into()));
        stream.stream_head(200, &headers).await?;
        let cut_at = (rand::random::<f64>() < s.cut_rate).then_some(c.tokens / 2);
        for piece in sse_chunks(&c, &format!("chatcmpl-{}", rand::random::<u32>())) {
            if cut_at == Some(piece.index) {
                let e = encode(
                    &[(":message-type", "exception"), (":exception-type", "ModelStreamError"), (":content-type", "application/json")],
                    br#"{"Message":"simulated model failure mid-stream","ErrorCode":"ModelStreamError"}"#,
                );
                stream.chunk(&e).await?;
                stream.end().await?;
                return Ok(true);
            }
            if s.token_delay_ms > 0 && piece.index > 0 {
                tokio::time::sleep(Duration::from_millis(s.token_delay_ms)).await;
            }
            stream
                .chunk(&encode_event("PayloadPart", piece.text.as_bytes()))
                .await?;
        }
        stream.end().await?;
        Ok(true)
    }

    fn openwhisk(&self, req: &Request, s: &SimSettings) -> Answer {
        let path = req.path.split('?').next().unwrap_or("");
        let json = |status: u16, v: Value| Answer {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: v.to_string().into_bytes(),
        };
        if path.starts_with("/api/v1/web/") {
            return self.generic(req, s);
        }
        let action = path
            .strip_prefix("/api/v1/namespaces/")
            .and_then(|r| r.split_once("/actions/"))
            .filter(|(ns, a)| !ns.is_empty() && !a.is_empty());
        if action.is_none() || req.method != "POST" {
            return json(
                404,
                json!({"error": "The requested resource does not exist.", "code": "sim"}),
            );
        }
        let Ok(params) = serde_json::from_slice::<Value>(&req.body) else {
            return json(
                400,
                json!({"error": "The request content was malformed.", "code": "sim"}),
            );
        };
        match s.fail_with.as_deref() {
            Some("function") => return json(502, json!({"error": "simulated action failure"})),
            Some("timeout") => {
                return json(
                    202,
                    json!({"activationId": format!("{:032x}", rand::random::<u128>())}),
                )
            }
            _ => {}
        }
        if rand::random::<f64>() < s.error_rate {
            return json(502, json!({"error": "simulated action failure"}));
        }
        json(200, self.function_result(&params, s, req.body.len()))
    }
}

/// A demo workload's answer (`anomaly-score`, `image-recognition`), as the
/// function's HTTP answer.
fn workload(path: &str, body: &[u8]) -> Option<Answer> {
    let (status, v) = match super::workloads::answer(path, body)? {
        Ok(v) => (200, v),
        Err(why) => (
            400,
            json!({"error": {"message": why, "type": "invalid_request_error", "code": "bad_input"}}),
        ),
    };
    Some(Answer {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: v.to_string().into_bytes(),
    })
}

/// Holds a finished event stream open for `linger_ms`.
async fn linger(s: &SimSettings) {
    if s.linger_ms > 0 {
        tokio::time::sleep(Duration::from_millis(s.linger_ms)).await;
    }
}

fn header(req: &Request, name: &str) -> String {
    req.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The simulated Google: an ES256 key made at start signs the ID tokens it
/// issues (from its token endpoint and metadata server) and checks the
/// ones Cloud Run receives. (Google signs with RS256; the gateway never
/// verifies ID tokens, only carries them.)
pub struct GcpSim {
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
}

impl GcpSim {
    pub fn generate() -> Option<Self> {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).ok()?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .ok()?;
        Some(Self {
            encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            decoding: jsonwebtoken::DecodingKey::from_ec_der(pair.public_key().as_ref()),
        })
    }

    fn issue(&self, audience: &str, subject: &str, lifetime: u64) -> Option<String> {
        let now = now_secs();
        let claims = json!({
            "iss": "https://accounts.google.com", "aud": audience, "sub": subject,
            "email": subject, "iat": now, "exp": now + lifetime,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &self.encoding,
        )
        .ok()
    }
}

/// The public key of a service-account key file, to check its assertions.
fn sa_public_key(path: &std::path::Path) -> Option<(jsonwebtoken::DecodingKey, String)> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let pem = v.get("private_key")?.as_str()?;
    let email = v.get("client_email")?.as_str()?.to_string();
    let der = rustls_pemfile::pkcs8_private_keys(&mut pem.as_bytes())
        .next()?
        .ok()?
        .secret_pkcs8_der()
        .to_vec();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).ok()?;
    Some((
        jsonwebtoken::DecodingKey::from_rsa_der(pair.public().as_ref()),
        email,
    ))
}

impl Sim {
    /// Google's side of ID tokens: the token endpoint (`POST /token`, a
    /// service account's signed assertion in) and the metadata server's
    /// identity endpoint. `None`: not such a request.
    pub(super) fn gcp_identity(&self, req: &Request, s: &SimSettings) -> Option<Answer> {
        if self.platform != Platform::GcpCloudRun {
            return None;
        }
        let gcp = self.gcp.as_ref()?;
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let json_answer = |status: u16, v: Value| Answer {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: v.to_string().into_bytes(),
        };
        if req.method == "POST" && path == "/token" {
            self.stats.sts_calls.fetch_add(1, Ordering::Relaxed);
            let form = String::from_utf8_lossy(&req.body);
            let assertion = form
                .split('&')
                .find_map(|p| p.strip_prefix("assertion="))
                .unwrap_or("");
            let refuse = |why: &str| {
                json_answer(
                    400,
                    json!({"error": "invalid_grant", "error_description": why}),
                )
            };
            let Some((key, email)) = s.gcp_sa_key.as_deref().and_then(sa_public_key) else {
                return Some(refuse(
                    "no service account is known to this simulator (--gcp-sa-key)",
                ));
            };
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            v.validate_aud = false;
            v.set_required_spec_claims(&["exp", "iss"]);
            let claims = match jsonwebtoken::decode::<Value>(assertion, &key, &v) {
                Ok(d) => d.claims,
                Err(e) => return Some(refuse(&format!("Invalid JWT Signature: {e}"))),
            };
            if claims.get("iss").and_then(Value::as_str) != Some(email.as_str()) {
                return Some(refuse(
                    "the assertion is not from the known service account",
                ));
            }
            let Some(aud) = claims.get("target_audience").and_then(Value::as_str) else {
                return Some(refuse(
                    "no target_audience: this simulator only issues ID tokens",
                ));
            };
            let token = gcp.issue(aud, &email, s.sts_lifetime_s)?;
            return Some(json_answer(200, json!({ "id_token": token })));
        }
        if req.method == "GET"
            && path == "/computeMetadata/v1/instance/service-accounts/default/identity"
        {
            if header(req, "metadata-flavor") != "Google" {
                return Some(json_answer(
                    403,
                    json!({"error": "Missing Metadata-Flavor:Google header."}),
                ));
            }
            self.stats.sts_calls.fetch_add(1, Ordering::Relaxed);
            let aud = query
                .split('&')
                .find_map(|p| p.strip_prefix("audience="))
                .map(|a| String::from_utf8_lossy(&skygate_config::percent_decode(a)).into_owned())
                .unwrap_or_default();
            if aud.is_empty() {
                return Some(json_answer(400, json!({"error": "audience is required"})));
            }
            let token = gcp.issue(
                &aud,
                "default@skygate-sim.iam.gserviceaccount.com",
                s.sts_lifetime_s,
            )?;
            return Some(Answer {
                status: 200,
                headers: vec![("content-type", "text/plain".into())],
                body: token.into_bytes(),
            });
        }
        None
    }

    /// Cloud Run's check: a Bearer ID token it signed, unexpired, for this
    /// service's audience.
    fn cloud_run_check(&self, req: &Request, s: &SimSettings) -> Option<Answer> {
        let deny = |status: u16| {
            self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            Some(Answer {
                status,
                headers: vec![("content-type", "text/html".into())],
                body: b"<html><body>Error: Unauthorized. Your client does not have permission to the requested URL.</body></html>".to_vec(),
            })
        };
        let Some(gcp) = self.gcp.as_ref() else {
            return deny(500);
        };
        let auth = header(req, "authorization");
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return deny(401);
        };
        let audience = s
            .gcp_audience
            .clone()
            .or_else(|| self.self_url.get().cloned())
            .unwrap_or_default();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&[audience]);
        v.leeway = 0;
        match jsonwebtoken::decode::<Value>(token, &gcp.decoding, &v) {
            Ok(_) => None,
            Err(_) => deny(401),
        }
    }
}

/// A function URL's own error: `{"Message": ...}`.
fn url_error(status: u16, kind: &str, message: &str) -> Answer {
    Answer {
        status,
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-amzn-errortype", kind.into()),
        ],
        body: json!({ "Message": message }).to_string().into_bytes(),
    }
}

fn azure_functions_check(req: &Request, s: &SimSettings) -> Option<Answer> {
    let key = header(req, "x-functions-key");
    let code = req
        .path
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|p| p.strip_prefix("code=")))
        .map(|c| String::from_utf8_lossy(&skygate_config::percent_decode(c)).into_owned())
        .unwrap_or_default();
    if s.platform_keys.contains(&key) || s.platform_keys.contains(&code) {
        return None;
    }
    Some(Answer {
        status: 401,
        headers: Vec::new(),
        body: Vec::new(),
    })
}

fn openwhisk_check(req: &Request, s: &SimSettings) -> Option<Answer> {
    if req.path.starts_with("/api/v1/web/") {
        return None;
    }
    let auth = header(req, "authorization");
    let ok = auth
        .strip_prefix("Basic ")
        .and_then(|b| B64.decode(b.trim()).ok())
        .is_some_and(|d| {
            s.platform_keys
                .contains(&String::from_utf8_lossy(&d).into_owned())
        });
    if ok {
        return None;
    }
    Some(Answer {
        status: 401,
        headers: vec![("content-type", "application/json".into())],
        body: json!({"error": "The supplied authentication is invalid", "code": "sim"})
            .to_string()
            .into_bytes(),
    })
}

/// A SageMaker error by its exception name.
fn sagemaker_failure(kind: &str) -> Answer {
    if kind == "ModelError" {
        let mut a = aws_error(
            424,
            "ModelError",
            "Received server error (500) from primary with message \"simulated model failure\".",
        );
        a.body = json!({"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": 500, "OriginalMessage": "simulated model failure", "message": "Received server error (500) from primary with message \"simulated model failure\"."}).to_string().into_bytes();
        return a;
    }
    let status = match kind {
        "ValidationError" => 400,
        "ModelNotReadyException" => 429,
        "ServiceUnavailable" => 503,
        _ => 500,
    };
    aws_error(status, kind, "simulated SageMaker error")
}

/// A Bedrock error by its exception name, with the status Bedrock uses.
fn bedrock_failure(kind: &str) -> Answer {
    let status = match kind {
        "ThrottlingException" | "ModelNotReadyException" | "ServiceQuotaExceededException" => 429,
        "ValidationException" => 400,
        "AccessDeniedException" => 403,
        "ResourceNotFoundException" => 404,
        "ModelTimeoutException" => 408,
        "ModelErrorException" => 424,
        "ServiceUnavailableException" => 503,
        _ => 500,
    };
    aws_error(status, kind, "simulated Bedrock error")
}

/// Converse's validation: messages that alternate, starting with a user's,
/// each with text blocks.
fn bedrock_invalid(req: &Request, s: &SimSettings) -> Option<Answer> {
    let _ = s;
    let invalid = |m: &str| Some(aws_error(400, "ValidationException", m));
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return invalid("Malformed input request: not JSON");
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return invalid("Malformed input request: messages is required");
    };
    let mut last = "";
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if (i == 0 && role != "user") || role == last || !matches!(role, "user" | "assistant") {
            return invalid("A conversation must start with a user message and alternate user and assistant turns.");
        }
        last = role;
        let ok = m.get("content").and_then(Value::as_array).is_some_and(|c| {
            !c.is_empty()
                && c.iter()
                    .all(|b| b.get("text").is_some_and(Value::is_string))
        });
        if !ok {
            return invalid("Malformed input request: each message needs text content blocks");
        }
    }
    None
}

fn max_tokens(body: &Value, s: &SimSettings) -> u32 {
    body.pointer("/inferenceConfig/maxTokens")
        .and_then(Value::as_u64)
        .map_or(s.tokens, |m| (m as u32).min(s.tokens))
}

fn completion<'a>(
    event: &Value,
    s: &SimSettings,
    model: &'a str,
    raw_len: usize,
) -> Completion<'a> {
    let n = event
        .get("max_tokens")
        .or_else(|| event.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .map_or(s.tokens, |m| (m as u32).min(s.tokens));
    Completion {
        model,
        tokens: n,
        prompt_tokens: (raw_len / 4).max(1) as u64,
        include_usage: event
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        shape: super::shape::Shape::of(event),
    }
}

pub(super) struct Piece {
    pub(super) index: u32,
    pub(super) text: String,
}

/// The SSE events of a streamed completion, as a function would write them.
pub(super) fn sse_chunks(c: &Completion<'_>, id: &str) -> Vec<Piece> {
    let created = now_secs();
    let chunk = |index: u32, delta: &Value, finish: Option<&str>| {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": c.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let choices = c.shape.choices.max(1);
    let first: String = (0..choices)
        .map(|index| {
            let call_id = format!("call_{}", rand::random::<u32>());
            chunk(index, &c.shape.first_delta(&call_id), None)
        })
        .collect();
    let mut out = vec![Piece {
        index: 0,
        text: first,
    }];
    let words: Vec<String> = (0..c.tokens).map(token).collect();
    for piece in c.shape.pieces(&words) {
        out.push(Piece {
            index: out.len() as u32,
            text: (0..choices)
                .map(|index| chunk(index, &piece, None))
                .collect(),
        });
    }
    let finish = c.shape.finish_reason();
    let mut last: String = (0..choices)
        .map(|index| chunk(index, &json!({}), Some(finish)))
        .collect();
    if c.include_usage {
        let completion = c.completion_tokens();
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": c.model, "choices": [],
            "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": completion, "total_tokens": c.prompt_tokens + completion}});
        last.push_str(&format!("data: {v}\n\n"));
    }
    last.push_str("data: [DONE]\n\n");
    out.push(Piece {
        index: out.len() as u32,
        text: last,
    });
    out
}

/// Seconds since the epoch as `2015-08-30T12:36:00Z`.
fn iso8601(secs: u64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let (stamp, _) = sigv4::timestamps(t);
    // 20150830T123600Z → 2015-08-30T12:36:00Z
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}
