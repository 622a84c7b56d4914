"""Renders docs/configuration.md from the schema: `python -m mimird.config.docs > docs/configuration.md`."""

from __future__ import annotations

import sys

from mimird.config.schema import LOADER_FLAGS, OPTIONS


def render_markdown() -> str:
    """The configuration reference: every option's YAML path, flag, type, default and help."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `src/mimird/config/schema.py` by `python -m mimird.config.docs`; do not edit by hand.",
        "",
        "Every option can be set in the YAML file given by `-config.file` (at its YAML path) or as a flag;",
        "flags override the file. Durations take Go's and Prometheus's units (`500ms`, `1h30m`, `2d`).",
        "Options under `limits` are per-tenant limits: these are their defaults, and the runtime config",
        "file (`-runtime-config.file`) overrides them per tenant under `overrides: {<tenant>: {...}}`.",
        "An unknown flag or key, a wrong type or a bad value stops start-up with exit status 1.",
        "",
        "## Flags of the loader",
        "",
        "| Flag | Description |",
        "|---|---|",
    ]
    out += [f"| `-{name}` | {text} |" for name, text in LOADER_FLAGS.items()]
    sections: dict[str, list] = {}
    for opt in OPTIONS:
        section = opt.path.split(".")[0] if "." in opt.path else "(top level)"
        sections.setdefault(section, []).append(opt)
    for section, opts in sections.items():
        out += ["", f"## `{section}`", "", "| YAML path | Flag | Type | Default | Description |", "|---|---|---|---|---|"]
        for opt in opts:
            default = opt.to_text(opt.default)
            category = "" if opt.category == "basic" else f" *({opt.category})*"
            flag = f"`-{opt.flag}`" if opt.flag else ""
            default_cell = f"`{default}`" if default else '`""`'
            choices = f" One of: {', '.join(opt.choices)}." if opt.choices else ""
            out.append(f"| `{opt.path}` | {flag} | {opt.kind} | {default_cell} | {opt.help}{choices}{category} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
