"""`python -m sslzoo.train ...` is `sslzoo-train ...`; torchrun launches it with `-m sslzoo.train`."""

from __future__ import annotations

from .cli import train_main

if __name__ == "__main__":
    train_main(prog_name="sslzoo-train")
