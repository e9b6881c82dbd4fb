"""A readable API reference page, rendered from the OpenAPI document on the server.

Self-contained (no script or stylesheet from a CDN), so it works inside a bank's network
where the browser reaches nothing but the service itself. Tools that want more read
``/api/v1/openapi.json``.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI","PingFang SC","Microsoft YaHei",sans-serif;
max-width:980px;margin:2em auto;padding:0 1em;color:#1d1d1f}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd}
.op{border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.6em 1em}
.m{display:inline-block;min-width:4.5em;font-weight:700;font-family:monospace}
.get{color:#0b6e4f}.post{color:#1f5fbf} code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f8fa;padding:.6em;overflow:auto;border-radius:4px}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #e3e3e3;padding:2px 8px;
text-align:left;vertical-align:top}.muted{color:#666}
"""


def _md(text: str) -> str:
    """Just enough Markdown for our descriptions: paragraphs, `code` and **bold**."""
    out = []
    for para in text.strip().split("\n\n"):
        html = escape(para.replace("\n", " "))
        parts = html.split("`")
        html = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
        parts = html.split("**")
        html = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
        out.append(f"<p>{html}</p>")
    return "".join(out)


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    rows = []
    for p in op.get("parameters", []):
        schema = p.get("schema", {})
        kind = schema.get("type") or " | ".join(
            s.get("type", _ref_name(s) or "") for s in schema.get("anyOf", [])
        )
        rows.append(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
            f"<td>{escape(str(kind))}</td><td>{escape(p.get('description', ''))}</td></tr>"
        )
    params = (
        "<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else ""
    )
    body = ""
    request = op.get("requestBody")
    if request:
        media = request.get("content", {}).get("application/json", {})
        name = _ref_name(media.get("schema", {})) or "object"
        needed = "" if request.get("required") else " (optional)"
        body = f"<p>Body{needed}: <a href='#schema-{name}'><code>{name}</code></a></p>"
        if "example" in media:
            example = json.dumps(media["example"], ensure_ascii=False, indent=2)
            body += f"<pre>{escape(example)}</pre>"
    answers = ", ".join(
        f"<code>{escape(code)}</code> {escape(r.get('description', ''))}"
        for code, r in op.get("responses", {}).items()
    )
    return (
        f"<div class='op'><span class='m {method}'>{method.upper()}</span>"
        f"<code>{escape(path)}</code> — {escape(op.get('summary', ''))}"
        f"{_md(op.get('description', ''))}{params}{body}"
        f"<p class='muted'>Answers: {answers}</p></div>"
    )


def render(spec: dict[str, Any]) -> str:
    info = spec.get("info", {})
    by_tag: dict[str, list[str]] = {}
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            tag = (op.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append(_operation(method, path, op))
    sections = "".join(f"<h2>{escape(tag)}</h2>{''.join(ops)}" for tag, ops in by_tag.items())
    schemas = "".join(
        f"<h3 id='schema-{escape(name)}'>{escape(name)}</h3>"
        f"<pre>{escape(json.dumps(s, ensure_ascii=False, indent=2))}</pre>"
        for name, s in sorted(spec.get("components", {}).get("schemas", {}).items())
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(info.get('title', 'API'))} API</title><style>{_CSS}</style></head>"
        f"<body><h1>{escape(info.get('title', ''))} API <small class='muted'>"
        f"{escape(info.get('version', ''))}</small></h1>"
        f"<p><a href='openapi.json'>openapi.json</a> (OpenAPI {escape(spec.get('openapi', ''))})"
        f"</p>{_md(info.get('description', ''))}{sections}<h2>Schemas</h2>{schemas}"
        "</body></html>"
    )
