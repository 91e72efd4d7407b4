"""Dense CRF: mean-field steps against a brute-force loop over all pixel pairs, the local-window
scheme against the same loop with the window applied, batching, dtype/device, input checks, and
a measured boundary gain on the scene dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from course_lib import crf
from course_lib.data import ScenesDataset

PARAMS = dict(
    spatial_std=2.0,
    spatial_weight=1.5,
    bilateral_spatial_std=4.0,
    bilateral_color_std=40.0,
    bilateral_weight=2.0,
)


def brute_force_step(
    probs,
    image,
    q,
    *,
    spatial_std,
    spatial_weight,
    bilateral_spatial_std,
    bilateral_color_std,
    bilateral_weight,
    normalize,
    window=None,
):
    """One mean-field step for one image, written pixel by pixel from the equations of the paper.
    probs, q: (K, H, W); image: (C, H, W). `window` keeps only pairs with |dy|, |dx| <= window // 2."""
    k_cls, h, w = probs.shape
    pixels = [(y, x) for y in range(h) for x in range(w)]
    reach = window // 2 if window is not None else max(h, w)

    def kernels(a, b):
        (ya, xa), (yb, xb) = a, b
        pos2 = (ya - yb) ** 2 + (xa - xb) ** 2
        col2 = sum(
            (255.0 * (image[c, ya, xa] - image[c, yb, xb]).item()) ** 2
            for c in range(image.shape[0])
        )
        smooth = math.exp(-pos2 / (2 * spatial_std**2))
        appearance = math.exp(
            -pos2 / (2 * bilateral_spatial_std**2) - col2 / (2 * bilateral_color_std**2)
        )
        return smooth, appearance

    def pairs(a):
        return [
            b for b in pixels if b != a and abs(b[0] - a[0]) <= reach and abs(b[1] - a[1]) <= reach
        ]

    row_sums = {a: [sum(kernels(a, b)[m] for b in pairs(a)) for m in (0, 1)] for a in pixels}
    out = torch.zeros_like(probs)
    for a in pixels:
        message = [0.0] * k_cls
        for b in pairs(a):
            k_s, k_a = kernels(a, b)
            if normalize:
                k_s /= math.sqrt(row_sums[a][0] * row_sums[b][0])
                k_a /= math.sqrt(row_sums[a][1] * row_sums[b][1])
            for label in range(k_cls):
                message[label] += (spatial_weight * k_s + bilateral_weight * k_a) * q[
                    label, b[0], b[1]
                ].item()
        energies = []
        for label in range(k_cls):
            disagreement = sum(message[other] for other in range(k_cls) if other != label)
            energies.append(math.log(probs[label, a[0], a[1]].item()) - disagreement)
        top = max(energies)
        total = sum(math.exp(e - top) for e in energies)
        for label in range(k_cls):
            out[label, a[0], a[1]] = math.exp(energies[label] - top) / total
    return out


def tiny_case(n=2, k=3, h=4, w=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    probs = torch.randn(n, k, h, w, generator=g, dtype=dtype).mul(2).softmax(dim=1)
    image = torch.rand(n, 3, h, w, generator=g, dtype=dtype)
    return probs, image


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("method", ["exact", "local"])
def test_one_step_matches_brute_force_all_pairs(method, normalize):
    probs, image = tiny_case()
    window = 9  # covers the 4x5 image from every pixel: the local scheme sees every pair
    got = crf.dense_crf(
        probs, image, num_iterations=1, method=method, window=window, normalize=normalize, **PARAMS
    )
    for i in range(probs.shape[0]):
        expected = brute_force_step(probs[i], image[i], probs[i], normalize=normalize, **PARAMS)
        torch.testing.assert_close(got[i], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_local_window_equals_brute_force_with_truncated_pairs(normalize):
    probs, image = tiny_case(n=1, h=6, w=7, seed=1)
    got = crf.dense_crf(
        probs, image, num_iterations=1, method="local", window=3, normalize=normalize, **PARAMS
    )
    expected = brute_force_step(
        probs[0], image[0], probs[0], normalize=normalize, window=3, **PARAMS
    )
    torch.testing.assert_close(got[0], expected, rtol=1e-9, atol=1e-12)
    all_pairs = crf.dense_crf(
        probs, image, num_iterations=1, method="exact", normalize=normalize, **PARAMS
    )
    assert (got - all_pairs).abs().max() > 1e-6  # the window does change the answer here


def test_several_iterations_match_repeated_brute_force_steps():
    probs, image = tiny_case(n=1, seed=2)
    q = probs[0]
    for _ in range(3):
        q = brute_force_step(probs[0], image[0], q, normalize=True, **PARAMS)
    got = crf.dense_crf(probs, image, num_iterations=3, method="local", window=9, **PARAMS)
    torch.testing.assert_close(got[0], q, rtol=1e-9, atol=1e-12)


def test_mean_field_step_is_potts_softmax():
    scores = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)).view(1, 3, 1, 1)
    message = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1)
    # label l pays for the message of the other labels: 2, 3, 1
    expected = torch.softmax(
        scores.flatten() - torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64), 0
    )
    torch.testing.assert_close(crf.mean_field_step(scores, message).flatten(), expected)


def test_zero_iterations_and_zero_weights_return_the_input():
    probs, image = tiny_case()
    torch.testing.assert_close(crf.dense_crf(probs, image, num_iterations=0), probs)
    unchanged = crf.dense_crf(probs, image, spatial_weight=0.0, bilateral_weight=0.0)
    torch.testing.assert_close(unchanged, probs)


def test_batch_equals_one_image_at_a_time_and_outputs_are_probabilities():
    probs, image = tiny_case(n=3, h=12, w=10, seed=3, dtype=torch.float32)
    batched = crf.dense_crf(probs, image)
    single = torch.cat([crf.dense_crf(probs[i : i + 1], image[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single)
    torch.testing.assert_close(batched.sum(dim=1), torch.ones(3, 12, 10))
    assert batched.min() >= 0


@pytest.mark.parametrize("method, chunk_size", [("local", 2), ("local", 7), ("exact", 3)])
def test_chunks_give_the_answer_of_the_whole_batch(method, chunk_size):
    probs, image = tiny_case(n=5, h=12, w=10, seed=4, dtype=torch.float32)
    whole = crf.dense_crf(probs, image, method=method, window=5)
    chunked = crf.dense_crf(probs, image, method=method, window=5, chunk_size=chunk_size)
    torch.testing.assert_close(chunked, whole)
    single = crf.dense_crf(probs[4:], image[4:], method=method, window=5)  # the short last chunk
    torch.testing.assert_close(chunked[4:], single)


def test_float32_on_cpu_matches_float64_reference_and_module_wrapper():
    probs, image = tiny_case(n=2, h=10, w=9, seed=4)
    reference = crf.dense_crf(probs, image, window=7)
    got = crf.DenseCRF(window=7)(probs.float().to("cpu"), image.float().to("cpu"))
    assert got.device.type == "cpu" and got.dtype == torch.float32
    torch.testing.assert_close(got, reference.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    probs, image = tiny_case(n=2, h=20, w=24, seed=5, dtype=torch.float32)
    cpu = crf.dense_crf(probs, image)
    gpu = crf.dense_crf(probs.cuda(), image.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def _band(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within `width` of a label change of `mask` (H, W): the trimap band."""
    m = mask.numpy()
    edge = np.zeros(m.shape, dtype=bool)
    edge[:-1] |= m[:-1] != m[1:]
    edge[1:] |= m[:-1] != m[1:]
    edge[:, :-1] |= m[:, :-1] != m[:, 1:]
    edge[:, 1:] |= m[:, :-1] != m[:, 1:]
    return torch.from_numpy(ndimage.distance_transform_edt(~edge) <= width)


def test_crf_improves_boundary_accuracy_of_a_coarse_scene_prediction():
    dataset = ScenesDataset(length=4, image_size=96, seed=0)
    images, masks = map(torch.stack, zip(*(dataset[i] for i in range(4))))
    onehot = F.one_hot(masks, dataset.num_classes).permute(0, 3, 1, 2).float()  # (N, K, H, W)
    # a stride-8 prediction upsampled bilinearly: right regions, blurred boundaries
    coarse = F.interpolate(
        F.avg_pool2d(onehot, 8), size=masks.shape[-2:], mode="bilinear", align_corners=False
    )
    probs = (4 * coarse).softmax(dim=1)
    refined = crf.dense_crf(probs, images, window=7, num_iterations=3)
    band = torch.stack([_band(m, 3) for m in masks])
    before = (probs.argmax(1) == masks)[band].float().mean().item()
    after = (refined.argmax(1) == masks)[band].float().mean().item()
    assert after > before + 0.03, f"boundary-band accuracy {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(probs=torch.rand(1, 3, 4)), "probs must be a float tensor"),
        (dict(probs=torch.ones(1, 2, 4, 4)), "probabilities along dim 1"),
        (dict(image=torch.rand(1, 3, 5, 4)), "must match probs"),
        (dict(image=torch.rand(1, 3, 4, 4) * 255), "image values must be in \\[0, 1\\]"),
        (dict(method="fast"), "method must be"),
        (dict(window=4), "window must be an odd int"),
        (dict(num_iterations=-1), "num_iterations"),
        (dict(spatial_std=0.0), "spatial_std must be > 0"),
        (dict(bilateral_weight=-1.0), "bilateral_weight must be >= 0"),
        (dict(chunk_size=0), "chunk_size must be an int >= 1"),
    ],
)
def test_input_checks(kwargs, message):
    args = dict(probs=torch.full((1, 2, 4, 4), 0.5), image=torch.rand(1, 3, 4, 4))
    args.update(kwargs)
    probs, image = args.pop("probs"), args.pop("image")
    with pytest.raises(ValueError, match=message):
        crf.dense_crf(probs, image, **args)


def test_exact_method_refuses_large_images():
    with pytest.raises(ValueError, match="use method='local'"):
        crf.dense_crf(torch.full((1, 2, 65, 65), 0.5), torch.rand(1, 3, 65, 65), method="exact")
