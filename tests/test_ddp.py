"""DDP for real: two processes on the CPU (gloo), started by the scripts themselves (``trainer=ddp
trainer.accelerator=cpu trainer.devices=2``), against single-process evaluations of the checkpoint they saved; the
refusal of a language model; the data shards (``datamodules.shard``)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from datamodules.shard import ShardedBatches, Strided, shard
from datamodules.translation import LengthBatches
from lit_models.classifier import SequenceClassifier
from lit_models.translator import Translator
from reproduce import kinds, results
from reproduce.kit import build_datamodule, build_optimizer

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out

REPO = Path(__file__).resolve().parents[1]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# the whole (smoke-limited) splits: then every epoch's synced evaluation covers each example once, as one process does
WHOLE = ["trainer.limit_train_batches=null", "trainer.limit_val_batches=null"]
LINE = "batch size: 32 per device x 2 devices x 1 node = 64 global"


def _run(args, cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python *args`` in ``cwd`` with results and runs there; its own process group, so that a timeout also ends the
    DDP child it started (which would otherwise wait for its rank 0 for the process group's 30 minutes)."""
    env = dict(os.environ, GATEZOO_RESULTS=str(cwd / "results"), GATEZOO_RUNS=str(cwd / "runs"), GATEZOO_COMPILE="0",
               WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # of another DDP run
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a DDP child left behind, if any
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert out.returncode == 0 or not check, f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"
    return out


def _single_process(record: dict, ckpt: Path) -> tuple[dict, dict]:
    """The checkpoint evaluated by a plain one-device Lightning Trainer in this process: (test numbers, val numbers)."""
    cfg = OmegaConf.create(record["config"])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    net = kinds.get("classification").build_net(cfg, dm)
    model = SequenceClassifier(net, build_optimizer(cfg), eval_splits=("val", "test"))
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    test = trainer.test(model, dm.test_dataloader(), verbose=False)[0]
    val = trainer.validate(model, dm.val_dataloader(), verbose=False)[0]
    return test, val


def test_a_two_process_ddp_table_run_writes_one_record_equal_to_a_single_process_evaluation(workdir):
    # 127 test (and validation) examples: odd, so that a sampler padding the ranks' shards would count one twice
    out = _run([str(REPO / "reproduce" / "table2_simplified.py"), "--preset", "smoke", "--cells", "lstm", *DDP,
                *WHOLE, "task.data.limit_test=127", "logger=wandb", "logger.name=wandb"], workdir)
    assert out.stdout.count(LINE) == 1, out.stdout  # printed once: by rank 0
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out.stderr  # a second process did join
    assert out.stdout.count("[1/1] table2_simplified lstm eta0=1e-3 seed 0: test acc") == 1

    records = results.load_records(workdir / "results", table="table2_simplified")
    assert len(records) == 1 and len(list((workdir / "results").rglob("*.json"))) == 1
    rec = records[0]
    assert rec["devices"] == {"per_node": 2, "nodes": 1, "batch_per_device": 32, "global_batch": 64}
    run_dir = Path(rec["run_dir"])
    # each rank trained on its half of the 256 training examples: 4 steps of 32 per rank, not the 8 of one process
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["global_step"] == 4
    # one W&B run (rank 0's), under the id of the run folder's one wandb_id file
    run_id = (run_dir / "wandb_id").read_text().strip()
    assert [p.name.rsplit("-", 1)[1] for p in (run_dir / "wandb").glob("offline-run-*")] == [run_id]

    test, val = _single_process(rec, run_dir / "best.ckpt")
    m = rec["metrics"]
    # the record's test numbers: rank 0 alone on the whole test split, exactly a single-process evaluation
    assert m["test/acc_best"] == test["test/acc"] and m["test/examples"] == 127
    assert m["test/loss_best"] == test["test/loss"]
    # the epoch's curves: each rank evaluated its shard (unpadded) and torchmetrics summed the counts over the ranks,
    # so the logged accuracy is over the whole split (per-example predictions do not depend on the batch they sit in)
    assert rec["curve"]["test/acc"] == [test["test/acc"]] and rec["curve"]["val/acc"] == [val["val/acc"]]
    assert math.isclose(rec["curve"]["val/loss"][0], val["val/loss"], rel_tol=1e-5)  # summed in another order


def test_ddp_single_run_entry_point_agrees_on_one_run_folder_and_one_csv_log(workdir):
    out = _run(["-m", "reproduce.train", "--preset", "smoke", "task=row_mnist", "cell.hidden_size=16",
                "+task.data.limit_train=128", "+task.data.limit_test=64", *DDP, "logger=csv", "logger.name=csv"],
               workdir)
    assert out.stdout.count(LINE) == 1, out.stdout
    folders = list((workdir / "runs" / "single").iterdir())
    assert len(folders) == 1, folders  # rank 0 chose the folder; rank 1 trained in it (not in one of its own)
    assert (folders[0] / "finished").is_file() and not (folders[0] / "run.lock").exists()
    assert len(list((workdir / "results").rglob("*.json"))) == 1
    logs = list((folders[0] / "csv").rglob("metrics.csv"))
    assert len(logs) == 1  # one CSV log, rank 0's
    rows = logs[0].read_text().splitlines()
    assert len([r for r in rows[1:] if r.split(",")[0] == "0"]) == 2  # epoch 0: one validation row, one training row
    rec = json.loads(next((workdir / "results").rglob("*.json")).read_text())
    test, _ = _single_process(rec, folders[0] / "best.ckpt")
    assert rec["metrics"]["test/acc_best"] == test["test/acc"] and rec["metrics"]["test/examples"] == 64


def test_a_two_process_ddp_translation_run_shards_the_length_batches_and_syncs_the_perplexity(workdir):
    out = _run(["-m", "reproduce.train", "--preset", "smoke", "task=iwslt14", "task.data.source=offline",
                "task.data.limit_train=96", "task.data.limit_eval=24", "task.data.batch_size=8", "task.net.emsize=16",
                "task.net.nhid=16", "task.mt.beam=2", "optim=adam", *DDP, *WHOLE], workdir)
    line = "batch size: 8 sentence pairs per device x 2 devices x 1 node = 16 sentence pairs global"
    assert out.stdout.count(line) == 1 and out.stdout.count("test BLEU") == 2, out.stdout  # rank 0's line, summary
    [path] = (workdir / "results").rglob("*.json")
    rec = json.loads(path.read_text())
    run_dir = Path(rec["run_dir"])
    assert (run_dir / "test.hyp").read_text().count("\n") == 24  # rank 0 alone translated the test set
    # 96 pairs in 12 length-grouped batches of 8, dealt to 2 ranks: 6 steps each
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["global_step"] == 6
    cfg = OmegaConf.create(rec["config"])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    module = Translator(kinds.get("translation").build_net(cfg, dm), build_optimizer(cfg))
    module.load_state_dict(torch.load(run_dir / "best.ckpt", weights_only=True)["state_dict"])
    one = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    val = one.validate(module, dm.val_dataloader(), verbose=False)[0]
    # the 24 validation pairs split over the ranks, the NLL sums and token counts added up: the whole split's
    # perplexity (not exactly equal: each rank's batches hold other pairs, so the float sums differ in the last bits)
    assert math.isclose(rec["metrics"]["val/ppl"], val["val/ppl"], rel_tol=1e-5)
    assert math.isclose(rec["curve"]["val/nll"][0], val["val/nll"], rel_tol=1e-5)


def test_a_language_model_refuses_ddp_and_names_why(workdir):
    out = _run(["-m", "reproduce.train", "--preset", "smoke", "task=ptb", *DDP], workdir, check=False)
    assert out.returncode == 2  # a user's mistake: the message alone, no traceback
    assert "language model" in out.stderr and "one device" in out.stderr and "hidden state" in out.stderr
    assert "Traceback" not in out.stderr and "GLOBAL_RANK" not in out.stderr  # refused before any process started
    assert not (workdir / "results").exists() and not (workdir / "runs").exists()


def test_shards_cover_each_example_once_and_training_shards_are_even():
    ds = TensorDataset(torch.arange(10).float(), torch.arange(10))
    evals = [shard(DataLoader(ds, batch_size=3), r, 3, train=False) for r in range(3)]
    seen = sorted(int(i) for loader in evals for _, y in loader for i in y)
    assert seen == list(range(10))  # no padding: each example once over the ranks
    assert [len(loader.sampler) for loader in evals] == [4, 3, 3] and isinstance(evals[0].sampler, Strided)
    trains = [shard(DataLoader(ds, batch_size=2, shuffle=True), r, 3, train=True, seed=5) for r in range(3)]
    assert [len(loader) for loader in trains] == [2, 2, 2]  # 4 examples each (10 padded to 12): lock-step
    for loader in trains:
        loader.sampler.set_epoch(1)
    order = [int(i) for loader in trains for _, y in loader for i in y]
    assert set(order) == set(range(10)) and len(order) == 12
    # a batch sampler of its own (translation's LengthBatches): training deals the epoch's batches round-robin,
    # cycling through the first ones so that every rank takes as many steps
    lengths = torch.randint(1, 20, (50,)).numpy()
    batches = list(LengthBatches(lengths, lengths, batch_size=4, shuffle=True, seed=3))  # 13 batches
    got = [list(ShardedBatches(LengthBatches(lengths, lengths, batch_size=4, shuffle=True, seed=3), r, 3, pad=True))
           for r in range(3)]
    assert [len(g) for g in got] == [5, 5, 5] and got[1][0] == batches[1] and got[0][1] == batches[3]
    assert {i for g in got for b in g for i in b} == set(range(50))  # every pair, on some rank
    one = [list(ShardedBatches([[0, 1, 2, 3, 4]], r, 3, pad=True)) for r in range(3)]
    assert one == [[[0, 1, 2, 3, 4]]] * 3  # fewer batches than ranks: each rank steps once (the batch repeated)
    # evaluation splits every batch across the ranks: each example once, and no rank left without a batch (a rank
    # with none would skip its evaluation and leave the others waiting in the metrics' sum)
    evals = [shard(DataLoader(ds, batch_sampler=[[0, 1, 2, 3, 4, 5, 6], [7, 8]]), r, 3, train=False) for r in range(3)]
    assert [[y.tolist() for _, y in loader] for loader in evals] == [[[0, 3, 6], [7]], [[1, 4], [8]], [[2, 5]]]
    with pytest.raises(ValueError, match="too small for 3 processes"):
        shard(DataLoader(ds, batch_sampler=[[0, 1], [2, 3]]), 0, 3, train=False)
    with pytest.raises(ValueError, match="too small for 3 processes"):
        shard(DataLoader(TensorDataset(torch.arange(2)), batch_size=4), 0, 3, train=False)


def test_batch_line_names_the_per_device_and_the_global_batch():
    from reproduce import config, distributed

    cfg = config.compose("table2_simplified", "smoke", ["trainer.accelerator=cpu", "trainer.devices=2",
                                                        "trainer.strategy=ddp"])
    assert distributed.batch_line(cfg).startswith(LINE)
    one = config.compose("table2_simplified", "smoke")
    assert distributed.batch_line(one).startswith("batch size: 32 per device x 1 device x 1 node = 32 global")


def test_strategies_that_do_not_run_the_script_per_process_are_refused():
    from reproduce import config, distributed

    cfg = config.compose("table2_simplified", "smoke", ["trainer.accelerator=cpu", "trainer.devices=2",
                                                        "trainer.strategy=ddp_spawn"])
    with pytest.raises(distributed.Unsupported, match="ddp_spawn"):
        distributed.launch(cfg)
    assert distributed.world_size() == 1  # nothing was started
