"""Training engine: loops checked against direct computations, fit features, smoke runs per model."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import engine, models
from course_lib.checkpoint import load_checkpoint


class TinyNet(nn.Module):
    """Two convolutions with dropout, so that shuffling and RNG state both matter for resume."""

    def __init__(self, in_channels=1, num_classes=2, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.drop = nn.Dropout2d(dropout)
        self.conv2 = nn.Conv2d(4, num_classes, 1)

    def forward(self, x):
        return self.conv2(self.drop(torch.relu(self.conv1(x))))


def _threshold_data(n=10, size=8, seed=0):
    """Images whose bright pixels are class 1: a task a tiny conv net learns in a few steps."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g)
    targets = (images[:, 0] > 0.5).long()
    return images, targets


def _loader(images, targets, batch_size=4, shuffle=False):
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size, shuffle=shuffle)


def _brute_force_iou(pred, target, num_classes):
    ious = []
    for c in range(num_classes):
        inter = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        ious.append(inter / union if union else math.nan)
    return ious


def test_train_one_epoch_returns_mean_loss_per_image():
    torch.manual_seed(0)
    model = TinyNet()
    images, targets = _threshold_data(n=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # weights fixed: losses comparable
    loss = engine.train_one_epoch(
        model, _loader(images, targets, batch_size=2), nn.CrossEntropyLoss(), optimizer, "cpu"
    )
    expected = nn.CrossEntropyLoss()(model(images), targets).item()  # batches of 2, 2, 1
    assert loss == pytest.approx(expected, rel=1e-6)


def test_train_one_epoch_steps_scheduler_per_batch_and_learns():
    torch.manual_seed(0)
    model = TinyNet()
    images, targets = _threshold_data(n=12)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loader = _loader(images, targets, batch_size=4)
    first = engine.train_one_epoch(
        model, loader, nn.CrossEntropyLoss(), optimizer, "cpu", scheduler=scheduler
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**3)
    for _ in range(5):
        last = engine.train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, "cpu")
    assert last < first


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = TinyNet()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    images, targets = _threshold_data(n=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    engine.train_one_epoch(
        model,
        _loader(images, targets, batch_size=4),
        nn.CrossEntropyLoss(),
        optimizer,
        "cpu",
        grad_clip=1e-3,
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_evaluate_accumulates_instead_of_averaging_batches():
    class Lookup(nn.Module):
        """Returns fixed logits for the images it was built with (identified by their first value)."""

        def __init__(self, logits):
            super().__init__()
            self.logits = logits
            self.anchor = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.logits[x[:, 0, 0, 0].long()] + 0 * self.anchor

    # Image 0: a large class-1 region, predicted perfectly. Image 1: one class-1 pixel, missed.
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, :, :3] = 1
    target[1, 0, 0] = 1
    pred = target.clone()
    pred[1, 0, 0] = 0
    logits = nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    images = torch.arange(2).float().view(2, 1, 1, 1).expand(2, 1, 4, 4).contiguous()
    results = engine.evaluate(Lookup(logits), _loader(images, target, batch_size=1), 2, "cpu")
    expected = _brute_force_iou(pred, target, 2)
    assert results["iou_per_class"] == pytest.approx(expected)
    assert results["miou"] == pytest.approx(sum(expected) / 2)
    per_batch = [sum(_brute_force_iou(pred[i], target[i], 2)) / 2 for i in range(2)]
    assert abs(sum(per_batch) / 2 - results["miou"]) > 0.05, "the case must separate the two"
    dice1 = 2 * 12 / (12 + 13)
    assert results["dice_per_class"][1] == pytest.approx(dice1)
    assert results["dice_foreground"] == pytest.approx(dice1)
    assert results["pixel_accuracy"] == pytest.approx(31 / 32)
    assert results["confusion_matrix"].tolist() == [[19, 0], [1, 12]]


def test_evaluate_loss_and_ignore_index():
    torch.manual_seed(0)
    model = TinyNet()
    images, targets = _threshold_data(n=6)
    targets[:, 0, :] = 255
    results = engine.evaluate(
        model,
        _loader(images, targets, batch_size=4),
        2,
        "cpu",
        loss_fn=nn.CrossEntropyLoss(ignore_index=255),
        ignore_index=255,
    )
    assert int(results["confusion_matrix"].sum()) == 6 * 7 * 8
    with torch.no_grad():
        full = nn.CrossEntropyLoss(ignore_index=255, reduction="none")(model(images), targets)
        per_image = full.sum((1, 2)) / (targets != 255).sum((1, 2))
    assert results["loss"] == pytest.approx(per_image.mean().item(), rel=1e-6)


def _fit(model, epochs, loader, val_loader, lr=0.02, checkpoint=None, **options):
    return engine.fit(
        model,
        loader,
        val_loader,
        epochs=epochs,
        loss_fn=nn.CrossEntropyLoss(),
        num_classes=2,
        device="cpu",
        checkpoint=checkpoint,
        options=engine.FitOptions(lr=lr, progress=False, **options),
    )


def test_fit_history_and_learning():
    torch.manual_seed(0)
    images, targets = _threshold_data(n=16)
    history = _fit(TinyNet(), 8, _loader(images, targets), _loader(images, targets), lr=0.1)
    for key in ("epoch", "lr", "train_loss", "val_loss", "miou", "dice", "pixel_accuracy"):
        assert len(history[key]) == 8, key
    assert history["epoch"] == list(range(1, 9))
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["miou"][-1] > 0.8
    assert history["lr"][-1] < history["lr"][0]


class _Interrupt(Exception):
    pass


class _LossThatDiesAt:
    """Cross-entropy that raises after `calls` calls: a run killed in the middle of an epoch."""

    def __init__(self, calls):
        self.calls = calls
        self.loss = nn.CrossEntropyLoss()

    def __call__(self, logits, targets):
        self.calls -= 1
        if self.calls < 0:
            raise _Interrupt
        return self.loss(logits, targets)


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    images, targets = _threshold_data(n=12)

    def run(loss_fn, checkpoint=None):
        torch.manual_seed(3)
        model = TinyNet(dropout=0.2)
        options = engine.FitOptions(
            lr=0.02, schedule="poly", warmup_steps=2, seed=11, progress=False
        )
        history = engine.fit(
            model,
            _loader(images, targets, batch_size=4, shuffle=True),
            _loader(images, targets, batch_size=6),
            epochs=4,
            loss_fn=loss_fn,
            num_classes=2,
            device="cpu",
            options=options,
            checkpoint=checkpoint,
        )
        return model, history

    straight, straight_history = run(nn.CrossEntropyLoss())
    path = tmp_path / "last.pt"
    with pytest.raises(_Interrupt):  # 2 epochs of 3 train + 2 val batches, then 1 more batch
        run(_LossThatDiesAt(2 * (3 + 2) + 1), checkpoint=path)
    assert load_checkpoint(path)["epoch"] == 2
    resumed, resumed_history = run(
        nn.CrossEntropyLoss(), checkpoint=engine.Checkpointing(path, resume=path)
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=lambda m: f"{name} after resume: {m}")
    assert resumed_history == straight_history
    assert load_checkpoint(path)["epoch"] == 4


def test_resume_can_extend_a_finished_run(tmp_path):
    images, targets = _threshold_data(n=8)
    torch.manual_seed(0)
    model = TinyNet()
    path = tmp_path / "c.pt"
    _fit(model, 2, _loader(images, targets), _loader(images, targets), checkpoint=path)
    history = _fit(
        model,
        3,
        _loader(images, targets),
        _loader(images, targets),
        checkpoint=engine.Checkpointing(resume=path),
    )
    assert history["epoch"] == [1, 2, 3]
    assert history["lr"][-1] == pytest.approx(0.0, abs=1e-12), "poly decays to 0 over 3 epochs"


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    images, targets = _threshold_data(n=8)
    torch.manual_seed(0)
    model = TinyNet()

    class NanAfter:
        def __init__(self, calls):
            self.calls = calls

        def __call__(self, logits, targets):
            self.calls -= 1
            loss = nn.functional.cross_entropy(logits, targets)
            return loss * float("nan") if self.calls < 0 else loss

    path = tmp_path / "last.pt"
    # epoch 1: 2 train + 2 val batches are fine; the 1st train batch of epoch 2 gives NaN.
    with pytest.raises(
        engine.NonFiniteLossError, match=r"epoch 2.*loss is nan.*last good checkpoint.*epoch 1"
    ):
        engine.fit(
            model,
            _loader(images, targets),
            _loader(images, targets),
            epochs=3,
            loss_fn=NanAfter(4),
            num_classes=2,
            device="cpu",
            options=engine.FitOptions(progress=False),
            checkpoint=path,
        )
    saved = load_checkpoint(path)
    assert saved["epoch"] == 1
    for key, value in saved["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=lambda m: f"{key}: {m}")
        assert torch.isfinite(value).all()


def test_early_stopping_counts_epochs_without_improvement():
    images, targets = _threshold_data(n=8)
    torch.manual_seed(0)
    history = engine.fit(
        TinyNet(),
        _loader(images, targets),
        _loader(images, targets),
        epochs=10,
        loss_fn=nn.CrossEntropyLoss(),
        num_classes=2,
        device="cpu",
        optimizer=torch.optim.SGD(TinyNet().parameters(), lr=0.1),  # not the model's
        options=engine.FitOptions(early_stopping=2, monitor="val_loss", progress=False),
    )
    assert history["epoch"] == [1, 2, 3], "no improvement after epoch 1: stop after 2 more"


def test_fit_bf16_autocast_on_cpu_runs():
    images, targets = _threshold_data(n=4)
    torch.manual_seed(0)
    history = _fit(TinyNet(), 1, _loader(images, targets), _loader(images, targets), amp="bf16")
    assert math.isfinite(history["train_loss"][0])


def test_resolve_amp():
    assert engine.resolve_amp("auto", torch.device("cpu")) is None
    assert engine.resolve_amp("off", "cpu") is None
    assert engine.resolve_amp("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        engine.resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="amp must be"):
        engine.resolve_amp("half", "cpu")


def test_progress_is_off_when_output_is_not_a_terminal(capsys):
    images, targets = _threshold_data(n=4)
    engine.fit(
        TinyNet(),
        _loader(images, targets),
        _loader(images, targets),
        epochs=1,
        loss_fn=nn.CrossEntropyLoss(),
        num_classes=2,
        device="cpu",
        options=engine.FitOptions(verbose=True),
    )
    captured = capsys.readouterr()
    assert "it/s" not in captured.err and "%|" not in captured.err
    assert captured.out.startswith("epoch 1/1  train_loss ")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    images, targets = _threshold_data(n=4)
    arguments = dict(epochs=1, loss_fn=nn.CrossEntropyLoss(), num_classes=2, device="cpu") | kwargs
    with pytest.raises(ValueError, match=match):
        engine.fit(TinyNet(), _loader(images, targets), _loader(images, targets), **arguments)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": "step"}, "schedule must be one of"),
        ({"monitor": "iou"}, "monitor must be one of"),
        ({"early_stopping": 0}, "early_stopping must be"),
    ],
)
def test_fit_options_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        engine.FitOptions(**kwargs)


def test_fit_reads_in_one_screen():
    """At most 12 parameters, and no reach into the scheduler's internals."""
    import inspect

    assert len(inspect.signature(engine.fit).parameters) <= 12
    assert "lr_lambdas" not in inspect.getsource(engine)


def test_fit_rejects_a_loss_that_is_not_callable():
    images, targets = _threshold_data(n=4)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        engine.fit(
            TinyNet(),
            _loader(images, targets),
            _loader(images, targets),
            epochs=1,
            loss_fn="dice",
            num_classes=2,
            device="cpu",
        )


TINY_CONFIGS = {
    "unet": {"base_channels": 4, "depth": 2},
    "fcn": {"backbone": "resnet18"},
    "deeplabv3": {"backbone": "resnet18"},
    "deeplabv3plus": {"backbone": "resnet18"},
}


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_one_batch_then_two_epochs(name):
    torch.manual_seed(0)
    model = models.build_model(name, in_channels=3, num_classes=3, **TINY_CONFIGS.get(name, {}))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=g)
    targets = torch.randint(0, 3, (2, 32, 32), generator=g)
    loader = _loader(images, targets, batch_size=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    one = engine.train_one_epoch(
        model, [(images[:2], targets[:2])], nn.CrossEntropyLoss(), optimizer, "cpu"
    )
    assert math.isfinite(one)
    history = engine.fit(
        model,
        loader,
        loader,
        epochs=2,
        loss_fn=nn.CrossEntropyLoss(),
        num_classes=3,
        device="cpu",
        options=engine.FitOptions(progress=False),
    )
    assert len(history["miou"]) == 2 and all(math.isfinite(v) for v in history["train_loss"])


def test_progress_bars_do_not_change_the_run():
    images, targets = _threshold_data(n=8)
    histories = []
    for progress in (False, True):
        torch.manual_seed(0)
        histories.append(
            engine.fit(
                TinyNet(dropout=0.2),
                _loader(images, targets, shuffle=True),
                _loader(images, targets),
                epochs=2,
                loss_fn=nn.CrossEntropyLoss(),
                num_classes=2,
                device="cpu",
                options=engine.FitOptions(progress=progress),
            )
        )
    assert histories[0] == histories[1]


class _TickingLoss(nn.Module):
    """Cross-entropy that moves a fake clock on by one second per call (per batch)."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.calls = 0

    def forward(self, logits, targets):
        self.clock.now += 1.0
        self.calls += 1
        return nn.functional.cross_entropy(logits, targets)


class _FakeClock:
    def __init__(self):
        self.now = 500.0

    def __call__(self):
        return self.now


def test_fit_with_a_minutes_budget_stops_on_time_and_spends_the_schedule(monkeypatch, tmp_path):
    clock = _FakeClock()
    monkeypatch.setattr(engine.time, "monotonic", clock)  # the one `time` module, schedules too
    images, targets = _threshold_data(n=8)
    loss = _TickingLoss(clock)
    torch.manual_seed(0)
    path = tmp_path / "last.pt"
    history = engine.fit(
        TinyNet(),
        _loader(images, targets, batch_size=2),
        _loader(images, targets, batch_size=8),
        epochs=None,
        minutes=0.5,
        loss_fn=loss,
        num_classes=2,
        device="cpu",
        options=engine.FitOptions(lr=0.1, progress=False),
        checkpoint=path,
    )
    assert 30 <= clock.now - 500.0 <= 30 + 4 + 1  # stopped in the epoch that crossed 30 s
    assert 2 <= len(history["epoch"]) <= 5  # a validation per quarter of the budget, and the last
    assert history["lr"][-1] == 0.0  # the poly schedule ran over the budget, to its end
    assert history["lr"] == sorted(history["lr"], reverse=True)
    saved = load_checkpoint(path)
    assert saved["epoch"] == history["epoch"][-1] and saved["extra"]["seconds"] >= 30


def test_fit_with_minutes_and_epochs_stops_at_whichever_comes_first(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(engine.time, "monotonic", clock)
    images, targets = _threshold_data(n=8)
    history = engine.fit(
        TinyNet(),
        _loader(images, targets),
        _loader(images, targets),
        epochs=2,
        minutes=60.0,
        loss_fn=_TickingLoss(clock),
        num_classes=2,
        device="cpu",
        options=engine.FitOptions(progress=False),
    )
    assert history["epoch"] == [2]  # two epochs long before the hour: one validation at the end
    with pytest.raises(ValueError, match="give epochs, minutes, or both"):
        engine.fit(
            TinyNet(),
            _loader(images, targets),
            _loader(images, targets),
            epochs=None,
            loss_fn=nn.CrossEntropyLoss(),
            num_classes=2,
            device="cpu",
        )


def test_evaluate_with_preprocessing_scores_whole_images_like_the_plain_forward():
    from course_lib.preprocessing import Preprocessing

    torch.manual_seed(0)
    model = TinyNet()
    images, targets = _threshold_data(n=4, size=12)
    record = Preprocessing(mean=(0.0,), std=(1.0,), num_classes=2, image_mode="L", window=16)
    plain = engine.evaluate(model, _loader(images, targets, batch_size=1), 2, "cpu")
    whole = engine.evaluate(
        model, _loader(images, targets, batch_size=1), 2, "cpu", preprocessing=record
    )
    assert torch.equal(plain["confusion_matrix"], whole["confusion_matrix"])


class _DeclaresIgnore(TensorDataset):
    ignore_index = 255


def test_evaluate_and_fit_take_the_data_sets_declared_ignore_index():
    torch.manual_seed(0)
    images, targets = _threshold_data(n=4)
    targets[:, 0, :] = 255  # an ignored band, as Oxford-IIIT Pet's trimap border
    declared = DataLoader(
        torch.utils.data.Subset(_DeclaresIgnore(images, targets), range(4)), batch_size=2
    )
    results = engine.evaluate(TinyNet(), declared, 2, "cpu")
    assert int(results["confusion_matrix"].sum()) == 4 * 7 * 8  # the band's pixels left out
    history = engine.fit(
        TinyNet(),
        declared,
        declared,
        epochs=1,
        loss_fn=nn.CrossEntropyLoss(ignore_index=255),
        num_classes=2,
        device="cpu",
        options=engine.FitOptions(progress=False),
    )
    assert len(history["miou"]) == 1
    undeclared = _loader(images, targets, batch_size=2)
    with pytest.raises(ValueError, match="set num_classes or ignore_index"):
        engine.evaluate(TinyNet(), undeclared, 2, "cpu")


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_amp_uses_bfloat16_only_where_the_gpu_has_it_natively(monkeypatch, native, expected):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return native or including_emulation  # a T4: True only when emulation counts

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert engine.resolve_amp("auto", torch.device("cuda")) is expected
    assert asked == {"including_emulation": False}
