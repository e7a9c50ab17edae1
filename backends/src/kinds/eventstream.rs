//! AWS event-stream framing (`application/vnd.amazon.eventstream`), as
//! Lambda's InvokeWithResponseStream and Bedrock's ConverseStream send it:
//! frames are checked (lengths, both CRCs) by `aws-smithy-eventstream`;
//! this module bounds what a frame may claim before any byte of it is
//! buffered, and reads the headers every AWS stream uses.

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::{Buf, Bytes, BytesMut};

/// The largest frame accepted. AWS's own limit is 16 MiB (payloads are far
/// smaller); a frame claiming more is refused at its first 4 bytes.
pub const MAX_FRAME: usize = 16 << 20;

/// The smallest frame: prelude (12 bytes) and message CRC (4).
const MIN_FRAME: usize = 16;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: String,
    /// `:event-type` (events) or `:exception-type` (exceptions), or
    /// `:error-code` (errors).
    pub name: String,
    /// `:error-message` of an `error` message.
    pub error_message: Option<String>,
    pub payload: Bytes,
}

/// Why a stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reassembles frames from chunks however the network cut them.
#[derive(Debug, Default)]
pub struct Frames {
    buf: BytesMut,
}

impl Frames {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Result<Option<Event>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let total =
            u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if !(MIN_FRAME..=MAX_FRAME).contains(&total) {
            return Err(FrameError(format!(
                "an event-stream frame claims {total} bytes (allowed {MIN_FRAME}..={MAX_FRAME})"
            )));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total).freeze();
        let message = read_message_from(&mut frame)
            .map_err(|e| FrameError(format!("a bad event-stream frame: {e}")))?;
        if frame.has_remaining() {
            return Err(FrameError(
                "an event-stream frame has trailing bytes".into(),
            ));
        }
        Ok(Some(event(message)))
    }

    /// Whether a frame was cut off (bytes left over at the stream's end).
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

fn header_str(m: &Message, name: &str) -> Option<String> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str().to_string()),
            _ => None,
        })
}

fn event(m: Message) -> Event {
    let message_type = header_str(&m, ":message-type").unwrap_or_else(|| "event".into());
    let name = match message_type.as_str() {
        "exception" => header_str(&m, ":exception-type"),
        "error" => header_str(&m, ":error-code"),
        _ => header_str(&m, ":event-type"),
    }
    .unwrap_or_default();
    Event {
        error_message: header_str(&m, ":error-message"),
        message_type,
        name,
        payload: m.payload().clone(),
    }
}

/// Encodes one message with string headers (the simulator's side).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut m = Message::new(Bytes::copy_from_slice(payload));
    for (k, v) in headers {
        m = m.add_header(Header::new(
            k.to_string(),
            HeaderValue::String(v.to_string().into()),
        ));
    }
    let mut out = Vec::with_capacity(payload.len() + 128);
    // Writing to a Vec fails only on a header longer than the format allows;
    // the simulator's headers are short constants.
    if write_message_to(&m, &mut out).is_err() {
        out.clear();
    }
    out
}

/// An `event` message of `event_type` with a JSON payload.
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", "application/json"),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sample() -> Vec<u8> {
        let mut out = encode_event("PayloadChunk", b"data: {\"a\":1}\n\n");
        out.extend(encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "ThrottlingException"),
            ],
            b"{\"message\":\"slow down\"}",
        ));
        out
    }

    #[test]
    fn decodes_across_any_split() {
        let all = sample();
        for cut in 0..all.len() {
            let mut f = Frames::default();
            let mut got = Vec::new();
            for part in [&all[..cut], &all[cut..]] {
                f.push(part);
                while let Some(e) = f.next_event().unwrap() {
                    got.push(e);
                }
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].name, "PayloadChunk");
            assert_eq!(&got[0].payload[..], b"data: {\"a\":1}\n\n");
            assert_eq!(got[1].message_type, "exception");
            assert_eq!(got[1].name, "ThrottlingException");
            assert!(!f.is_partial());
        }
    }

    #[test]
    fn huge_lengths_and_bad_crcs_are_clean_errors() {
        let mut f = Frames::default();
        f.push(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert!(f.next_event().unwrap_err().0.contains("claims"));
        let mut bad = sample();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut f = Frames::default();
        f.push(&bad);
        assert!(f.next_event().is_ok());
        assert!(f.next_event().is_err());
        // A truncated stream leaves a partial frame, never an event.
        let all = sample();
        let mut f = Frames::default();
        f.push(&all[..all.len() - 3]);
        assert!(f.next_event().unwrap().is_some());
        assert_eq!(f.next_event().unwrap(), None);
        assert!(f.is_partial());
    }

    /// Property: whatever bytes arrive (random, or valid frames with random
    /// bytes flipped, cut or spliced), decoding ends in events, an error or
    /// a wait for more: never a panic, never a buffer beyond the frame cap.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let valid = sample();
        for round in 0..20_000 {
            let mut input = if round % 4 == 0 {
                (0..rng.gen_range(0..64))
                    .map(|_| rng.gen())
                    .collect::<Vec<u8>>()
            } else {
                valid.clone()
            };
            for _ in 0..rng.gen_range(0..4) {
                if input.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..input.len());
                match rng.gen_range(0..3) {
                    0 => input[i] = rng.gen(),
                    1 => input.truncate(i),
                    _ => input.insert(i, rng.gen()),
                }
            }
            let mut f = Frames::default();
            let mut pos = 0;
            while pos < input.len() {
                let n = rng.gen_range(1..=input.len() - pos);
                f.push(&input[pos..pos + n]);
                pos += n;
                loop {
                    match f.next_event() {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(_) => {
                            pos = input.len();
                            break;
                        }
                    }
                }
            }
            assert!(f.buf.len() <= MAX_FRAME);
        }
    }
}
