//! What a chat request asks of its answer's form, honoured as a model
//! would, so the SDKs' features work against the demo: `n` choices, a call
//! of a tool the request offers, JSON content for `response_format`. The
//! words stay filler; only the form follows the request.

use serde_json::{json, Map, Value};

/// The most choices an answer has (`n` beyond it is answered with this many).
const MAX_CHOICES: u32 = 8;

/// The form of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// `n`, 1 to [`MAX_CHOICES`].
    pub choices: u32,
    /// The tool to call and its arguments (a JSON object's text): when the
    /// request offers tools, its `tool_choice` is not `none`, and its last
    /// message is not a tool's result (then the model answers in words).
    pub tool: Option<(String, String)>,
    /// `response_format` `json_object` or `json_schema`: the content is
    /// this JSON object (its text), a value the schema admits.
    pub json: Option<Value>,
}

impl Shape {
    /// The shape `body` asks for.
    pub fn of(body: &Value) -> Self {
        let choices = body
            .get("n")
            .and_then(Value::as_u64)
            .map_or(1, |n| n.clamp(1, u64::from(MAX_CHOICES)) as u32);
        let choice = body.get("tool_choice");
        let last_role = body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.last())
            .and_then(|m| m.get("role"))
            .and_then(Value::as_str);
        let tool = body
            .get("tools")
            .and_then(Value::as_array)
            .filter(|_| choice.and_then(Value::as_str) != Some("none"))
            .filter(|_| last_role != Some("tool"))
            .and_then(|tools| {
                // The one `tool_choice` names, else the first.
                let named = choice
                    .and_then(|c| c.pointer("/function/name"))
                    .and_then(Value::as_str);
                let t = tools.iter().find(|t| {
                    named.is_none_or(|n| {
                        t.pointer("/function/name").and_then(Value::as_str) == Some(n)
                    })
                })?;
                let name = t.pointer("/function/name")?.as_str()?.to_string();
                let args = match t.pointer("/function/parameters") {
                    Some(p) => example(Some(p), 0),
                    None => json!({}),
                };
                Some((name, args.to_string()))
            });
        let json = match body
            .pointer("/response_format/type")
            .and_then(Value::as_str)
        {
            Some("json_object") => Some(json!({"answer": ""})),
            Some("json_schema") => Some(example(
                body.pointer("/response_format/json_schema/schema"),
                0,
            )),
            _ => None,
        };
        Shape {
            choices,
            tool,
            json,
        }
    }

    /// The message's content for `words`: the words, or JSON carrying them.
    pub fn content(&self, words: &str) -> String {
        match &self.json {
            Some(Value::Object(o)) if o.len() == 1 && o.contains_key("answer") => {
                json!({"answer": words}).to_string()
            }
            Some(v) => v.to_string(),
            None => words.to_string(),
        }
    }

    pub fn finish_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    /// One choice's message, with `words` as its text.
    pub fn message(&self, words: &str, call_id: &str) -> Value {
        match &self.tool {
            Some((name, args)) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": args}}],
            }),
            None => json!({"role": "assistant", "content": self.content(words)}),
        }
    }

    /// A stream's first delta of a choice.
    pub fn first_delta(&self, call_id: &str) -> Value {
        match &self.tool {
            Some((name, _)) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{"index": 0, "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": ""}}],
            }),
            None => json!({"role": "assistant", "content": ""}),
        }
    }

    /// The pieces a stream sends after its first delta, given the text's
    /// words: the words one by one, or the JSON content or the tool's
    /// arguments cut into as many pieces (at least one).
    pub fn pieces(&self, words: &[String]) -> Vec<Value> {
        let whole = match (&self.tool, &self.json) {
            (Some((_, args)), _) => args.clone(),
            (None, Some(_)) => self.content(words.concat().trim_end()),
            (None, None) => {
                return words.iter().map(|w| json!({"content": w})).collect();
            }
        };
        let chars: Vec<char> = whole.chars().collect();
        let per = chars.len().div_ceil(words.len().max(1)).max(1);
        chars
            .chunks(per)
            .map(|c| {
                let text: String = c.iter().collect();
                match &self.tool {
                    Some(_) => {
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})
                    }
                    None => json!({"content": text}),
                }
            })
            .collect()
    }
}

/// A value that a JSON schema admits, as far as a simulator needs: an
/// object's properties each filled by its type, the first of an `enum`.
fn example(schema: Option<&Value>, depth: u32) -> Value {
    let Some(s) = schema.filter(|_| depth < 16) else {
        return Value::Null;
    };
    if let Some(first) = s.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") => json!("sim"),
        Some("integer" | "number") => json!(1),
        Some("boolean") => json!(true),
        Some("array") => json!([example(s.get("items"), depth + 1)]),
        Some("null") => Value::Null,
        _ => {
            let mut out = Map::new();
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), example(Some(v), depth + 1));
                }
            }
            Value::Object(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_tools_and_json_are_read_from_the_request() {
        let plain = Shape::of(&json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(plain.choices, 1);
        assert!(plain.tool.is_none() && plain.json.is_none());
        assert_eq!(plain.content("a b"), "a b");
        assert_eq!(Shape::of(&json!({"n": 3})).choices, 3);
        assert_eq!(Shape::of(&json!({"n": 500})).choices, MAX_CHOICES);
        assert_eq!(Shape::of(&json!({"n": 0})).choices, 1);

        let weather = json!({"type": "function", "function": {"name": "weather",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}, "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}});
        let other = json!({"type": "function", "function": {"name": "other"}});
        let s = Shape::of(&json!({"tools": [weather, other],
            "messages": [{"role": "user", "content": "hi"}]}));
        let (name, args) = s.tool.clone().unwrap();
        assert_eq!(name, "weather");
        let args: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(args, json!({"city": "sim", "days": 1, "unit": "c"}));
        assert_eq!(s.finish_reason(), "tool_calls");
        assert_eq!(s.message("", "call_1")["content"], Value::Null);
        // Named, declined, or after the tool's result.
        let named = Shape::of(&json!({"tools": [weather, other],
            "tool_choice": {"type": "function", "function": {"name": "other"}}}));
        assert_eq!(named.tool.unwrap(), ("other".into(), "{}".into()));
        assert!(
            Shape::of(&json!({"tools": [weather], "tool_choice": "none"}))
                .tool
                .is_none()
        );
        assert!(Shape::of(&json!({"tools": [weather],
            "messages": [{"role": "tool", "content": "12C", "tool_call_id": "call_1"}]}))
        .tool
        .is_none());

        // JSON content, and the stream's pieces add up to it.
        let j = Shape::of(&json!({"response_format": {"type": "json_object"}}));
        let words: Vec<String> = vec!["a ".into(), "b ".into()];
        let whole: Value = serde_json::from_str(&j.content("a b")).unwrap();
        assert_eq!(whole, json!({"answer": "a b"}));
        let joined: String = j
            .pieces(&words)
            .iter()
            .map(|p| p["content"].as_str().unwrap())
            .collect();
        assert_eq!(joined, j.content("a b"));
        let schema = Shape::of(&json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object",
                "properties": {"ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}}}}}}}));
        let v: Value = serde_json::from_str(&schema.content("ignored")).unwrap();
        assert_eq!(v, json!({"ok": true, "tags": ["sim"]}));
        // A tool's arguments in pieces add up too.
        let joined: String = s
            .pieces(&words)
            .iter()
            .map(|p| {
                p["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(joined, s.tool.unwrap().1);
    }
}
