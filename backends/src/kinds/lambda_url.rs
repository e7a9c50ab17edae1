//! `aws_lambda_url`: a Lambda function URL (`https://{id}.lambda-url.{region}.on.aws`).
//! Plain HTTP to the function (buffered or `RESPONSE_STREAM`, which streams
//! as any chunked response does): chat and embeddings go to
//! `{endpoint}/chat/completions` and `{endpoint}/embeddings` like an OpenAI
//! backend, function routes to `{endpoint}{rest of the path}`. With
//! `auth: iam` (the default) every request is SigV4-signed for `lambda`,
//! with `x-amz-content-sha256` as function URLs require.

use super::aws::AwsSigner;
use super::{http_request, map_http_failure, MapErrors, Synth};
use crate::adapter::{Call, Prepared};
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, Backend};

#[derive(Debug)]
pub struct LambdaUrlAdapter {
    /// `None`: `auth: none`.
    pub signer: Option<AwsSigner>,
}

impl LambdaUrlAdapter {
    pub fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        let mut h = http_request(backend, call)?;
        if let Some(signer) = &self.signer {
            signer.sign(&backend.name, &mut h, call.body, true)?;
        }
        Ok(Prepared {
            header: h,
            body: call.body.clone(),
            reply: Some(Box::new(MapErrors::new(&backend.name, call, map_failure))),
        })
    }
}

/// Function URLs answer their own failures as `{"Message": ...}`: 403
/// (signature, permission), 429 (throttled), 502 (the function failed or
/// answered badly), 413 (payload too large).
fn map_failure(backend: &str, header: &ResponseHeader, body: &[u8]) -> Option<Synth> {
    let status = header.status.as_u16();
    let platform_error = header.headers.get("x-amzn-errortype").is_some()
        || serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .is_some_and(|v| v.get("Message").is_some());
    if status == 502 && platform_error {
        return Some(Synth::error(
            502,
            "function_error",
            "function_error",
            &format!("backend `{backend}` (Lambda function URL): the function failed or answered in a shape the URL cannot return"),
        ).conclusive());
    }
    if status == 413 {
        return Some(Synth::error(
            413,
            "invalid_request_error",
            "request_too_large",
            &format!(
                "backend `{backend}` (Lambda function URL): the payload is over Lambda's limit"
            ),
        ));
    }
    map_http_failure(backend, "Lambda function URL", header, body)
}
