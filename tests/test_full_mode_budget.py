"""docs/full_mode_budget.md against the code that generates it, and the measuring method against
independent computations (a convolution's FLOPs by formula, an MLP's saved tensors by hand)."""

import math
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import full_mode_budget as budget


@pytest.fixture(scope="module")
def computed():
    return budget.compute()  # every notebook's steps on the meta device: about 15 s


def _number(cell: str) -> float | None:
    match = re.fullmatch(r"(-?[\d.]+)( [MP]FLOP| M)?", cell)
    return float(match.group(1)) if match else None


def _same_cell(doc: str, fresh: str) -> bool:
    a, b = _number(doc), _number(fresh)
    if a is None or b is None:
        return doc == fresh
    return math.isclose(a, b, rel_tol=0.01, abs_tol=0.011)  # the last printed digit


def test_doc_tables_match_what_the_code_computes_now(computed):
    phases, rates = computed
    fresh = budget.parse_tables(budget.render_tables(phases, rates))
    doc = budget.parse_tables(budget.DOC.read_text())
    hint = "regenerate it: python tools/full_mode_budget.py --write"
    for header, rows in fresh.items():
        assert header in doc, f"{budget.DOC.name} lacks the table {header[:3]}...; {hint}"
        assert len(doc[header]) == len(rows), f"{budget.DOC.name}: rows differ; {hint}"
        for doc_row, fresh_row in zip(doc[header], rows):
            for column, d, f in zip(header, doc_row, fresh_row):
                assert _same_cell(d, f), (
                    f"{budget.DOC.name}, {doc_row[:2]}, {column!r}: "
                    f"the doc says {d!r}, the code gives {f!r}; {hint}"
                )


def test_doc_lists_every_step_that_does_not_fit(computed):
    phases, rates = computed
    section = budget.DOC.read_text().split("## What does not fit")[1].split("\n## ")[0]
    for phase in phases:
        listed = f"**{phase.notebook}, {phase.name}**" in section
        assert listed == bool(phase.misses(rates)), phase.name


def test_the_issue_limits_hold_for_the_steps_that_fit(computed):
    phases, rates = computed
    for phase in phases:
        if not phase.misses(rates):
            assert phase.gpu_bytes <= 12e9 and phase.host_bytes <= 10e9
            assert phase.gpu_minutes(rates) + phase.cpu_minutes() <= 15


@pytest.mark.parametrize("groups", [1, 4])
def test_conv_flops_match_the_formula(groups):
    n, c_in, c_out, k, h, w = 2, 8, 16, 3, 10, 12
    with torch.device("meta"):
        conv = nn.Conv2d(c_in, c_out, k, padding=1, groups=groups, bias=False)
        x = torch.randn(n, c_in, h, w, requires_grad=True)
    formula = 2 * (c_in // groups) * c_out * k * k * h * w * n  # multiply-adds counted as 2
    with budget.flop_counter() as counter:
        y = conv(x)
        forward = counter.get_total_flops()
        y.sum().backward()
    assert forward == formula
    # the input gradient and the weight gradient each cost one forward convolution
    assert counter.get_total_flops() - forward == 2 * formula


def test_saved_tensors_of_a_small_mlp_match_a_hand_count():
    mlp = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    cost = budget.measure_step(
        mlp, lambda: (torch.randn(4, 10), None), lambda out, _: out.pow(2).sum(), batch=4
    )
    # saved: the input x (4, 10) for the first weight's gradient, ReLU's output (4, 20) for its
    # own backward and the second weight's gradient (one storage), the second output (4, 5) for
    # pow; the weights are parameters and not counted again. float32: 4 bytes each.
    assert cost.saved_bytes == 4 * (4 * 10 + 4 * 20 + 4 * 5)
    assert cost.params == 10 * 20 + 20 + 20 * 5 + 5
    assert cost.model_bytes == cost.trainable_bytes == 4 * cost.params
    assert cost.temporary_bytes == 4 * 4 * 20  # the first Linear's output, before the ReLU
    assert cost.forward_flops == 2 * 4 * (10 * 20 + 20 * 5)
    assert cost.tally_bytes == 4 * cost.model_bytes + cost.saved_bytes + cost.temporary_bytes


def test_live_storages_count_each_storage_once_until_it_is_freed():
    with budget.LiveStorages() as live:
        a = torch.empty(1000, device="meta")  # 4000 bytes
        view = a[:10]  # the same storage
        b = torch.empty(2000, device="meta")  # 8000 bytes
        del a, view
        c = torch.empty(500, device="meta")  # 2000 bytes
    assert live.peak == 12000 and live.now == 10000
    del b, c


def test_meta_and_real_cpu_tensors_give_the_same_figures():
    def net():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 4, 3, padding=1, groups=4),
        )

    def batch(device):
        return lambda: (
            torch.randn(2, 3, 16, 16, device=device),
            torch.randint(0, 4, (2, 16, 16), device=device),
        )

    real = budget.measure_step(net(), batch("cpu"), budget.cross_entropy(), 2)
    meta = budget.measure_step(budget.on_meta(net), batch("meta"), budget.cross_entropy(), 2)
    assert real == meta


def test_t4_rate_uses_resnet50s_published_operation_count():
    from torchvision.models import ResNet50_Weights

    giga_macs = ResNet50_Weights.IMAGENET1K_V2.meta["_ops"]  # 4.089, multiply-adds at 224 x 224
    per_image = budget.t4_flop_per_s("fp32") / budget.T4_RESNET50_IMAGES_PER_S["fp32"]
    assert per_image == pytest.approx(2 * giga_macs * 1e9, rel=0.01)


def test_notebook_source_reads_full_mode_and_skips_the_rehearsal():
    source = budget.NotebookSource(
        "xx",
        text=textwrap.dedent("""\
        FAST = course_mode() == 'fast'
        REHEARSAL = rehearsal()
        SIZE, STEPS = (64, 10) if FAST else (256, 1000)
        if REHEARSAL:
            STEPS = 2
        if FAST:
            BATCH = 2
        else:
            BATCH, EPOCHS = 16, 20
        CONFIGS = {'a': ('unet', dict(depth=3))}
        model = Net(width=SIZE // 2, name='x', device=get_device())
        for variant in ('32s', '8s'):
            pass
        """),
    )
    assert [source[name] for name in ("SIZE", "STEPS", "BATCH", "EPOCHS")] == [256, 1000, 16, 20]
    assert source["CONFIGS"] == {"a": ("unet", {"depth": 3})}
    assert source.where("BATCH") == "notebooks/xx_source.py:9"
    (call,) = source.calls("Net")
    assert call.kwargs == {"width": 128, "name": "x"} and call.line == 11  # device is not simple
    assert source.loop_values("variant") == ("32s", "8s")


def test_notebook_source_reads_dtypes_deletions_and_calls_inside_a_function():
    source = budget.NotebookSource(
        "xx",
        text=textwrap.dedent("""\
        CACHE_DTYPE, CACHE_DEVICE = torch.float16, 'cpu'
        def frozen_features(images):
            return torch.cat([f(x) for x in images])
        def other():
            return torch.stack([])
        cache = frozen_features(images)
        del cache
        if True:
            del kept
        """),
    )
    assert source["CACHE_DTYPE"] is torch.float16 and source["CACHE_DEVICE"] == "cpu"
    assert source.function_calls("frozen_features", "cat")
    assert not source.function_calls("other", "cat")
    assert source.deletes("cache")
    assert not source.deletes("kept")  # only a top-level del frees for the rest of the notebook
    with pytest.raises(KeyError, match="no `def missing`"):
        source.function_calls("missing", "cat")


def test_notebook_source_reads_the_keys_of_a_dict_comprehension_over_a_literal():
    source = budget.NotebookSource(
        "xx",
        text=textwrap.dedent("""\
        LOSSES = {'a': f, 'b': g, 'c': h}
        SOME = {name: LOSSES[name] for name in ('a', 'c')}
        VALUES = {LOSSES[name]: name for name in ('a', 'c')}
        """),
    )
    assert source.dict_keys("LOSSES") == ("a", "b", "c")
    assert source.dict_keys("SOME") == ("a", "c")
    with pytest.raises(KeyError, match="no dict literal VALUES"):
        source.dict_keys("VALUES")  # its keys are not the loop's values


def test_notebooks_05_and_06_count_their_measured_comparisons(computed):
    phases = [p for p in computed[0] if p.notebook in ("05", "06")]
    names = " | ".join(p.name for p in phases)
    nb05, nb06 = budget.NotebookSource("05"), budget.NotebookSource("06")
    small = f"4 losses × {len(nb05['SMALL_SEEDS'])} seeds"
    augmentation = f"augmentation on and off × {len(nb06['AUG_SEEDS'])} seeds"
    assert small in names and augmentation in names
    (training_06,) = [p for p in phases if p.notebook == "06" and p.step is not None]
    runs = 2 * len(nb06["AUG_SEEDS"])
    assert training_06.flops > runs * nb06["AUG_STEPS"] * training_06.step.step_flops * 0.999


def _notebook_04_phases(edit=lambda text: text) -> dict:
    """notebook_04()'s phases, by the start of their names, from an edited copy of the notebook."""
    path = next(budget.NOTEBOOKS.glob("04_*.py"))
    text = edit(path.read_text())
    real = budget.NotebookSource.__init__

    def reading(self, prefix, source=None):
        real(self, prefix, text if prefix == "04" else source)
        self.path = path

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(budget.NotebookSource, "__init__", reading)
        phases = budget.notebook_04()
    return {("crf" if "CRF" in p.name else p.name.split(" ")[0]): p for p in phases}


def _replace(text, old, new):
    assert old in text, f"notebook 04 no longer has {old!r}; update this test"
    return text.replace(old, new)


def test_notebook_04_cache_and_crf_follow_the_notebook_code():
    """What the notebook first did (the cache in float32 on the device, joined by torch.cat, never
    freed) must be charged, and its current code must fit."""
    rates = {precision: budget.t4_flop_per_s(precision) for precision in budget.T4_PEAK}
    now = _notebook_04_phases()
    on_device = _notebook_04_phases(
        lambda t: _replace(
            _replace(
                t,
                'CACHE_DTYPE, CACHE_DEVICE = torch.float16, "cpu"',
                'CACHE_DTYPE, CACHE_DEVICE = torch.float32, "cuda"',
            ),
            "lows[i : i + 8].copy_(low)",
            "lows = torch.cat([lows, low])",
        )
    )
    kept = _notebook_04_phases(lambda t: _replace(t, "del cache, low_train, context_train", "pass"))
    assert not any(p.misses(rates) for p in now.values())
    # float32 on the device, doubled by torch.cat: 2 x 2 x the float16 cache, plus the models
    assert on_device["frozen-feature"].misses(rates) == ["GPU"]
    cache16 = now["frozen-feature"].host_bytes - now["DeepLabV3"].host_bytes / 2  # minus the scenes
    assert (
        4 * cache16
        < on_device["frozen-feature"].gpu_bytes
        < 4 * cache16 + now["frozen-feature"].gpu_bytes
    )
    # without the del, the cache is still in host RAM while the CRF runs
    assert kept["crf"].host_bytes == pytest.approx(now["crf"].host_bytes + cache16, rel=1e-6)
