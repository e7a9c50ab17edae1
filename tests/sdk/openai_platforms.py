"""Drives Skygate's platform backends (Bedrock, Lambda, ...) with the official
openai SDK: a chat and a streamed chat per model, then the SDK's exception
types for mapped platform errors. Usage:

    openai_platforms.py BASE_URL API_KEY MODEL[,MODEL...]

Prints `platforms sdk: ok` when every check passed; exits non-zero otherwise.
"""
import sys

import openai

base, key, models = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)

for model in models:
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        max_tokens=4,
    )
    text = r.choices[0].message.content
    assert text and r.choices[0].finish_reason in ("stop", "length"), (model, r)
    assert r.usage.completion_tokens == 4, (model, r.usage)
    assert r.model == model, (model, r.model)

    parts, usage, finish = [], None, None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(parts).strip(), (model, parts)
    assert finish in ("stop", "length"), (model, finish)
    assert usage and usage.completion_tokens == 3, (model, usage)
    print(f"{model}: {''.join(parts).strip()!r}")

print("platforms sdk: ok")
