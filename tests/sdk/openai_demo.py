"""Drives `skygate demo` with the official OpenAI Python SDK.

Usage: python openai_demo.py BASE_URL CONTRACTOR_TOKEN
  BASE_URL          e.g. http://127.0.0.1:8080/v1
  CONTRACTOR_TOKEN  a demo JWT in group `contractors`, tenant `acme`
                    (`skygate demo-token --tenant acme --group contractors`)
Exits non-zero on the first failed check.
"""
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

# Embeddings.
emb = client.embeddings.create(model="demo-embed", input=["one", "two"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb

# Models.
ids = sorted(m.id for m in client.models.list())
assert ids == ["demo-chat", "demo-embed"], ids

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
    assert e.status_code == 400, e

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

print("openai sdk: ok")
