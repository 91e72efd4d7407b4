"""Dense CRF refinement of a segmentation by mean-field inference, in PyTorch (CPU or GPU, batched).

Paper: Krähenbühl and Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NeurIPS 2011; the local-window scheme follows Teichmann and Cipolla, "Convolutional
CRFs for Semantic Segmentation" (ConvCRF), BMVC 2019.

Energy of a labelling x: sum_i psi_u(x_i) + sum_{i != j} mu(x_i, x_j) k(f_i, f_j) with the Potts
compatibility mu(l, l') = [l != l'] and two Gaussian kernels on positions p (pixels) and colours I
(0-255 scale):

    appearance (bilateral): w_a * exp(-|p_i - p_j|^2 / (2 theta_alpha^2) - |I_i - I_j|^2 / (2 theta_beta^2))
    smoothness (spatial):   w_s * exp(-|p_i - p_j|^2 / (2 theta_gamma^2))

One mean-field step, from the current marginals Q (N, K, H, W):

    m_i(l)     = sum_{j != i} k(f_i, f_j) Q_j(l)                 message (weights included)
    Q_i(l)    <- softmax_l( -psi_u(l) - sum_{l' != l} m_i(l') )  Potts: pay for neighbours that disagree

with psi_u = -log(probs) from the network. Two ways to compute the messages:
- method="exact": every pair of pixels, an (H*W, H*W) kernel matrix; exact, for tiny images only.
- method="local": each pixel exchanges messages with the pixels of a window x window square around
  it (ConvCRF). It is exactly the all-pairs CRF with kernels truncated to the window; with
  theta_gamma = 3 the spatial kernel is below 1e-3 beyond 11 pixels, and the bilateral kernel's
  reach is cut to the window (ConvCRF's trade-off: local context, linear cost in H*W).
`normalize=True` (the default, as in the reference implementation of the paper) divides each
kernel symmetrically by its row sums, k_ij / sqrt(d_i d_j), so that the weights mean the same
for any window or image size; `normalize=False` is the plain form of the equations above.
Default parameters are the usual ones of the reference implementation: theta_gamma = 3, w_s = 3,
theta_alpha = 80, theta_beta = 13, w_a = 10, 5 iterations.

Tensor contract: probs (N, K, H, W) float, probabilities along K; image (N, C, H, W) float in
[0, 1] (any C); returns refined probabilities (N, K, H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "dense_crf",
    "DenseCRF",
    "exact_kernels",
    "local_kernels",
    "exact_message",
    "local_message",
    "mean_field_step",
]

_EXACT_MAX_PIXELS = 64 * 64  # the (H*W)^2 kernel matrix of a 64x64 image holds 16.8 M floats
_EPS = 1e-8


def _offsets(window: int) -> list[tuple[int, int]]:
    r = window // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)]


def _neighbours(x: torch.Tensor, window: int) -> list[torch.Tensor]:
    """For each offset of `_offsets(window)`, the value of the neighbour at that offset, 0 outside
    the image: views of one padded copy. x (N, C, H, W) -> list of (N, C, H, W)."""
    r = window // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r))  # (N, C, H + 2r, W + 2r)
    return [padded[..., r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in _offsets(window)]


def exact_kernels(
    image: torch.Tensor,
    *,
    spatial_std: float = 3.0,
    bilateral_spatial_std: float = 80.0,
    bilateral_color_std: float = 13.0,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-pairs (smoothness, appearance) kernel matrices, each (N, H*W, H*W), zero diagonal."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=image.device), torch.arange(w, device=image.device), indexing="ij"
    )
    pos = torch.stack([ys, xs], dim=-1).reshape(1, h * w, 2).to(image.dtype)  # (1, HW, 2)
    colour = image.flatten(2).transpose(1, 2) * 255.0  # (N, HW, C)
    pos_d2 = torch.cdist(pos, pos).pow(2)  # (1, HW, HW)
    col_d2 = torch.cdist(colour, colour).pow(2)  # (N, HW, HW)
    not_self = 1.0 - torch.eye(h * w, device=image.device, dtype=image.dtype)  # sum over j != i
    smooth = torch.exp(-pos_d2 / (2 * spatial_std**2)) * not_self
    appearance = (
        torch.exp(-pos_d2 / (2 * bilateral_spatial_std**2) - col_d2 / (2 * bilateral_color_std**2))
        * not_self
    )
    smooth = smooth.expand(n, -1, -1)
    if normalize:
        smooth, appearance = (_normalize_exact(k) for k in (smooth, appearance))
    return smooth, appearance


def _normalize_exact(kernel: torch.Tensor) -> torch.Tensor:
    """k_ij / sqrt(d_i d_j) with d_i = sum_j k_ij, for kernel matrices (N, HW, HW)."""
    inv_sqrt_d = kernel.sum(dim=2).clamp_min(_EPS).rsqrt()  # (N, HW)
    return kernel * inv_sqrt_d.unsqueeze(2) * inv_sqrt_d.unsqueeze(1)


def local_kernels(
    image: torch.Tensor,
    window: int = 11,
    *,
    spatial_std: float = 3.0,
    bilateral_spatial_std: float = 80.0,
    bilateral_color_std: float = 13.0,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(smoothness, appearance) kernels restricted to a window, each (N, window^2 - 1, H, W):
    entry [:, p, i, j] couples pixel (i, j) with its neighbour at the p-th offset of `_offsets`."""
    n, _, h, w = image.shape
    inside = torch.ones(n, 1, h, w, device=image.device, dtype=image.dtype)
    colour = image * 255.0  # (N, C, H, W)
    smooth, appearance = [], []
    offsets = _offsets(window)
    for (dy, dx), valid, other in zip(
        offsets, _neighbours(inside, window), _neighbours(colour, window)
    ):
        dist2 = float(
            dy * dy + dx * dx
        )  # valid (N, 1, H, W) is 0 where the neighbour is off the image
        col_d2 = (colour - other).pow(2).sum(dim=1, keepdim=True)  # (N, 1, H, W)
        smooth.append(valid * math.exp(-dist2 / (2 * spatial_std**2)))
        appearance.append(
            valid
            * torch.exp(
                -col_d2 / (2 * bilateral_color_std**2) - dist2 / (2 * bilateral_spatial_std**2)
            )
        )
    kernels = [torch.cat(k, dim=1) for k in (smooth, appearance)]  # each (N, P, H, W)
    if normalize:
        kernels = [_normalize_local(k, window) for k in kernels]
    return kernels[0], kernels[1]


def _normalize_local(kernel: torch.Tensor, window: int) -> torch.Tensor:
    """k_ij / sqrt(d_i d_j) with d_i the row sum, for a windowed kernel (N, P, H, W)."""
    inv_sqrt_d = kernel.sum(dim=1, keepdim=True).clamp_min(_EPS).rsqrt()  # (N, 1, H, W)
    kernel = kernel * inv_sqrt_d  # 1 / sqrt(d_i)
    for p, neighbour in enumerate(_neighbours(inv_sqrt_d, window)):
        kernel[:, p : p + 1] *= neighbour  # 1 / sqrt(d_j) of the neighbour at offset p
    return kernel


def exact_message(kernel: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """m_i(l) = sum_j kernel[i, j] Q_j(l). kernel (N, HW, HW), q (N, K, H, W) -> (N, K, H, W)."""
    n, k, h, w = q.shape
    m = torch.bmm(kernel, q.flatten(2).transpose(1, 2))  # (N, HW, K)
    return m.transpose(1, 2).reshape(n, k, h, w)


def local_message(kernel: torch.Tensor, q: torch.Tensor, window: int) -> torch.Tensor:
    """m_i(l) = sum over the window of kernel[p, i] Q_{i + offset_p}(l). kernel (N, P, H, W),
    q (N, K, H, W) -> (N, K, H, W). One multiply-add per offset keeps memory at O(N K H W)."""
    m = torch.zeros_like(q)
    for p, neighbour in enumerate(_neighbours(q, window)):  # each (N, K, H, W)
        m.addcmul_(kernel[:, p : p + 1], neighbour)
    return m


def mean_field_step(scores: torch.Tensor, message: torch.Tensor) -> torch.Tensor:
    """One Potts mean-field update: softmax over K of scores(l) - sum_{l' != l} message(l').

    scores (N, K, H, W) is the negative unary energy (log-probabilities of the network);
    message (N, K, H, W) the weighted pairwise message of the current marginals.
    """
    disagreement = message.sum(dim=1, keepdim=True) - message  # (N, K, H, W): sum over l' != l
    return torch.softmax(scores - disagreement, dim=1)


def dense_crf(
    probs: torch.Tensor,
    image: torch.Tensor,
    *,
    num_iterations: int = 5,
    spatial_std: float = 3.0,
    spatial_weight: float = 3.0,
    bilateral_spatial_std: float = 80.0,
    bilateral_color_std: float = 13.0,
    bilateral_weight: float = 10.0,
    method: str = "local",
    window: int = 11,
    normalize: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Refine softmax probabilities (N, K, H, W) with a dense CRF on `image` (N, C, H, W) in [0, 1].

    `method` "local" (window x window messages, any size) or "exact" (all pairs, at most
    64 x 64 pixels). Returns the mean-field marginals (N, K, H, W) after `num_iterations` steps.
    `chunk_size` refines that many images at a time into one preallocated output: the images are
    independent, so the answer is the same, and the working set (window^2 - 1 kernels per pixel,
    about 75 MiB per 256 x 256 image at window 7) is that of one chunk instead of the whole batch.
    """
    _check_inputs(
        probs,
        image,
        num_iterations,
        method,
        window,
        {
            "spatial_std": spatial_std,
            "bilateral_spatial_std": bilateral_spatial_std,
            "bilateral_color_std": bilateral_color_std,
        },
        {"spatial_weight": spatial_weight, "bilateral_weight": bilateral_weight},
    )
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1 or None, got {chunk_size!r}")
        settings = dict(
            num_iterations=num_iterations,
            spatial_std=spatial_std,
            spatial_weight=spatial_weight,
            bilateral_spatial_std=bilateral_spatial_std,
            bilateral_color_std=bilateral_color_std,
            bilateral_weight=bilateral_weight,
            method=method,
            window=window,
            normalize=normalize,
        )
        out = torch.empty_like(probs)  # (N, K, H, W), filled chunk by chunk
        for start in range(0, probs.shape[0], chunk_size):
            end = start + chunk_size
            out[start:end] = dense_crf(probs[start:end], image[start:end], **settings)
        return out
    image = image.to(probs.dtype)
    stds = {
        "spatial_std": spatial_std,
        "bilateral_spatial_std": bilateral_spatial_std,
        "bilateral_color_std": bilateral_color_std,
        "normalize": normalize,
    }
    if method == "exact":
        smooth, appearance = exact_kernels(image, **stds)
        kernel = spatial_weight * smooth + bilateral_weight * appearance  # (N, HW, HW)
    else:
        smooth, appearance = local_kernels(image, window, **stds)
        kernel = spatial_weight * smooth + bilateral_weight * appearance  # (N, P, H, W)
    scores = probs.clamp_min(_EPS).log()  # (N, K, H, W): -psi_u
    q = probs
    for _ in range(num_iterations):
        if method == "exact":
            message = exact_message(kernel, q)
        else:
            message = local_message(kernel, q, window)
        q = mean_field_step(scores, message)
    return q


class DenseCRF(nn.Module):
    """Stores the CRF settings; `crf(probs, image)` calls `dense_crf`. No trainable parameters."""

    def __init__(
        self,
        num_iterations: int = 5,
        spatial_std: float = 3.0,
        spatial_weight: float = 3.0,
        bilateral_spatial_std: float = 80.0,
        bilateral_color_std: float = 13.0,
        bilateral_weight: float = 10.0,
        method: str = "local",
        window: int = 11,
        normalize: bool = True,
    ):
        super().__init__()
        self.settings = dict(
            num_iterations=num_iterations,
            spatial_std=spatial_std,
            spatial_weight=spatial_weight,
            bilateral_spatial_std=bilateral_spatial_std,
            bilateral_color_std=bilateral_color_std,
            bilateral_weight=bilateral_weight,
            method=method,
            window=window,
            normalize=normalize,
        )

    def forward(self, probs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return dense_crf(probs, image, **self.settings)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items())


def _check_inputs(probs, image, num_iterations, method, window, stds, weights) -> None:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 4 or not probs.is_floating_point():
        raise ValueError(f"probs must be a float tensor (N, K, H, W), got {_describe(probs)}")
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or not image.is_floating_point():
        raise ValueError(
            f"image must be a float tensor (N, C, H, W) in [0, 1], got {_describe(image)}"
        )
    n, _, h, w = probs.shape
    if image.shape[0] != n or image.shape[2:] != probs.shape[2:]:
        raise ValueError(
            f"image {tuple(image.shape)} must match probs {tuple(probs.shape)} in N, H and W"
        )
    if image.device != probs.device:
        raise ValueError(
            f"image is on {image.device} but probs on {probs.device}; move both to one device"
        )
    if probs.min() < 0 or not torch.allclose(
        probs.sum(dim=1), torch.ones_like(probs[:, 0]), atol=1e-3
    ):
        raise ValueError(
            "probs must be probabilities along dim 1 (non-negative, summing to 1); "
            "pass logits.softmax(dim=1)"
        )
    if image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"image values must be in [0, 1], got [{image.min():.3g}, {image.max():.3g}]"
        )
    if (
        not isinstance(num_iterations, int)
        or isinstance(num_iterations, bool)
        or num_iterations < 0
    ):
        raise ValueError(f"num_iterations must be an int >= 0, got {num_iterations!r}")
    if method not in ("local", "exact"):
        raise ValueError(f"method must be 'local' or 'exact', got {method!r}")
    if method == "local" and (not isinstance(window, int) or window < 3 or window % 2 == 0):
        raise ValueError(f"window must be an odd int >= 3, got {window!r}")
    if method == "exact" and h * w > _EXACT_MAX_PIXELS:
        raise ValueError(
            f"method='exact' builds an (H*W)^2 matrix; {h}x{w} is above {_EXACT_MAX_PIXELS} "
            "pixels, use method='local'"
        )
    for name, value in stds.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, value in weights.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
