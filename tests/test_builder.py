"""The zoo builder on a CPU: plans of three tiny fake-data entries, built under a time budget, killed
and resumed, recorded into a blank registry copy, and their sharded Hub folders loaded back."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from sslzoo.export.cli import tools
from sslzoo.export.results import normalise_metrics
from sslzoo.train import budget as budgets
from sslzoo.train import builder as builder_module
from sslzoo.train.builder import build, plan_status
from sslzoo.train.cli import eval_main, train_main
from sslzoo.train.plans import load_plan
from sslzoo.train.stepping import Stepper

import sslzoo
from sslzoo.errors import ConfigError
from sslzoo.evaluation import LINEAR_PROTOCOLS
from sslzoo.weight_files import INDEX_NAME, shard_names, shard_sha256s, weights_sha256

REPO = Path(__file__).resolve().parent.parent
NAMES = ["simclr-resnet18-cifar100", "mocov2-resnet18-cifar10", "mixco-resnet18-cifar100"]  # none bundled
METHODS = ["simclr", "mocov2", "mixco"]
STEPS = 4  # per entry: 8 fake images, batch 4, 2 epochs
#: The linear probes of each entry of `tiny_plan`: the last one adds the reference probe (2 epochs).
PROTOCOLS = {NAMES[0]: ["fast"], NAMES[1]: ["fast"], NAMES[2]: ["fast", "reference"]}


def tiny_plan(
    path: Path, *, to: str = "safetensors", shard: str | None = None, extra: str = "", entries: int = 3
) -> Path:
    """Three entries of 16 px fake images, evaluated on 16 + 8 images with 2-epoch linear probes:
    the fast one for every entry, the reference one as well for the third."""
    text = f"""
[eval]
linear = ["fast"]
linear_epochs = 2
train_size = 16
test_size = 8
[export]
to = "{to}"
{f'max_shard_size = "{shard}"' if shard else ""}
[set]
batch_size = 4
fake_size = 8
fake_test_size = 8
input_size = 16
warmup_epochs = 0.0
knn_every = 1
{extra}
"""
    for name, method in list(zip(NAMES, METHODS))[:entries]:
        text += f'\n[[entry]]\nname = "{name}"\nmethod = "{method}"\nplugins = []\ndataset = "fake"\nepochs = 2\n'
        if PROTOCOLS[name] != ["fast"]:
            text += f"[entry.eval]\nlinear = {json.dumps(PROTOCOLS[name])}\n"
    path.write_text(text)
    return path


def weights(runs: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(runs / name / "model" / "model.safetensors")


def assert_same_weights(runs: Path, reference: Path, names: list[str] = NAMES) -> None:
    for name in names:
        expected, actual = weights(reference, name), weights(runs, name)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[k], actual[k]) for k in expected), f"{name}: weights differ"


def records(runs: Path) -> dict:
    return json.loads((runs / "results.json").read_text())["entries"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted build, exported as complete Hub folders with 15 MB shards."""
    root = tmp_path_factory.mktemp("reference")
    plan = load_plan(tiny_plan(root / "plan.toml", to="all", shard="15MB"))
    lines: list[str] = []
    outcome = build(plan, root / "R", runtime={"device": "cpu"}, progress=False, say=lines.append)
    assert outcome.done and outcome.finished == NAMES
    assert len(lines) == 3 and all(line.startswith("finished ") for line in lines)
    return root / "R"


@pytest.mark.slow
def test_each_finished_entry_is_a_complete_hub_folder_with_its_results(reference):
    recorded = records(reference)
    assert list(recorded) == NAMES
    for name in NAMES:
        record, hub = recorded[name], reference / name / "hub"
        shards = shard_names(hub / INDEX_NAME)
        assert len(shards) == 4  # 44.7 MB of ResNet-18 weights in shards of at most 15 MB
        assert {"config.json", "model.onnx", "README.md", "results.json", INDEX_NAME, *shards} <= {
            path.name for path in hub.iterdir()
        }
        trained = sslzoo.load(reference / name / "model").state_dict()
        published = sslzoo.load(hub)  # the sharded export loads back bit-exactly
        assert all(torch.equal(published.state_dict()[k], v) for k, v in trained.items())
        assert published.provenance.get("commit") == record["commit"]
        metrics = record["metrics"]
        assert set(metrics["knn"]) == {"k200_t0.1", "k20_t0.07"}
        assert list(metrics["linear"]) == PROTOCOLS[name]  # sslzoo-eval's shape: one result per protocol
        for protocol, result in metrics["linear"].items():
            assert result["protocol"] == protocol and result["epochs"] == 2  # the plan's linear_epochs
            assert 0 <= result["top1"] <= result["top5"] <= 100
        assert (metrics["train_images"], metrics["test_images"]) == (16, 8)
        reference_passes = 2 * 16 if "reference" in PROTOCOLS[name] else 0  # 2 epochs over the 16 images
        assert (record["evaluated_images"], record["encoded_images"]) == (24, 24 + reference_passes)
        training = record["training"]
        assert training["steps"] == STEPS and training["views_per_s"] > 0 and training["wall_time_s"] > 0
        assert training["device"].startswith("cpu")
        assert record["seconds"]["evaluate"] > 0 and record["seconds"]["export"] > 0
        assert record["command"].startswith(f"sslzoo-train --method {record['method']} --dataset fake --epochs 2")
        assert "--set batch_size=4" in record["command"] and record["command"].endswith(str(reference / name))
        # The numbers are those of the published file: measured on RUNS/<name>/hub/, which says so.
        assert metrics["weights_sha256"] == weights_sha256(hub)
        assert record["eval_command"].startswith(f"sslzoo-eval {hub} --dataset fake")
        choice = "both" if len(PROTOCOLS[name]) == 2 else "fast"
        assert f"--linear-protocol {choice} --linear-epochs 2 --train-size 16" in record["eval_command"]
        if (REPO / ".git").exists():
            assert len(record["commit"].removesuffix("-dirty")) == 40
        results = json.loads((hub / "results.json").read_text())
        assert results["weights_sha256"] == results["metrics"]["weights_sha256"] == weights_sha256(hub)
        published_linear = {e["protocol"]: e["top1"] for e in results["metrics"]["linear"]}
        assert published_linear == {protocol: r["top1"] for protocol, r in metrics["linear"].items()}
        card = (hub / "README.md").read_text()
        for protocol in ("fast", "reference"):
            assert (f"linear top-1 ({protocol} probe, 2 epochs)" in card) == (protocol in PROTOCOLS[name])
        assert {k: v["sha256"] for k, v in results["files"].items() if k in shards} == shard_sha256s(hub)
        assert results["metrics"] == normalise_metrics(metrics, percent=True) == published.provenance["metrics"]
        assert f"measured on these weights: the file with sha256 `{weights_sha256(hub)}`" in card


@pytest.mark.slow
def test_a_budget_that_ends_inside_the_second_entry_and_the_next_call(reference, tmp_path, monkeypatch):
    """A clock that moves 5 s per training step: 45 s fit the first entry, its evaluation and
    three steps of the second, which stops before its last step (no time left to evaluate it)."""
    now = [0.0]
    step = Stepper.__call__

    def timed_step(self, *args):
        now[0] += 5.0
        return step(self, *args)

    monkeypatch.setattr(Stepper, "__call__", timed_step)
    plan = load_plan(tiny_plan(tmp_path / "plan.toml"))
    runs = tmp_path / "R"
    first = build(plan, runs, budget_minutes=0.75, clock=lambda: now[0], runtime={"device": "cpu"}, progress=False)
    assert (first.done, first.finished, first.stopped_at, first.reason) == (False, NAMES[:1], NAMES[1], "budget")
    assert list(records(runs)) == NAMES[:1]
    checkpoint = torch.load(runs / NAMES[1] / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == STEPS - 1 and not (runs / NAMES[1] / "model").exists()
    assert not (runs / NAMES[2]).exists()
    status = {s.name: s for s in plan_status(plan, runs)}
    assert [status[n].state for n in NAMES] == ["finished", "resume", "start"]
    assert status[NAMES[1]].step == STEPS - 1 and status[NAMES[1]].estimate_seconds > 0

    second = build(plan, runs, clock=lambda: now[0], runtime={"device": "cpu"}, progress=False)
    assert (second.done, second.finished) == (True, NAMES[1:])
    assert list(records(runs)) == NAMES
    assert_same_weights(runs, reference)


@pytest.mark.slow
def test_the_recorded_eval_command_measures_the_same_numbers_again(reference):
    record = records(reference)[NAMES[2]]  # evaluated with the fast and the reference probe
    words = shlex.split(record["eval_command"])
    assert words[0] == "sslzoo-eval" and "--linear-protocol" in words
    result = CliRunner().invoke(eval_main, words[1:])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {key: value for key, value in report.items() if key not in ("model", "seconds")} == record["metrics"]


@pytest.mark.slow
def test_sigkill_mid_entry_loses_no_finished_entry_and_ends_with_the_same_weights(reference, tmp_path):
    # Two entries: the first finishes, the second is killed between two of its checkpoints (one a step).
    plan = tiny_plan(tmp_path / "plan.toml", extra="checkpoint_minutes = 0.0", entries=2)
    runs = tmp_path / "R"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "sslzoo.train", "--plan", str(plan), "--out", str(runs), "--device", "cpu"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = runs / NAMES[1] / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while not second.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    before = records(runs)
    assert list(before) == NAMES[:1] and not (runs / NAMES[1] / "model").exists()
    step = torch.load(second, weights_only=True)["step"]
    assert 0 < step < STEPS

    result = CliRunner().invoke(train_main, ["--plan", str(plan), "--out", str(runs), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Plan finished" in result.output and "python -m sslzoo.export record" in result.output
    after = records(runs)
    assert list(after) == NAMES[:2] and after[NAMES[0]] == before[NAMES[0]]  # the finished entry, as it was
    assert_same_weights(runs, reference, NAMES[:2])


@pytest.mark.slow
def test_an_entry_trained_but_not_recorded_is_evaluated_and_exported_without_training(reference, tmp_path):
    """A build killed during an evaluation or an export: the next call redoes only that."""
    runs = tmp_path / "R"
    shutil.copytree(reference / NAMES[0], runs / NAMES[0], ignore=shutil.ignore_patterns("hub"))
    (runs / NAMES[0] / ".hub.partial-0a1b2c3d").mkdir()  # what an export killed midway leaves
    checkpoint = (runs / NAMES[0] / "checkpoint.pt").stat().st_mtime_ns
    plan = load_plan(tiny_plan(tmp_path / "plan.toml"))
    single = type(plan)(plan.path, plan.entries[:1])
    outcome = build(single, runs, runtime={"device": "cpu"}, progress=False)
    assert outcome.done and outcome.finished == NAMES[:1]
    assert (runs / NAMES[0] / "checkpoint.pt").stat().st_mtime_ns == checkpoint  # not trained again
    assert not (runs / NAMES[0] / ".hub.partial-0a1b2c3d").exists()
    assert records(runs)[NAMES[0]]["metrics"]["knn"] == records(reference)[NAMES[0]]["metrics"]["knn"]


@pytest.mark.slow
def test_the_command_exits_75_while_there_is_more_to_do_and_its_dry_run_says_what(reference, tmp_path):
    runs = tmp_path / "R"
    shutil.copytree(reference / NAMES[0], runs / NAMES[0])
    (runs / "results.json").write_text(
        json.dumps({"format": "sslzoo-zoo-build", "version": 1, "entries": {NAMES[0]: records(reference)[NAMES[0]]}})
    )
    plan = tiny_plan(tmp_path / "plan.toml")
    # A budget smaller than any step: the call still takes one (repeated calls always progress), then stops.
    result = CliRunner().invoke(
        train_main, ["--plan", str(plan), "--out", str(runs), "--device", "cpu", "--budget-minutes", "0.001"]
    )
    assert result.exit_code == 75, result.output
    assert f"Stopped by the time budget in {NAMES[1]}" in result.output
    assert f"{NAMES[1]}: 0/4 step (0%)" in result.stderr and "\r" not in result.stderr  # progress, piped
    assert torch.load(runs / NAMES[1] / "checkpoint.pt", weights_only=True)["step"] == 1
    dry = CliRunner().invoke(train_main, ["--plan", str(plan), "--out", str(runs), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    rows = {line.split()[1]: line for line in dry.output.splitlines() if line[:3].strip().isdigit()}
    assert "finished" in rows[NAMES[0]] and "in progress" in rows[NAMES[1]] and "1/4 steps" in rows[NAMES[1]]
    assert "to start" in rows[NAMES[2]] and "~" in rows[NAMES[1]]  # estimated from the measured entry
    assert not (runs / NAMES[2]).exists()  # a dry run trains nothing


@pytest.mark.slow
def test_recording_the_runs_folder_fills_a_blank_registry_with_the_measured_numbers(reference, zoo_json, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# zoo\n\n<!-- zoo:start -->\nold table\n<!-- zoo:end -->\n")
    cards = tmp_path / "model_cards"
    refused = CliRunner().invoke(tools, ["record", str(reference), "--cards", str(cards), "--readme", str(readme)])
    assert refused.exit_code == 0 and "Skipped 3 stand-in entries" in refused.output
    assert not sslzoo.list_models(trained=True)

    result = CliRunner().invoke(
        tools, ["record", str(reference), "--allow-stand-ins", "--cards", str(cards), "--readme", str(readme)]
    )
    assert result.exit_code == 0, result.output
    assert sslzoo.list_models(trained=True) == sorted(NAMES)
    for name, record in records(reference).items():
        info = sslzoo.model_info(name)
        hub = reference / name / "hub"
        assert info.metrics == normalise_metrics(record["metrics"], percent=True)
        for key in ("wall_time_s", "train_seconds", "views_per_s", "steps", "device", "precision"):
            assert info.training[key] == record["training"][key], key
        assert (info.training["commit"], info.training["command"]) == (record["commit"], record["command"])
        assert (info.weights, info.sha256, info.shards) == ("hub", weights_sha256(hub), shard_sha256s(hub))
        assert (cards / f"{name}.md").is_file() and (cards / f"{name}-curves.png").is_file()
        knn = info.metrics["knn"][0]
        assert (knn["k"], knn["t"]) == (200, 0.1) and f"{knn['top1']:.2f}" in readme.read_text()
        assert [entry["protocol"] for entry in info.metrics["linear"]] == PROTOCOLS[name]
        row = next(line for line in readme.read_text().splitlines() if line.startswith(f"| [{name}]"))
        fast, reference_cell = (cell.strip() for cell in row.split("|")[5:7])  # each in its protocol's column
        assert fast == f"{record['metrics']['linear']['fast']['top1']:.2f}"
        measured = record["metrics"]["linear"].get("reference")
        assert reference_cell == (f"{measured['top1']:.2f}" if measured else "not yet measured")
        shutil.copytree(hub, Path(sslzoo.sslzoo_home()) / name)  # as if downloaded: every shard is checked
        assert torch.equal(
            sslzoo.load(name).state_dict()["conv1.weight"], sslzoo.load(hub).state_dict()["conv1.weight"]
        )
    assert "old table" not in readme.read_text()


def test_the_zoo_plan_lists_twenty_cifar_entries_in_priority_order(tmp_path):
    result = CliRunner().invoke(train_main, ["--plan", "zoo", "--out", str(tmp_path / "zoo"), "--dry-run"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line[:3].strip().isdigit()]
    assert [int(row[0]) for row in rows] == list(range(1, 21))
    names = [row[1] for row in rows]
    assert names[0].endswith("-resnet18-cifar10") and names[1] == "mixco-resnet18-cifar100"
    five = {f"{m}-resnet18-cifar100" for m in ("mixco", "selfcon", "minc", "batchfusion", "iecl")}
    assert set(names[1:6]) == five
    expected = {f"{m}-resnet18-{d}" for m in METHOD_NAMES for d in ("cifar10", "cifar100")}
    assert set(names) == expected and all(sslzoo.model_info(n).backbone == "resnet18" for n in names)
    plan = load_plan("zoo")
    assert {entry.epochs for entry in plan.entries} == {200} and not any(e.stand_in for e in plan.entries)
    assert "0/39,000 steps" in result.output and "not yet measured" in result.output


def test_the_zoo_plan_runs_both_linear_probes_and_its_budget_counts_the_reference_epochs():
    plan = load_plan("zoo")
    assert {entry.eval.linear for entry in plan.entries} == {LINEAR_PROTOCOLS} == {("fast", "reference")}
    entry = plan.entry("mixco-resnet18-cifar100")
    assert entry.eval.linear_epochs is None  # each protocol's own length
    assert builder_module.eval_command(entry, Path("runs/zoo/m/model"), {"device": "cuda"}) == (
        "sslzoo-eval runs/zoo/m/model --dataset cifar100 --device cuda --linear-protocol both --json"
    )
    # Both splits once (kNN and the fast probe), then the 50,000 training images in each of 100 reference epochs.
    assert builder_module.evaluation_images(entry) == 60_000 + 100 * 50_000
    fast_only = dataclasses.replace(entry, eval=dataclasses.replace(entry.eval, linear=("fast",)))
    assert builder_module.evaluation_images(fast_only) == 60_000
    report = {"train_images": 50_000, "test_images": 10_000, "linear": {"fast": {}, "reference": {"epochs": 100}}}
    assert builder_module.encoded_images(report) == builder_module.evaluation_images(entry)
    # A measured evaluation's time is per image through the encoder; a record without that count
    # (fast probe only) has its splits' images.
    measured = budgets.measured_from(
        [
            {"method": "mixco", "seconds": {"evaluate": 506.0}, "evaluated_images": 60_000,
             "encoded_images": 5_060_000},
            {"method": "simclr", "seconds": {"evaluate": 6.0}, "evaluated_images": 60_000},
        ]
    )
    assert [m.evaluate_seconds_per_image for m in measured] == [pytest.approx(1e-4), pytest.approx(1e-4)]
    seconds = budgets.finish_seconds(
        images=builder_module.evaluation_images(entry), export_to="safetensors", history=measured, images_per_s=None
    )
    assert seconds == pytest.approx(1.25 * (506.0 + budgets.EXPORT_GUESS_SECONDS["safetensors"]))


@pytest.mark.parametrize(
    "linear, protocols, flags",
    [
        ('["reference", "fast"]', ("fast", "reference"), "--linear-protocol both"),
        ('["reference"]', ("reference",), "--linear-protocol reference"),
        ('"fast"', ("fast",), "--linear-protocol fast"),
        ("[]", (), "--no-linear"),
    ],
)
def test_a_plans_linear_protocols_become_the_eval_command(tmp_path, linear, protocols, flags):
    path = tmp_path / "plan.toml"
    path.write_text(
        f'[eval]\nlinear = {linear}\nlinear_epochs = 3\n[[entry]]\nname = "selfcon-resnet18-cifar10"\n'
        'method = "selfcon"\ndataset = "cifar10"\nepochs = 1\n'
    )
    entry = load_plan(path).entries[0]
    assert entry.eval.linear == protocols  # in LINEAR_PROTOCOLS order
    command = builder_module.eval_command(entry, Path("m"), {})
    assert command == f"sslzoo-eval m --dataset cifar10 {flags}{' --linear-epochs 3' if protocols else ''} --json"
    reference_epochs = 3 if "reference" in protocols else 0
    assert builder_module.evaluation_images(entry) == 60_000 + reference_epochs * 50_000


METHOD_NAMES = ["simclr", "mocov2", "byol", "supcon", "spectral", "mixco", "selfcon", "minc", "batchfusion", "iecl"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ('name = "mixco-resnet18-cifar1000"\nmethod = "mixco"\ndataset = "cifar100"\nepochs = 1', "cifar100"),
        ('name = "mixco-resnet18-cifar100"\nmethod = "mocov2"\ndataset = "cifar100"\nepochs = 1', "method 'mocov2'"),
        ('name = "byol-resnet18-cifar100"\nmethod = "byol"\ndataset = "cifar10"\nepochs = 1', "dataset 'cifar10'"),
        ('name = "byol-resnet18-cifar100"\nmethod = "byol"\ndataset = "cifar100"\nepochs = 0', "epochs"),
        ('name = "byol-resnet18-cifar100"\nmethod = "byol"\ndataset = "cifar100"\nepoch = 1', "unknown key"),
        (
            'name = "byol-resnet18-cifar100"\nmethod = "byol"\ndataset = "cifar100"\nepochs = 1\n'
            '[entry.eval]\nlinear = ["slow"]',
            "linear-probe protocol.*fast, reference",
        ),
        (
            'name = "byol-resnet18-cifar100"\nmethod = "byol"\ndataset = "cifar100"\nepochs = 1\n'
            '[entry.set]\nhparams.no_such = 1',
            "no_such",
        ),
    ],
)
def test_a_plan_entry_that_is_not_its_registry_name_is_refused(tmp_path, entry, message):
    path = tmp_path / "plan.toml"
    path.write_text(f"[[entry]]\n{entry}\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_plan(path)
    assert "entry 1" in str(error.value)


def test_plan_options_that_belong_to_entries_are_refused(tmp_path):
    result = CliRunner().invoke(train_main, ["--plan", "zoo", "--out", str(tmp_path), "--method", "simclr"])
    assert result.exit_code == 2 and "--method" in result.output and "plan file" in result.output
    result = CliRunner().invoke(train_main, ["--method", "simclr", "--out", str(tmp_path), "--dry-run"])
    assert result.exit_code == 2 and "--plan" in result.output


def test_entry_settings_become_the_reproducing_command(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(
        '[set]\nknn_every = 20\n[[entry]]\nname = "byol-resnet18-cifar100"\nmethod = "byol"\nplugins = ["mixco"]\n'
        'dataset = "cifar100"\nepochs = 3\n[entry.set]\nhparams.base_tau = 0.996\naugment.view2.solarize = 0.2\n'
    )
    with pytest.raises(ConfigError, match="plug-ins"):  # byol + mixco is not the registry's byol
        load_plan(path)
    path.write_text(path.read_text().replace('plugins = ["mixco"]', "plugins = []"))
    entry = load_plan(path).entries[0]
    command = entry.command("runs/x", {"device": "cuda", "data_dir": "data dir"})
    assert command == (
        "sslzoo-train --method byol --dataset cifar100 --epochs 3 --device cuda --data-dir 'data dir' "
        "--set knn_every=20 --set hparams.base_tau=0.996 --set augment.view2.solarize=0.2 --out runs/x"
    )
    config = entry.config()
    assert (config.epochs, config.knn_every, config.hparams["base_tau"]) == (3, 20, 0.996)
    assert config.augment["view2"]["solarize"] == 0.2


def test_describe_gives_one_line_per_finished_entry():
    linear = {"fast": {"protocol": "fast", "top1": 90.5}, "reference": {"protocol": "reference", "top1": 91.25}}
    record = {
        "name": "byol-resnet18-cifar10",
        "metrics": {"knn": {"k200_t0.1": {"top1": 86.91}}, "linear": linear},
        "training": {"wall_time_s": 5400.0, "world_size": 1, "device": "NVIDIA H200", "views_per_s": 41234.5},
    }
    assert builder_module.describe(record) == (
        "finished byol-resnet18-cifar10: kNN 86.91, linear (fast) 90.50, linear (reference) 91.25, "
        "1.50 h on 1x NVIDIA H200, 41,234 views/s"
    )
    record["metrics"] = {"knn": {"k200_t0.1": {"top1": 86.91}}}  # a plan that skips the linear probe
    assert builder_module.describe(record).startswith("finished byol-resnet18-cifar10: kNN 86.91, 1.50 h")
