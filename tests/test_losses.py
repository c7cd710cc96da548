"""Each loss against a slow, literal implementation of the equation in its docstring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslzoo.losses import (
    BYOLLoss,
    InfoNCELoss,
    MINCLoss,
    NTXentLoss,
    SoftTargetCrossEntropy,
    SpectralContrastiveLoss,
    SupConLoss,
    clip_norm,
    coding_rate_entropy,
    positive_mask,
    second_moment,
)

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def float64():
    """Literal loops and vectorised code must agree to 1e-10."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def literal_supcon(features, labels, temperature, base_temperature):
    """SupCon "L_out" written as the paper's double sum, one anchor at a time."""
    n, views, _ = features.shape
    z = [F.normalize(features[i, v], dim=0) for v in range(views) for i in range(n)]
    ids = [(labels[i].item() if labels is not None else i) for v in range(views) for i in range(n)]
    losses = []
    for a in range(len(z)):
        others = [b for b in range(len(z)) if b != a]
        positives = [p for p in others if ids[p] == ids[a]]
        if not positives:
            continue
        denominator = sum(math.exp(z[a].dot(z[b]).item() / temperature) for b in others)
        terms = [math.log(math.exp(z[a].dot(z[p]).item() / temperature) / denominator) for p in positives]
        losses.append(-(temperature / base_temperature) * sum(terms) / len(positives))
    return sum(losses) / len(losses)


def literal_nt_xent(z1, z2, temperature):
    """SimCLR's l_i over 2N anchors, denominator over every other embedding."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(z[i].dot(z[a]).item() / temperature) for a in range(2 * n) if a != i)
        total += -math.log(math.exp(z[i].dot(z[j]).item() / temperature) / denominator)
    return total / (2 * n)


def test_nt_xent_matches_the_literal_simclr_loss():
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    loss = NTXentLoss(temperature=0.3)(torch.stack([z1, z2], dim=1))
    assert loss.item() == pytest.approx(literal_nt_xent(z1, z2, 0.3), rel=1e-10)


def test_nt_xent_matches_lightly():
    lightly_loss = pytest.importorskip("lightly.loss")
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    ours = NTXentLoss(temperature=0.5)(torch.stack([z1, z2], dim=1))
    assert ours.item() == pytest.approx(lightly_loss.NTXentLoss(temperature=0.5)(z1, z2).item(), rel=1e-6)


@pytest.mark.parametrize("views", [1, 2, 3])
def test_supcon_matches_the_literal_double_sum(views):
    features = torch.randn(7, views, 6)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # class 2 and 3 have one image: no positive when views=1
    loss = SupConLoss(temperature=0.1, base_temperature=0.07)(features, labels)
    assert loss.item() == pytest.approx(literal_supcon(features, labels, 0.1, 0.07), rel=1e-10)


def test_supcon_without_labels_is_nt_xent_scaled_by_tau_over_tau_base():
    features = torch.randn(5, 2, 4)
    nt_xent = NTXentLoss(temperature=0.1)(features)
    supcon = SupConLoss(temperature=0.1, base_temperature=0.07)(features)
    assert supcon.item() == pytest.approx(nt_xent.item() * 0.1 / 0.07, rel=1e-12)
    # unique labels put the same positives as no labels
    unique = SupConLoss(0.1, 0.1)(features, torch.arange(5))
    assert unique.item() == pytest.approx(nt_xent.item(), rel=1e-12)


def test_positive_mask_is_same_label_without_self():
    mask = positive_mask(torch.tensor([4, 7, 4]), num_views=2)
    # embeddings ordered (view 0: images 0,1,2), (view 1: images 0,1,2)
    expected = {0: {2, 3, 5}, 1: {4}, 2: {0, 3, 5}, 3: {0, 2, 5}, 4: {1}, 5: {0, 2, 3}}
    assert {a: set(torch.nonzero(mask[a]).flatten().tolist()) for a in range(6)} == expected


def test_info_nce_matches_the_literal_moco_loss():
    q, k, queue = torch.randn(4, 3), torch.randn(4, 3), F.normalize(torch.randn(5, 3), dim=1)
    tau = 0.2
    expected = 0.0
    for i in range(4):
        qi, ki = F.normalize(q[i], dim=0), F.normalize(k[i], dim=0)
        positive = math.exp(qi.dot(ki).item() / tau)
        negatives = sum(math.exp(qi.dot(m).item() / tau) for m in queue)
        expected += -math.log(positive / (positive + negatives)) / 4
    assert InfoNCELoss(tau)(q, k, queue).item() == pytest.approx(expected, rel=1e-10)


def test_info_nce_sends_no_gradient_to_keys_or_queue():
    q, k, queue = (torch.randn(4, 3, requires_grad=True) for _ in range(3))
    InfoNCELoss()(q, k, queue).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_byol_loss_is_the_normalised_squared_distance():
    p, z = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    loss = BYOLLoss()(p, z)
    expected = sum(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum().item() for i in range(5)) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert z.grad is None  # stop-gradient on the target


def literal_spectral(z1, z2, mu):
    """The official estimator: clip, -2/B sum z1_i.z2_i + 1/(B(B-1)) sum_{i != j} (z1_i.z2_j)^2, over mu."""
    r = math.sqrt(mu)
    clip = (
        [(z if z.norm() < r else z / z.norm() * r) for z in z1],
        [(z if z.norm() < r else z / z.norm() * r) for z in z2],
    )
    b = len(z1)
    attraction = -2.0 / b * sum(clip[0][i].dot(clip[1][i]).item() for i in range(b))
    repulsion = sum(clip[0][i].dot(clip[1][j]).item() ** 2 for i in range(b) for j in range(b) if i != j)
    return (attraction + repulsion / (b * (b - 1))) / mu


@pytest.mark.parametrize("mu", [1.0, 10.0])
def test_spectral_loss_matches_the_official_estimator(mu):
    z1, z2 = torch.randn(6, 4) * 2, torch.randn(6, 4) * 0.3  # some rows longer than sqrt(mu), some shorter
    assert SpectralContrastiveLoss(mu)(z1, z2).item() == pytest.approx(
        literal_spectral(z1, z2, mu), rel=1e-10
    )


def test_clip_norm_rescales_only_long_rows():
    z = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped = clip_norm(z, mu=4.0)  # radius 2
    assert torch.allclose(clipped[0], torch.tensor([1.2, 1.6]))
    assert torch.equal(clipped[1:], z[1:])
    assert clip_norm(torch.randn(50, 8) * 100, mu=1.0).norm(dim=1).max().item() == pytest.approx(1.0)


def test_spectral_loss_is_bounded_by_clipping():
    """Scaling features up cannot drive the loss below the bound the clipped norm allows."""
    z = torch.randn(8, 4)
    loss_fn = SpectralContrastiveLoss(mu=1.0)
    assert loss_fn(z * 1e3, z * 1e3).item() == pytest.approx(loss_fn(z * 1e6, z * 1e6).item(), rel=1e-9)
    assert loss_fn(z * 1e3, z * 1e3).item() >= -2.0


def literal_spectral_v_statistic(z1, z2, mu):
    """The population spectral loss with the diagonal kept (1/B^2 over all pairs)."""
    b = len(z1)
    attraction = -2.0 / b * (z1 * z2).sum()
    repulsion = sum((z1[i] @ z2[j]) ** 2 for i in range(b) for j in range(b)) / b**2
    return (attraction + repulsion) / mu


def test_minc_equals_the_spectral_loss_when_the_summary_is_the_batch_second_moment():
    z1 = (torch.randn(16, 5) * 0.1).requires_grad_()
    z2 = torch.randn(16, 5) * 0.1
    assert max(z1.norm(dim=1).max(), z2.norm(dim=1).max()) < 1  # clipping leaves them alone
    minc = MINCLoss(mu=1.0)(z1, z2, second_moment(z2))
    (minc_grad,) = torch.autograd.grad(minc, z1)
    spectral = literal_spectral_v_statistic(z1, z2, 1.0)
    (spectral_grad,) = torch.autograd.grad(spectral, z1)
    assert minc.item() == pytest.approx(spectral.item(), rel=1e-10)
    assert torch.allclose(minc_grad, spectral_grad, atol=1e-12)


def test_minc_gradient_points_like_the_official_spectral_gradient():
    z1 = (torch.randn(256, 6) * 0.2).requires_grad_()
    z2 = z1.detach() + 0.05 * torch.randn(256, 6)
    (minc_grad,) = torch.autograd.grad(MINCLoss()(z1, z2, second_moment(z2)), z1)
    (spectral_grad,) = torch.autograd.grad(SpectralContrastiveLoss()(z1, z2), z1)
    assert F.cosine_similarity(minc_grad.flatten(), spectral_grad.flatten(), dim=0).item() > 0.99


def test_minc_sends_no_gradient_to_target_or_summary():
    online, target = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    summary = torch.eye(3, requires_grad=True)
    MINCLoss()(online, target, summary).backward()
    assert online.grad is not None and target.grad is None and summary.grad is None


def test_soft_cross_entropy_matches_the_literal_sum():
    logits, targets = torch.randn(3, 5), torch.softmax(torch.randn(3, 5), dim=1)
    expected = 0.0
    for i in range(3):
        log_z = math.log(sum(math.exp(s) for s in logits[i].tolist()))
        expected -= sum(t * (s - log_z) for t, s in zip(targets[i].tolist(), logits[i].tolist())) / 3
    assert SoftTargetCrossEntropy()(logits, targets).item() == pytest.approx(expected, rel=1e-10)
    hard = torch.tensor([2, 0, 4])
    assert SoftTargetCrossEntropy()(logits, F.one_hot(hard, 5).double()).item() == pytest.approx(
        F.cross_entropy(logits, hard).item(), rel=1e-12
    )


@pytest.mark.parametrize("batch,dim", [(6, 4), (4, 9)])
def test_coding_rate_entropy_matches_the_d_by_d_formula(batch, dim):
    z = torch.randn(batch, dim)
    zc = F.normalize(z, dim=1)
    zc = zc - zc.mean(dim=0)
    expected = 0.5 * torch.logdet(torch.eye(dim) + dim / (batch * 0.5) * zc.T @ zc)
    assert coding_rate_entropy(z, eps_squared=0.5).item() == pytest.approx(expected.item(), rel=1e-10)


def test_coding_rate_entropy_is_zero_for_collapse_and_grows_with_spread():
    collapsed = torch.ones(8, 4)
    assert coding_rate_entropy(collapsed).item() == pytest.approx(0.0, abs=1e-12)
    narrow = torch.tensor([1.0, 0, 0, 0]) + 0.1 * torch.randn(8, 4)
    wide = torch.randn(8, 4)
    assert coding_rate_entropy(wide) > coding_rate_entropy(narrow) > 0
