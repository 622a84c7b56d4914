"""Command line entry point: flags and the YAML file, then run the daemon."""

from __future__ import annotations

import asyncio
import os
import sys

from mimird import __version__
from mimird.config.schema import LOADER_FLAGS, OPTIONS, ConfigError, load_config


def usage(include_all: bool) -> str:
    """The -help text: every flag with its type, default and help, as Mimir prints it."""
    lines = ["Usage of mimird:"]
    entries = [(name, "", "", text) for name, text in LOADER_FLAGS.items() if name not in ("help", "help-all", "version")]
    for opt in OPTIONS:
        if opt.flag and (include_all or opt.category == "basic"):
            kind = {"bool": "", "list": "comma-separated-list-of-strings"}.get(opt.kind, opt.kind)
            default = opt.to_text(opt.default)
            entries.append((opt.flag, kind, default, opt.help + ("" if opt.category == "basic" else
                                                                 f" [{opt.category}]")))
    for name, kind, default, text in sorted(entries):
        lines.append(f"  -{name}" + (f" {kind}" if kind else ""))
        shown = f" (default {default})" if default not in ("", "false") else ""
        lines.append(f"    \t{text}{shown}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse flags and the YAML file, then run the daemon until a signal stops it."""
    if argv is None:
        _reexec_with_huge_page_malloc()
    args = sys.argv[1:] if argv is None else argv
    try:
        config, actions = load_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "help" in actions or "help-all" in actions:
        sys.stdout.write(usage("help-all" in actions))
        return 0
    if "version" in actions:
        print(f"mimird, version {__version__}")
        return 0

    from mimird.util.hugepages import use_huge_page_arenas

    # first, so that the objects of the modules imported from here on are on huge pages too
    use_huge_page_arenas()

    from mimird.util.logging import setup_logging
    from mimird.util.memory import keep_freed_memory

    setup_logging(config.server.log_level, config.server.log_format)
    keep_freed_memory()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(_run(config))
        else:
            asyncio.run(_run(config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _reexec_with_huge_page_malloc() -> None:
    """Start the process over with glibc's huge-page tunable set, which glibc reads only at start
    (`util.hugepages.huge_page_malloc_env`); carry on as is where it is set already or cannot be."""
    from mimird.util.hugepages import huge_page_malloc_env

    env = huge_page_malloc_env(os.environ)
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        pass


async def _run(config) -> None:
    from mimird.app import App

    await App(config).run()
