"""aunet.train: a step's losses, bit-for-bit resume, Ctrl-C, tiny data, DDP (2 CPU processes, gloo), bad input."""
from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_data import build_face_cache

REPO = Path(__file__).resolve().parents[1]
# The small model at 64 px with one ART encoder: every code path of the small config, a third of its cost
# (the shared 2-core CPU makes each step count).
TEST_MODEL = {"base": "small", "img_size": 64, "num_encoders": 1}
# The CLI's settings for a run of TEST_MODEL (with tiny_config_file) on the test cache
TINY_CLI_RUN = ["--device", "cpu", "--workers", "0", "--batch-size", "4", "--max-steps", "2"]
ERROR = "aunet-train: error: "


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # 4 real videos: 3 train (1 + 1 + 1 faces = 2 steps of 2 pairs per epoch), 1 held out for validation
    root = tmp_path_factory.mktemp("cache")
    return build_face_cache(root, [("v0", 1, 0), ("v1", 1, 0), ("v2", 1, -1), ("v3", 2, 0), ("fake", 1, 1)], size=64)


def tiny_config(**changes):
    from aunet.train import load_train_config

    base = dict(model=TEST_MODEL, batch_size=4, workers=0, val_fraction=0.25, log_every=1, epochs=5, device="cpu")
    base.update(changes)
    return load_train_config("small", base)


@pytest.fixture(scope="module")
def trained_run(cache_dir, tmp_path_factory):
    """A one-step run (config.json, last.pt, best.pt), copied by the tests that need an existing run."""
    from aunet.train import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_config(max_steps=1), cache_dir, run)
    return run


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def weights(path):
    """A checkpoint as a resumed run reads it: the shared part (weights only) and its training state."""
    from aunet.model.checkpoint import load_checkpoint, load_training_state

    data = load_checkpoint(path)
    return {**data, **load_training_state(data, path)}


def test_config_files_are_the_named_configs_and_overrides_apply(tmp_path):
    from aunet.train import load_train_config

    for name in ("paper", "small"):
        assert load_train_config(str(REPO / "configs" / f"{name}.yaml")) == load_train_config(name)
    paper = load_train_config("paper")
    assert (paper.lr, paper.momentum, paper.batch_size, paper.epochs, paper.frames_per_video) == (1e-3, 0.9, 32, 100, 8)
    assert (paper.lambda_cls, paper.lambda_token, paper.lambda_att, paper.protocol) == (1.0, 30.0, 0.5, "cross")
    f = tmp_path / "mine.yaml"
    f.write_text("base: small\nlr: 0.01\nmodel: {base: small, embed_dim: 32}\n")
    cfg = load_train_config(str(f), {"epochs": 3, "lr": None})
    assert (cfg.lr, cfg.epochs, cfg.model_config.embed_dim, cfg.model_config.img_size) == (0.01, 3, 32, 112)
    f.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_train_config(str(f))


def test_one_step_has_finite_losses_and_moves_the_weights(torch, cache_dir, tmp_path):
    from aunet.train import train

    seen = []
    summary = train(tiny_config(max_steps=1), cache_dir, tmp_path / "run", on_step=lambda s, t: seen.append(t))
    assert summary["step"] == 1 and len(seen) == 1
    terms = seen[0]
    assert set(terms) == {"cls", "token", "att", "total"}
    assert all(math.isfinite(v) for v in terms.values())
    assert terms["total"] == pytest.approx(terms["cls"] + 30 * terms["token"] + 0.5 * terms["att"], rel=1e-5)
    # the class loss starts near ln 2 for an untrained 2-way head
    assert 0.2 < terms["cls"] < 2.0
    torch.manual_seed(0)
    import aunet

    init = aunet.build_model(tiny_config().model_config).state_dict()
    trained = weights(tmp_path / "run" / "last.pt")["model"]
    assert any(not torch.equal(init[k], trained[k]) for k in init if init[k].is_floating_point())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["max_steps"] == 1 and saved["model"]["img_size"] == 64


def test_ctrl_c_then_resume_is_bit_for_bit(torch, cache_dir, tmp_path):
    """2 steps straight == 1 step, Ctrl-C (a resumable last.pt), --resume for the second step; the stop is
    mid-epoch (2 steps per epoch), so the resumed epoch must skip exactly the batch already trained on."""
    from aunet.train import train

    def interrupt(step, _terms):
        if step == 1:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C delivers

    cfg = tiny_config(max_steps=2, warmup_steps=3)  # the scheduler's state matters across the stop too
    train(cfg, cache_dir, tmp_path / "straight")
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or a background job, else Python's default
    summary = train(cfg, cache_dir, tmp_path / "split", on_step=interrupt)
    assert summary["stopped"] and summary["step"] == 1
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    state = weights(tmp_path / "split" / "last.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (1, 0, 1)
    assert {"optimizer", "scheduler", "scaler", "rng", "train_config"} <= set(state)
    summary = train(cfg, cache_dir, tmp_path / "split", resume=True)
    assert summary["step"] == 2 and summary["epoch"] == 1
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "split" / "last.pt")
    assert (a["step"], a["epoch"], a["batch_in_epoch"]) == (b["step"], b["epoch"], b["batch_in_epoch"]) == (2, 1, 0)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"] and a["scheduler"] == b["scheduler"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert sa.keys() == sb.keys()
        for key in sa:  # AdamW's step, exp_avg, exp_avg_sq
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert not list((tmp_path / "split").glob(".*.tmp*"))  # no temporary files left behind


def test_learning_rate_schedule_and_optimizers(torch):
    from aunet.train.optim import lr_factor, make_optimizer, make_scheduler

    assert [lr_factor(s, "constant", 10, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(0, "constant", 10, 0) == 1.0
    cosine = [lr_factor(s, "cosine", 10, 0) for s in range(11)]
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5) and cosine[10] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    assert lr_factor(1, "cosine", 10, 4) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    net = torch.nn.Linear(2, 2)
    sgd = make_optimizer(net, tiny_config(optimizer="sgd", lr=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    adamw = make_optimizer(net, tiny_config())  # the small config's AdamW 3e-4
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 3e-4
    sched = make_scheduler(adamw, tiny_config(warmup_steps=2, scheduler="constant"), 100)
    lrs = []
    for _ in range(3):
        lrs.append(adamw.param_groups[0]["lr"])
        adamw.step()
        sched.step()
    assert lrs == pytest.approx([1.5e-4, 3e-4, 3e-4])
    with pytest.raises(ValueError, match="optimizer"):
        tiny_config(optimizer="adam")


def test_tiny_dataset_smaller_than_a_batch_trains_and_logs(torch, tmp_path):
    """One video of three faces, the paper's batch of 32: the run still trains, validates and writes best.pt."""
    from aunet.model.checkpoint import load_model
    from aunet.train import train

    root = build_face_cache(tmp_path / "c", [("only", 3, 0)], size=64)
    summary = train(tiny_config(batch_size=32, max_steps=1), root, tmp_path / "run")
    assert summary["step"] == 1 and summary["epoch"] == 1 and "too few" in summary["val_source"]
    model = load_model(tmp_path / "run" / "best.pt")
    assert model.cfg.img_size == 64
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 1 and 0.0 <= history[0]["val_auc"] <= 1.0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/cls", "loss/token", "loss/att", "loss/total", "lr", "val/val_auc"} <= tags


def test_in_dataset_protocol_trains_without_tap(torch, cache_dir, tmp_path):
    from aunet.train import train

    seen = []
    train(tiny_config(protocol="in", max_steps=1, val_fraction=0.0), cache_dir, tmp_path / "run", on_step=lambda s, t: seen.append(t))
    assert set(seen[0]) == {"cls", "att", "total"}  # no token loss without TAP


def test_full_disk_keeps_the_previous_checkpoint(torch, cache_dir, trained_run, tmp_path, monkeypatch):
    from aunet.train import TrainError, train

    run = copy_run(trained_run, tmp_path / "run")

    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(TrainError, match="No space left") as err:
        train(tiny_config(max_steps=2), cache_dir, run, resume=True)
    assert err.value.code == 2
    monkeypatch.undo()
    assert weights(run / "last.pt")["step"] == 1
    assert not list(run.glob(".*.tmp*"))


def assert_error_line(result, code, needle):
    """aunet-train's failure form: exit ``code`` and one line on stderr, ``aunet-train: error: ...`` naming
    ``needle``, after whatever the run logged before it failed; no traceback, nothing on stdout."""
    assert result.exit_code == code, (needle, result.output)
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith(ERROR)] == lines[-1:], result.output
    assert needle in lines[-1] and "Traceback" not in result.output and not result.stdout, result.output


def tiny_config_file(tmp_path):
    """TEST_MODEL as a config file, for runs through the CLI (JSON is YAML)."""
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({"base": "small", "model": TEST_MODEL, "val_fraction": 0.25}))
    return config


def test_cli_bad_inputs_exit_2_with_one_line(torch, cache_dir, trained_run, tmp_path):
    from typer.testing import CliRunner

    from aunet.faces.cache import CacheWriter
    from aunet.spec import CropSpec
    from aunet.train.cli import app

    runner = CliRunner()
    empty = tmp_path / "empty"
    CacheWriter(empty, 64, CropSpec())
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("lr: [1\n")
    base = ["--config", "small", "--device", "cpu", "--workers", "0", "--max-steps", "1", "--batch-size", "4"]
    cases = {
        "no usable real faces": ["--data", str(empty), "--out", str(tmp_path / "r1")],
        "not a face cache": ["--data", str(tmp_path), "--out", str(tmp_path / "r2")],
        "cannot write": ["--data", str(cache_dir), "--out", str(blocker / "run")],
        "even batch": ["--data", str(cache_dir), "--out", str(tmp_path / "r3"), "--batch-size", "5"],
        "nothing to resume": ["--data", str(cache_dir), "--out", str(tmp_path / "r4"), "--resume"],
    }
    for needle, args in cases.items():
        result = runner.invoke(app, args + base if "--batch-size" not in args else args + base[:-2])
        assert_error_line(result, 2, needle)
        assert len(result.output.strip().splitlines()) == 1, result.output
    result = runner.invoke(app, ["--data", str(cache_dir), "--out", str(tmp_path / "r5"), "--config", str(bad_cfg)])
    assert_error_line(result, 2, "cannot parse config")

    # a run cannot be restarted over, nor resumed as another model or with other optimizer settings;
    # the refused attempts leave the run as it was
    run = copy_run(trained_run, tmp_path / "run")
    before = (run / "config.json").read_text()
    result = runner.invoke(app, ["--data", str(cache_dir), "--out", str(run)] + base)
    assert_error_line(result, 2, "already holds a run")
    result = runner.invoke(app, ["--data", str(cache_dir), "--out", str(run), "--resume", "--config", "paper", "--device", "cpu"])
    assert_error_line(result, 2, "differs from")
    result = runner.invoke(app, ["--data", str(cache_dir), "--out", str(run), "--resume", "--lr", "0.1", "--max-steps", "2"])
    assert_error_line(result, 2, "(lr)")
    assert (run / "config.json").read_text() == before


def test_cli_refuses_bad_input_before_loading_torch(cache_dir, tmp_path):
    """Config, --data, the run folder and the files the config names are checked before PyTorch loads."""
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("lr: [1\n")
    script = (
        "import sys\n"
        "from aunet.train.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert 'torch' not in sys.modules, 'torch was imported'\n"
        "    sys.exit(exc.code)\n"
    )
    data, out = ["--data", str(cache_dir)], ["--out", str(tmp_path / "run")]
    cases = {
        f"--data {tmp_path / 'nowhere'} is not a folder (build a face cache with aunet-prep)":
            ["--data", str(tmp_path / "nowhere")] + out,
        "is not a face cache": ["--data", str(tmp_path)] + out,
        "cannot parse config": data + out + ["--config", str(bad_cfg)],
        "device must be auto, cpu, cuda or cuda:N, got 'tpu'": data + out + ["--device", "tpu"],
        "--backbone-weights": data + out + ["--backbone-weights", str(tmp_path / "xception.pth")],
        "--val-data": data + out + ["--val-data", str(tmp_path / "celebdf")],
        "nothing to resume": data + out + ["--resume"],
    }
    for needle, args in cases.items():
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 2, (needle, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(ERROR) and needle in lines[0], (needle, proc.stderr)
        assert not proc.stdout
    assert not (tmp_path / "run").exists()


def test_cli_usage_errors_are_one_line(capsys, tmp_path):
    """Values outside an option's choices and missing options fail at parse time, in the same one-line form."""
    from aunet.train.cli import main

    args = ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    cases = {
        "'adam' is not one of 'sgd', 'adamw'": args + ["--optimizer", "adam"],
        "'both' is not one of 'cross', 'in'": args + ["--protocol", "both"],
        "'linear' is not one of 'constant', 'cosine'": args + ["--scheduler", "linear"],
        "Missing option '--data'": args[2:],
    }
    for needle, argv in cases.items():
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, needle
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(ERROR) and needle in lines[0], (needle, captured.err)
        assert not captured.out


def test_cli_no_cuda_exits_3(torch, cache_dir, tmp_path):
    from typer.testing import CliRunner

    from aunet.train.cli import app

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(app, ["--data", str(cache_dir), "--out", str(tmp_path / "run"), "--device", "cuda"])
    assert_error_line(result, 3, "--device cuda: CUDA is not available")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_non_finite_loss_exits_1(torch, cache_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aunet.train import loop
    from aunet.train.cli import app

    class NanLoss(loop.AUNetLoss):
        def forward(self, *args, **kwargs):
            terms = super().forward(*args, **kwargs)
            return {**terms, "total": terms["total"] * float("nan")}

    monkeypatch.setattr(loop, "AUNetLoss", NanLoss)
    args = ["--data", str(cache_dir), "--out", str(tmp_path / "run"), "--config", str(tiny_config_file(tmp_path))]
    result = CliRunner().invoke(app, args + TINY_CLI_RUN)
    assert_error_line(result, 1, "the loss is not finite")


def test_cli_stop_request_exits_130_with_a_resumable_run(torch, cache_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aunet.train import loop
    from aunet.train.cli import app

    class StopAtOnce(loop.StopRequest):  # as if Ctrl-C came during the first step
        def __enter__(self):
            super().__enter__()
            self.requested = True
            return self

    monkeypatch.setattr(loop, "StopRequest", StopAtOnce)
    run = tmp_path / "run"
    args = ["--data", str(cache_dir), "--out", str(run), "--config", str(tiny_config_file(tmp_path))]
    result = CliRunner().invoke(app, args + TINY_CLI_RUN)
    assert_error_line(result, 130, f"stopped at step 1; {run / 'last.pt'} is resumable: aunet-train --data")
    assert result.stderr.strip().endswith("--resume")
    assert weights(run / "last.pt")["step"] == 1


def test_ddp_two_cpu_processes_with_gloo(cache_dir, tmp_path):
    """torchrun, 2 processes, gloo: DistributedDataParallel + DistributedSampler, rank 0 writes the run."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "aunet.train",
        "--data", str(cache_dir), "--out", str(tmp_path / "run"), "--config", str(tiny_config_file(tmp_path)),
        *TINY_CLI_RUN,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = weights(tmp_path / "run" / "last.pt")
    # 3 training faces over 2 ranks: DistributedSampler gives each rank 2 (padded), one step of 2 pairs each
    assert state["step"] == 2 and state["epoch"] == 2
    assert (tmp_path / "run" / "best.pt").is_file()


def test_checkpoint_shares_plain_weights_and_keeps_the_training_state_apart(torch, trained_run):
    """What eval and export read loads with weights_only=True; the optimizer and the RNG states (NumPy's among
    them) are one opaque value that only a resume unpickles."""
    import numpy as np

    from aunet.model.checkpoint import load_training_state

    for name in ("last.pt", "best.pt"):
        shared = torch.load(trained_run / name, map_location="cpu", weights_only=True)
        assert {"optimizer", "scheduler", "scaler", "rng"}.isdisjoint(shared)
        assert isinstance(shared["training_state"], bytes) and shared["version"] == 2
        assert shared["step"] == 1 and shared["backbone"] == {"source": "random"}
        assert all(isinstance(v, float) for entry in shared["history"] for k, v in entry.items() if "auc" in k)
        state = load_training_state(shared, trained_run / name)
        assert {"optimizer", "scheduler", "scaler", "rng"} <= set(state)
        assert isinstance(state["rng"]["numpy"][1], np.ndarray)


def test_backbone_weights_file_is_recorded_in_checkpoint_log_and_spec(torch, cache_dir, tmp_path):
    """Where the backbone's ImageNet weights came from (file name + sha256) is in the training log, the
    checkpoint, and the spec an export writes."""
    import timm
    from typer.testing import CliRunner

    from aunet.artifacts import file_sha256
    from aunet.model.checkpoint import load_model
    from aunet.train.cli import app

    torch.manual_seed(1)
    xception = tmp_path / "xception-43020ad28.pth"
    torch.save(timm.create_model("legacy_xception", pretrained=False).state_dict(), xception)
    expected = {"source": "file", "file": xception.name, "sha256": file_sha256(xception)}
    run = tmp_path / "run"
    args = ["--data", str(cache_dir), "--out", str(run), "--config", str(tiny_config_file(tmp_path)),
            "--backbone-weights", str(xception)]
    result = CliRunner().invoke(app, args + TINY_CLI_RUN[:-1] + ["1"])
    assert result.exit_code == 0, result.output
    assert f"backbone: ImageNet weights from the file {xception.name} (sha256 {expected['sha256']})" in result.stderr
    for name in ("last.pt", "best.pt"):
        assert weights(run / name)["backbone"] == expected
    model = load_model(run / "best.pt")
    assert model.backbone_provenance == expected
    pytest.importorskip("onnx")
    from aunet.export.onnx_export import spec_for_model

    assert spec_for_model(model, checkpoint=run / "best.pt").provenance["backbone"] == expected
    # a resumed run keeps the provenance of the weights it started from
    result = CliRunner().invoke(app, ["--data", str(cache_dir), "--out", str(run), "--resume", "--max-steps", "2",
                                      "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert weights(run / "last.pt")["backbone"] == expected and weights(run / "last.pt")["step"] == 2


def test_cli_paper_config_without_imagenet_weights_exits_2_unless_none_is_asked(torch, cache_dir, tmp_path, monkeypatch):
    """The paper trains from ImageNet weights: without a file and with timm's hub out of reach, the run stops
    with one line and writes nothing; --backbone-weights none says random init is meant. The small config
    (random init by design) is not touched by this."""
    from typer.testing import CliRunner
    from test_model import offline_hub

    from aunet.train.cli import app

    offline_hub(monkeypatch)
    runner = CliRunner()
    tiny_paper = tmp_path / "tiny_paper.yaml"  # the paper's recipe and backbone_weights, a network small enough here
    tiny_paper.write_text(json.dumps({"base": "paper", "val_fraction": 0.25, "model": {
        "base": "paper", "img_size": 64, "backbone_depth": 3, "num_encoders": 1, "embed_dim": 64, "att_channels": 32,
        "fusion_channels": 128}}))
    for config in ("paper", str(tiny_paper)):
        run = tmp_path / f"run_{Path(config).stem}"
        result = runner.invoke(app, ["--data", str(cache_dir), "--out", str(run), "--config", config] + TINY_CLI_RUN)
        assert_error_line(result, 2, "ImageNet weights for legacy_xception could not be fetched from timm's hub")
        assert "--backbone-weights none" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not run.exists()
    run = tmp_path / "run_none"
    result = runner.invoke(app, ["--data", str(cache_dir), "--out", str(run), "--config", str(tiny_paper),
                                 "--backbone-weights", "none"] + TINY_CLI_RUN[:-1] + ["1"])
    assert result.exit_code == 0, result.output
    assert "backbone: random init (backbone_weights none)" in result.stderr
    assert weights(run / "last.pt")["backbone"] == {"source": "random"}


def test_sigterm_to_the_process_group_leaves_a_resumable_run_and_exits_130(cache_dir, tmp_path):
    """SIGTERM to the whole process group (SLURM's preemption, `timeout`) reaches the DataLoader workers too:
    they ignore it, the trainer finishes its step, writes last.pt and exits 130 with one line, no traceback."""
    import time

    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({"base": "small", "model": TEST_MODEL, "val_fraction": 0.25, "save_every": 1,
                                  "epochs": 1000}))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "aunet.train", "--data", str(cache_dir), "--out", str(run), "--config", str(config),
           "--device", "cpu", "--workers", "2", "--batch-size", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)  # its own process group, as a batch job has
    try:
        deadline = time.monotonic() + 180
        while not (run / "last.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(1.0)  # a few steps, workers busy
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"{ERROR}stopped at step ") and lines[-1].endswith("--resume"), stderr[-3000:]
    step = weights(run / "last.pt")["step"]
    assert lines[-1].startswith(f"{ERROR}stopped at step {step};")
    for _ in range(50):  # the workers went with the trainer: nothing of the group is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("processes of the training's group outlived it")
    resumed = subprocess.run([sys.executable, "-m", "aunet.train", "--data", str(cache_dir), "--out", str(run),
                              "--resume", "--max-steps", str(step + 1), "--workers", "0"],
                             capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert weights(run / "last.pt")["step"] == step + 1
