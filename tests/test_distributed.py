"""DDP on the CPU: two gloo processes launched by torchrun run `engine.fit`; their metrics must
equal a single-process evaluation of the checkpoint they wrote."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import distributed, engine
from course_lib.checkpoint import load_checkpoint

WORKER = textwrap.dedent("""
    import json, sys
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from course_lib import distributed, engine

    out = sys.argv[1]
    context = distributed.setup_distributed("gloo")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    g = torch.Generator().manual_seed(1)
    images = torch.rand(17, 1, 12, 12, generator=g)
    targets = (images[:, 0] > 0.5).long()
    train_set = TensorDataset(images[:10], targets[:10])
    val_set = TensorDataset(images[10:], targets[10:])           # 7 images: shards of 4 and 3
    train_loader, val_loader = distributed.distributed_loaders(train_set, val_set, batch_size=2)
    model = distributed.wrap_model(model, context.device)
    history = engine.fit(model, train_loader, val_loader, epochs=2, loss_fn=nn.CrossEntropyLoss(),
                         num_classes=2, device=context.device,
                         options=engine.FitOptions(lr=0.05, progress=False),
                         checkpoint=out + "/last.pt")
    results = engine.evaluate(model, val_loader, 2, context.device, loss_fn=nn.CrossEntropyLoss())
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    with open(f"{out}/rank{context.rank}.json", "w") as f:
        json.dump({"world_size": context.world_size, "history": history,
                   "val_images_here": len(val_loader.sampler),
                   "cm": results["confusion_matrix"].tolist(), "miou": results["miou"],
                   "loss": results["loss"], "weights": weights.tolist()}, f)
    del model                                   # drop the DDP wrapper before leaving the group
    distributed.cleanup_distributed()
""")


GLOO_EXIT_ABORT = "terminate called without an active exception"


def run_torchrun(command: list[str], env: dict, timeout: int, clean) -> subprocess.CompletedProcess:
    """Run a torchrun command; run it once more only if a rank aborted in gloo's teardown.

    That abort (a C++ thread destroyed while joinable, raised after the training has finished)
    was seen once in CI and never reproduced here; anything else, or the same abort twice, fails.
    `clean()` empties the output folder before the second run.
    """
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 and GLOO_EXIT_ABORT in done.stdout + done.stderr:
        clean()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return done


@pytest.mark.timeout(360)
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path),
    ]

    def clean():
        for written in [*tmp_path.glob("*.pt"), *tmp_path.glob("rank*.json")]:
            written.unlink()

    done = run_torchrun(command, env, 170, clean)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert sorted(r["val_images_here"] for r in ranks) == [3, 4], "no sample repeated or dropped"
    assert ranks[0]["weights"] == ranks[1]["weights"], "DDP keeps the copies identical"
    assert ranks[0]["history"] == ranks[1]["history"]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    saved = load_checkpoint(tmp_path / "last.pt", model=model)
    assert saved["epoch"] == 2 and saved["history"] == ranks[0]["history"]
    g = torch.Generator().manual_seed(1)
    images = torch.rand(17, 1, 12, 12, generator=g)
    targets = (images[:, 0] > 0.5).long()
    single = engine.evaluate(
        model,
        DataLoader(TensorDataset(images[10:], targets[10:]), batch_size=5),
        2,
        "cpu",
        loss_fn=nn.CrossEntropyLoss(),
    )
    assert single["confusion_matrix"].sum() == 7 * 12 * 12
    for rank in ranks:
        assert rank["cm"] == single["confusion_matrix"].tolist()
        assert rank["miou"] == pytest.approx(single["miou"], rel=1e-12)
        assert rank["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert ranks[0]["history"]["miou"][-1] == pytest.approx(single["miou"], rel=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pt") == ["last.pt"]


def test_helpers_outside_torch_distributed():
    assert not distributed.is_distributed()
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1
    assert distributed.is_main_process()
    value = torch.tensor([3.0])
    assert distributed.all_reduce_sum(value) is value and value.item() == 3.0
    context = distributed.setup_distributed() if "RANK" not in os.environ else None
    assert context is None or (context.rank, context.world_size) == (0, 1)


def test_shard_sampler_partitions_without_padding():
    data = list(range(11))
    shards = [list(distributed.ShardSampler(data, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(shards, [])) == data
    assert [len(distributed.ShardSampler(data, 3, r)) for r in range(3)] == [4, 4, 3]
    with pytest.raises(ValueError, match="rank must be in"):
        distributed.ShardSampler(data, num_replicas=2, rank=2)


def test_sync_batchnorm_on_cpu_is_refused_clearly():
    with pytest.raises(ValueError, match="sync_batchnorm=True needs CUDA"):
        distributed.wrap_model(nn.BatchNorm2d(2), torch.device("cpu"), sync_batchnorm=True)


@pytest.mark.timeout(480)
def test_command_line_under_torchrun_matches_single_process_evaluation(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", COURSE_MODE="fast")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "course_lib",
        "train",
        "--distributed",
        "--dataset",
        "cells",
        "--epochs",
        "1",
        "--num-train",
        "8",
        "--num-val",
        "5",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]
    done = run_torchrun(command, env, 230, clean=lambda: shutil.rmtree(out, ignore_errors=True))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("validation: miou") == 1, "only rank 0 prints and writes"
    metrics = json.loads((out / "metrics.json").read_text())
    checkpoint = load_checkpoint(out / "last.pt")
    from course_lib.cli.data import build_datasets
    from course_lib.models import build_model

    model = build_model(checkpoint["model_name"], **checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model"])
    _, val_set, num_classes, _ = build_datasets(checkpoint["extra"]["data"], train=False)
    single = engine.evaluate(model, DataLoader(val_set, batch_size=5), num_classes, "cpu")
    assert metrics["confusion_matrix"] == single["confusion_matrix"].tolist()
    assert int(single["confusion_matrix"].sum()) == 5 * 32 * 32


def test_run_torchrun_retries_only_the_gloo_exit_abort_and_only_once(tmp_path):
    marker = tmp_path / "runs"
    script = (
        f"import pathlib, sys; m = pathlib.Path({str(marker)!r}); n = len(m.read_text()) "
        f"if m.exists() else 0; m.write_text('x' * (n + 1)); "
        f"print(sys.argv[1] if n < int(sys.argv[2]) else 'ok', file=sys.stderr); "
        f"sys.exit(1 if n < int(sys.argv[2]) else 0)"
    )
    cleaned = []

    def attempt(message: str, failures: int) -> subprocess.CompletedProcess:
        marker.unlink(missing_ok=True)
        command = [sys.executable, "-c", script, message, str(failures)]
        return run_torchrun(command, dict(os.environ), 30, lambda: cleaned.append(True))

    assert attempt(GLOO_EXIT_ABORT, 1).returncode == 0 and cleaned == [True]  # retried once
    assert attempt(GLOO_EXIT_ABORT, 2).returncode == 1  # not twice
    assert attempt("AssertionError: metrics differ", 1).returncode == 1  # other failures
    assert len(cleaned) == 2 and len(marker.read_text()) == 1
