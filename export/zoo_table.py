"""The zoo at a glance: one table per dataset, generated from the registry.

It is written to `model_cards/README.md` and between the `<!-- zoo:start -->` and
`<!-- zoo:end -->` markers of the top-level README; nothing outside the markers is touched.
Models without weights read "not yet trained", trained ones without numbers "not yet measured".
Each linear-probe protocol has its own column: a number measured with one protocol never
appears in the other's, and one whose protocol was not recorded appears in neither.
"""

from __future__ import annotations

import os
from pathlib import Path

from sslzoo import registry
from sslzoo.errors import ConfigError

from .cards import DATASETS, plain_number
from .results import knn_result, linear_result

START_MARKER = "<!-- zoo:start -->"
END_MARKER = "<!-- zoo:end -->"
WEIGHTS_WHERE = {"bundled": "in the package", "hub": "Hub", "history": "git history", "none": "—"}


def zoo_tables(card_prefix: str = "") -> str:
    """Markdown tables of every registry model: kNN (k=200, t=0.1) and linear top-1 per probe protocol, in percent.

    `card_prefix` is the path from the page holding the table to `model_cards/` (e.g.
    `"model_cards/"` for the top-level README, `""` inside `model_cards/`).
    """
    models = [registry.model_info(name) for name in registry.list_models()]
    order = {name: index for index, name in enumerate(DATASETS)}
    datasets = sorted({info.dataset for info in models}, key=lambda name: (order.get(name, len(order)), name))
    blocks = []
    for dataset in datasets:
        title = DATASETS[dataset].title if dataset in DATASETS else dataset
        rows = [_row(info, card_prefix) for info in models if info.dataset == dataset]
        blocks.append(
            f"### {title}\n\n"
            "| model | method | backbone | kNN top-1 (k=200, t=0.1) | linear top-1 (fast probe) "
            "| linear top-1 (reference probe) | epochs | weights |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
        )
    return (
        "Top-1 accuracy (%) on each dataset's test split, measured on the published weights. "
        "Generated from the registry (`sslzoo/zoo.json`), the one source of these numbers. "
        "Two linear-probe protocols, never mixed: *fast* (cached, un-augmented, standardised features; "
        "the CPU default of `sslzoo-eval`) and *reference* (the papers' probe on augmented crops and flips, "
        "`sslzoo-eval --linear-protocol reference`); only the reference column compares with published "
        "linear accuracies.\n\n" + "\n".join(blocks)
    )


def write_zoo_tables(
    model_cards_dir: str | os.PathLike = "model_cards", readme: str | os.PathLike | None = None
) -> Path:
    """Write `model_cards/README.md` and, given `readme`, refresh its zoo section between the markers."""
    directory = Path(model_cards_dir)
    directory.mkdir(parents=True, exist_ok=True)
    index = directory / "README.md"
    index.write_text(
        "# Model cards\n\n"
        "One card per trained model, generated with `python -m sslzoo.export cards`; do not edit them "
        "by hand. Numbers come from the registry (`sslzoo/zoo.json`); record new results with "
        "`python -m sslzoo.export record`.\n\n## The zoo at a glance\n\n" + zoo_tables()
    )
    if readme is not None:
        update_readme_section(readme, zoo_tables(card_prefix="model_cards/"))
    return index


def update_readme_section(readme: str | os.PathLike, content: str) -> None:
    """Replace the text between the zoo markers of `readme` with `content` (markers kept)."""
    path = Path(readme)
    text = path.read_text()
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < 0 or end < start:
        raise ConfigError(
            f"{path}: add the markers {START_MARKER} and {END_MARKER} (in that order) "
            "where the zoo table goes."
        )
    begin = start + len(START_MARKER)
    path.write_text(f"{text[:begin]}\n{content.strip()}\n{text[end:]}")


def _row(info: registry.ModelInfo, card_prefix: str) -> str:
    name = f"[{info.name}]({card_prefix}{info.name}.md)" if info.trained else info.name
    method = f"{info.method} ({info.host} + {'+'.join(info.plugins)})" if info.plugins else info.method
    method += " (labels)" if info.supervised else ""
    if not info.trained:
        knn = fast = reference = "not yet trained"
    else:
        measured = knn_result(info.metrics)
        knn = f"{measured['top1']:.2f}" if measured else "not yet measured"
        fast, reference = (_linear_cell(info.metrics, protocol) for protocol in ("fast", "reference"))
    epochs = plain_number(info.training.get("epochs", "—")) if info.trained else "—"
    where = WEIGHTS_WHERE[info.weights]
    return f"| {name} | {method} | {info.backbone} | {knn} | {fast} | {reference} | {epochs} | {where} |"


def _linear_cell(metrics: dict, protocol: str) -> str:
    entry = linear_result(metrics, protocol)
    return f"{entry['top1']:.2f}" if entry else "not yet measured"
