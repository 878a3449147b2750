"""Print one of the README's Quick start commands (``demo`` or ``test``), so CI runs exactly what users run.

The README marks each command's fenced block with an HTML comment: ``<!-- quickstart:demo -->`` and
``<!-- quickstart:test -->``; the block must hold exactly one command line.
"""
import pathlib
import re
import sys


def command(which: str, readme: str = "README.md") -> str:
    text = pathlib.Path(readme).read_text(encoding="utf-8")
    m = re.search(rf"<!-- quickstart:{which} -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    if not m:
        raise SystemExit(f"{readme}: no fenced block after <!-- quickstart:{which} -->")
    lines = [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise SystemExit(f"{readme}: the quickstart:{which} block must hold exactly one command, got {len(lines)}")
    return lines[0].strip()


if __name__ == "__main__":
    print(command(sys.argv[1] if len(sys.argv) > 1 else "test"))
