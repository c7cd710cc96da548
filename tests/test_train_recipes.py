"""Recipes as data: every recipe resolves, its hyperparameters are the method's, overrides apply in order."""

from __future__ import annotations

import pytest
from sslzoo.train.datasets import DATASETS
from sslzoo.train.recipes import available_recipes, load_recipe_file, parse_set, resolve_config, settable_keys

from sslzoo.errors import ConfigError
from sslzoo.methods import METHOD_NAMES, method_hparams


def test_every_zoo_method_has_a_recipe():
    assert set(available_recipes()) == set(METHOD_NAMES)


@pytest.mark.parametrize("method", sorted(METHOD_NAMES))
def test_recipe_hparams_are_constructor_keywords_of_the_method(method):
    try:
        accepted = method_hparams(method)
    except ConfigError as error:
        pytest.skip(str(error))  # the method is not in this build yet
    for dataset in DATASETS:
        config = resolve_config(method, dataset)
        unknown = set(config.hparams) - set(accepted)
        assert not unknown, f"{method}/{dataset}: {sorted(unknown)} are not hyperparameters of {method}"


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_recipe_resolves_for_every_dataset(dataset):
    for method in available_recipes():
        config = resolve_config(method, dataset)
        assert config.recipe == f"{method}/{dataset}"
        assert config.effective_lr > 0
        assert len(config.mean) == len(config.std) == 3


def test_simclr_cifar10_is_solo_learns_recipe():
    config = resolve_config("simclr", "cifar10")
    assert (config.optimizer, config.lr, config.batch_size, config.epochs) == ("lars", 0.4, 256, 1000)
    assert (config.weight_decay, config.lars_eta, config.warmup_epochs) == (1e-4, 0.02, 10.0)
    assert config.hparams["temperature"] == 0.2
    assert config.view_augment(0)["blur"] == 0.5 == config.view_augment(1)["blur"]
    assert (config.input_size, config.stem, config.mean) == (32, "cifar", [0.4914, 0.4822, 0.4465])


def test_byol_solarises_only_its_second_view():
    config = resolve_config("byol", "cifar10")
    assert config.view_augment(0)["solarize"] == 0.0
    assert config.view_augment(1)["solarize"] == 0.2
    assert config.view_augment(0)["jitter"] == config.view_augment(1)["jitter"] == [0.4, 0.4, 0.2, 0.1]


def test_plugin_recipe_inherits_its_host():
    host, mixco = load_recipe_file("mocov2"), load_recipe_file("mixco")
    assert mixco["optimizer"] == host["optimizer"] and mixco["lr"] == host["lr"]
    assert mixco["hparams"]["temperature"] == host["hparams"]["temperature"]
    assert mixco["hparams"]["queue_size"] == 16384 != host["hparams"]["queue_size"]


def test_dataset_sections_and_facts_override_the_top_level():
    stl = resolve_config("simclr", "stl10")
    assert (stl.epochs, stl.input_size) == (400, 96)
    imagenet = resolve_config("spectral", "imagenet100")
    assert (imagenet.hparams["mu"], imagenet.input_size, imagenet.stem) == (10.0, 224, "imagenet")
    assert imagenet.view_augment(0)["blur"] == 0.5
    assert resolve_config("spectral", "cifar10").hparams["mu"] == 1.0


def test_lr_scales_with_the_batch():
    assert resolve_config("simclr", "cifar10", options={"batch_size": 512}).effective_lr == pytest.approx(0.8)
    supcon = resolve_config("supcon", "cifar10", options={"batch_size": 256})
    assert supcon.effective_lr == pytest.approx(0.125)
    flat = resolve_config("simclr", "cifar10", options={"batch_size": 512}, sets=["lr_scaling=none"])
    assert flat.effective_lr == pytest.approx(0.4)
    root = resolve_config("simclr", "cifar10", options={"batch_size": 1024}, sets=["lr_scaling=sqrt"])
    assert root.effective_lr == pytest.approx(0.8)


def test_options_then_sets_override_in_order():
    config = resolve_config(
        "simclr",
        "cifar10",
        plugins=["mixco"],
        options={"epochs": 3, "lr": None},
        sets=[
            "epochs=5",
            "hparams.temperature=0.5",
            "augment.view2.solarize=0.1",
            "optimizer=sgd",
            "mean=[0.5, 0.5, 0.5]",
        ],
    )
    assert config.epochs == 5 and config.lr == 0.4  # None options are ignored
    assert config.hparams["temperature"] == 0.5
    assert config.view_augment(1)["solarize"] == 0.1 and config.view_augment(0)["solarize"] == 0.0
    assert config.optimizer == "sgd" and config.mean == [0.5, 0.5, 0.5]
    assert config.plugins == ["mixco"]


def test_parse_set_reads_toml_values_and_falls_back_to_strings():
    assert parse_set("a.b=1e-3") == (["a", "b"], 1e-3)
    assert parse_set("flag=true") == (["flag"], True)
    assert parse_set("name=lars") == (["name"], "lars")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set("no-equals-sign")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["no_such_key=1"], "Unknown key"),
        (["augment.sharpen=0.5"], "Unknown augmentation"),
        (["augment.view2.sharpen=0.5"], "Unknown augmentation"),
        (["optimizer=adam"], "expected one of 'sgd', 'lars'"),
        (["epochs=1.5"], "expected a whole number"),
        (["compile=1"], "expected true or false"),
        (["batch_size=0"], "expected a whole number >= 1"),
    ],
)
def test_bad_settings_name_the_problem(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("simclr", "cifar10", sets=sets)


def test_unknown_method_and_dataset():
    with pytest.raises(ConfigError, match="Recipes exist for"):
        resolve_config("dino", "cifar10")
    with pytest.raises(ConfigError, match="Unknown dataset"):
        resolve_config("simclr", "mnist")


#: What each method's reference code does with biases and norm parameters (True: no weight decay, no
#: LARS trust ratio, as solo-learn's LARS `exclude_bias_n_norm`; False: every parameter decays).
REFERENCE_EXCLUSION = {
    "simclr": True,  # solo-learn LARS
    "byol": True,  # solo-learn LARS
    "batchfusion": True,  # on SimCLR
    "iecl": True,  # on SimCLR
    "mocov2": False,  # solo-learn SGD, exclude_bias_n_norm_wd off
    "mixco": False,  # MixCo moco/pretrain.py: SGD(model.parameters())
    "supcon": False,  # SupContrast util.set_optimizer
    "selfcon": False,  # SelfCon utils/util.py set_optimizer
    "spectral": False,  # spectral optimizers/__init__.py
    "minc": False,  # spectral's settings
}


@pytest.mark.parametrize("method", sorted(METHOD_NAMES))
def test_weight_decay_of_biases_and_norms_follows_the_reference_code(method):
    for dataset in ("cifar10", "imagenet100"):
        config = resolve_config(method, dataset)
        assert config.exclude_bias_norm_wd is REFERENCE_EXCLUSION[method]
        assert config.exclude_bias_norm_wd is (config.optimizer == "lars")
        assert config.to_json()["exclude_bias_norm_wd"] is REFERENCE_EXCLUSION[method]


def test_a_configuration_from_before_the_weight_decay_key_resumes_as_it_trained():
    from sslzoo.train.recipes import config_from_json

    old = resolve_config("mocov2", "cifar10").to_json()
    del old["exclude_bias_norm_wd"]  # written when biases and norms were always excluded
    assert config_from_json(old).exclude_bias_norm_wd is True
    assert config_from_json(resolve_config("mocov2", "cifar10").to_json()).exclude_bias_norm_wd is False


def test_selfcon_imagenet100_uses_the_official_imagenet_sub_network():
    assert resolve_config("selfcon", "cifar100").hparams["selfcon_size"] == "fc"
    config = resolve_config("selfcon", "imagenet100")
    assert config.hparams["selfcon_size"] == "same"
    assert config.effective_lr == pytest.approx(0.25 * config.batch_size / 2048)


def test_iecl_trains_at_a_small_batch_like_the_paper_claims():
    iecl, simclr = resolve_config("iecl", "cifar10"), resolve_config("simclr", "cifar10")
    assert iecl.batch_size == 128 < simclr.batch_size
    assert iecl.effective_lr == pytest.approx(simclr.lr * 128 / 256)


def test_the_command_lines_catalog_names_every_setting():
    """`sslzoo-train --help` lists the settings from a list that needs no PyTorch; it is TrainConfig's."""
    from sslzoo.train.catalog import SETTABLE_KEYS

    assert list(SETTABLE_KEYS) == settable_keys()
