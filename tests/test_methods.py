"""Every method and plug-in trains a few steps on a tiny CPU model; the pieces behave as the papers say."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError
from sslzoo.losses import SupConLoss
from sslzoo.methods import (
    METHOD_NAMES,
    PLUGIN_NAMES,
    PLUGIN_ORDER,
    BatchFusion,
    Method,
    MixCo,
    build_method,
    method_hparams,
    resolve,
)
from sslzoo.methods.batchfusion import BatchFusionModule
from sslzoo.methods.iecl import frozen
from sslzoo.methods.mixco import mix_halves, mix_targets
from sslzoo.momentum import cosine_tau

SIZE, BATCH = 16, 8
#: Small values for every hyperparameter that sets a width, so each method runs in well under a second.
TINY = {
    "proj_hidden_dim": 16,
    "proj_output_dim": 8,
    "pred_hidden_dim": 16,
    "queue_size": 24,
    "fusion_batch_size": BATCH,
    "fusion_width": 4,
    "iecl_channels": 4,
}


def tiny_method(name: str, plugins: tuple[str, ...] = (), **overrides) -> Method:
    accepted = method_hparams(name, plugins)
    hparams = {k: v for k, v in {**TINY, **overrides}.items() if k in accepted}
    return build_method(name, Encoder(input_size=SIZE), plugins=plugins, **hparams)


def batch(method: Method, batch_size: int = BATCH) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    views = [torch.randn(batch_size, 3, SIZE, SIZE) for _ in range(method.num_views)]
    labels = torch.randint(0, 3, (batch_size,)) if method.supervised else None
    return views, labels


def train(method: Method, steps: int = 3) -> list[float]:
    optimizer = torch.optim.SGD(method.param_groups(weight_decay=1e-4), lr=0.05, momentum=0.9)
    losses = []
    for step in range(steps):
        loss, logs = method(*batch(method))
        assert all(torch.isfinite(v).all() for v in logs.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step((step + 1) / steps)
        losses.append(loss.item())
    return losses


def assert_trains_and_exports_cleanly(method: Method) -> None:
    before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    losses = train(method)
    assert all(math.isfinite(loss) for loss in losses)
    after = method.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    exported = method.export_encoder()
    assert type(exported) is Encoder and not exported.training
    assert exported.state_dict().keys() == Encoder(input_size=SIZE).state_dict().keys()
    assert all(torch.equal(v, after[k]) for k, v in exported.state_dict().items())
    assert len(method.state_dict()) > len(after)  # the training-only parts stayed behind


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_trains_and_exports_a_plain_encoder(name):
    assert_trains_and_exports_cleanly(tiny_method(name))


@pytest.mark.parametrize(
    "host, plugin",
    [  # the registry defaults (mocov2 + mixco, simclr + batchfusion, simclr + iecl) run above
        (host, plugin)
        for host in ("simclr", "mocov2", "byol")
        for plugin in PLUGIN_NAMES
        if resolve(plugin) != (host, (plugin,))
    ],
)
def test_every_plugin_composes_with_the_main_hosts(host, plugin):
    method = tiny_method(host, plugins=(plugin,))
    assert method.spec.host == host and method.spec.plugins == (plugin,)
    assert method.encoder is method.host.encoder
    assert_trains_and_exports_cleanly(method)


def test_plugins_stack_in_one_order_whatever_order_they_are_named_in():
    for plugins in (("batchfusion", "mixco", "iecl"), ("iecl", "mixco", "batchfusion"), ("mixco", "batchfusion")):
        method = tiny_method("simclr", plugins=plugins)
        chain = [type(method).__name__, type(method.host).__name__]
        assert chain == ["BatchFusion", "IECL" if "iecl" in plugins else "MixCo"]
        assert method.spec.plugins == tuple(p for p in PLUGIN_ORDER if p in plugins)
    assert PLUGIN_ORDER == ("mixco", "iecl", "batchfusion")
    assert_trains_and_exports_cleanly(method)


def test_a_stack_built_by_hand_in_another_order_is_refused():
    host = tiny_method("simclr")
    with pytest.raises(ConfigError, match="MixCo cannot wrap batch fusion"):
        MixCo(BatchFusion(host, fusion_batch_size=BATCH))
    with pytest.raises(ConfigError, match="MixCo cannot wrap MixCo"):
        MixCo(MixCo(host))
    assert type(BatchFusion(MixCo(host), fusion_batch_size=BATCH).host) is MixCo


def _fused_stack(name: str, plugins: tuple[str, ...]) -> Method:
    """A stack whose batch fusion is active (gate 0.5, non-zero restore weights)."""
    torch.manual_seed(0)
    method = tiny_method(name, plugins=plugins)
    for layer in method.fusion.layers:
        torch.nn.init.normal_(layer.restore_weight, std=0.05)
    method.after_step(0.5)
    return method


def test_batchfusion_mixco_and_mixco_batchfusion_compute_the_same_loss():
    losses = []
    for plugins in (("batchfusion", "mixco"), ("mixco", "batchfusion")):
        method = _fused_stack("simclr", plugins)
        torch.manual_seed(1)
        views, _ = batch(method)
        loss, logs = method(views)
        losses.append((loss.item(), logs["loss_mixco"].item(), logs["fusion_gate"].item()))
    assert losses[0] == losses[1] and losses[0][2] == 0.5


@pytest.mark.parametrize("host", ["simclr", "byol"])
@pytest.mark.parametrize(
    "plugins",
    [("batchfusion", "mixco"), ("mixco", "batchfusion"), ("batchfusion", "iecl"), ("iecl", "mixco", "batchfusion")],
)
def test_every_part_of_a_stack_sees_the_fused_views(host, plugins):
    method = tiny_method(host, plugins=plugins)
    method.fusion.forward = lambda images: images + 1000.0  # marks every fused image
    seen = []
    networks = [method.encoder, *(m for n, m in method.named_modules() if n.endswith("momentum_encoder"))]
    for network in networks:
        network.register_forward_pre_hook(lambda module, args: seen.append(args[0].mean().item()))
    loss, logs = method(*batch(method))
    # two views, MixCo's two mixes, IE-CL's generated and clean second view, BYOL's two targets
    assert len(seen) == 2 + 2 * ("mixco" in plugins) + 2 * ("iecl" in plugins) + 2 * (host == "byol")
    assert min(seen) > 500  # every one of them made of fused images
    assert "fusion_gate" in logs and math.isfinite(loss.item())


def test_batch_fusion_also_wraps_single_view_selfcon():
    assert_trains_and_exports_cleanly(tiny_method("selfcon", plugins=("batchfusion",)))


def test_registry_names_default_their_plugins():
    assert resolve("mixco") == ("mocov2", ("mixco",))
    assert resolve("batchfusion") == ("simclr", ("batchfusion",))
    assert resolve("iecl") == ("simclr", ("iecl",))
    assert resolve("iecl", ["iecl", "mixco"]) == ("simclr", ("mixco", "iecl"))
    assert resolve("simclr", ["batchfusion", "mixco"]) == resolve("simclr", ["mixco", "batchfusion"])
    assert resolve("byol", "mixco") == ("byol", ("mixco",))
    assert len(METHOD_NAMES) == 10 and set(PLUGIN_NAMES) <= set(METHOD_NAMES)


def test_method_hparams_lists_host_and_plugin_keywords_with_defaults():
    hparams = method_hparams("mixco")
    assert hparams["temperature"] == 0.2 and hparams["queue_size"] == 32768
    assert hparams["base_tau"] == 0.99 and hparams["final_tau"] == 0.999
    assert hparams["mix_temperature"] == 0.05 and hparams["mix_weight"] == 1.0
    assert method_hparams("supcon")["base_temperature"] == 0.07
    assert {"fusion_width", "fusion_schedule"} <= set(method_hparams("simclr", ["batchfusion"]))
    assert {"iecl_generation_weight", "iecl_preservation_weight"} <= set(method_hparams("iecl"))
    assert method_hparams("minc")["summary_momentum"] == 0.99


def test_build_method_sets_hparams_and_records_them():
    method = tiny_method("mocov2", temperature=0.5)
    assert method.loss_fn.temperature == 0.5 and method.queues[0].size == 24
    assert method.spec.hparams["temperature"] == 0.5 and method.spec.hparams["final_tau"] == 0.999


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda e: build_method("simsiam", e), "choose one of simclr"),
        (lambda e: build_method("simclr", e, plugins=["cutmix"]), "choose from mixco"),
        (lambda e: build_method("simclr", e, temperatur=0.1), "valid: proj_hidden_dim"),
        (lambda e: build_method("simclr", e, mix_weight=0.5), "mix_weight"),
        (lambda e: build_method("selfcon", e, variant="X"), "variant"),
        (lambda e: build_method("selfcon", e, selfcon_size="huge"), "selfcon_size"),
    ],
)
def test_configuration_errors_name_the_valid_choices(call, match):
    encoder = Encoder(input_size=SIZE)
    with pytest.raises(ConfigError, match=match):
        method = call(encoder)
        method(*batch(method))


@pytest.mark.parametrize(
    "plugins, match",
    [
        (["mixco"], "MixCo cannot wrap selfcon: it scores mixed images against the host's per-view targets"),
        (["iecl"], "IE-CL cannot wrap selfcon: it replaces the second of two views"),
        (["batchfusion", "mixco"], "use batchfusion instead"),
    ],
)
def test_combinations_that_cannot_work_are_refused_when_built(plugins, match):
    with pytest.raises(ConfigError, match=match):
        build_method("selfcon", Encoder(input_size=SIZE), plugins=plugins)  # no forward needed
    assert tiny_method("selfcon", plugins=("batchfusion",)).spec.plugins == ("batchfusion",)


@pytest.mark.parametrize("name", ["supcon", "selfcon"])
def test_supervised_methods_ask_for_labels(name):
    method = tiny_method(name)
    assert method.supervised
    with pytest.raises(ConfigError, match="labels"):
        method(batch(method)[0], None)


def test_wrong_number_of_views_is_a_config_error():
    method = tiny_method("simclr")
    with pytest.raises(ConfigError, match="num_views"):
        method([torch.randn(4, 3, SIZE, SIZE)])


# --- MoCo-v2: EMA and queues ------------------------------------------------------------------


def test_mocov2_after_step_moves_the_momentum_encoder_by_ema_and_enqueues_each_view():
    method = tiny_method("mocov2")
    views, _ = batch(method)
    method(views)
    expected_keys = [method.momentum_embed(view) for view in views]
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(0.5)  # stands in for an optimiser step
    online = [p.clone() for p in method.encoder.parameters()]
    target = [p.clone() for p in method.momentum_encoder.parameters()]
    method.after_step(0.5)
    for new, old, current in zip(method.momentum_encoder.parameters(), target, online):
        assert torch.allclose(new, 0.99 * old + 0.01 * current)
    for queue, keys in zip(method.queues, expected_keys):
        assert torch.allclose(queue.keys[:BATCH], keys) and int(queue.ptr) == BATCH
    assert method.tau == pytest.approx(cosine_tau(0.5, 0.99, 0.999))


def test_mocov2_loss_uses_the_other_views_queue():
    method = tiny_method("mocov2")
    views, _ = batch(method)
    with torch.no_grad():
        out = method.host_forward(views)
        q = [method.embed(v)[1] for v in views]
        k = [method.momentum_embed(v) for v in views]
        expected = (
            method.loss_fn(q[0], k[1], method.queues[1].keys)
            + method.loss_fn(q[1], k[0], method.queues[0].keys)
        ) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.negatives[0] is method.queues[1].keys


def test_byol_target_follows_the_online_network_by_ema():
    method = tiny_method("byol")
    with torch.no_grad():
        for p in method.projector.parameters():
            p.add_(1.0)
    old = [p.clone() for p in method.momentum_projector.parameters()]
    method.after_step(0.0)
    for new, before, online in zip(
        method.momentum_projector.parameters(), old, method.projector.parameters()
    ):
        assert torch.allclose(new, 0.99 * before + 0.01 * online)
    assert method.tau == pytest.approx(0.99)
    method.after_step(1.0)
    assert method.tau == pytest.approx(1.0)


@pytest.mark.parametrize("name,plugins", [("mocov2", ()), ("byol", ()), ("minc", ()), ("mocov2", ("mixco",))])
def test_the_ema_rate_is_part_of_the_methods_state_dict(name, plugins):
    trained = tiny_method(name, plugins)
    trained.after_step(0.4)
    state = trained.state_dict()
    extra = [key for key in state if key.endswith("_extra_state")]
    assert extra == (["host._extra_state"] if plugins else ["_extra_state"])
    fresh = tiny_method(name, plugins)
    assert fresh.state_dict()[extra[0]]["tau"] == pytest.approx(0.99)  # base_tau, before any step
    fresh.load_state_dict(state)  # strict: the EMA rate is a key like any other
    momentum = fresh.host if plugins else fresh
    assert momentum.tau == cosine_tau(0.4, momentum.base_tau, momentum.final_tau)


# --- MINC: the summary --------------------------------------------------------------------------


def test_minc_summary_starts_at_the_first_batch_moment_then_follows_an_ema():
    method = tiny_method("minc", summary_momentum=0.9)
    first = [torch.randn(BATCH, 8) * 0.1 for _ in range(2)]
    method.update_summary(first)
    def moment(ts):
        return sum(t.T @ t / BATCH for t in ts) / 2

    assert torch.allclose(method.summary, moment(first), atol=1e-7)
    second = [torch.randn(BATCH, 8) * 0.1 for _ in range(2)]
    method.update_summary(second)
    assert torch.allclose(method.summary, 0.9 * moment(first) + 0.1 * moment(second), atol=1e-7)


def test_minc_summary_only_moves_in_training():
    method = tiny_method("minc")
    method.eval()
    method(batch(method)[0])
    assert not bool(method.summary_ready) and torch.count_nonzero(method.summary) == 0


# --- SelfCon: exits and positive sets -----------------------------------------------------------


def literal_selfcon_loss(embeddings: dict, positive_sets: dict, temperature=0.1, base_temperature=0.07):
    """SelfCon's loss from explicit positive sets: keys are (image, exit) or (image, view, exit)."""
    anchors = list(embeddings)
    total = 0.0
    for a in anchors:
        others = [n for n in anchors if n != a]
        denominator = sum(math.exp(embeddings[a].dot(embeddings[n]).item() / temperature) for n in others)
        terms = [
            math.log(math.exp(embeddings[a].dot(embeddings[p]).item() / temperature) / denominator)
            for p in positive_sets[a]
        ]
        total += -(temperature / base_temperature) * sum(terms) / len(terms)
    return total / len(anchors)


def test_selfcon_s_positives_are_the_other_exit_and_every_same_class_exit():
    method = tiny_method("selfcon")
    assert method.num_views == 1 and method.supervised and method.exit_layer == "layer2"
    assert method.sub_network[-1].in_features == 128  # ResNet-18 layer2 channels -> Linear(128 -> 512)
    images, labels = torch.randn(6, 3, SIZE, SIZE), torch.tensor([0, 1, 0, 2, 1, 0])
    torch.manual_seed(1)
    loss, _ = method([images], labels)
    with torch.no_grad():
        sub, backbone = method.exit_embeddings(images)
    embeddings = {(i, e): (sub if e == "G" else backbone)[i].double() for i in range(6) for e in "GF"}
    positive_sets = {
        (i, e): [(j, f) for j in range(6) for f in "GF" if labels[j] == labels[i] and (j, f) != (i, e)]
        for i in range(6)
        for e in "GF"
    }
    assert positive_sets[(3, "G")] == [(3, "F")]  # a single-image class: only its other exit
    assert loss.item() == pytest.approx(literal_selfcon_loss(embeddings, positive_sets), rel=1e-5)


def _selfcon_mu_case(variant: str):
    method = tiny_method("selfcon", variant=variant)
    assert method.num_views == 2 and not method.supervised
    method.eval()  # BatchNorm in eval mode: the reference embeddings below are the loss's own
    views = [torch.randn(4, 3, SIZE, SIZE) for _ in range(2)]
    loss, _ = method(views)
    with torch.no_grad():
        exits = [method.exit_embeddings(v) for v in views]
    embeddings = {
        (i, v, e): exits[v][k][i].double() for i in range(4) for v in range(2) for k, e in enumerate("GF")
    }
    return loss, embeddings


def test_selfcon_mu_follows_the_official_code_the_only_positive_is_the_other_exit_of_the_same_view():
    loss, embeddings = _selfcon_mu_case("MU")
    # main_represent.py: views stacked on the batch axis, ConLoss(features) with eye(2B) as the mask.
    positive_sets = {(i, v, e): [(i, v, "F" if e == "G" else "G")] for (i, v, e) in embeddings}
    assert loss.item() == pytest.approx(literal_selfcon_loss(embeddings, positive_sets), rel=1e-5)
    assert method_hparams("selfcon")["variant"] == "S"


def test_selfcon_mu_image_reading_takes_the_same_images_other_three_embeddings():
    loss, embeddings = _selfcon_mu_case("MU-image")
    positive_sets = {
        key: [other for other in embeddings if other[0] == key[0] and other != key] for key in embeddings
    }
    assert all(len(p) == 3 for p in positive_sets.values())
    assert loss.item() == pytest.approx(literal_selfcon_loss(embeddings, positive_sets), rel=1e-5)


def test_selfcon_same_sub_network_is_an_unshared_copy_of_the_later_stages():
    method = tiny_method("selfcon", selfcon_size="same")
    layer3, layer4 = method.sub_network[0], method.sub_network[1]
    for duplicate, original in ((layer3, method.encoder.layer3), (layer4, method.encoder.layer4)):
        assert [tuple(p.shape) for p in duplicate.parameters()] == [tuple(p.shape) for p in original.parameters()]
        assert not {id(p) for p in duplicate.parameters()} & {id(p) for p in original.parameters()}
    small = tiny_method("selfcon", selfcon_size="small").sub_network
    assert len(small[0]) == len(small[1]) == 1  # ResNet-18's two blocks per stage, halved
    features, maps = method.encoder.forward_with_exits(torch.randn(2, 3, SIZE, SIZE), ("layer2",))
    assert method.sub_network(maps["layer2"]).shape == features.shape == (2, 512)
    assert_trains_and_exports_cleanly(method)


def test_selfcon_gradients_reach_both_exits_and_the_shared_stages():
    method = tiny_method("selfcon")
    loss, _ = method(*batch(method))
    loss.backward()
    for module in (
        method.sub_network,
        method.sub_projector,
        method.projector,
        method.encoder.layer1,
        method.encoder.layer4,
    ):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


# --- MixCo --------------------------------------------------------------------------------------


def test_mix_halves_pairs_i_with_i_plus_half_and_uses_one_lambda_per_pair():
    images = torch.randn(6, 3, 4, 4)
    mixed, lam = mix_halves(images)
    assert mixed.shape == (3, 3, 4, 4) and lam.shape == (3,) and ((lam >= 0) & (lam <= 1)).all()
    for i in range(3):
        assert torch.allclose(mixed[i], lam[i] * images[i] + (1 - lam[i]) * images[i + 3])
    with pytest.raises(ConfigError, match="even"):
        mix_halves(torch.randn(5, 3, 4, 4))


def test_mix_targets_sum_to_one_with_lambda_and_its_complement_in_place():
    lam = torch.tensor([0.25, 0.9, 0.5])
    targets = mix_targets(lam, num_extra=4)
    assert targets.shape == (3, 6 + 4)
    assert torch.allclose(targets.sum(dim=1), torch.ones(3))
    for i in range(3):
        assert targets[i, i] == lam[i] and targets[i, i + 3] == 1 - lam[i]
        assert torch.count_nonzero(targets[i]) == 2
    assert torch.count_nonzero(targets[:, 6:]) == 0  # queue entries are pure negatives


def test_mixco_adds_the_soft_cross_entropy_of_each_view_to_the_host_loss():
    method = tiny_method("mixco", mix_temperature=0.1, mix_weight=0.5)
    assert isinstance(method, MixCo)
    method.eval()  # BatchNorm in eval mode: each forward below sees the same network
    views, _ = batch(method)
    torch.manual_seed(3)
    loss, logs = method(views)
    with torch.no_grad():
        host = method.host.host_forward(views)
        torch.manual_seed(3)
        terms = []
        for v in range(2):
            mixed, lam = mix_halves(views[v])
            q = method.host.embed(mixed)[1]
            candidates = torch.cat([host.targets[v], host.negatives[v]])
            log_p = F.log_softmax(q @ candidates.T / 0.1, dim=1)
            half = BATCH // 2
            terms.append(
                -(
                    lam * log_p[range(half), range(half)] + (1 - lam) * log_p[range(half), range(half, BATCH)]
                ).mean()
            )
    mix = sum(terms) / 2
    assert logs["loss_mixco"].item() == pytest.approx(mix.item(), rel=1e-5)
    assert loss.item() == pytest.approx(host.loss.item() + 0.5 * mix.item(), rel=1e-5)


# --- Batch fusion -------------------------------------------------------------------------------


def test_batch_fusion_starts_as_the_identity_and_its_gate_follows_progress():
    fusion = BatchFusionModule(batch_size=8, width=4, layers=2, patch_size=4, schedule="gate", max_gate=0.5)
    images = torch.randn(8, 3, 16, 16)
    assert torch.equal(fusion(images), images)
    fusion.progress.fill_(0.5)
    assert fusion.gates() == [0.25, 0.25]
    assert torch.allclose(fusion(images), images)  # restore convs start at zero
    layered = BatchFusionModule(batch_size=8, layers=3, schedule="layers")
    layered.progress.fill_(0.4)
    assert layered.gates() == [1.0, 1.0, 0.0]


def test_batch_fusion_mixes_samples_within_a_patch_and_handles_a_smaller_batch():
    fusion = BatchFusionModule(batch_size=8, width=4, layers=1, patch_size=4, schedule="constant")
    torch.nn.init.normal_(fusion.layers[0].restore_weight)
    images = torch.randn(8, 3, 16, 16, requires_grad=True)
    fusion(images)[0, :, :4, :4].sum().backward()  # the first patch of sample 0
    grad = images.grad.abs().sum(dim=1)
    assert (grad[1:, :4, :4] > 0).all()  # every other sample's same patch feeds it
    assert torch.count_nonzero(grad[:, 4:, :]) == 0 and torch.count_nonzero(grad[:, :, 4:]) == 0
    assert fusion(torch.randn(5, 3, 16, 16)).shape == (5, 3, 16, 16)
    with pytest.raises(ConfigError, match="fusion_batch_size"):
        fusion(torch.randn(9, 3, 16, 16))


def test_batch_fusion_is_skipped_outside_training_and_driven_by_after_step():
    method = tiny_method("batchfusion")
    assert isinstance(method, BatchFusion)
    method.after_step(0.75)
    assert float(method.fusion.progress) == 0.75 and method.fusion.gates() == [0.75, 0.75]
    method.eval()
    views = [torch.randn(BATCH, 3, SIZE, SIZE)]
    assert method.fuse(views) is views


# --- IE-CL --------------------------------------------------------------------------------------


def test_frozen_passes_gradients_to_inputs_only_and_keeps_batchnorm_statistics():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    x = torch.randn(6, 3, requires_grad=True)
    stats = {k: v.clone() for k, v in net[1].state_dict().items()}
    with frozen(net):
        net(x).square().sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, stats[k]) for k, v in net[1].state_dict().items())  # counts included
    assert all(p.requires_grad for p in net.parameters()) and net[1].momentum == 0.1


def test_iecl_extra_passes_leave_batchnorm_statistics_to_the_hosts_pass():
    method = tiny_method("iecl")
    torch.nn.init.normal_(method.transform.net[-1].weight, std=0.1)
    views, _ = batch(method)
    start = copy.deepcopy(method.state_dict())
    method.host_forward(views)
    with_iecl = {k: v.clone() for k, v in method.state_dict().items() if "running" in k or "num_batches" in k}
    method.load_state_dict(start)
    method.host.host_forward([views[0], method.transform(views[1])])  # the host's pass alone
    alone = {k: v for k, v in method.state_dict().items() if k in with_iecl}
    assert with_iecl and all(torch.equal(with_iecl[k], alone[k]) for k in with_iecl)
    assert any(not torch.equal(with_iecl[k], start[k]) for k in with_iecl)  # the host's pass did update them


def test_iecl_generation_term_reaches_the_transformation_but_not_the_encoder():
    method = tiny_method("iecl", iecl_generation_weight=1.0, iecl_preservation_weight=0.0)
    torch.nn.init.normal_(method.transform.net[-1].weight, std=0.1)
    views, _ = batch(method)
    out = method.host_forward(views)
    host_only = method.host.host_forward([views[0], method.transform(views[1])])
    generation = out.loss - host_only.loss.detach()  # value check of the composition
    assert out.logs["entropy_gain"].item() == pytest.approx(-(generation.item()), abs=1e-4)
    # the generation term alone: gradient in T_phi, none in the encoder
    method.zero_grad()
    (out.loss - host_only.loss).backward()
    assert all(p.grad is None or p.grad.abs().max() < 1e-6 for p in method.encoder.parameters())
    assert method.transform.net[0].weight.grad.abs().sum() > 0


def test_iecl_starts_with_the_untouched_second_view():
    method = tiny_method("iecl", iecl_epsilon=0.3)
    images = torch.randn(4, 3, SIZE, SIZE)
    assert torch.equal(method.transform(images), images)
    torch.nn.init.normal_(method.transform.net[-1].weight, std=10.0)
    assert (method.transform(images) - images).abs().max() <= 0.3 + 1e-6


def test_supcon_loss_of_selfcon_is_the_shared_supcon_unit():
    method = tiny_method("selfcon")
    assert isinstance(method.loss_fn, SupConLoss)
    assert method.loss_fn.temperature == 0.1 and method.loss_fn.base_temperature == 0.07


# --- Weight decay groups ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mocov2", "byol"])
def test_param_groups_decay_every_trainable_parameter_unless_biases_and_norms_are_excluded(name):
    method = tiny_method(name)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    momentum = {id(p) for n, p in method.named_parameters() if "momentum_" in n}
    assert momentum and not trainable & momentum
    (everything,) = method.param_groups(weight_decay=1e-4)
    assert {id(p) for p in everything["params"]} == trainable
    assert everything["weight_decay"] == 1e-4 and not everything["lars_exclude"]
    decay, no_decay = method.param_groups(weight_decay=1e-4, exclude_bias_norm=True)
    assert {id(p) for p in decay["params"]} | {id(p) for p in no_decay["params"]} == trainable
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert (no_decay["weight_decay"], no_decay["lars_exclude"]) == (0.0, True)
