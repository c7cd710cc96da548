"""Every recipe key and method hyperparameter has a type and a range, checked when the configuration
is resolved, before any data loads: a bad value is one clear line that names the key, the value and
what is allowed, from `resolve_config`, from `sslzoo-train` and from a resumed run."""

from __future__ import annotations

import shutil
import typing
from dataclasses import fields, replace

import pytest
from click.testing import CliRunner
from sslzoo.train.cli import train_main
from sslzoo.train.engine import train
from sslzoo.train.recipes import AUGMENT_DEFAULTS, AUGMENT_LIMITS, LIMITS, TrainConfig, resolve_config

from sslzoo.errors import ConfigError

#: (--set assignment, the words the refusal must hold). The first eleven are the ones a probe found
#: ending in a traceback or accepted silently.
BAD = [
    ("hparams.temperature=0", "hparams.temperature = 0 is not allowed: expected a number > 0"),
    ('hparams.temperature="abc"', "hparams.temperature = 'abc' is not allowed: expected a number > 0"),
    ("log_every=0", "log_every = 0 is not allowed: expected a whole number >= 1"),
    ("fake_size=0", "fake_size = 0 is not allowed: expected a whole number >= 1"),
    ("std=[0,0,0]", "std = [0, 0, 0] is not allowed: expected 3 numbers in (0, 1]"),
    ("mean=[1]", "mean = [1] is not allowed: expected 3 numbers in [0, 1], one per RGB channel"),
    ("warmup_epochs=-5", "warmup_epochs = -5 is not allowed: expected a number >= 0"),
    ("augment.hflip=5", "augment.hflip = 5 is not allowed: expected a number in [0, 1]"),
    ("augment.crop_scale=[2,3]", "augment.crop_scale = [2, 3] is not allowed: expected 2 numbers in (0, 1]"),
    ("checkpoint_minutes=-1", "checkpoint_minutes = -1 is not allowed: expected a number >= 0"),
    ("knn_every=-1", "knn_every = -1 is not allowed: expected a whole number >= 0"),
    ("hparams.proj_hidden_dim=0", "hparams.proj_hidden_dim = 0 is not allowed: expected a whole number >= 1"),
    ("hparams.proj_output_dim=1.5", "hparams.proj_output_dim = 1.5 is not allowed: expected a whole number"),
    ("hparams.temperature=nan", "hparams.temperature = nan is not allowed"),
    ("hparams.temperature=true", "hparams.temperature = true is not allowed: expected a number > 0"),
    ("hparams.no_such=1", "Unknown hyperparameter(s) ['no_such'] for method 'simclr'"),
    ("lr=0", "lr = 0 is not allowed: expected a number > 0"),
    ("lr=inf", "lr = inf is not allowed: expected a number > 0"),
    ("lr_batch=0", "lr_batch = 0 is not allowed"),
    ("momentum=1", "momentum = 1 is not allowed: expected a number in [0, 1)"),
    ("momentum=-0.1", "momentum = -0.1 is not allowed"),
    ("weight_decay=-1e-4", "weight_decay = -0.0001 is not allowed: expected a number >= 0"),
    ("lars_eta=0", "lars_eta = 0 is not allowed: expected a number > 0"),
    ("warmup_start_factor=2", "warmup_start_factor = 2 is not allowed: expected a number in [0, 1]"),
    ("min_lr_factor=-1", "min_lr_factor = -1 is not allowed: expected a number in [0, 1]"),
    ("knn_bank_size=-5", "knn_bank_size = -5 is not allowed: expected a whole number >= 0"),
    ("knn_test_size=2.5", "knn_test_size = 2.5 is not allowed"),
    ("seed=-1", "seed = -1 is not allowed: expected a whole number from 0 to 4294967295"),
    ("workers=-2", "workers = -2 is not allowed: expected a whole number >= 0"),
    ("fake_test_size=0", "fake_test_size = 0 is not allowed"),
    ("input_size=4", "input_size = 4 is not allowed: expected a whole number from 8 to 4096"),
    ("input_size=1e12", "input_size = 1000000000000.0 is not allowed"),
    ("interpolation=lanczos", "interpolation = 'lanczos' is not allowed: expected one of 'bilinear'"),
    ('mean="abc"', "mean = 'abc' is not allowed: expected 3 numbers in [0, 1]"),
    ("mean=[0.5,0.5,0.5,0.5,0.5]", "mean = [0.5, 0.5, 0.5, 0.5, 0.5] is not allowed"),
    ("std=[0.2,0.2,2]", "std = [0.2, 0.2, 2] is not allowed"),
    ("optimizer=adam", "optimizer = 'adam' is not allowed: expected one of 'sgd', 'lars'"),
    ("lr_scaling=cubic", "lr_scaling = 'cubic' is not allowed: expected one of 'linear', 'sqrt', 'none'"),
    ("precision=int8", "precision = 'int8' is not allowed"),
    ("backbone=vit", "backbone = 'vit' is not allowed: expected one of 'resnet18', 'resnet50'"),
    ("stem=big", "stem = 'big' is not allowed: expected one of 'cifar', 'imagenet'"),
    ("nesterov=1", "nesterov = 1 is not allowed: expected true or false"),
    ("sync_batchnorm=yes", "sync_batchnorm = 'yes' is not allowed: expected true or false"),
    ("nesterov=true", "nesterov = true needs momentum > 0"),  # with momentum=0 below
    ("epochs=0", "epochs = 0 is not allowed: expected a whole number >= 1"),
    ("hparams=5", "hparams = 5 is not allowed: expected a table"),
    ("sources=3", "sources = 3 is not allowed: expected a list of strings"),
    ("augment.jitter=[0.4,0.4,0.4,0.9]", "hue 0.9 is not a number in [0, 0.5]"),
    ("augment.jitter=[0.4,0.4]", "augment.jitter = [0.4, 0.4] is not allowed: expected 4 numbers"),
    ("augment.crop_ratio=[2,1]", "augment.crop_ratio = [2, 1] is not allowed"),
    ("augment.blur_sigma=[0,2]", "augment.blur_sigma = [0, 2] is not allowed: expected 2 numbers > 0"),
    (
        "augment.view2.solarize=-0.5",
        "augment.view2.solarize = -0.5 is not allowed: expected a number in [0, 1]",
    ),
    ("augment.grayscale=high", "augment.grayscale = 'high' is not allowed"),
]


def _sets(assignment: str) -> list[str]:
    return [assignment, "momentum=0"] if assignment == "nesterov=true" else [assignment]


@pytest.mark.parametrize(("assignment", "message"), BAD, ids=[a for a, _ in BAD])
def test_resolve_config_refuses_a_bad_value_naming_it(assignment, message):
    with pytest.raises(ConfigError) as info:
        resolve_config("simclr", "fake", sets=_sets(assignment))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


#: A dataset that is not there: a value checked after the data loads would get its error instead.
@pytest.mark.parametrize(
    ("assignment", "message"), BAD[:11] + BAD[-6:], ids=[a for a, _ in BAD[:11] + BAD[-6:]]
)
def test_sslzoo_train_refuses_a_bad_value_in_one_line_before_any_data_loads(tmp_path, assignment, message):
    out = tmp_path / "run"
    args = ["--method", "simclr", "--dataset", "cifar10", "--data-dir", str(tmp_path / "no-data")]
    args += ["--device", "cpu", "--out", str(out)] + [
        word for s in _sets(assignment) for word in ("--set", s)
    ]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not out.exists()  # refused before anything was created


@pytest.mark.parametrize(
    ("method", "plugins", "assignment", "message"),
    [
        ("mocov2", (), "hparams.queue_size=0", "hparams.queue_size = 0 is not allowed"),
        (
            "mocov2",
            (),
            "hparams.base_tau=1.5",
            "hparams.base_tau = 1.5 is not allowed: expected a number in [0, 1]",
        ),
        ("byol", (), "hparams.final_tau=-1", "hparams.final_tau = -1 is not allowed"),
        ("selfcon", (), "hparams.variant=X", "hparams.variant = 'X' is not allowed: expected one of 'S'"),
        ("selfcon", (), "hparams.exit_layer=layer4", "hparams.exit_layer = 'layer4' is not allowed"),
        ("minc", (), "hparams.summary_momentum=1", "expected a number in [0, 1)"),
        ("spectral", (), "hparams.mu=0", "hparams.mu = 0 is not allowed: expected a number > 0"),
        ("supcon", (), "hparams.base_temperature=0", "hparams.base_temperature = 0 is not allowed"),
        ("mixco", (), "hparams.mix_temperature=0", "hparams.mix_temperature = 0 is not allowed"),
        (
            "mixco",
            (),
            "hparams.mix_weight=-1",
            "hparams.mix_weight = -1 is not allowed: expected a number >= 0",
        ),
        ("byol", ("mixco",), "hparams.mix_temperature=abc", "hparams.mix_temperature = 'abc' is not allowed"),
        (
            "batchfusion",
            (),
            "hparams.fusion_schedule=fast",
            "hparams.fusion_schedule = 'fast' is not allowed",
        ),
        ("batchfusion", (), "hparams.fusion_batch_size=1", "expected a whole number >= 2"),
        ("iecl", (), "hparams.iecl_channels=0", "hparams.iecl_channels = 0 is not allowed"),
        ("iecl", (), "hparams.iecl_eps_squared=0", "hparams.iecl_eps_squared = 0 is not allowed"),
    ],
)
def test_method_and_plugin_hyperparameters_have_ranges(method, plugins, assignment, message):
    with pytest.raises(ConfigError) as info:
        resolve_config(method, "fake", plugins, sets=[assignment])
    assert message in str(info.value)


def test_good_values_are_kept_in_their_canonical_types():
    config = resolve_config(
        "simclr",
        "fake",
        sets=["hparams.temperature=1", "hparams.proj_hidden_dim=512.0", "epochs=3.0", "lr=1"],
    )
    assert config.hparams["temperature"] == 1.0 and isinstance(config.hparams["temperature"], float)
    assert config.hparams["proj_hidden_dim"] == 512 and isinstance(config.hparams["proj_hidden_dim"], int)
    assert (config.epochs, config.lr) == (3, 1.0) and isinstance(config.epochs, int)


def test_every_numeric_key_has_a_range_and_every_augmentation_setting_a_limit():
    hints = typing.get_type_hints(TrainConfig)
    unbounded = [
        f.name for f in fields(TrainConfig) if f.name not in LIMITS and hints[f.name] not in (bool, str)
    ]
    assert not unbounded, f"give these a range in train.recipes.LIMITS: {unbounded}"
    assert set(AUGMENT_LIMITS) == set(AUGMENT_DEFAULTS)
    for key, value in AUGMENT_DEFAULTS.items():
        assert AUGMENT_LIMITS[key].check(key, value) == value


def test_a_python_built_configuration_is_checked_before_any_data_loads(tmp_path):
    config = replace(
        resolve_config("simclr", "cifar10", options={"data_dir": str(tmp_path / "none")}), log_every=0
    )
    with pytest.raises(ConfigError, match="log_every = 0 is not allowed"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_checks_the_values_it_may_change(tmp_path):
    from sslzoo.train.recipes import replace_checked

    config = resolve_config("simclr", "fake")
    assert replace_checked(config, {"log_every": 5}).log_every == 5
    with pytest.raises(ConfigError, match="checkpoint_minutes = -1 is not allowed"):
        replace_checked(config, {"checkpoint_minutes": -1})


def test_resume_with_a_bad_runtime_value_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    tiny = ["--method", "simclr", "--dataset", "fake", "--batch-size", "8", "--set", "fake_size=16"]
    tiny += ["--set", "fake_test_size=8", "--max-steps", "1", "--knn-every", "0", "--device", "cpu"]
    assert CliRunner().invoke(train_main, [*tiny, "--out", str(out)]).exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = CliRunner().invoke(train_main, ["--resume", "--out", str(out), "--set", "log_every=0"])
    assert result.exit_code == 1 and "log_every = 0 is not allowed" in result.output, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in copy.iterdir())
    assert (out / "checkpoint.pt").read_bytes() == (copy / "checkpoint.pt").read_bytes()
