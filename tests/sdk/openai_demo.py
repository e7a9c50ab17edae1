"""Drives `skygate demo` with the official OpenAI Python SDK.

Usage: python openai_demo.py BASE_URL CONTRACTOR_TOKEN
  BASE_URL          e.g. http://127.0.0.1:8080/v1
  CONTRACTOR_TOKEN  a demo JWT in group `contractors`, tenant `acme`
                    (`skygate demo-token --tenant acme --group contractors`)
Exits non-zero on the first failed check.
"""
import base64
import json
import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="sk-skygate-demo", max_retries=0)

# Chat.
chat = client.chat.completions.create(
    model="demo-chat", messages=[{"role": "user", "content": "hello"}]
)
assert chat.choices[0].message.content, chat
assert chat.usage.completion_tokens > 0, chat

# Streamed chat, with usage in the last chunk.
pieces, usage = [], None
for chunk in client.chat.completions.create(
    model="demo-chat",
    messages=[{"role": "user", "content": "stream please"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert len(pieces) > 1, pieces
assert usage is not None and usage.completion_tokens == len(pieces), (usage, len(pieces))

# The simulated clouds answer in the form asked for: n choices, a call of
# an offered tool (plain and streamed), JSON content.
two = client.chat.completions.create(
    model="demo-chat", n=2, messages=[{"role": "user", "content": "two of them"}]
)
assert [c.index for c in two.choices] == [0, 1], two
weather = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
asked = [{"role": "user", "content": "weather in Paris?"}]
call = client.chat.completions.create(model="demo-chat", tools=weather, messages=asked)
assert call.choices[0].finish_reason == "tool_calls", call
tool_call = call.choices[0].message.tool_calls[0]
assert tool_call.function.name == "weather", call
assert json.loads(tool_call.function.arguments) == {"city": "sim"}, call
arguments = ""
for chunk in client.chat.completions.create(
    model="demo-chat", tools=weather, messages=asked + [{"role": "user", "content": "streamed"}], stream=True
):
    for c in chunk.choices:
        for t in c.delta.tool_calls or []:
            arguments += t.function.arguments or ""
assert json.loads(arguments) == {"city": "sim"}, arguments
answered = client.chat.completions.create(model="demo-chat", tools=weather, messages=asked + [
    {"role": "assistant", "tool_calls": [tool_call.model_dump()]},
    {"role": "tool", "tool_call_id": tool_call.id, "content": "12C"},
])
assert answered.choices[0].message.content and not answered.choices[0].message.tool_calls, answered
as_json = client.chat.completions.create(
    model="demo-chat", response_format={"type": "json_object"},
    messages=[{"role": "user", "content": "answer in JSON"}],
)
assert "answer" in json.loads(as_json.choices[0].message.content), as_json

# Embeddings.
emb = client.embeddings.create(model="demo-embed", input=["one", "two"])
# As floats by default here; as base64 when asked (the Node SDK's default).
b64 = client.embeddings.create(model="demo-embed", input="one", encoding_format="base64")
assert len(base64.b64decode(b64.data[0].embedding)) == 4 * len(emb.data[0].embedding), b64
assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb

# Models.
ids = sorted(m.id for m in client.models.list())
assert ids == ["demo-chat", "demo-embed"], ids
assert client.models.retrieve("demo-chat").id == "demo-chat"
try:
    client.models.retrieve("no-such-model")
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.status_code == 404 and e.code == "model_not_found", e

# Errors map to the SDK's exception types.
try:
    client.chat.completions.create(model="no-such-model", messages=[])
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.status_code == 404 and e.code == "model_not_found", e

try:
    OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).chat.completions.create(
        model="demo-chat", messages=[]
    )
    raise AssertionError("expected AuthenticationError")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e

try:
    client.chat.completions.create(model="", messages=[])
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.param == "model", e

# A JWT caller under the demo's policies: contractors may chat, not embed,
# and see only what they may call.
contractor = OpenAI(base_url=base_url, api_key=sys.argv[2], max_retries=0)
chat = contractor.chat.completions.create(
    model="demo-chat", messages=[{"role": "user", "content": "hi"}]
)
assert chat.choices[0].message.content, chat
try:
    contractor.embeddings.create(model="demo-embed", input="x")
    raise AssertionError("expected PermissionDeniedError")
except openai.PermissionDeniedError as e:
    assert e.status_code == 403 and e.code == "forbidden", e
ids = [m.id for m in contractor.models.list()]
assert ids == ["demo-chat"], ids

# The demo's rate-limited key: five chat requests a minute; the sixth is a
# RateLimitError (429) that says which limit, with a retry-after.
limited = OpenAI(base_url=base_url, api_key="sk-skygate-demo-limited", max_retries=0)
for i in range(5):
    raw = limited.chat.completions.with_raw_response.create(
        model="demo-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "5", raw.headers
    assert raw.headers["x-ratelimit-remaining-requests"] == str(4 - i), raw.headers
    assert raw.parse().choices[0].message.content
try:
    limited.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("expected RateLimitError")
except openai.RateLimitError as e:
    assert e.status_code == 429, e
    assert e.code == "rate_limit_exceeded" and e.type == "requests", e
    assert "demo-limited" in e.message, e.message
    assert 1 <= int(e.response.headers["retry-after"]) <= 12, e.response.headers
    assert e.response.headers["x-ratelimit-remaining-requests"] == "0", e.response.headers

# A streamed answer under a token limit: the gateway asks the backend for
# the usage chunk, and leaves it out of a stream that did not ask for it.
chunks = list(client.chat.completions.create(
    model="demo-chat", stream=True, messages=[{"role": "user", "content": "hi"}]
))
assert chunks and all(c.usage is None for c in chunks), chunks[-1]
chunks = list(client.chat.completions.create(
    model="demo-chat", stream=True, stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "hi"}]
))
assert chunks[-1].usage and chunks[-1].usage.total_tokens > 0, chunks[-1]

print("openai sdk: ok")
