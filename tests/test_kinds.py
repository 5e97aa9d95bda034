"""Task kinds as plug-ins (``reproduce/kinds/``): the registry is the only place a kind is chosen, and a new kind is
one class (here a toy: predict an image's next row from the rows so far, on real row MNIST) that the run kit trains,
resumes and records with no other change."""
from __future__ import annotations

import subprocess
import sys

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import cells
from reproduce import config, kinds, kit, train
from reproduce.kinds import TaskKind


class NextRow(L.LightningModule):
    def __init__(self, rnn, optimizer):
        super().__init__()
        self.rnn, self.head, self.optimizer = rnn, torch.nn.Linear(rnn.hidden_size, 28), optimizer
        self.nonfinite = None

    def loss(self, batch):
        x = batch[0]  # (B, 28 rows, 28 pixels)
        out, _ = self.rnn(x[:, :-1])
        return F.mse_loss(self.head(out), x[:, 1:])

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/mse", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/mse", self.loss(batch), on_epoch=True)

    def configure_optimizers(self):
        return self.optimizer(self.parameters())


class NextRowKind(TaskKind):
    """The whole of a new kind: its model, its training phase through ``kit.fit``, its numbers, its line."""

    def build_net(self, cfg, dm):
        return cells.build(cfg.cell.name, 28, cfg.cell.hidden_size, backend="eager")

    def recurrent_layers(self, net):
        return [net.rnn]

    def train(self, cfg, dm, run_dir, name, logger):
        module = NextRow(self.build_net(cfg, dm), kit.build_optimizer(cfg))
        _, curves = kit.fit(cfg, module, run_dir, dm.train_dataloader(), dm.val_dataloader(), monitor="val/mse",
                            mode="min", logger=logger)
        return kit.Trained(module, curves.as_columns(), logger, None, {"best": curves.best("val/mse", "min")})

    def evaluate(self, cfg, dm, run_dir, name, trained):
        return {"val/mse": trained.state["best"]["val/mse"], "epochs": len(trained.curve["epoch"])}, {}

    def summary(self, record):
        return f"val mse {record['metrics']['val/mse']:.4f}"


@pytest.fixture
def next_row(monkeypatch):
    kinds.names()  # the package's own kinds first
    monkeypatch.setitem(kinds._KINDS, "next_row", None)  # the registry entry goes when the test ends
    del kinds._KINDS["next_row"]
    kinds.register_kind("next_row")(NextRowKind)
    yield kinds.get("next_row")


def test_the_built_in_kinds_and_an_unknown_one():
    assert kinds.names() == ["classification", "language_model", "next_step", "sequence_labelling", "translation"]
    assert kinds.of(config.compose(None, "smoke", ["task=ptb"])).name == "language_model"
    assert kinds.of(config.compose(None, "smoke", ["task=ptb_next"])).name == "next_step"
    assert kinds.of(config.compose(None, "smoke", ["task=imdb"])).name == "classification"
    with pytest.raises(ValueError, match="unknown task kind 'translaton' \\(did you mean 'translation'\\?\\); valid: "
                                         "classification, language_model, next_step, sequence_labelling, "
                                         "translation"):
        kinds.get("translaton")


def test_a_kind_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        kinds.register_kind("translation")(NextRowKind)
    with pytest.raises(TypeError, match="must subclass"):
        kinds.register_kind("not_a_kind")(object)


@pytest.mark.slow
def test_a_new_kind_is_one_class_the_kit_trains_resumes_and_records(workdir, next_row):
    cfg = config.compose(None, "smoke", ["task.kind=next_row", "cell.name=gru", "cell.hidden_size=16",
                                         "trainer.max_epochs=2"])
    run_dir = workdir / "runs" / "toy"
    rec = train.run(cfg, run_dir, "toy")
    assert rec["metrics"]["epochs"] == 2 and rec["metrics"]["val/mse"] > 0
    assert rec["params"] == cells.num_params("gru", 28, 16) and rec["status"] == "ok"
    assert (run_dir / "best.ckpt").exists() and (run_dir / "last.ckpt").exists()
    cfg.trainer.max_epochs = 3  # the same folder again: it resumes after epoch 2 and trains one more
    again = train.run(cfg, run_dir, "toy")
    assert again["curve"]["epoch"] == [1, 2, 3] and again["curve"]["val/mse"][:2] == rec["curve"]["val/mse"]


@pytest.mark.slow
def test_an_unknown_kind_on_the_command_line_is_a_message_and_status_2(workdir):
    out = subprocess.run([sys.executable, "-m", "reproduce.train", "--preset", "smoke", "task.kind=nxt_row"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "unknown task kind 'nxt_row'" in out.stderr and "valid: classification" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_mistyped_key_is_a_message_and_status_2(workdir):
    out = subprocess.run([sys.executable, "-m", "reproduce.train", "--preset", "smoke", "task=ptb",
                          "task.data.limit_trian=5"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("python -m reproduce.train: error: unknown config key 'task.data.limit_trian' (did "
                                 "you mean task.data.limit_train?)"), out.stderr
    assert "To append" not in out.stderr  # Hydra's "+key" advice does not apply to a typo
    assert "Traceback" not in out.stderr
