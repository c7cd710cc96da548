"""`sslzoo.limits`: one line that names the key, the value and what is allowed; every method
hyperparameter has a limit declared next to its class, and every default passes it."""

from __future__ import annotations

import math

import pytest

from sslzoo.errors import ConfigError
from sslzoo.limits import Flag, ListOf, NamedNumbers, Text, between, one_of, positive, probability, whole
from sslzoo.methods import HOSTS, PLUGINS, build_method, validate_hparams
from sslzoo.methods import _keyword_defaults as keyword_defaults


@pytest.mark.parametrize(
    ("limit", "value", "message"),
    [
        (positive(), 0, "k = 0 is not allowed: expected a number > 0."),
        (positive(), "abc", "k = 'abc' is not allowed: expected a number > 0."),
        (positive(), True, "k = true is not allowed: expected a number > 0."),
        (positive(), math.inf, "k = inf is not allowed"),
        (whole(1), 2.5, "k = 2.5 is not allowed: expected a whole number >= 1."),
        (whole(8, 4096), 5000, "k = 5000 is not allowed: expected a whole number from 8 to 4096."),
        (between(0, 1, high_open=True), 1, "k = 1 is not allowed: expected a number in [0, 1)."),
        (probability(), -0.1, "k = -0.1 is not allowed: expected a number in [0, 1]."),
        (one_of(("a", "b")), "c", "k = 'c' is not allowed: expected one of 'a', 'b'."),
        (one_of((1, 2)), True, "k = true is not allowed: expected one of 1, 2."),
        (Flag(), 1, "k = 1 is not allowed: expected true or false."),
        (Text(), 3, "k = 3 is not allowed: expected a string."),
        (
            ListOf(probability(), length=2, ordered=True),
            [0.9, 0.1],
            "k = [0.9, 0.1] is not allowed: expected 2 numbers in [0, 1], the first at most the second "
            "(the first is larger).",
        ),
        (ListOf(probability(), length=3), [0.1], "expected 3 numbers in [0, 1] (1 value)."),
        (ListOf(probability(), length=2), "ab", "k = 'ab' is not allowed"),
        (
            NamedNumbers((("a", positive()), ("b", between(0, 0.5)))),
            [1, 0.7],
            "k = [1, 0.7] is not allowed: expected 2 numbers: a > 0, b in [0, 0.5] (b 0.7 is not a number in "
            "[0, 0.5]).",
        ),
    ],
)
def test_a_refusal_names_the_key_the_value_and_what_is_allowed(limit, value, message):
    with pytest.raises(ConfigError) as info:
        limit.check("k", value)
    assert message in str(info.value)


def test_accepted_values_come_back_in_their_canonical_types():
    assert whole(1).check("k", 3.0) == 3 and isinstance(whole(1).check("k", 3.0), int)
    assert positive().check("k", 2) == 2.0 and isinstance(positive().check("k", 2), float)
    assert ListOf(positive(), length=2).check("k", (1, 2)) == [1.0, 2.0]
    assert Text(optional=True).check("k", None) is None


CLASSES = {**HOSTS, **PLUGINS}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_hyperparameter_has_a_declared_limit_that_its_default_passes(name):
    cls = CLASSES[name]
    defaults = keyword_defaults(cls)
    missing = sorted(set(defaults) - set(cls.hparam_limits))
    assert not missing, f"{cls.__name__}.hparam_limits lacks {missing}"
    extra = sorted(set(cls.hparam_limits) - set(defaults))
    assert not extra, f"{cls.__name__}.hparam_limits names {extra}, which are not keywords of __init__"
    for key, default in defaults.items():
        assert cls.hparam_limits[key].check(key, default) == default


def test_build_method_checks_the_ranges_too():
    from sslzoo.encoder import Encoder

    with pytest.raises(ConfigError, match="temperature = -1 is not allowed"):
        build_method("simclr", Encoder(input_size=16), temperature=-1)
    with pytest.raises(ConfigError, match="Unknown hyperparameter"):
        validate_hparams("byol", ("mixco",), {"temperature": 0.1})
    assert validate_hparams("byol", ("mixco",), {"mix_weight": 2}) == {"mix_weight": 2.0}
