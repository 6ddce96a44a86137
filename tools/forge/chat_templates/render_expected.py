#!/usr/bin/python3
"""Renders every (template, conversation) pair of the chat template corpus with Python's jinja2 in the configuration
transformers' apply_chat_template uses, and writes the expected strings to
tests/Inference.Tests/Chat/Corpus/expected.json.

Configuration (transformers, src/transformers/utils/chat_template_utils.py, _compile_jinja_template):
  ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
  filters["tojson"] = json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
  globals raise_exception (TemplateError with the template's message) and strftime_now (here a fixed clock,
  2026-12-04 09:30:00, which the C# test injects too).
Variables as apply_chat_template passes them: messages, tools (when the conversation has tools),
add_generation_prompt, bos_token, eos_token (the model's tokens, from corpus.json). Tool-call arguments reach the
template as the parsed JSON object (what vLLM passes). transformers' AssistantTracker ({% generation %}) is stood in
for by an extension that renders the block's body unchanged.

Run: /usr/bin/python3 tools/forge/chat_templates/render_expected.py   (Debian's python3-jinja2)
"""
import json, os, sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.abspath(os.path.join(HERE, "..", "..", "..", "tests", "Inference.Tests", "Chat", "Corpus"))
NOW = datetime(2026, 12, 4, 9, 30, 0)


class Generation(Extension):
    """transformers' AssistantTracker without the tracking: {% generation %}...{% endgeneration %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return NOW.strftime(format)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


class Raised(Exception):
    pass


def template_messages(messages):
    """OpenAI wire messages as the template sees them: tool-call arguments parsed from their JSON text."""
    out = []
    for m in messages:
        m = json.loads(json.dumps(m))
        for call in m.get("tool_calls") or []:
            args = call["function"].get("arguments")
            if isinstance(args, str):
                try:
                    parsed = json.loads(args)
                    if isinstance(parsed, dict):
                        call["function"]["arguments"] = parsed
                except ValueError:
                    pass
        out.append(m)
    return out


def render(env, source, entry, conversation):
    try:
        template = env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": f"syntax: {e}", "raised": False}
    variables = {
        "messages": template_messages(conversation["messages"]),
        "add_generation_prompt": conversation["add_generation_prompt"],
        "bos_token": entry["bos_token"],
        "eos_token": entry["eos_token"],
    }
    if "tools" in conversation:
        variables["tools"] = conversation["tools"]
    raised = {"value": False}

    def raising(message):
        raised["value"] = True
        raise_exception(message)

    template.globals["raise_exception"] = raising
    try:
        return {"text": template.render(**variables)}
    except jinja2.exceptions.TemplateError as e:
        return {"error": str(e), "raised": raised["value"]}
    except Exception as e:  # TypeError and the like: the template fails for these messages
        return {"error": f"{type(e).__name__}: {e}", "raised": False}


def main():
    with open(os.path.join(CORPUS, "corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    with open(os.path.join(CORPUS, "conversations.json"), encoding="utf-8") as f:
        conversations = json.load(f)
    env = environment()
    expected = {}
    for entry in corpus:
        with open(os.path.join(CORPUS, "templates", entry["name"] + ".jinja"), encoding="utf-8", newline="") as f:
            source = f.read()
        takes_tools = "tools" in source
        results = {}
        for c in conversations:
            if "tools" in c and not takes_tools:
                continue
            results[c["name"]] = render(env, source, entry, c)
        expected[entry["name"]] = results
    with open(os.path.join(CORPUS, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"jinja2": jinja2.__version__, "now": NOW.isoformat(), "renders": expected}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    pairs = sum(len(r) for r in expected.values())
    errors = sum(1 for r in expected.values() for x in r.values() if "error" in x)
    print(f"{len(expected)} templates, {pairs} pairs ({errors} where the template raises or fails), jinja2 {jinja2.__version__}")


if __name__ == "__main__":
    sys.exit(main())
