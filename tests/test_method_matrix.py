"""Every method, and every plug-in stack on a contrastive host (SimCLR) and a non-contrastive one (BYOL)
in every order, trains two CPU steps in fp32 and under bf16 autocast (the GPU default): the loss is
finite and float32, every trainable parameter gets a finite gradient, the momentum copies none.

8 x 8 images, batch 4 (the smallest batch MixCo's half-batch mixes can take through BYOL's
BatchNorm heads): a ResNet-18 step is then mostly fixed cost."""

from __future__ import annotations

import itertools

import pytest
import torch

from sslzoo.encoder import Encoder
from sslzoo.methods import METHOD_NAMES, PLUGIN_NAMES, Method, build_method, method_hparams, resolve

SIZE, BATCH = 8, 4
TINY = {
    "proj_hidden_dim": 16,
    "proj_output_dim": 8,
    "pred_hidden_dim": 16,
    "queue_size": 12,
    "fusion_batch_size": BATCH,
    "fusion_width": 4,
    "iecl_channels": 4,
}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
#: Every ordered plug-in stack: 3 single plug-ins, 6 ordered pairs, 6 orders of all three.
STACKS = [stack for r in range(1, 4) for stack in itertools.permutations(PLUGIN_NAMES, r)]


def tiny_method(name: str, plugins: tuple[str, ...] = (), **overrides) -> Method:
    accepted = method_hparams(name, plugins)
    hparams = {k: v for k, v in {**TINY, **overrides}.items() if k in accepted}
    return build_method(name, Encoder(input_size=SIZE), plugins=plugins, **hparams)


def two_steps(method: Method, precision: str) -> None:
    dtype = PRECISIONS[precision]
    optimizer = torch.optim.SGD(method.param_groups(weight_decay=1e-4), lr=0.05, momentum=0.9)
    momentum = [(n, p) for n, p in method.named_parameters() if "momentum_" in n]
    trainable = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    assert trainable and all(not p.requires_grad for _, p in momentum)
    for step in range(2):
        views = [torch.randn(BATCH, 3, SIZE, SIZE) for _ in range(method.num_views)]
        labels = torch.randint(0, 2, (BATCH,)) if method.supervised else None
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, logs = method(views, labels)
        assert loss.dtype == torch.float32 and torch.isfinite(loss), f"step {step}: loss {loss}"
        assert all(torch.isfinite(value).all() for value in logs.values()), logs
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"step {step}: no finite gradient for {missing[:5]} ({len(missing)} in all)"
        assert all(p.grad is None for _, p in momentum)
        optimizer.step()
        method.after_step((step + 1) / 2)
    if "batchfusion" in method.spec.plugins:
        assert logs["fusion_gate"].item() == 0.5  # logged whatever the stack, after one of two steps


@pytest.mark.parametrize(
    "name, overrides",
    [(name, {}) for name in METHOD_NAMES]
    + [("selfcon", {"variant": v}) for v in ("M", "MU", "MU-image")]
    + [("selfcon", {"selfcon_size": "same"})],
    ids=lambda value: "-".join(map(str, value.values())) if isinstance(value, dict) else value,
)
def test_every_method_trains_in_fp32_and_under_bf16_autocast(name, overrides):
    for precision in PRECISIONS:
        two_steps(tiny_method(name, **overrides), precision)


def test_batch_fusion_on_selfcon_trains_in_both_precisions():
    for precision in PRECISIONS:
        two_steps(tiny_method("selfcon", plugins=("batchfusion",)), precision)


@pytest.mark.parametrize("host", ["simclr", "byol"])
def test_the_full_stack_trains_in_both_precisions(host):
    for precision in PRECISIONS:
        two_steps(tiny_method(host, plugins=("batchfusion", "iecl", "mixco")), precision)


@pytest.mark.parametrize("host", ["simclr", "byol"])
def test_every_order_of_a_stack_builds_the_same_method(host):
    for stack in STACKS:  # build_method builds from what resolve returns
        assert len({resolve(host, order) for order in itertools.permutations(stack)}) == 1
    built = []
    for order in [("iecl", "batchfusion", "mixco"), ("batchfusion", "mixco", "iecl")]:
        torch.manual_seed(0)
        built.append(tiny_method(host, plugins=order))
    assert built[0].spec == built[1].spec and str(built[0]) == str(built[1])
    reference, other = built[0].state_dict(), built[1].state_dict()
    assert reference.keys() == other.keys()
    for key, value in other.items():  # tensors, and a momentum method's extra state ({"tau": ...})
        assert torch.equal(value, reference[key]) if torch.is_tensor(value) else value == reference[key], key


@pytest.mark.slow  # 30 stacks, four steps each: one to two minutes on a 2-core box
@pytest.mark.parametrize("stack", STACKS, ids="+".join)
@pytest.mark.parametrize("host", ["simclr", "byol"])
def test_every_plugin_stack_in_every_order_trains_in_both_precisions(host, stack):
    for precision in PRECISIONS:
        method = tiny_method(host, plugins=stack)
        assert method.spec.host == host and set(method.spec.plugins) == set(stack)
        two_steps(method, precision)
