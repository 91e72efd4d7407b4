"""Losses against hand-computed values, textbook formulas written as loops, and known identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from course_lib import losses

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_multiclass(seed=0, n=2, k=3, h=5, w=6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g, dtype=dtype)
    target = torch.randint(0, k, (n, h, w), generator=g)
    return logits, target


def classic_dice_loss(probs, onehot, present_only=True):
    """1 - 2 sum(pt) / (sum p + sum t) per class with explicit loops, mean over present classes."""
    losses_ = []
    for c in range(probs.shape[1]):
        inter = total_p = total_t = 0.0
        for p, t in zip(probs[:, c].flatten().tolist(), onehot[:, c].flatten().tolist()):
            inter += p * t
            total_p += p
            total_t += t
        if present_only and total_t == 0:
            continue
        losses_.append(1 - 2 * inter / (total_p + total_t))
    return sum(losses_) / len(losses_)


# --------------------------------------------------------------------------- Dice family


def test_binary_dice_hand_computed():
    logits = torch.zeros(1, 1, 1, 4)  # p = 0.5 everywhere
    target = torch.tensor([[[1, 0, 1, 1]]])
    # sum pt = 1.5, sum p = 2, sum t = 3 -> Dice = 3 / 5
    assert losses.dice_loss(logits, target, mode="binary").item() == pytest.approx(0.4)
    # smooth s = 1: (3 + 1) / (5 + 1)
    assert losses.dice_loss(logits, target, mode="binary", smooth=1.0).item() == pytest.approx(
        1 - 4 / 6
    )


def test_multiclass_dice_equals_classic_formula():
    logits, target = random_multiclass(1)
    target[target == 2] = 0  # class 2 absent from the target
    probs = logits.softmax(1)
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    got = losses.dice_loss(logits, target, mode="multiclass")
    assert got.item() == pytest.approx(classic_dice_loss(probs, onehot), rel=1e-5)
    included = losses.dice_loss(logits, target, mode="multiclass", absent="include")
    assert included.item() == pytest.approx(
        classic_dice_loss(probs, onehot, present_only=False), rel=1e-5
    )


def test_multilabel_dice_uses_sigmoid_per_channel():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = (torch.rand(2, 3, 4, 4, generator=g) > 0.5).long()
    expected = classic_dice_loss(torch.sigmoid(logits), target.float())
    assert losses.dice_loss(logits, target, mode="multilabel").item() == pytest.approx(
        expected, rel=1e-5
    )


def test_dice_ignore_index_equals_dice_on_kept_pixels():
    logits, target = random_multiclass(3, n=1, h=1, w=12)
    target[0, 0, :4] = 255
    kept = losses.dice_loss(logits[..., 4:], target[..., 4:])
    torch.testing.assert_close(losses.dice_loss(logits, target, ignore_index=255), kept)


def test_dice_per_image_is_mean_of_images():
    logits, target = random_multiclass(4)
    per_image = losses.dice_loss(logits, target, per_image=True)
    separate = torch.stack(
        [losses.dice_loss(logits[i : i + 1], target[i : i + 1]) for i in range(2)]
    )
    # every class is present in both images: the mean over (image, class) pairs = mean of images
    assert all(len(torch.unique(t)) == 3 for t in target)
    torch.testing.assert_close(per_image, separate.mean())


def test_dice_empty_target_policy():
    logits = torch.full((1, 1, 2, 2), 3.0)  # confident foreground on an empty mask
    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    assert losses.dice_loss(logits, empty, mode="binary").item() == 0.0  # skip: no class to score
    # include with smooth 1: 1 - 1 / (sum p + 1)
    p = torch.sigmoid(torch.tensor(3.0)).item()
    got = losses.dice_loss(logits, empty, mode="binary", smooth=1.0, absent="include").item()
    assert got == pytest.approx(1 - 1 / (4 * p + 1), rel=1e-6)


def test_tversky_identities_and_formula():
    logits, target = random_multiclass(5)
    torch.testing.assert_close(
        losses.tversky_loss(logits, target, alpha=0.5, beta=0.5), losses.dice_loss(logits, target)
    )
    probs = logits.softmax(1)
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    expected = []
    for c in range(3):
        p, t = probs[:, c], onehot[:, c]
        tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
        expected.append(1 - tp / (tp + 0.3 * fp + 0.7 * fn))
    got = losses.tversky_loss(logits, target, alpha=0.3, beta=0.7)
    torch.testing.assert_close(got, torch.stack(expected).mean())
    jaccard = [
        1
        - (probs[:, c] * onehot[:, c]).sum()
        / (probs[:, c] + onehot[:, c] - probs[:, c] * onehot[:, c]).sum()
        for c in range(3)
    ]
    torch.testing.assert_close(losses.jaccard_loss(logits, target), torch.stack(jaccard).mean())


def test_focal_tversky_gamma_one_is_tversky():
    logits, target = random_multiclass(6)
    torch.testing.assert_close(
        losses.focal_tversky_loss(logits, target, alpha=0.3, beta=0.7, gamma=1.0, smooth=1.0),
        losses.tversky_loss(logits, target, alpha=0.3, beta=0.7, smooth=1.0),
    )
    per_class = losses.tversky_loss(
        logits, target, alpha=0.3, beta=0.7, smooth=1.0, reduction="none"
    )
    torch.testing.assert_close(
        losses.focal_tversky_loss(logits, target, gamma=0.75), (per_class**0.75).mean()
    )


@pytest.mark.parametrize("name", ["dice", "tversky", "jaccard"])
def test_overlap_gradcheck_float64(name):
    logits, target = random_multiclass(7, n=1, h=3, w=3, dtype=torch.float64)
    logits.requires_grad_(True)
    fn = {
        "dice": lambda x: losses.dice_loss(x, target, smooth=0.5),
        "tversky": lambda x: losses.tversky_loss(x, target, alpha=0.3, beta=0.7),
        "jaccard": lambda x: losses.jaccard_loss(x, target),
    }[name]
    assert torch.autograd.gradcheck(fn, (logits,))
    binary_logits = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    binary_target = torch.arange(9).view(1, 3, 3) % 2
    assert torch.autograd.gradcheck(
        lambda x: losses.dice_loss(x, binary_target, mode="binary"), (binary_logits,)
    )


# ---------------------------------------------------------------------- cross-entropy and focal


def test_focal_gamma_zero_is_cross_entropy():
    logits, target = random_multiclass(8)
    target[0, 0] = 255
    torch.testing.assert_close(
        losses.focal_loss(logits, target, gamma=0.0),
        F.cross_entropy(logits, target, ignore_index=255),
    )


def test_focal_is_smaller_than_ce_and_matches_formula():
    logits, target = random_multiclass(9)
    alpha = torch.tensor([0.2, 0.3, 0.5])
    log_p = logits.log_softmax(1)
    expected = 0.0
    for n, i, j in torch.cartesian_prod(torch.arange(2), torch.arange(5), torch.arange(6)).tolist():
        c = target[n, i, j]
        lp = log_p[n, c, i, j]
        expected += -alpha[c] * (1 - lp.exp()) ** 2 * lp
    expected /= target.numel()
    torch.testing.assert_close(losses.focal_loss(logits, target, alpha=alpha, gamma=2.0), expected)
    assert losses.focal_loss(logits, target, gamma=2.0) < F.cross_entropy(logits, target)


def test_binary_focal_equals_torchvision():
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(2, 1, 4, 4, generator=g)
    target = (torch.rand(2, 1, 4, 4, generator=g) > 0.7).long()
    expected = torchvision.ops.sigmoid_focal_loss(
        logits, target.float(), alpha=0.25, gamma=2.0, reduction="mean"
    )
    torch.testing.assert_close(
        losses.focal_loss(logits, target, mode="binary", alpha=0.25, gamma=2.0), expected
    )
    torch.testing.assert_close(
        losses.FocalLoss("binary", alpha=0.25)(logits, target[:, 0]), expected
    )


def test_cross_entropy_all_ignored_is_zero_and_weights():
    logits, target = random_multiclass(11)
    assert losses.cross_entropy(logits, torch.full_like(target, 255)).item() == 0.0
    w = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(
        losses.CrossEntropyLoss(weight=w)(logits, target), F.cross_entropy(logits, target, weight=w)
    )
    torch.testing.assert_close(  # float64 logits with float32 weights (as from class_weights)
        losses.cross_entropy(logits.double(), target, weight=w),
        F.cross_entropy(logits.double(), target, weight=w.double()),
    )
    with pytest.raises(ValueError, match="one weight per class"):
        losses.cross_entropy(logits, target, weight=torch.ones(4))


def test_class_weights_hand_computed():
    # image 1: 6 px of class 0, 2 of class 1; image 2: 4 px of class 0, 4 of class 2 (+ ignored)
    first = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1]])
    second = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [255, 255, 255, 255]])
    inverse = losses.class_weights([first, second], 3, method="inverse")
    counts = torch.tensor([10.0, 2.0, 4.0])
    torch.testing.assert_close(inverse, 16 / (3 * counts))
    median = losses.class_weights([first, second], 3, method="median")
    freq = torch.tensor([10 / 16, 2 / 8, 4 / 8])  # pixels / pixels of images that contain the class
    torch.testing.assert_close(median, freq.median() / freq)
    # two classes: the median is the mean of the two frequencies (numpy's definition)
    two = losses.class_weights(torch.tensor([[0, 0, 0, 1]]), 2, method="median")
    torch.testing.assert_close(
        two, torch.tensor([float(np.median([0.75, 0.25])) / 0.75, 0.5 / 0.25])
    )


def test_combined_losses_are_weighted_sums():
    logits, target = random_multiclass(12)
    expected = 0.5 * F.cross_entropy(logits, target) + 2.0 * losses.dice_loss(logits, target)
    torch.testing.assert_close(
        losses.CEDiceLoss(ce_weight=0.5, dice_weight=2.0)(logits, target), expected
    )
    binary = logits[:, :1]
    mask = (target > 0).long()
    expected = F.binary_cross_entropy_with_logits(binary[:, 0], mask.float()) + losses.dice_loss(
        binary, mask, mode="binary", smooth=1.0
    )
    torch.testing.assert_close(losses.BCEDiceLoss()(binary, mask), expected)


# --------------------------------------------------------------------------- Lovasz


def test_lovasz_hinge_on_vertices_is_jaccard_loss():
    # errors are 0 or 1 (logit 0 on mispredicted pixels, +-1 correct elsewhere): the Lovasz
    # extension then equals the Jaccard loss |M| / |{y = 1} U M| of the mispredicted set M.
    target = torch.tensor([[1, 1, 1, 0, 0, 0, 1, 0]])
    logits = torch.tensor([[1.0, 0.0, 1.0, -1.0, 0.0, 0.0, 1.0, -1.0]])
    mistakes = logits == 0
    expected = mistakes.sum() / ((target == 1) | mistakes).sum()
    got = losses.lovasz_hinge(logits.view(1, 1, 1, 8), target.view(1, 1, 8), per_image=True)
    assert got.item() == pytest.approx(expected.item())


def test_lovasz_softmax_confident_predictions():
    logits, target = random_multiclass(13, dtype=torch.float64)
    perfect = 40.0 * F.one_hot(target, 3).permute(0, 3, 1, 2).double()
    assert losses.lovasz_softmax(perfect, target).item() < 1e-12
    wrong = perfect.clone()
    wrong[0, :, 0, :] = (
        40.0 * F.one_hot((target[0, 0] + 1) % 3, 3).T.double()
    )  # one row mispredicted
    pred = wrong.argmax(1)
    expected = []
    for c in range(3):
        m = (pred == c) != (target == c)
        expected.append(m.sum().item() / ((target == c) | m).sum().item())
    assert losses.lovasz_softmax(wrong, target).item() == pytest.approx(sum(expected) / 3, abs=1e-9)
    assert losses.lovasz_hinge(torch.full((1, 1, 2, 2), 3.0), torch.ones(1, 2, 2)).item() == 0.0


def test_lovasz_gradcheck_float64():
    logits, target = random_multiclass(14, n=1, h=3, w=3, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: losses.lovasz_softmax(x, target), (logits,))
    binary = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: losses.lovasz_hinge(x, target.clamp(max=1)), (binary,)
    )


def test_lovasz_ignore_and_per_image():
    logits, target = random_multiclass(15)
    target[1] = 255
    torch.testing.assert_close(
        losses.lovasz_softmax(logits, target, per_image=True),
        losses.lovasz_softmax(logits[:1], target[:1]),
    )
    assert losses.lovasz_softmax(logits, torch.full_like(target, 255)).item() == 0.0


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "fn",
    [
        losses.dice_loss,
        losses.focal_loss,
        losses.lovasz_softmax,
        losses.cross_entropy,
        losses.tversky_loss,
    ],
)
def test_multiclass_input_errors(fn):
    logits, target = random_multiclass(16)
    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"target has values \[7\]"):
        fn(logits, bad)
    with pytest.raises(ValueError, match="shape"):
        fn(logits, target[:, None])
    with pytest.raises(TypeError, match="integer class labels"):
        fn(logits, target.float())
    with pytest.raises(TypeError, match="float tensor"):
        fn(logits.long(), target)


def test_binary_input_errors():
    logits = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"target has values \[2\]"):
        losses.dice_loss(logits, torch.tensor([[[0, 2], [1, 1]]]), mode="binary")
    with pytest.raises(ValueError, match="binary logits must be"):
        losses.dice_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2), mode="binary")
    with pytest.raises(ValueError, match="shape"):
        losses.BCEDiceLoss()(logits, torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="mode"):
        losses.dice_loss(logits, torch.zeros(1, 2, 2), mode="softmax")


@pytest.mark.parametrize("device", DEVICES)
def test_device_independence(device):
    logits, target = random_multiclass(17)
    target[0, 0, 0] = 255
    for fn in (losses.dice_loss, losses.focal_loss, losses.lovasz_softmax, losses.tversky_loss):
        torch.testing.assert_close(
            fn(logits.to(device), target.to(device)).cpu(), fn(logits, target)
        )


def test_modules_call_their_functions():
    logits, target = random_multiclass(18)
    target[0, 0, 0] = 255
    pairs = [
        (losses.DiceLoss(smooth=0.5), losses.dice_loss(logits, target, smooth=0.5)),
        (losses.JaccardLoss(), losses.jaccard_loss(logits, target)),
        (
            losses.TverskyLoss(alpha=0.2, beta=0.8),
            losses.tversky_loss(logits, target, alpha=0.2, beta=0.8),
        ),
        (losses.FocalTverskyLoss(gamma=0.5), losses.focal_tversky_loss(logits, target, gamma=0.5)),
        (
            losses.FocalLoss(alpha=torch.tensor([1.0, 2.0, 3.0])),
            losses.focal_loss(logits, target, alpha=torch.tensor([1.0, 2.0, 3.0])),
        ),
        (losses.LovaszLoss(per_image=True), losses.lovasz_softmax(logits, target, per_image=True)),
        (losses.CrossEntropyLoss(), F.cross_entropy(logits, target, ignore_index=255)),
    ]
    for module, expected in pairs:
        torch.testing.assert_close(
            module(logits, target), expected, msg=lambda m, mod=module: f"{mod}: {m}"
        )
    binary = logits[:, :1]
    mask = (target == 1).long()
    torch.testing.assert_close(
        losses.LovaszLoss(mode="binary")(binary, mask), losses.lovasz_hinge(binary, mask)
    )
    torch.testing.assert_close(
        losses.LovaszLoss(mode="binary", per_image=True)(binary, mask),
        (losses.lovasz_hinge(binary[:1], mask[:1]) + losses.lovasz_hinge(binary[1:], mask[1:])) / 2,
    )


def test_per_class_reduction_shapes():
    logits, target = random_multiclass(19)
    assert losses.dice_loss(logits, target, reduction="none").shape == (3,)
    assert losses.dice_loss(logits, target, per_image=True, reduction="none").shape == (2, 3)
    assert losses.focal_loss(logits, target, reduction="none").shape == (2, 5, 6)
    with pytest.raises(ValueError, match="absent"):
        losses.dice_loss(logits, target, absent="zero")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_narrow_integer_targets_are_accepted(dtype):
    logits, target = random_multiclass(20)
    target[0, 0, 0] = 255
    narrow = target.to(dtype)
    for fn in (losses.cross_entropy, losses.dice_loss, losses.focal_loss, losses.lovasz_softmax):
        torch.testing.assert_close(fn(logits, narrow), fn(logits, target))


def test_multilabel_focal_equals_torchvision():
    g = torch.Generator().manual_seed(21)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = (torch.rand(2, 3, 4, 4, generator=g) > 0.6).long()
    expected = torchvision.ops.sigmoid_focal_loss(
        logits, target.float(), alpha=0.25, reduction="mean"
    )
    got = losses.focal_loss(logits, target, mode="multilabel", alpha=0.25, gamma=2.0)
    torch.testing.assert_close(got, expected)
