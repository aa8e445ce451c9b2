"""`larp train generator` end to end on token shards of generated videos, a few steps on the CPU."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from generation_helpers import save_varied_tokenizer, write_pattern_manifest
from larp_video.cli.main import main
from larp_video.generation.loading import load_generator
from larp_video.models.generator import GeneratorConfig, LARPGenerator, generator_config
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig
from larp_video.training.generator_checkpoints import read_generator_checkpoint
from larp_video.training.generator_module import GeneratorTrainingModule
from larp_video.training.schedules import warmup_steps_from_epochs

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "generator"
TINY_GENERATOR = {"dim": 32, "num_layers": 1, "num_heads": 2, "multiple_of": 32, "vocab_size": 64, "num_tokens": 16,
                  "num_classes": 3}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_varied_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, tokenizer):
    """Token shards of 5 videos, 4 random clips each, with frame-prediction conditions."""
    folder = tmp_path_factory.mktemp("data")
    manifest = write_pattern_manifest(folder / "videos", [12, 20, 16, 24, 18])
    output = folder / "tokens"
    status = main([
        "tokenize-dataset", str(manifest), "-o", str(output), "--model", str(tokenizer), "--clips-per-video", "4",
        "--frame-prediction", "--conditioning-frames", "3",
    ])
    assert status == 0
    return output


def write_config(tmp_path, tokens, tokenizer, max_steps=4, **generator):
    run = tmp_path / "run"
    config = {
        "seed_everything": 0,
        "model": {"generator": {**TINY_GENERATOR, **generator}, "warmup_steps": 1},
        "data": {"train": str(tokens), "val_fraction": 0.4, "batch_size": 4},
        "trainer": {
            "max_steps": max_steps,
            "accelerator": "cpu",
            "precision": "bf16-mixed",
            "log_every_n_steps": 1,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(run),
            "logger": [
                {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run), "name": "csv"}},
                {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": str(run), "name": "tb"}},
            ],
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(run / "checkpoints"), "every_n_train_steps": 2, "save_last": True},
                },
                {
                    "class_path": "larp_video.training.generator_callbacks.GeneratorSampleCallback",
                    "init_args": {"tokenizer": str(tokenizer), "every_n_steps": 2, "num_videos": 2},
                },
            ],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, run


def read_metrics(run):
    with open(next(run.glob("csv/*/metrics.csv"))) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tokens, tokenizer):
    tmp_path = tmp_path_factory.mktemp("train")
    config, run = write_config(tmp_path, tokens, tokenizer)
    assert main(["train", "generator", "--config", str(config)]) == 0
    return config, run


def test_train_generator_logs_finite_losses(trained_run):
    _, run = trained_run
    rows = read_metrics(run)
    losses = [float(row["train/loss"]) for row in rows if row.get("train/loss")]
    assert len(losses) == 4
    assert all(math.isfinite(loss) for loss in losses)
    bits = [(float(row["val/bits_per_token"]), float(row["val/loss"])) for row in rows if row.get("val/bits_per_token")]
    assert len(bits) == 2
    assert bits[0][0] == pytest.approx(bits[0][1] / math.log(2), rel=1e-4)


def test_train_generator_checkpoint_loads_for_sampling(trained_run, tokens):
    _, run = trained_run
    loaded = load_generator(run / "checkpoints" / "last.ckpt")
    assert loaded.model.config.num_classes == 3
    assert loaded.class_names == {0: "class0", 1: "class1", 2: "class2"}
    assert loaded.token_settings["codebook_size"] == 64
    assert loaded.model.generate(torch.tensor([0, 2]), cfg_scale=1.25).shape == (2, 16)


def test_train_generator_saves_samples(trained_run):
    _, run = trained_run
    rounds = sorted(path.name for path in (run / "samples").iterdir())
    assert rounds == ["step-0000002", "step-0000004"]
    for name in ("grid.gif", "grid.png", "00.mp4", "01.mp4"):
        assert (run / "samples" / "step-0000004" / name).is_file(), name
    assert list(run.glob("tb/*/events.out.tfevents.*"))


def test_train_generator_resume_last(trained_run, tmp_path):
    config, run = trained_run
    assert main(["train", "generator", "--config", str(config), "--trainer.max_steps=6", "--resume", "last"]) == 0
    assert read_generator_checkpoint(run / "checkpoints" / "last.ckpt").global_step == 6


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
@pytest.mark.parametrize("validate_every, num_workers", [(2, 0), (3, 2)])
def test_resume_mid_epoch_matches_uninterrupted_run(tmp_path, tokens, tokenizer, validate_every, num_workers):
    # 12 training clips in batches of 4 make 3 steps per epoch, so step 4 is in the middle of the
    # second epoch, whose clip order differs from the first one's.
    config, run = write_config(tmp_path, tokens, tokenizer, max_steps=8)
    document = yaml.safe_load(config.read_text())
    document["trainer"]["val_check_interval"] = validate_every
    document["data"]["num_workers"] = num_workers
    document["trainer"]["callbacks"][0]["init_args"]["save_top_k"] = -1
    document["trainer"]["callbacks"] = document["trainer"]["callbacks"][:1]
    config.write_text(yaml.safe_dump(document))
    assert main(["train", "generator", "--config", str(config)]) == 0
    expected = {int(row["step"]): float(row["train/loss"]) for row in read_metrics(run) if row.get("train/loss")}

    document["trainer"]["default_root_dir"] = str(tmp_path / "resumed")
    document["trainer"]["logger"] = [document["trainer"]["logger"][0]]
    document["trainer"]["logger"][0]["init_args"]["save_dir"] = str(tmp_path / "resumed")
    document["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "resumed" / "checkpoints")
    resumed_config = tmp_path / "resumed.yaml"
    resumed_config.write_text(yaml.safe_dump(document))
    checkpoint = run / "checkpoints" / "epoch=1-step=4.ckpt"
    assert main(["train", "generator", "--config", str(resumed_config), "--resume", str(checkpoint)]) == 0

    resumed = {int(row["step"]): float(row["train/loss"]) for row in read_metrics(tmp_path / "resumed") if row.get("train/loss")}
    assert sorted(resumed) == sorted(step for step in expected if step >= 4)
    for step, loss in resumed.items():
        # Dropout, class dropout and the clip order continue as in the uninterrupted run.
        assert loss == pytest.approx(expected[step], rel=1e-5), f"step {step}"


def test_export_generator_matches_checkpoint(trained_run, tmp_path, capsys):
    _, run = trained_run
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert main(["export-generator", str(checkpoint), "-o", str(tmp_path / "exported")]) == 0
    exported = LARPGenerator.from_pretrained(tmp_path / "exported")
    original = read_generator_checkpoint(checkpoint).model
    for name, tensor in original.state_dict().items():
        assert torch.equal(exported.state_dict()[name], tensor), name
    assert (tmp_path / "exported" / "classes.txt").read_text().splitlines() == ["class0", "class1", "class2"]
    assert load_generator(tmp_path / "exported").token_settings["num_tokens"] == 16


def test_train_frame_prediction_generator(tmp_path, tokens, tokenizer):
    config, run = write_config(tmp_path, tokens, tokenizer, max_steps=2, mode="frame_prediction")
    assert main(["train", "generator", "--config", str(config)]) == 0
    assert read_generator_checkpoint(run / "checkpoints" / "last.ckpt").model.config.frame_prediction
    assert (run / "samples" / "step-0000002" / "grid.png").is_file()
    # Each frame-prediction round saves every validation clip's real video beside its prediction.
    assert len(list((run / "samples" / "step-0000002").glob("*.mp4"))) == 4


def test_train_rejects_tokens_of_another_codebook(tmp_path, tokens, tokenizer, capsys):
    config, _ = write_config(tmp_path, tokens, tokenizer, vocab_size=128)
    assert main(["train", "generator", "--config", str(config)]) == 2
    assert "codebook size 64 but generator.vocab_size 128" in capsys.readouterr().err


def test_optimizer_decays_linear_weights_only():
    module = GeneratorTrainingModule(GeneratorConfig.tiny(), weight_decay=0.05)
    decayed, kept = module.generator.optimizer_groups(0.05)
    linear = {id(m.weight) for m in module.generator.modules() if isinstance(m, torch.nn.Linear)}
    assert {id(p) for p in decayed["params"]} == linear
    assert id(module.generator.class_embedding.weight) in {id(p) for p in kept["params"]}
    assert kept["weight_decay"] == 0.0


@pytest.mark.parametrize("name", ["tiny", "tiny-fp", "L", "LP", "LP-fp"])
def test_shipped_config_parses(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "generator", "--config", str(CONFIGS / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    assert "GeneratorSampleCallback" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, size, mode",
    [("L", "L", "class_conditional"), ("LP", "LP", "class_conditional"), ("LP-fp", "LP", "frame_prediction")],
)
def test_shipped_config_is_named_size(name, size, mode, capsys):
    # The config as LightningCLI resolves it, with the defaults of fields the file leaves out.
    with pytest.raises(SystemExit):
        main(["train", "generator", "--config", str(CONFIGS / f"{name}.yaml"), "--print_config"])
    values = yaml.safe_load(capsys.readouterr().out)["model"]["generator"]
    expected = generator_config(size, mode=mode, vocab_size=8192, num_tokens=1024, num_classes=101)
    assert GeneratorConfig.from_dict(values) == expected
    assert expected.ffn_hidden_dim == {"L": 2816, "LP": 3584}[size]


def test_warmup_steps_from_epochs():
    assert warmup_steps_from_epochs(10, 0.0, total_steps=1000, max_epochs=20) == 10
    assert warmup_steps_from_epochs(10, 4.0, total_steps=1000, max_epochs=20) == 200


def test_sample_callback_rejects_other_tokenizer(tmp_path, tokens, capsys):
    other = LARPTokenizer(TokenizerConfig.preset("tiny", codebook_size=32)).save_pretrained(tmp_path / "other")
    config, _ = write_config(tmp_path, tokens, other)
    assert main(["train", "generator", "--config", str(config)]) == 2
    assert "16 tokens from 32 codes" in capsys.readouterr().err


def test_sampling_failure_does_not_stop_training(tmp_path, tokens, tokenizer, monkeypatch, caplog):
    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("larp_video.training.generator_callbacks.save_sample_grids", full_disk)
    config, run = write_config(tmp_path, tokens, tokenizer, max_steps=2)
    assert main(["train", "generator", "--config", str(config)]) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "sampling at step 2 failed; training continues" in caplog.text


def train_in_subprocess(config: Path) -> subprocess.CompletedProcess:
    """Run ``larp train generator`` in a new process, as multi-process strategies need."""
    source = Path(__file__).resolve().parents[1] / "src"
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "larp_video.cli.main", "train", "generator", "--config", str(config)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_generator_under_ddp(tmp_path, tokens, tokenizer):
    """Two gloo processes train, sample from rank 0 only and write one checkpoint."""
    config, run = write_config(tmp_path, tokens, tokenizer)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"].update({"devices": 2, "strategy": "ddp", "precision": "32-true"})
    config.write_text(yaml.safe_dump(settings))

    train_in_subprocess(config)

    losses = [float(row["train/loss"]) for row in read_metrics(run) if row.get("train/loss")]
    assert len(losses) == 4
    assert all(math.isfinite(loss) for loss in losses)
    assert len(list(run.glob("samples/step-*"))) == 2
    # Each rank draws its own dropout masks, and the checkpoint keeps both random states.
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    states = checkpoint["rng_states"]
    assert len(states) == 2
    assert not torch.equal(states[0]["torch"], states[1]["torch"])


def test_train_generator_under_fsdp(tmp_path, tokens, tokenizer):
    """Two gloo processes shard the generator with FSDP2, skip sampling and save whole weights."""
    config, run = write_config(tmp_path, tokens, tokenizer)
    settings = yaml.safe_load(config.read_text())
    strategy = {
        "class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
        "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 1, "save_distributed_checkpoint": False},
    }
    settings["trainer"].update({"devices": 2, "strategy": strategy, "precision": "32-true"})
    config.write_text(yaml.safe_dump(settings))

    result = train_in_subprocess(config)
    assert "sharded LARPGenerator over 2 processes" in result.stderr
    assert "cannot sample in one process" in result.stderr

    losses = [float(row["train/loss"]) for row in read_metrics(run) if row.get("train/loss")]
    assert len(losses) == 4
    assert all(math.isfinite(loss) for loss in losses)
    assert not list(run.glob("samples/step-*"))

    loaded = load_generator(run / "checkpoints" / "last.ckpt")
    assert loaded.model.generate(torch.tensor([0, 2]), cfg_scale=1.25).shape == (2, 16)
