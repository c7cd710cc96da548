"""`python -m sslzoo.export record RUN_DIR` / `python -m sslzoo.export cards`: the zoo's bookkeeping."""

from __future__ import annotations

from .cli import tools

if __name__ == "__main__":
    tools(prog_name="python -m sslzoo.export")
