//! `sagemaker`: SageMaker (serverless) inference endpoints.
//! `POST /endpoints/{name}/invocations` (InvokeEndpoint), and for streamed
//! requests with `response_stream: true`
//! `/endpoints/{name}/invocations-response-stream`
//! (InvokeEndpointWithResponseStream), SigV4 service `sagemaker`. The body
//! goes to the container as sent (with its content type): an
//! OpenAI-compatible container (LMI, TGI's Messages API, vLLM) answers
//! chat as is; the stream's `PayloadPart` events carry the container's
//! bytes (its SSE), passed on as they come.

use super::aws::AwsSigner;
use super::eventstream::Frames;
use super::{
    aws_service_error, event_message, is_json, malformed, path_segment, stream_exception,
    stream_header, ReadAs, Replay, Reply, Synth,
};
use crate::adapter::{base_header, internal, Call, Prepared};
use bytes::{Bytes, BytesMut};
use http::header;
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, Backend, Operation, SagemakerConf};

#[derive(Debug)]
pub struct SagemakerAdapter {
    pub conf: SagemakerConf,
    pub signer: AwsSigner,
}

impl SagemakerAdapter {
    pub fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        let streamed = self.conf.response_stream && call.stream;
        let path = format!(
            "{}/endpoints/{}/{}",
            backend.url.base_path,
            path_segment(&self.conf.endpoint_name),
            if streamed {
                "invocations-response-stream"
            } else {
                "invocations"
            }
        );
        let mut h = base_header(backend, &http::Method::POST, &path, call, call.body.len())?;
        if !h.headers.contains_key(header::CONTENT_TYPE) {
            h.insert_header(header::CONTENT_TYPE, "application/json")
                .map_err(internal)?;
        }
        if streamed {
            h.insert_header(header::ACCEPT, "application/vnd.amazon.eventstream")
                .map_err(internal)?;
        }
        if let Some(v) = &self.conf.target_variant {
            h.insert_header("x-amzn-sagemaker-target-variant", v.as_str())
                .map_err(internal)?;
        }
        self.signer.sign(&backend.name, &mut h, call.body, false)?;
        Ok(Prepared {
            header: h,
            body: call.body.clone(),
            reply: Some(Box::new(SagemakerReply {
                backend: backend.name.clone(),
                sse: call.stream && call.operation == Operation::ChatCompletions,
                replay: Replay::for_call(call),
                frames: None,
            })),
        })
    }
}

struct SagemakerReply {
    backend: String,
    sse: bool,
    replay: Option<Replay>,
    frames: Option<Frames>,
}

impl Reply for SagemakerReply {
    fn read(&mut self, header: &ResponseHeader) -> ReadAs {
        let eventstream = header.headers.get(header::CONTENT_TYPE).is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/vnd.amazon.eventstream")
        });
        match header.status.as_u16() {
            200 if eventstream => {
                self.frames = Some(Frames::default());
                ReadAs::Stream
            }
            200 if self.replay.is_some() && is_json(header) => ReadAs::Whole,
            200..=299 => ReadAs::Pass,
            _ => ReadAs::Whole,
        }
    }

    fn whole(&mut self, header: &ResponseHeader, body: Bytes) -> Result<Synth, ApiError> {
        if header.status.as_u16() != 200 {
            return Ok(aws_service_error(&self.backend, "SageMaker", header, &body));
        }
        // A whole JSON completion to a stream request: replayed as SSE.
        let mut synth = Synth::json(200, body);
        if let Some(r) = self.replay {
            r.apply(&mut synth);
        }
        Ok(synth)
    }

    fn stream_header(&mut self, header: &mut ResponseHeader) -> Result<(), ApiError> {
        stream_header(self.sse, header)
    }

    fn chunk(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), ApiError> {
        let Some(frames) = self.frames.as_mut() else {
            out.extend_from_slice(chunk);
            return Ok(());
        };
        frames.push(chunk);
        while let Some(event) = frames
            .next_event()
            .map_err(|e| malformed(&self.backend, e))?
        {
            match (event.message_type.as_str(), event.name.as_str()) {
                ("event", "PayloadPart") => out.extend_from_slice(&event.payload),
                ("event", _) => {}
                (_, name) => {
                    return Err(stream_exception(
                        &self.backend,
                        "SageMaker",
                        name,
                        &event_message(&event),
                    ));
                }
            }
        }
        Ok(())
    }

    fn end(&mut self, _out: &mut BytesMut) -> Result<(), ApiError> {
        match &self.frames {
            Some(f) if f.is_partial() => {
                Err(malformed(&self.backend, "the stream ended inside a frame"))
            }
            _ => Ok(()),
        }
    }
}
