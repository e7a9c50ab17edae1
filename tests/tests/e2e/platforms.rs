//! Serverless platforms behind the OpenAI API: Bedrock (Converse,
//! ConverseStream) and AWS Lambda (Invoke raw and `http_event`,
//! InvokeWithResponseStream), each against `skygate sim --platform ...`,
//! which checks SigV4 as AWS does and answers in the platform's format.

use crate::harness::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const KEYS: &str = "credentials: { access_key_id: AKIDSKYGATESIM, secret_access_key: skygate-sim-secret-access-key }";

fn bedrock(url: &str, extra: &str) -> String {
    format!("{{ kind: bedrock, region: us-east-1, endpoint: \"{url}\", model_id: \"amazon.nova-micro-v1:0\", {KEYS}{extra} }}")
}

fn lambda(url: &str, extra: &str) -> String {
    format!("{{ kind: aws_lambda, region: eu-west-1, endpoint: \"{url}\", function: \"arn:aws:lambda:eu-west-1:123456789012:function:chat\", qualifier: live, {KEYS}{extra} }}")
}

fn chat_route(name: &str, model: &str, backend: &str) -> String {
    format!("  {name}: {{ match: {{ path: /v1/chat/completions, models: [{model}] }}, targets: [ {{ backend: {backend} }} ] }}\n")
}

/// A chat request Converse can take (Bedrock refuses an empty conversation).
fn ask(g: &Gateway, model: &str) -> Resp {
    g.post(
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "hello"}]}),
    )
}

fn python() -> String {
    let python = std::env::var("SKYGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import openai, botocore"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "`{python}` cannot import openai and botocore: run the suite with scripts/test.sh, which installs them in a venv"
    );
    python
}

#[test]
fn bedrock_and_lambda_serve_the_openai_sdk() {
    let br = Sim::start("br", &["--platform", "bedrock"]);
    let lam = Sim::start("lam", &["--platform", "aws-lambda"]);
    let config = format!(
        "{auth}backends:\n  br: {b}\n  lam: {l}\n  lams: {ls}\nroutes:\n{r1}{r2}{r3}",
        auth = auth_section(),
        b = bedrock(&br.url, ""),
        l = lambda(&lam.url, ""),
        ls = lambda(&lam.url, ", response_stream: true"),
        r1 = chat_route("nova", "nova", "br"),
        r2 = chat_route("fn", "fn", "lam"),
        r3 = chat_route("fns", "fns", "lams"),
    );
    let g = Gateway::start(&config);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/openai_platforms.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("http://{}/v1", g.addr))
        .arg(CLIENT_KEY)
        .arg("nova,fn,fns")
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "{text}\n--- gateway:\n{}",
        g.proc.stderr()
    );
    assert!(text.contains("platforms sdk: ok"), "{text}");

    // Bedrock got Converse calls, on the model id's path (its `:` sent as
    // %3A), signed for `bedrock` in the backend's region.
    let reqs = br.requests();
    let paths: Vec<&str> = reqs.iter().filter_map(|r| r["path"].as_str()).collect();
    assert!(
        paths.contains(&"/model/amazon.nova-micro-v1%3A0/converse"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/model/amazon.nova-micro-v1%3A0/converse-stream"),
        "{paths:?}"
    );
    let auth = header_of(&reqs[0], "authorization");
    assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
    assert_eq!(br.stats()["auth_failures"], 0);
    // The Converse body is the translation, not the client's JSON.
    let body = body_of(&reqs[0]);
    assert_eq!(body["system"], json!([{"text": "be brief"}]), "{body}");
    assert_eq!(body["inferenceConfig"]["maxTokens"], 4);
    // Lambda: Invoke for `fn` (and for `fns` when not streaming),
    // InvokeWithResponseStream for `fns` streams; the qualifier in the query.
    let paths: Vec<String> = lam
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect();
    let arn = "arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Achat";
    assert!(
        paths.contains(&format!(
            "/2015-03-31/functions/{arn}/invocations?Qualifier=live"
        )),
        "{paths:?}"
    );
    assert!(
        paths.contains(&format!(
            "/2021-11-15/functions/{arn}/response-streaming-invocations?Qualifier=live"
        )),
        "{paths:?}"
    );
    assert_eq!(lam.stats()["auth_failures"], 0);
}

fn header_of(req: &Value, name: &str) -> String {
    req["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn body_of(req: &Value) -> Value {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(req["body_b64"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// Bedrock's errors reach clients as the OpenAI status and type they expect,
/// and a stream that fails mid-way ends with an error event.
#[test]
fn bedrock_errors_map_to_openai_errors() {
    let br = Sim::start("br", &["--platform", "bedrock"]);
    let config = format!(
        "{auth}backends:\n  br: {b}\nroutes:\n{r}",
        auth = auth_section(),
        b = bedrock(&br.url, ", breaker: { enabled: false }"),
        r = chat_route("nova", "nova", "br"),
    );
    let g = Gateway::start(&config);
    // Throttling last: a 429 holds the backend for its retry-after.
    for (kind, status, code) in [
        ("ValidationException", 400, "invalid_request"),
        ("AccessDeniedException", 502, "backend_auth_failed"),
        ("ModelTimeoutException", 504, "backend_timeout"),
        ("InternalServerException", 502, "backend_error"),
        ("ModelNotReadyException", 503, "backend_not_ready"),
    ] {
        br.set(json!({ "fail_with": kind }));
        let r = ask(&g, "nova");
        r.assert_error(status, code);
        assert!(r.text().contains(kind), "{}", r.text());
    }
    br.set(json!({ "fail_with": "ThrottlingException" }));
    let r = ask(&g, "nova");
    r.assert_error(429, "throttled");
    assert!(r.header("retry-after").is_some());
    // A request Converse cannot express is refused before any call.
    br.set(json!({ "fail_with": null }));
    std::thread::sleep(Duration::from_millis(1100));
    let before = br.stats()["requests"].as_u64().unwrap();
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "nova", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]}),
    );
    r.assert_error(400, "invalid_request");
    assert!(r.text().contains("tools"), "{}", r.text());
    assert_eq!(br.stats()["requests"].as_u64().unwrap(), before);
    // Mid-stream: the model fails after its first tokens.
    br.set(json!({ "cut_rate": 1.0 }));
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "nova", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    );
    assert_eq!(r.status, 200);
    let last = r.text();
    // Every token sent before the failure reached the client, the one that
    // came in the same read as the failure included: 16 tokens, cut at 8.
    let tokens = last.matches("\"delta\":{\"content\"").count();
    assert_eq!(tokens, 9, "{last}");
    assert!(
        last.trim_end().ends_with('}')
            && last.contains("event: error")
            && last.contains("modelStreamErrorException"),
        "{last}"
    );
    assert!(!last.contains("[DONE]"));
    // A stream that fails before its first token is a failed attempt (here
    // a throttled one: 429), never a 200 holding only an error.
    br.set(json!({ "cut_rate": 0.0, "fail_with": "stream:throttlingException" }));
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "nova", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
}

/// Lambda: function errors are 502s naming the function's error type (never
/// a 200), `http_event` carries binary bodies both ways, the log tail shows
/// cold starts, and a streamed function that fails ends with an error event.
#[test]
fn lambda_payloads_errors_and_cold_starts() {
    let lam = Sim::start(
        "lam",
        &["--platform", "aws-lambda", "--cold-start-ms", "20"],
    );
    let config = format!(
        "{auth}backends:\n  lam: {l}\n  lams: {ls}\n  img: {{ kind: aws_lambda, region: eu-west-1, endpoint: \"{url}\", function: image-recognition, payload: http_event, {KEYS} }}\nroutes:\n{r1}{r2}  img: {{ match: {{ path_prefix: /v1/functions/image-recognition }}, targets: [ {{ backend: img }} ] }}\n",
        auth = auth_section(),
        l = lambda(&lam.url, ", log_tail: true, breaker: { enabled: false }"),
        ls = lambda(&lam.url, ", response_stream: true"),
        url = lam.url,
        r1 = chat_route("fn", "fn", "lam"),
        r2 = chat_route("fns", "fns", "lams"),
    );
    let g = Gateway::start(&config);
    // The first call starts an instance: the log tail says so.
    let r = ask(&g, "fn");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    let r = ask(&g, "fn");
    assert_eq!(r.status, 200);
    let log = g.access_log(2);
    let cold: Vec<bool> = log
        .iter()
        .map(|l| l["cold_start"].as_bool().unwrap())
        .collect();
    assert_eq!(cold, [true, false], "{log:?}");
    assert_eq!(
        g.metric("skygate_backend_cold_starts_total{backend=\"lam\"}"),
        Some(1.0)
    );
    let status = g.backend_status("lam");
    assert_eq!(status["cold_starts"], 1);
    assert!(status["last_cold_start_unix_ms"].as_u64().is_some());
    assert!(header_of(&lam.requests()[0], "x-amz-log-type") == "Tail");
    // The log tail is the gateway's, not the client's.
    assert!(r.header("x-amz-log-result").is_none());

    // http_event: a binary body goes base64 in the event and the function's
    // statusCode, headers and body come back.
    let png = [0x89u8, b'P', b'N', b'G', 0, 1, 2, 0xff];
    let r = g.call(
        "POST",
        "/v1/functions/image-recognition/v2?threshold=0.5",
        &[
            ("authorization", &format!("Bearer {CLIENT_KEY}")),
            ("content-type", "image/png"),
        ],
        &png,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-function"), Some("sim"));
    // The simulated image-recognition function saw all 8 bytes of the PNG.
    let v = r.json();
    assert_eq!(v["bytes"], 8);
    assert_eq!(v["format"], "png");
    assert_eq!(v["labels"].as_array().unwrap().len(), 3);
    let event = body_of(lam.requests().last().unwrap());
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["rawPath"], "/v1/functions/image-recognition/v2");
    assert_eq!(event["rawQueryString"], "threshold=0.5");
    assert_eq!(event["headers"]["content-type"], "image/png");
    assert!(event["headers"].get("authorization").is_none(), "{event}");

    // A function error: 502 with the function's error type.
    lam.set(json!({ "fail_with": "function" }));
    let r = ask(&g, "fn");
    r.assert_error(502, "RuntimeError");
    assert!(
        r.text().contains("simulated failure in the handler"),
        "{}",
        r.text()
    );
    // The same failure mid-stream: the stream ends with an error event.
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "fns", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    // The payload that came in the same read as the failure was delivered
    // before the error event (token 7 of 16 is "today").
    assert!(text.contains("\"content\":\"today \""), "{text}");
    assert!(
        text.find("today").unwrap() < text.find("event: error").unwrap(),
        "{text}"
    );
    assert!(
        text.contains("event: error") && text.contains("Function.ResponseStreamingError"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));
    // Lambda's own throttling is a 429.
    lam.set(json!({ "fail_with": null, "throttle_rate": 1.0 }));
    ask(&g, "fn").assert_error(429, "throttled");
}

/// Wrong keys are refused by the platform (a 502 for the client, never the
/// platform's words about signatures as a 200), and a request Skygate
/// signed verifies under botocore's own SigV4 signer.
#[test]
fn signatures_verify_at_the_platform_and_under_botocore() {
    let br = Sim::start("br", &["--platform", "bedrock"]);
    let config = format!(
        "{auth}backends:\n  br: {b}\n  bad: {{ kind: bedrock, region: us-east-1, endpoint: \"{url}\", model_id: m, credentials: {{ access_key_id: AKIDSKYGATESIM, secret_access_key: wrong }} }}\nroutes:\n{r1}{r2}",
        auth = auth_section(),
        b = bedrock(&br.url, ""),
        url = br.url,
        r1 = chat_route("nova", "nova", "br"),
        r2 = chat_route("bad", "bad", "bad"),
    );
    let g = Gateway::start(&config);
    ask(&g, "bad").assert_error(502, "backend_auth_failed");
    assert!(br.stats()["auth_failures"].as_u64().unwrap() >= 1);
    br.set(json!({"cut_rate": 0.0}));
    let r = ask(&g, "nova");
    assert_eq!(r.status, 200, "{}", r.text());
    let req = br.requests().last().unwrap().clone();
    let headers: Value = req["headers"].clone();
    let script = r#"
import base64, datetime, json, sys
from unittest import mock
import botocore.auth, botocore.awsrequest, botocore.credentials
req = json.loads(sys.argv[1])
headers = {k: v for k, v in req["headers"]}
get = lambda n: next(v for k, v in headers.items() if k.lower() == n)
auth, amz_date = get("authorization"), get("x-amz-date")
signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
host = get("host")
body = base64.b64decode(req["body_b64"])
url = "http://" + host + req["path"]
r = botocore.awsrequest.AWSRequest(method=req["method"], url=url, data=body,
    headers={k: v for k, v in headers.items() if k.lower() in signed and k.lower() not in ("x-amz-date", "authorization")})
creds = botocore.credentials.Credentials("AKIDSKYGATESIM", "skygate-sim-secret-access-key")
when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
with mock.patch("botocore.auth.get_current_datetime", return_value=when):
    botocore.auth.SigV4Auth(creds, "bedrock", "us-east-1").add_auth(r)
ours = auth.split("Signature=")[1]
theirs = r.headers["Authorization"].split("Signature=")[1]
print("ours", ours, "botocore", theirs)
sys.exit(0 if ours == theirs else 1)
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(json!({"headers": headers, "method": req["method"], "path": req["path"], "body_b64": req["body_b64"]}).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "botocore disagrees: {}",
        output_text(&out)
    );
}

/// An OpenAI primary that is down, a Bedrock fallback: the request is
/// rewritten for the fallback's kind and served there.
#[test]
fn openai_primary_falls_back_to_bedrock() {
    let br = Sim::start("br", &["--platform", "bedrock"]);
    let dead = free_addr();
    let config = format!(
        "{auth}backends:\n  oa: {{ kind: openai, url: \"http://{dead}/v1\" }}\n  br: {b}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: oa, priority: 0 }}, {{ backend: br, priority: 1 }} ], retries: {{ max_attempts: 2 }} }}\n",
        auth = auth_section(),
        b = bedrock(&br.url, ""),
    );
    let g = Gateway::start(&config);
    let r = ask(&g, "m");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-skygate-backend"), Some("br"));
    assert_eq!(r.json()["object"], "chat.completion");
    let log = g.access_log(1);
    let tries = log[0]["tries"].as_array().unwrap();
    assert_eq!(tries.len(), 2, "{log:?}");
    assert_eq!(tries[0]["backend"], "oa");
    assert_eq!(tries[1]["backend"], "br");
}

/// Credentials from a web identity (as on EKS): exchanged at STS (the
/// simulator plays it), refreshed before they expire, in the background:
/// requests keep succeeding across rotations, signed with new keys.
#[test]
fn web_identity_credentials_rotate_without_a_restart() {
    let br = Sim::start("br", &["--platform", "bedrock", "--sts-lifetime-s", "4"]);
    let dir = TempDir::new();
    let token = dir.path.join("token");
    std::fs::write(&token, "eyJ-test-web-identity-token").unwrap();
    let config = format!(
        "{auth}backends:\n  br: {{ kind: bedrock, region: us-east-1, endpoint: \"{url}\", model_id: m }}\nroutes:\n{r}",
        auth = auth_section(),
        url = br.url,
        r = chat_route("nova", "nova", "br"),
    );
    let home = dir.path.to_string_lossy().to_string();
    let token = token.to_string_lossy().to_string();
    let g = Gateway::start_with_env(
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("HOME", &home),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/skygate"),
            ("AWS_ENDPOINT_URL_STS", &br.url),
        ],
    );
    assert!(eventually(Duration::from_secs(5), || ask(&g, "nova")
        .status
        == 200));
    let mut keys = std::collections::BTreeSet::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let r = ask(&g, "nova");
        assert_eq!(r.status, 200, "{}", r.text());
        let last = last_call(&br);
        let auth = header_of(&last, "authorization");
        let key = auth
            .split("Credential=")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(key.starts_with("ASIASIM"), "{auth}");
        assert!(!header_of(&last, "x-amz-security-token").is_empty());
        keys.insert(key);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(keys.len() >= 2, "no rotation in 6 s of 4 s keys: {keys:?}");
    assert_eq!(br.stats()["auth_failures"], 0);
    // Never logged.
    assert!(!g.proc.stderr().contains("sim-secret-"));
}

/// The shared credentials file is re-read when it changes: a rotated key
/// pair is used without a restart.
#[test]
fn shared_credentials_file_rotates() {
    let lam = Sim::start("lam", &["--platform", "aws-lambda"]);
    let dir = TempDir::new();
    let file = dir.path.join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIDSKYGATESIM\naws_secret_access_key = skygate-sim-secret-access-key\n",
    )
    .unwrap();
    let config = format!(
        "{auth}backends:\n  lam: {{ kind: aws_lambda, region: us-east-1, endpoint: \"{url}\", function: chat, breaker: {{ enabled: false }} }}\nroutes:\n{r}",
        auth = auth_section(),
        url = lam.url,
        r = chat_route("fn", "fn", "lam"),
    );
    let path = file.to_string_lossy().to_string();
    let g = Gateway::start_with_env(
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_SHARED_CREDENTIALS_FILE", &path),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    assert_eq!(ask(&g, "fn").status, 200);
    // Rotate: the platform accepts only the new pair; the file is rewritten.
    lam.set(json!({"aws_keys": {"AKIDROTATED": "rotated-secret"}}));
    ask(&g, "fn").assert_error(502, "backend_auth_failed");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIDROTATED\naws_secret_access_key = rotated-secret\n",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(8), || ask(&g, "fn").status == 200),
        "{}",
        g.proc.stderr()
    );
}

fn route_to(name: &str, prefix: &str, backend: &str) -> String {
    format!("  {name}: {{ match: {{ path_prefix: {prefix} }}, targets: [ {{ backend: {backend} }} ] }}\n")
}

/// Function URLs (IAM-signed), SageMaker endpoints (InvokeEndpoint and the
/// response stream), Azure OpenAI deployments, OpenWhisk actions and a
/// Cloud Run service (ID tokens) serve the OpenAI SDK, chat and streamed
/// chat.
#[test]
fn url_sagemaker_azure_and_openwhisk_serve_the_openai_sdk() {
    let url = Sim::start("url", &["--platform", "aws-lambda-url"]);
    let sm = Sim::start("sm", &["--platform", "sagemaker"]);
    let az = Sim::start("az", &["--platform", "azure-openai"]);
    let ow = Sim::start("ow", &["--platform", "openwhisk"]);
    let run = Sim::start("run", &["--platform", "gcp-cloud-run"]);
    let config = format!(
        "{auth}backends:\n  run: {{ kind: gcp_cloud_run, endpoint: \"{c}/v1\" }}\n  url: {{ kind: aws_lambda_url, region: us-east-1, endpoint: \"{u}/v1\", {KEYS} }}\n  sm: {{ kind: sagemaker, region: us-east-1, endpoint: \"{s}\", endpoint_name: chat-llm, target_variant: blue, response_stream: true, {KEYS} }}\n  az: {{ kind: azure_openai, endpoint: \"{a}\", api_key: sim-platform-key, deployments: {{ gpt: prod-gpt-4o }} }}\n  ow: {{ kind: openwhisk, endpoint: \"{o}\", namespace: guest, action: llm/chat, api_key: \"sim-uuid:sim-platform-key\" }}\nroutes:\n{r1}{r2}{r3}{r4}",
        auth = auth_section(),
        u = url.url,
        s = sm.url,
        a = az.url,
        o = ow.url,
        c = run.url,
        r1 = chat_route("url", "url", "url"),
        r2 = chat_route("sm", "sm", "sm"),
        r3 = chat_route("az", "gpt", "az"),
        r4 = chat_route("ow", "ow", "ow"),
    );
    let config = format!("{config}{}", chat_route("run", "run", "run"));
    let metadata = run.addr.to_string();
    let g = Gateway::start_with_env(
        &config,
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", ""),
            ("GCE_METADATA_HOST", &metadata),
        ],
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/openai_platforms.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("http://{}/v1", g.addr))
        .arg(CLIENT_KEY)
        .arg("url,sm,gpt,ow,run")
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "{text}\n--- gateway:\n{}",
        g.proc.stderr()
    );
    // What each platform received.
    let r = url.requests();
    assert_eq!(r[0]["path"], "/v1/chat/completions");
    assert!(header_of(&r[0], "authorization").contains("/us-east-1/lambda/aws4_request"));
    assert_eq!(header_of(&r[0], "x-amz-content-sha256").len(), 64);
    let paths: Vec<String> = sm
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        paths.contains(&"/endpoints/chat-llm/invocations".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/endpoints/chat-llm/invocations-response-stream".to_string()),
        "{paths:?}"
    );
    assert_eq!(
        header_of(&sm.requests()[0], "x-amzn-sagemaker-target-variant"),
        "blue"
    );
    let r = az.requests();
    assert_eq!(
        r[0]["path"],
        "/openai/deployments/prod-gpt-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(header_of(&r[0], "api-key"), "sim-platform-key");
    assert!(
        header_of(&r[0], "authorization").is_empty(),
        "the client's key never goes upstream"
    );
    let r = ow.requests();
    assert_eq!(
        r[0]["path"],
        "/api/v1/namespaces/guest/actions/llm/chat?blocking=true&result=true"
    );
    assert!(header_of(&r[0], "authorization").starts_with("Basic "));
    for s in [&url, &sm, &az, &ow, &run] {
        assert_eq!(s.stats()["auth_failures"], 0);
    }
}

/// Each platform's failures reach the client as the OpenAI error a client
/// expects; the backend's own bad credentials are a 502, never a 401 that
/// would blame the client's key.
#[test]
fn platform_failures_map_to_openai_errors() {
    let az = Sim::start("az", &["--platform", "azure-openai"]);
    let ow = Sim::start("ow", &["--platform", "openwhisk"]);
    let sm = Sim::start("sm", &["--platform", "sagemaker"]);
    let url = Sim::start("url", &["--platform", "aws-lambda-url"]);
    let config = format!(
        "{auth}backends:\n  az: {{ kind: azure_openai, endpoint: \"{a}\", api_key: sim-platform-key, breaker: {{ enabled: false }} }}\n  azbad: {{ kind: azure_openai, endpoint: \"{a}\", api_key: wrong }}\n  ow: {{ kind: openwhisk, endpoint: \"{o}\", action: chat, api_key: \"sim-uuid:sim-platform-key\", breaker: {{ enabled: false }} }}\n  sm: {{ kind: sagemaker, region: us-east-1, endpoint: \"{s}\", endpoint_name: e, response_stream: true, breaker: {{ enabled: false }}, {KEYS} }}\n  url: {{ kind: aws_lambda_url, region: us-east-1, endpoint: \"{u}\", breaker: {{ enabled: false }}, {KEYS} }}\nroutes:\n{r1}{r2}{r3}{r4}{r5}",
        auth = auth_section(),
        a = az.url,
        o = ow.url,
        s = sm.url,
        u = url.url,
        r1 = chat_route("az", "az", "az"),
        r2 = chat_route("azbad", "azbad", "azbad"),
        r3 = chat_route("ow", "ow", "ow"),
        r4 = chat_route("sm", "sm", "sm"),
        r5 = chat_route("url", "url", "url"),
    );
    let g = Gateway::start(&config);
    ask(&g, "azbad").assert_error(502, "backend_auth_failed");
    az.set(json!({"fail_with": "content_filter"}));
    let r = ask(&g, "az");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["error"]["code"],
        "content_filter",
        "Azure's own 400 passes on"
    );
    az.set(json!({"fail_with": null, "throttle_rate": 1.0}));
    let r = ask(&g, "az");
    r.assert_error(429, "throttled");
    assert_eq!(r.header("retry-after"), Some("1"));

    ow.set(json!({"fail_with": "function"}));
    ask(&g, "ow").assert_error(502, "action_error");
    ow.set(json!({"fail_with": "timeout"}));
    ask(&g, "ow").assert_error(504, "backend_timeout");
    ow.set(json!({"fail_with": null, "platform_keys": ["someone:else"]}));
    ask(&g, "ow").assert_error(502, "backend_auth_failed");
    sm.set(json!({"fail_with": "ModelError"}));
    let r = ask(&g, "sm");
    r.assert_error(502, "backend_error");
    assert!(r.text().contains("ModelError"), "{}", r.text());
    sm.set(json!({"fail_with": "ValidationError"}));
    ask(&g, "sm").assert_error(400, "invalid_request");
    sm.set(json!({"fail_with": null, "cut_rate": 1.0}));
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "sm", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.contains("event: error") && text.contains("ModelStreamError"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));

    url.set(json!({"fail_with": "function"}));
    ask(&g, "url").assert_error(502, "function_error");
    url.set(json!({"fail_with": null, "aws_keys": {}}));
    ask(&g, "url").assert_error(502, "backend_auth_failed");
}

/// Azure Functions: the function key in `x-functions-key`, or in `code=`;
/// a wrong key and a crashing function are 502s.
#[test]
fn azure_functions_keys_and_failures() {
    let af = Sim::start("af", &["--platform", "azure-functions"]);
    let config = format!(
        "{auth}backends:\n  hdr: {{ kind: azure_functions, endpoint: \"{a}/api/anomaly\", api_key: sim-platform-key }}\n  qry: {{ kind: azure_functions, endpoint: \"{a}/api/anomaly\", api_key: sim-platform-key, key_in: query }}\n  bad: {{ kind: azure_functions, endpoint: \"{a}/api/anomaly\", api_key: nope }}\nroutes:\n{r1}{r2}{r3}",
        auth = auth_section(),
        a = af.url,
        r1 = route_to("hdr", "/v1/functions/h", "hdr"),
        r2 = route_to("qry", "/v1/functions/q", "qry"),
        r3 = route_to("bad", "/v1/functions/b", "bad"),
    ) + "  both: { match: { path_prefix: /v1/functions/both }, targets: [ { backend: hdr }, { backend: qry } ] }\n";
    let config = config.replace(
        "api_key: sim-platform-key }\n  qry",
        "api_key: sim-platform-key, breaker: { consecutive_failures: 1 } }\n  qry",
    );
    let g = Gateway::start(&config);
    let auth = format!("Bearer {CLIENT_KEY}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = g.call(
        "POST",
        "/v1/functions/h/score?x=1",
        &h,
        br#"{"readings":[1,2]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/api/anomaly/score");
    let last = af.requests().last().unwrap().clone();
    assert_eq!(header_of(&last, "x-functions-key"), "sim-platform-key");
    assert_eq!(last["path"], "/api/anomaly/score?x=1");
    let r = g.call("POST", "/v1/functions/q/score?x=1", &h, b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let last = af.requests().last().unwrap().clone();
    assert_eq!(last["path"], "/api/anomaly/score?x=1&code=sim-platform-key");
    assert!(header_of(&last, "x-functions-key").is_empty());
    g.call("POST", "/v1/functions/b/score", &h, b"{}")
        .assert_error(502, "backend_auth_failed");
    // The function's own failure (an unhandled exception: 500) is its
    // answer, passed on as it is: not run again on the route's other
    // target, and no failure for the breaker, which one failure would open.
    af.set(json!({"fail_with": "function"}));
    let seen = af.requests().len();
    for _ in 0..3 {
        let r = g.call("POST", "/v1/functions/both/score", &h, b"{}");
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(r.header("x-skygate-attempts"), Some("1"));
    }
    assert_eq!(af.requests().len(), seen + 3, "run once each");
    for b in ["hdr", "qry"] {
        assert_eq!(g.backend_status(b)["breaker"]["state"], "closed", "{b}");
    }
}

/// A 500 from a function route's plain HTTP backend is the function's
/// answer, served as it is: not retried elsewhere (the function may have
/// had effects) and no failure for the breaker; a 429 (the host's, before
/// the function ran) is retried on the next target.
#[test]
fn an_http_functions_500_is_its_answer() {
    let f = Sim::start("f", &[]);
    let g2 = Sim::start("g2", &[]);
    let config = format!(
        "{auth}backends:\n  f: {{ kind: http_function, url: \"{a}/functions/anomaly\", breaker: {{ consecutive_failures: 1 }} }}\n  g2: {{ kind: http_function, url: \"{b}/functions/anomaly\" }}\nroutes:\n  fn: {{ match: {{ path_prefix: /v1/functions/score }}, targets: [ {{ backend: f }} ], fallback: [ g2 ] }}\n",
        auth = auth_section(),
        a = f.url,
        b = g2.url,
    );
    let g = Gateway::start(&config);
    let auth = format!("Bearer {CLIENT_KEY}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    f.set(json!({"error_rate": 1.0}));
    for _ in 0..3 {
        let r = g.call("POST", "/v1/functions/score", &h, b"{}");
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(r.json()["error"]["message"], "simulated backend failure");
        assert_eq!(r.header("x-skygate-attempts"), Some("1"));
    }
    assert!(g2.requests().is_empty(), "never run twice");
    assert_eq!(g.backend_status("f")["breaker"]["state"], "closed");
    // The host's refusal (throttled, before the function ran) is retried
    // on the fallback.
    f.set(json!({"error_rate": 0.0, "throttle_rate": 1.0}));
    let r = g.call("POST", "/v1/functions/score", &h, b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-skygate-backend"), Some("g2"));
}

/// A function URL with `auth: none` gets no signature; with `iam`, a wrong
/// payload hash is refused by the platform.
#[test]
fn lambda_url_without_iam() {
    let url = Sim::start(
        "url",
        &["--platform", "aws-lambda-url", "--url-auth", "none"],
    );
    let config = format!(
        "{auth}backends:\n  url: {{ kind: aws_lambda_url, region: us-east-1, endpoint: \"{u}\", auth: none }}\nroutes:\n{r}",
        auth = auth_section(),
        u = url.url,
        r = route_to("fn", "/v1/functions/img", "url"),
    );
    let g = Gateway::start(&config);
    let auth = format!("Bearer {CLIENT_KEY}");
    let r = g.call(
        "PUT",
        "/v1/functions/img/a/b",
        &[("authorization", &auth), ("content-type", "image/png")],
        &[0x89, 0x50, 0, 1],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let last = url.requests().last().unwrap().clone();
    assert_eq!(last["method"], "PUT");
    assert_eq!(last["path"], "/a/b");
    assert!(header_of(&last, "authorization").is_empty());
    assert!(header_of(&last, "x-amz-content-sha256").is_empty());
}

/// `auth: entra`: Entra ID tokens from a client secret (the simulator plays
/// the token endpoint), renewed in the background before they expire.
#[test]
fn entra_tokens_rotate_without_a_restart() {
    let az = Sim::start(
        "az",
        &["--platform", "azure-openai", "--sts-lifetime-s", "4"],
    );
    let config = format!(
        "{auth}backends:\n  az: {{ kind: azure_openai, endpoint: \"{a}\", auth: entra, api: v1, deployments: {{ gpt: prod-4o }} }}\nroutes:\n{r}",
        auth = auth_section(),
        a = az.url,
        r = chat_route("az", "gpt", "az"),
    );
    let g = Gateway::start_with_env(
        &config,
        &[
            ("AZURE_TENANT_ID", "tenant-1"),
            ("AZURE_CLIENT_ID", "client-1"),
            ("AZURE_CLIENT_SECRET", "sim-platform-key"),
            ("AZURE_AUTHORITY_HOST", &az.url),
        ],
    );
    assert!(eventually(Duration::from_secs(5), || ask(&g, "gpt").status == 200));
    let mut tokens = std::collections::BTreeSet::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let r = ask(&g, "gpt");
        assert_eq!(r.status, 200, "{}", r.text());
        let last = last_call(&az);
        assert_eq!(last["path"], "/openai/v1/chat/completions");
        assert_eq!(
            body_of(&last)["model"],
            "prod-4o",
            "v1: the deployment goes in the body"
        );
        tokens.insert(header_of(&last, "authorization"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        tokens.len() >= 2,
        "no renewal in 6 s of 4 s tokens: {tokens:?}"
    );
    assert_eq!(az.stats()["auth_failures"], 0);
    assert!(
        !g.proc.stderr().contains("sim-entra-"),
        "tokens are never logged"
    );
}

/// The last request a simulator served as the platform, not as the token
/// service it also plays (STS, Entra ID, Google: asked in the background,
/// and recorded too).
fn last_call(sim: &Sim) -> Value {
    sim.requests()
        .into_iter()
        .rev()
        .find(|r| {
            let p = r["path"].as_str().unwrap_or("");
            p != "/"
                && !p.starts_with("/token")
                && !p.starts_with("/computeMetadata")
                && !p.contains("/oauth2/")
        })
        .unwrap()
}

/// The test service account (tests/fixtures), its `token_uri` pointed at
/// the simulator playing Google.
fn service_account(dir: &TempDir, token_uri: &str) -> String {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gcp-service-account.json");
    let mut sa: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    sa["token_uri"] = json!(token_uri);
    let path = dir.path.join("sa.json");
    std::fs::write(&path, sa.to_string()).unwrap();
    path.to_string_lossy().to_string()
}

/// Cloud Run with a service-account key: an RS256 assertion exchanged for a
/// Google-signed ID token whose audience is the service URL, renewed in the
/// background; chat, a stream and a function route all carry it.
#[test]
fn cloud_run_with_a_service_account_key() {
    let dir = TempDir::new();
    // The simulator reads the key's public half when a token is asked for,
    // so the file can name its token endpoint once its address is known.
    let sa_path = dir.path.join("sa.json").to_string_lossy().to_string();
    let run = Sim::start(
        "run",
        &[
            "--platform",
            "gcp-cloud-run",
            "--gcp-sa-key",
            &sa_path,
            "--sts-lifetime-s",
            "4",
        ],
    );
    let sa = service_account(&dir, &format!("{}/token", run.url));
    let config = format!(
        "{auth}backends:\n  run: {{ kind: gcp_cloud_run, endpoint: \"{u}/v1\", credentials_file: \"{sa}\" }}\n  bad: {{ kind: gcp_cloud_run, endpoint: \"{u}/v1\", credentials_file: \"{sa}\", audience: \"https://someone-else.a.run.app\" }}\nroutes:\n{r1}{r2}{r3}",
        auth = auth_section(),
        u = run.url,
        r1 = chat_route("run", "run", "run"),
        r2 = chat_route("bad", "bad", "bad"),
        r3 = route_to("fn", "/v1/functions/score", "run"),
    );
    let g = Gateway::start_with_env(&config, &[("GOOGLE_APPLICATION_CREDENTIALS", "")]);
    assert!(
        eventually(Duration::from_secs(5), || ask(&g, "run").status == 200),
        "{}",
        g.proc.stderr()
    );
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "run", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    );
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    let auth = format!("Bearer {CLIENT_KEY}");
    let r = g.call(
        "POST",
        "/v1/functions/score/batch",
        &[("authorization", &auth)],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_call(&run)["path"], "/v1/batch");
    // A token for another audience is refused by the service: a 502.
    ask(&g, "bad").assert_error(502, "backend_auth_failed");
    let failures = run.stats()["auth_failures"].as_u64().unwrap();
    assert!(failures >= 1);
    // Renewed before they expire: no request fails across renewals.
    let mut tokens = std::collections::BTreeSet::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        assert_eq!(ask(&g, "run").status, 200);
        tokens.insert(header_of(&last_call(&run), "authorization"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(tokens.len() >= 2, "no renewal in 6 s of 4 s tokens");
    assert_eq!(run.stats()["auth_failures"].as_u64().unwrap(), failures);
    assert!(!g.proc.stderr().contains("BEGIN PRIVATE KEY"));
}

/// On Google's runtimes the metadata server mints the ID tokens.
#[test]
fn cloud_run_with_the_metadata_server() {
    let run = Sim::start("run", &["--platform", "gcp-cloud-run"]);
    let config = format!(
        "{auth}backends:\n  run: {{ kind: gcp_cloud_run, endpoint: \"{u}/v1\" }}\nroutes:\n{r}",
        auth = auth_section(),
        u = run.url,
        r = chat_route("run", "run", "run"),
    );
    let host = run.addr.to_string();
    let g = Gateway::start_with_env(
        &config,
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", ""),
            ("GCE_METADATA_HOST", &host),
        ],
    );
    assert!(
        eventually(Duration::from_secs(5), || ask(&g, "run").status == 200),
        "{}",
        g.proc.stderr()
    );
    let paths: Vec<String> = run
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        paths.iter().any(|p| p.starts_with(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=http"
        )),
        "{paths:?}"
    );
    assert_eq!(run.stats()["auth_failures"], 0);
}

/// A finished event stream ends the client's stream at once, even when
/// the platform holds the connection open afterwards.
#[test]
fn a_finished_stream_ends_without_waiting_for_the_connection() {
    let br = Sim::start("br", &["--platform", "bedrock"]);
    let lam = Sim::start("lam", &["--platform", "aws-lambda"]);
    br.set(json!({"linger_ms": 5000}));
    lam.set(json!({"linger_ms": 5000}));
    let config = format!(
        "{auth}backends:\n  br: {b}\n  lam: {l}\nroutes:\n{r1}{r2}",
        auth = auth_section(),
        b = bedrock(&br.url, ", timeouts: { idle: 2s }"),
        l = lambda(&lam.url, ", response_stream: true, timeouts: { idle: 2s }"),
        r1 = chat_route("nova", "nova", "br"),
        r2 = chat_route("fns", "fns", "lam"),
    );
    let g = Gateway::start(&config);
    for model in ["nova", "fns"] {
        let start = std::time::Instant::now();
        let r = g.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "x"}], "stream": true}),
        );
        assert_eq!(r.status, 200);
        assert!(
            r.text().ends_with("data: [DONE]\n\n"),
            "{model}: {}",
            r.text()
        );
        assert!(!r.text().contains("event: error"), "{}", r.text());
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{model} waited for the connection"
        );
    }
}

/// A function's own failure is its answer: not retried on another target
/// (the function may have had effects), and no failure of the platform for
/// the breaker: a client whose input crashes the function cannot shut the
/// route for everyone.
#[test]
fn function_errors_are_final_and_spare_the_breaker() {
    let lam = Sim::start("lam", &["--platform", "aws-lambda"]);
    let config = format!(
        "{auth}backends:\n  a: {a}\n  b: {b}\nroutes:\n  fn: {{ match: {{ path: /v1/chat/completions, models: [fn] }}, targets: [ {{ backend: a }}, {{ backend: b }} ], retries: {{ max_attempts: 3 }} }}\n",
        auth = auth_section(),
        a = lambda(&lam.url, ", breaker: { consecutive_failures: 3 }"),
        b = lambda(&lam.url, ", breaker: { consecutive_failures: 3 }"),
    );
    let g = Gateway::start(&config);
    lam.set(json!({"fail_with": "function"}));
    let before = lam.stats()["requests"].as_u64().unwrap();
    for _ in 0..8 {
        let r = ask(&g, "fn");
        r.assert_error(502, "RuntimeError");
        assert_eq!(r.header("x-skygate-attempts"), Some("1"));
    }
    assert_eq!(
        lam.stats()["requests"].as_u64().unwrap() - before,
        8,
        "one invocation each"
    );
    lam.set(json!({"fail_with": null}));
    assert_eq!(ask(&g, "fn").status, 200, "no breaker opened");
    assert_eq!(g.backend_status("a")["breaker"]["state"], "closed");
    assert_eq!(g.backend_status("a")["breaker"]["opens"], 0);
}

/// A backend's interim answers (`103 Early Hints`, `100 Continue`) are
/// skipped: the client gets the final response.
#[test]
fn interim_responses_are_skipped() {
    let addr = raw_backend(|| {
        let body = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let g = Gateway::start(&one_backend(&format!("http://{addr}"), ""));
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "hi");
    assert!(r.header("link").is_none());
}

/// The demo is heterogeneous: each cloud speaks its own platform (Bedrock,
/// Azure OpenAI, Cloud Run with ID tokens) behind one OpenAI API, and the
/// two example workloads run on function platforms (anomaly scoring on
/// Azure Functions, image recognition on Lambda).
#[test]
fn the_demo_speaks_every_cloud_and_runs_both_workloads() {
    let d = Demo::start(&[]);
    let key = [("authorization", "Bearer sk-skygate-demo")];
    let admin = [("authorization", "Bearer skygate-demo-admin")];
    for cloud in ["aws-us-east-1", "azure-eastus", "gcp-us-central1"] {
        let weights =
            json!({"aws-us-east-1": 0, "azure-eastus": 0, "gcp-us-central1": 0, cloud: 100});
        let r = call(
            d.admin,
            "PUT",
            "/admin/routes/chat/weights",
            &admin,
            weights.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        for stream in [false, true] {
            let body = json!({"model": "demo-chat", "stream": stream, "messages": [{"role": "user", "content": format!("hi {cloud}")}]});
            let r = call(
                d.addr,
                "POST",
                "/v1/chat/completions",
                &[
                    key[0],
                    ("content-type", "application/json"),
                    ("cache-control", "no-cache"),
                ],
                body.to_string().as_bytes(),
            );
            assert_eq!(r.status, 200, "{cloud}: {}", r.text());
            assert_eq!(r.header("x-skygate-backend"), Some(cloud));
            if stream {
                assert!(
                    r.text().ends_with("data: [DONE]\n\n"),
                    "{cloud}: {}",
                    r.text()
                );
            } else {
                assert_eq!(r.json()["model"], "demo-chat");
            }
        }
    }
    let r = call(
        d.addr,
        "POST",
        "/v1/functions/anomaly-score",
        &[key[0], ("content-type", "application/json")],
        br#"{"readings":[20.1,20.3,19.9,20.0,20.2,55.0]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-skygate-backend"), Some("anomaly-fn"));
    assert_eq!(r.json()["anomalies"], json!([5]));
    let r = call(
        d.addr,
        "POST",
        "/v1/functions/image-recognition",
        &[key[0], ("content-type", "image/png")],
        b"\x89PNG\r\n\x1a\n-demo-image",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-skygate-backend"), Some("image-recognition"));
    let v = r.json();
    assert_eq!(v["format"], "png");
    assert!(
        v["labels"][0]["confidence"].as_f64().unwrap()
            > v["labels"][2]["confidence"].as_f64().unwrap()
    );
    // The banner says what each cloud speaks.
    let banner = d.proc.stderr();
    for platform in [
        "bedrock",
        "azure-openai",
        "gcp-cloud-run",
        "aws-lambda",
        "azure-functions",
    ] {
        assert!(banner.contains(platform), "{banner}");
    }
}

/// Every platform's throttling answer, in its own format (Lambda's and
/// Bedrock's `x-amzn-errortype`, a function URL's `{"Message"}`, Azure's
/// `{"error":{"code":"429"}}`, OpenWhisk's `{"error"}`, Cloud Run's HTML),
/// reaches the client as OpenAI's 429 with `retry-after`.
#[test]
fn every_platform_throttle_is_a_429() {
    let sims: Vec<(&str, Sim)> = [
        "aws-lambda",
        "aws-lambda-url",
        "bedrock",
        "sagemaker",
        "azure-openai",
        "azure-functions",
        "openwhisk",
        "gcp-cloud-run",
    ]
    .into_iter()
    .map(|p| (p, Sim::start(p, &["--platform", p, "--throttle-rate", "1"])))
    .collect();
    let url = |p: &str| sims.iter().find(|(n, _)| *n == p).unwrap().1.url.clone();
    let backends = [
        ("lam", lambda(&url("aws-lambda"), "")),
        ("url", format!("{{ kind: aws_lambda_url, region: us-east-1, endpoint: \"{}\", {KEYS} }}", url("aws-lambda-url"))),
        ("br", bedrock(&url("bedrock"), "")),
        ("sm", format!("{{ kind: sagemaker, region: us-east-1, endpoint: \"{}\", endpoint_name: e, {KEYS} }}", url("sagemaker"))),
        ("az", format!("{{ kind: azure_openai, endpoint: \"{}\", api_key: sim-platform-key }}", url("azure-openai"))),
        ("af", format!("{{ kind: azure_functions, endpoint: \"{}/api/f\", api_key: sim-platform-key }}", url("azure-functions"))),
        ("ow", format!("{{ kind: openwhisk, endpoint: \"{}\", action: chat, api_key: \"sim-uuid:sim-platform-key\" }}", url("openwhisk"))),
        ("run", format!("{{ kind: gcp_cloud_run, endpoint: \"{}\" }}", url("gcp-cloud-run"))),
    ];
    let mut config = format!("{}backends:\n", auth_section());
    for (name, b) in &backends {
        config.push_str(&format!("  {name}: {b}\n"));
    }
    config.push_str("routes:\n");
    for (name, _) in &backends {
        if *name == "af" {
            config.push_str(&route_to("af", "/v1/functions/af", "af"));
        } else {
            config.push_str(&chat_route(name, name, name));
        }
    }
    let metadata = sims
        .iter()
        .find(|(n, _)| *n == "gcp-cloud-run")
        .unwrap()
        .1
        .addr
        .to_string();
    let g = Gateway::start_with_env(
        &config,
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", ""),
            ("GCE_METADATA_HOST", &metadata),
        ],
    );
    // Cloud Run needs its first ID token (a 503 until then); its first 429
    // holds the backend for its retry-after, so it is the one checked.
    let mut run = None;
    assert!(eventually(Duration::from_secs(5), || {
        let r = ask(&g, "run");
        let throttled = r.status == 429;
        run = Some(r);
        throttled
    }));
    for (name, _) in &backends {
        let r = if *name == "run" {
            run.take().unwrap()
        } else if *name == "af" {
            g.call(
                "POST",
                "/v1/functions/af/x",
                &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
                b"{}",
            )
        } else {
            ask(&g, name)
        };
        r.assert_error(429, "throttled");
        assert!(r.header("retry-after").is_some(), "{name}");
    }
}

/// An OpenWhisk action's own error is final too: served once, not retried
/// on the route's other target.
#[test]
fn action_errors_are_final() {
    let ow = Sim::start("ow", &["--platform", "openwhisk"]);
    let backend = format!(
        "{{ kind: openwhisk, endpoint: \"{}\", action: chat, api_key: \"sim-uuid:sim-platform-key\" }}",
        ow.url
    );
    let config = format!(
        "{auth}backends:\n  a: {backend}\n  b: {backend}\nroutes:\n  ow: {{ match: {{ path: /v1/chat/completions, models: [ow] }}, targets: [ {{ backend: a }}, {{ backend: b }} ], retries: {{ max_attempts: 3 }} }}\n",
        auth = auth_section(),
    );
    let g = Gateway::start(&config);
    ow.set(json!({"fail_with": "function"}));
    let before = ow.stats()["requests"].as_u64().unwrap();
    let r = ask(&g, "ow");
    r.assert_error(502, "action_error");
    assert_eq!(r.header("x-skygate-attempts"), Some("1"));
    assert_eq!(ow.stats()["requests"].as_u64().unwrap() - before, 1);
}

/// A streamed function that fails before its first byte gets the buffered
/// path's answer: a final 502 naming its error, served once, never retried.
#[test]
fn a_streamed_function_failing_at_start_is_final() {
    let lam = Sim::start("lam", &["--platform", "aws-lambda"]);
    let config = format!(
        "{auth}backends:\n  a: {a}\n  b: {b}\nroutes:\n  fn: {{ match: {{ path: /v1/chat/completions, models: [fn] }}, targets: [ {{ backend: a }}, {{ backend: b }} ], retries: {{ max_attempts: 3 }} }}\n",
        auth = auth_section(),
        a = lambda(&lam.url, ", response_stream: true"),
        b = lambda(&lam.url, ", response_stream: true"),
    );
    let g = Gateway::start(&config);
    lam.set(json!({"fail_with": "function_at_start"}));
    let before = lam.stats()["requests"].as_u64().unwrap();
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "fn", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    );
    r.assert_error(502, "Unhandled");
    assert_eq!(r.json()["error"]["type"], "function_error");
    assert_eq!(r.header("x-skygate-attempts"), Some("1"));
    assert_eq!(lam.stats()["requests"].as_u64().unwrap() - before, 1);
}

/// Azure OpenAI API versions before 2024-08-01 refuse `stream_options`
/// (a 400), which the gateway adds to every chat stream: to such a backend
/// a stream goes without it (and `validate` says what that costs); to a
/// later version, with it.
#[test]
fn an_old_azure_api_version_gets_no_stream_options() {
    let az = Sim::start("az", &["--platform", "azure-openai"]);
    let config = format!(
        "{auth}backends:\n  old: {{ kind: azure_openai, endpoint: \"{a}\", api_key: sim-platform-key, api_version: 2024-06-01 }}\n  new: {{ kind: azure_openai, endpoint: \"{a}\", api_key: sim-platform-key }}\nroutes:\n{r1}{r2}",
        auth = auth_section(),
        a = az.url,
        r1 = chat_route("old", "old", "old"),
        r2 = chat_route("new", "new", "new"),
    );
    let g = Gateway::start(&config);
    assert!(
        g.proc
            .stderr()
            .contains("backends.old.api_version: `2024-06-01` refuses `stream_options`"),
        "{}",
        g.proc.stderr()
    );
    for model in ["old", "new"] {
        let r = g.post(
            "/v1/chat/completions",
            &json!({"model": model, "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let data = sse_data(&r.body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{model}");
        let usage = data.iter().any(|d| d.contains("\"usage\":{"));
        assert_eq!(usage, model == "new", "{model}: {data:?}");
    }
    // The key written escaped is the same key: left out too.
    let auth = format!("Bearer {CLIENT_KEY}");
    let r = g.call(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &auth), ("content-type", "application/json")],
        br#"{"model":"old","stream":true,"stream\u005foptions":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Vec<(String, bool)> = az
        .requests()
        .iter()
        .filter(|q| q["path"].as_str().unwrap().contains("/chat/completions"))
        .map(|q| {
            let v = body_of(q);
            (
                q["path"].as_str().unwrap().to_string(),
                v.get("stream_options").is_some(),
            )
        })
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for (path, with) in sent {
        assert_eq!(with, !path.contains("2024-06-01"), "{path}");
    }
}
