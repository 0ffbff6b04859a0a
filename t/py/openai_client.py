"""Drives ngx_llm with the official openai package (t/027-openai-client.t).

usage: openai_client.py BASE_URL AB_BASE_URL

BASE_URL serves the models stories-v1 and stories-v2 as asked; behind
AB_BASE_URL, split_clients on the API key chooses the version.  Prints
one "ok - NAME" or "not ok - NAME" line per check, "# ..." for notes.
"""

import sys

import openai

REF = (", there was a little girl named Lily. She loved to play outside"
       " in the p")

failures = 0


def check(cond, name, detail=""):
    global failures
    print(("ok - " if cond else "not ok - ") + name, flush=True)
    if not cond:
        failures += 1
        if detail:
            print("# " + str(detail).replace("\n", "\n# "), flush=True)


def client(base_url, key="sk-test"):
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0,
                         timeout=30)


def models(c):
    ids = sorted(m.id for m in c.models.list())
    check(ids == ["stories-v1", "stories-v2"], "models.list()", ids)
    check(c.models.retrieve("stories-v2").id == "stories-v2",
          "models.retrieve()")


def completions(c):
    r = c.completions.create(model="stories-v1", prompt="Once upon a time",
                             max_tokens=24, temperature=0)
    check(r.object == "text_completion", "completion: object")
    check(r.choices[0].text == REF, "completion: text", r.choices[0].text)
    check(r.choices[0].finish_reason == "length", "completion: finish")
    check(r.model == "stories-v1", "completion: model")
    check(r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 24,
          "completion: usage", r.usage)
    check(r.usage.prompt_tokens_details is None
          or r.usage.prompt_tokens_details.cached_tokens is not None,
          "completion: cached tokens")

    r = c.completions.create(model="stories-v1", prompt="Once upon a time",
                             max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    check("".join(lp.tokens) == r.choices[0].text
          and len(lp.top_logprobs) == 4, "completion: logprobs", lp)

    r = c.completions.create(model="stories-v1", prompt=["Once", "Lily"],
                             max_tokens=3, n=2, seed=1)
    check([ch.index for ch in r.choices] == [0, 1, 2, 3],
          "completion: a prompt list with n 2", r.choices)

    text, finish = "", None
    for chunk in c.completions.create(model="stories-v1",
                                      prompt="Once upon a time",
                                      max_tokens=24, temperature=0,
                                      stream=True):
        for ch in chunk.choices:
            text += ch.text
            finish = ch.finish_reason or finish
    check(text == REF, "completion stream: text", text)
    check(finish == "length", "completion stream: finish_reason")


def chat(c):
    msgs = [{"role": "system", "content": "You tell stories."},
            {"role": "user", "content": "Tell me a story."}]
    r = c.chat.completions.create(model="stories-v2", messages=msgs,
                                  max_tokens=12, temperature=0)
    check(r.object == "chat.completion", "chat: object")
    check(r.model == "stories-v2", "chat: model")
    msg = r.choices[0].message
    check(msg.role == "assistant" and msg.content, "chat: message", msg)
    check(r.choices[0].finish_reason == "length", "chat: finish_reason")
    check(r.usage.completion_tokens == 12, "chat: usage", r.usage)

    parts = [{"role": "user", "content": [
        {"type": "text", "text": "Tell me"},
        {"type": "text", "text": "a story."}]}]
    p = c.chat.completions.create(model="stories-v2", messages=parts,
                                  max_completion_tokens=5, temperature=0)
    check(p.usage.completion_tokens == 5,
          "chat: text parts, max_completion_tokens")

    r2 = c.chat.completions.create(model="stories-v2", messages=msgs,
                                   max_tokens=4, temperature=0,
                                   logprobs=True, top_logprobs=2)
    content = r2.choices[0].logprobs.content
    check(len(content) == 4 and all(len(t.top_logprobs) == 2
                                    for t in content),
          "chat: logprobs", content)

    text, usage, role = "", None, None
    stream = c.chat.completions.create(
        model="stories-v2", messages=msgs, max_tokens=12, temperature=0,
        stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            role = role or ch.delta.role
            text += ch.delta.content or ""
    check(text == msg.content, "chat stream: content", text)
    check(role == "assistant", "chat stream: role")
    check(usage is not None and usage.completion_tokens == 12,
          "chat stream: include_usage", usage)


def errors(c):
    try:
        c.completions.create(model="nosuch", prompt="x", max_tokens=1)
        check(False, "error: unknown model raises")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and e.code == "model_not_found",
              "error: unknown model is NotFoundError", e)

    try:
        c.chat.completions.create(model="stories-v1", temperature=5,
                                  messages=[{"role": "user",
                                             "content": "x"}])
        check(False, "error: bad temperature raises")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.param == "temperature",
              "error: bad temperature is BadRequestError", e)


def ab(base_url):
    seen = {}
    for i in range(200):
        key = "sk-ab-%d" % i
        raw = client(base_url, key).completions.with_raw_response.create(
            model="stories", prompt="Once", max_tokens=1, temperature=0)
        r = raw.parse()
        if r.model != raw.headers.get("x-llm-model"):
            check(False, "a/b: X-LLM-Model names the model", r.model)
            return
        seen.setdefault(r.model, key)
        if len(seen) == 2:
            break
    check(sorted(seen) == ["stories-v1", "stories-v2"],
          "a/b: both versions behind one base_url", seen)
    for model, key in sorted(seen.items()):
        again = {client(base_url, key).chat.completions.create(
            model="stories", max_tokens=1,
            messages=[{"role": "user", "content": "Hi"}]).model
            for _ in range(5)}
        check(again == {model}, "a/b: key %s stays on %s" % (key, model),
              again)


def main():
    base_url, ab_url = sys.argv[1], sys.argv[2]
    print("# openai %s" % openai.__version__, flush=True)
    c = client(base_url)
    for part in (models, completions, chat, errors):
        try:
            part(c)
        except Exception as e:  # a failure, not a crash of the script
            check(False, "%s ran" % part.__name__, repr(e))
    try:
        ab(ab_url)
    except Exception as e:
        check(False, "ab ran", repr(e))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
