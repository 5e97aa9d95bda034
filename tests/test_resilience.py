"""Surviving faults: a run killed (SIGKILL) or preempted (SIGTERM, SIGUSR1) resumes exactly; a non-finite loss makes a
failed record and a "failed" table cell; corrupt records are skipped; two processes never share a run folder; every
``torch.load`` reads weights only. The training runs are real ``python -m reproduce.train`` subprocesses on row MNIST
(and IWSLT'14 for the translation path), on one thread each (same numbers in every process, and no fight for the
cores)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import cells
from lit_models.callbacks import AtomicCheckpointIO, Preempted, ResumableLoader, Resume
from lit_models.classifier import SequenceClassifier
from lit_models.nets import RNNClassifier
from reproduce import locks, loop, results, runner, train

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out

REPO = Path(__file__).resolve().parents[1]
# 3 epochs of 40 batches; DropConnect draws from the global RNG at every step and exp_loss sets each epoch's rate from
# the previous epoch's mean loss, so a resume that lost the RNG state or the epoch's running loss would show
RUN = [sys.executable, "-m", "reproduce.train", "--preset", "smoke", "task=row_mnist", "cell.hidden_size=8",
       "cell.weight_drop=0.3", "optim.schedule=exp_loss", "optim.eta0=0.01", "task.data.batch_size=4",
       "+task.data.limit_train=160", "+task.data.limit_test=32", "trainer.limit_train_batches=40",
       "checkpoint.every_n_steps=5"]


@pytest.fixture
def one_thread():
    """In-process training on one thread, as the subprocesses (the machine's cores may be busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _start(cmd, home: Path, data: Path) -> subprocess.Popen:
    """``cmd`` as a subprocess whose runs and records live under ``home``; its output in home/log-<n>.txt."""
    env = dict(os.environ, GATEZOO_RUNS=str(home / "runs"), GATEZOO_RESULTS=str(home / "results"),
               GATEZOO_DATA=str(data), GATEZOO_COMPILE="0", OMP_NUM_THREADS="1", WANDB_MODE="offline",
               PYTHONPATH=str(REPO))
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"log-{len(list(home.glob('log-*')))}.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _output(proc: subprocess.Popen) -> str:
    return proc.log.read_text()


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    proc.wait(timeout)
    assert proc.returncode == 0, _output(proc)
    return _output(proc)


def _wait_for_checkpoint(proc, home: Path, accept, timeout: float = 240) -> Path:
    """Poll the run's last.ckpt until ``accept(checkpoint)``; -> its path."""
    deadline, seen = time.time() + timeout, None
    while time.time() < deadline:
        assert proc.poll() is None, f"the run ended first:\n{_output(proc)}"
        for path in (home / "runs" / "single").glob("*/last.ckpt"):
            try:
                stamp = path.stat().st_mtime_ns
                if stamp != seen:
                    seen = stamp
                    if accept(torch.load(path, weights_only=True)):
                        return path
            except FileNotFoundError:
                pass
        time.sleep(0.005)
    pytest.fail(f"no such checkpoint in {timeout} s:\n{_output(proc)}")


def _record(home: Path) -> dict:
    [record] = results.load_records(home / "results", table="single")
    return record


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


# ---- preemption and resume -----------------------------------------------------------------------------------------


def test_a_killed_run_resumes_and_ends_bit_identical_to_an_uninterrupted_one(tmp_path, data):
    """SIGKILL in the middle of epoch 2 (after a step checkpoint), then the same command again: the record (every
    epoch's accuracies, losses and learning rates) and the final weights equal, bit for bit, those of a run never
    interrupted. Exact on the CPU: the data order and every random draw are restored, the running sums of the
    epoch's logged means are added back (float addition commutes exactly)."""
    cmd = RUN + ["trainer.max_epochs=3"]
    whole = _start(cmd, tmp_path / "whole", data)
    killed = _start(cmd, tmp_path / "killed", data)
    mid_epoch = lambda ckpt: ckpt["epoch"] == 1 and 0 < ckpt["resume"]["batches"] <= 25  # noqa: E731
    last = _wait_for_checkpoint(killed, tmp_path / "killed", mid_epoch)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert killed.returncode == -signal.SIGKILL
    assert mid_epoch(torch.load(last, weights_only=True))  # killed before the epoch's end: a mid-epoch resume
    assert not results.load_records(tmp_path / "killed" / "results")  # no record from a killed run
    assert (last.parent / locks.LOCK).exists()  # its lock stays behind, stale

    out = _finish(_start(cmd, tmp_path / "killed", data))  # the same command again
    assert f"resuming {last.parent}" in out
    assert not (last.parent / locks.LOCK).exists()
    _finish(whole)
    a, b = _record(tmp_path / "whole"), _record(tmp_path / "killed")
    assert b["curve"]["epoch"] == [1, 2, 3] and b["status"] == "ok"
    assert a["metrics"] == b["metrics"] and a["curve"] == b["curve"]
    for name in ("last.ckpt", "best.ckpt"):
        wa, wb = _weights(Path(a["run_dir"]) / name), _weights(Path(b["run_dir"]) / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_a_killed_translation_run_resumes_and_ends_bit_identical(tmp_path, data):
    """The same for the seq2seq path (reproduce/kinds/translation.py): G2-LSTM (its training noise draws from the
    global RNG) with dropout, killed in the middle of epoch 2; the resumed run's curve, BLEU and weights equal the
    uninterrupted run's (the translation time aside)."""
    cmd = [sys.executable, "-m", "reproduce.train", "--preset", "smoke", "task=iwslt14", "task.data.source=offline",
           "task.data.limit_train=480", "task.data.limit_eval=24", "task.data.batch_size=8", "task.net.emsize=16",
           "task.net.nhid=16", "task.mt.beam=2", "cell.name=g2_lstm", "cell.backend=eager", "optim=adam",
           "optim.lr=0.002", "trainer.max_epochs=3", "trainer.limit_train_batches=60", "trainer.gradient_clip_val=2.0",
           "checkpoint.every_n_steps=4"]
    whole = _start(cmd, tmp_path / "whole", data)
    killed = _start(cmd, tmp_path / "killed", data)
    mid_epoch = lambda ckpt: ckpt["epoch"] == 1 and 0 < ckpt["resume"]["batches"] <= 50  # noqa: E731  (60 a pass)
    last = _wait_for_checkpoint(killed, tmp_path / "killed", mid_epoch)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert mid_epoch(torch.load(last, weights_only=True)) and not results.load_records(tmp_path / "killed" / "results")
    out = _finish(_start(cmd, tmp_path / "killed", data))
    assert f"resuming {last.parent}" in out
    _finish(whole)
    a, b = _record(tmp_path / "whole"), _record(tmp_path / "killed")
    assert b["curve"]["epoch"] == [1, 2, 3] and b["status"] == "ok" and a["curve"] == b["curve"]
    timing = {"translate_s"}
    assert {k: v for k, v in a["metrics"].items() if k not in timing} == \
        {k: v for k, v in b["metrics"].items() if k not in timing}
    for name in ("last.ckpt", "best.ckpt"):
        wa, wb = _weights(Path(a["run_dir"]) / name), _weights(Path(b["run_dir"]) / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_sigterm_saves_a_resumable_checkpoint_exits_cleanly_and_writes_no_record(tmp_path, data):
    """SIGTERM (a cluster's preemption) during training: the run saves last.ckpt at the end of the batch, says so, and
    exits with 128 + 15 without a traceback or a record; the same command resumes it into the same W&B run."""
    cmd = RUN + ["trainer.max_epochs=2", "logger=wandb", "logger.name=wandb"]  # the smoke preset says none
    home = tmp_path / "preempted"
    proc = _start(cmd, home, data)
    last = _wait_for_checkpoint(proc, home, lambda ckpt: True)  # training is under way
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    out = _output(proc)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert re.search(rf"SIGTERM: saved {re.escape(str(last))} \(epoch \d, batch \d+, step \d+\); stopping", out), out
    assert "Traceback" not in out
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["resume"]["batches"] > 0 and ckpt["optimizer_states"]  # a mid-epoch resume point, with the optimizer
    assert not results.load_records(home / "results") and not (last.parent / locks.FINISHED).exists()
    assert not (last.parent / locks.LOCK).exists()  # a clean exit releases the folder
    run_id = (last.parent / "wandb_id").read_text()

    out = _finish(_start(cmd, home, data))
    assert f"resuming {last.parent}" in out
    record = _record(home)
    assert record["run_dir"] == str(last.parent) and record["curve"]["epoch"] == [1, 2]
    assert (last.parent / "wandb_id").read_text() == run_id
    assert len(list((last.parent / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # both parts logged to one run


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_a_preempted_language_model_resumes_mid_epoch_exactly(workdir, monkeypatch, one_thread):
    """PTB (AWD-LSTM, tiny): SIGUSR1 in the middle of epoch 2, then the same run again: the windows, the carried
    hidden state, the RNG (dropouts, DropConnect) and the training perplexity's sums go on where they were."""
    from lit_models.language_model import LanguageModel
    from reproduce import config
    from reproduce.train import run

    monkeypatch.setenv("GATEZOO_COMPILE", "0")  # seconds, not a compile per run
    cfg = config.compose(None, "smoke", [
        "task=ptb", "optim=nt_asgd", "cell.name=gru", "task.net.emsize=8", "task.net.nhid=12", "task.net.nlayers=2",
        "task.data.batch_size=4", "task.data.eval_batch_size=2", "task.data.bptt=12", "task.data.limit_train=2000",
        "task.data.limit_eval=300", "task.lm.finetune_epochs=0", "task.lm.cache.enabled=false",
        "trainer.gradient_clip_val=0.25", "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
        "trainer.max_epochs=2"])
    whole = run(cfg, workdir / "whole", "lm")
    step = LanguageModel.training_step

    def notice(self, batch, batch_idx):  # the scheduler's notice, during the 4th window of epoch 2
        if self.current_epoch == 1 and batch_idx == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        return step(self, batch, batch_idx)

    with monkeypatch.context() as mp:
        mp.setattr(LanguageModel, "training_step", notice)
        with pytest.raises(Preempted):
            run(cfg, workdir / "preempted", "lm")
    assert torch.load(workdir / "preempted" / "last.ckpt", weights_only=True)["resume"]["batches"] == 4
    resumed = run(cfg, workdir / "preempted", "lm")
    assert resumed["metrics"] == whole["metrics"] and resumed["curve"] == whole["curve"]
    wa, wb = _weights(workdir / "whole" / "last.ckpt"), _weights(workdir / "preempted" / "last.ckpt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _toy(n=64, seed=0, shuffle=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, 3, generator=g)
    loader_gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(x, (x[:, :, 0].sum(1) > 0).long()), batch_size=8, shuffle=shuffle,
                      generator=loader_gen)


def test_sigusr1_stops_at_the_end_of_the_batch_with_a_checkpoint(tmp_path, one_thread):
    class Notice(L.Callback):  # the scheduler's notice arrives in the middle of step 3
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGUSR1)

    module = SequenceClassifier(RNNClassifier(cells.build("gru", 3, 4), 2), lambda p: torch.optim.SGD(p, lr=0.1))
    loader = ResumableLoader(_toy(shuffle=True))
    trainer = L.Trainer(max_epochs=2, callbacks=[Notice(), Resume(tmp_path / "last.ckpt", loader=loader)],
                        logger=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        plugins=[AtomicCheckpointIO()], enable_model_summary=False)
    with pytest.raises(Preempted) as stop:
        trainer.fit(module, loader, [_toy(seed=1)])
    assert stop.value.code == 128 + signal.SIGUSR1
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["resume"]["batches"] == 4  # step 3 finished, nothing after it
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers are put back


def test_resumable_loader_replays_the_rest_of_a_pass_in_the_same_order():
    def batches(loader, n=None):
        return [b[0] for b in list(loader)[:n]]

    first = ResumableLoader(_toy(shuffle=True))
    whole = [batches(first) for _ in range(3)]  # three epochs
    again = ResumableLoader(_toy(shuffle=True))
    batches(again)
    state = again.state()  # "killed" after 3 batches of epoch 2
    resumed = ResumableLoader(_toy(shuffle=True))
    resumed.resume(state, 0)
    head = batches(resumed, 3)
    later = ResumableLoader(_toy(shuffle=True))
    later.resume(resumed.state(), 3)
    rest = [batches(later), batches(later)]
    assert all(torch.equal(a, b) for a, b in zip(whole[1], head + rest[0]))
    assert all(torch.equal(a, b) for a, b in zip(whole[2], rest[1]))


def test_a_checkpoint_write_that_dies_midway_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)

    def dies(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1} and os.listdir(tmp_path) == ["last.ckpt"]


# ---- a non-finite loss ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`training_step` returned `None`")  # that is how the step is skipped
def test_a_nan_loss_keeps_the_last_good_checkpoint_and_the_table_says_failed(workdir, monkeypatch, one_thread,
                                                                             capsys):
    forward = SequenceClassifier.forward

    def nan_from_epoch_1(self, x):  # the fault: the training loss turns NaN in the second epoch
        out = forward(self, x)
        return out * float("nan") if self.training and self.current_epoch == 1 else out

    monkeypatch.setenv("GATEZOO_COMPILE", "0")
    monkeypatch.setattr(SequenceClassifier, "forward", nan_from_epoch_1)
    args = ["--preset", "smoke", "--cells", "lstm", "trainer.max_epochs=3"]
    out = runner.main("table2_simplified", args)
    [record] = results.load_records(workdir / "results", table="table2_simplified")
    assert record["status"] == "failed" and record["failure"] == "non-finite training loss at epoch 1, batch 0"
    assert record["metrics"]["test/acc_best"] is not None  # its last good epoch's number ...
    [row] = [r for r in out if r["row"] == "lstm" and r["presets"]]
    assert row["status"] == "failed" and row["mean"] is None and row["delta"] is None  # ... is not the result
    printed = capsys.readouterr().out
    assert "FAILED, non-finite training loss at epoch 1, batch 0" in printed
    assert re.search(r"lstm\s+│\s+eta0=1e-3\s+│\s+[\d.]+\s+│\s+failed\s+│", printed), printed
    md = (workdir / "results" / "tables" / "smoke" / "table2_simplified.md").read_text()
    assert "| lstm | eta0=1e-3 | 0.9816 | failed | — |" in md
    run_dir = Path(record["run_dir"])
    last, best = _weights(run_dir / "last.ckpt"), _weights(run_dir / "best.ckpt")
    assert all(torch.isfinite(v).all() and torch.equal(v, best[k]) for k, v in last.items())  # no step with NaN
    monkeypatch.setattr(loop, "train_grid", None)  # --collect trains nothing and says the same
    again = runner.main("table2_simplified", args + ["--collect"])
    assert [r["status"] for r in again if r["row"] == "lstm" and r["presets"]] == ["failed"]


# ---- records that cannot be read -----------------------------------------------------------------------------------


def test_collect_skips_partial_and_corrupt_records_with_a_warning_naming_each(workdir):
    folder = workdir / "results" / "table2_simplified" / "smoke"
    good = {"table": "table2_simplified", "paper": "simplified", "row": "lstm", "column": "eta0=1e-3", "seed": 0,
            "preset": "smoke", "metrics": {"test/acc_best": 0.5}, "curve": {"epoch": [1], "test/acc": [0.5]}}
    results.write_record(good, workdir / "results")
    text = json.dumps(good)
    bad = {"truncated.json": text[:50], "empty.json": "", "binary.json": b"\x80\xff\x00",
           "missing.json": json.dumps({k: v for k, v in good.items() if k != "metrics"}),
           "list_row.json": json.dumps({**good, "row": ["lstm"]}), "a_list.json": "[1, 2]",
           "bad_curve.json": json.dumps({**good, "curve": {"test/acc": 0.5}})}
    for name, content in bad.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.warns(UserWarning) as caught:
        out = runner.main("table2_simplified", ["--preset", "smoke", "--collect"])
    warned = " ".join(str(w.message) for w in caught)
    assert all(name in warned for name in bad), warned
    [row] = [r for r in out if r["row"] == "lstm" and r["column"] == "eta0=1e-3"]
    assert row["status"] == "ok" and row["mean"] == 0.5 and row["n"] == 1


# ---- concurrent runs -----------------------------------------------------------------------------------------------


def test_two_processes_never_train_in_one_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from reproduce.locks import run_lock\n"
                               "with run_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(60)",
                               str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(locks.RunBusy, match=f"in use by process {holder.pid} "):
            with locks.run_lock(run_dir):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up, the lock stays
        holder.wait()
    assert (run_dir / locks.LOCK).read_text().startswith(f"{holder.pid} ")
    with locks.run_lock(run_dir) as lock:  # a dead process's lock is taken over
        assert lock.read_text().startswith(f"{os.getpid()} ")
    assert not lock.exists()
    lock.write_text("4242 some-other-host")  # another machine's process: cannot be checked, so it holds
    with pytest.raises(locks.RunBusy, match="4242 some-other-host"):
        with locks.run_lock(run_dir):
            pass


def test_the_grid_skips_a_point_another_process_trains_and_reruns_none_it_finished(workdir, monkeypatch, capsys):
    def record(row, seed):
        return {"table": "table2_simplified", "paper": "simplified", "row": row, "column": "eta0=1e-3", "seed": seed,
                "preset": "smoke", "metrics": {"test/acc_best": 0.5, "best_epoch": 1, "epochs": 1}, "wall_s": 0.0}

    def fake_run(cfg, run_dir, name, labels=None):  # the grid's bookkeeping only: a record in no time
        if (cfg.cell.name, cfg.seed) == ("lstm", 0):  # meanwhile another process finishes lstm1, seed 1
            results.write_record(record("lstm1", 1), workdir / "results")
        return record(cfg.cell.name, cfg.seed)

    monkeypatch.setattr(train, "run", fake_run)
    sleeper = subprocess.Popen(["sleep", "60"])  # "another process", training lstm1, seed 0
    try:
        busy = workdir / "runs" / "table2_simplified" / "smoke" / "lstm1__eta0=1e-3__s0"
        busy.mkdir(parents=True)
        (busy / locks.LOCK).write_text(f"{sleeper.pid} {socket.gethostname()}")
        runner.main("table2_simplified", ["--preset", "smoke", "--seeds", "2"])
    finally:
        sleeper.kill()
        sleeper.wait()
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert re.search(rf"lstm1 eta0=1e-3 seed 0: skipped, .+? is in use by process {sleeper.pid} ", printed), printed
    assert "lstm1 eta0=1e-3 seed 1: done already (by another process)" in printed
    done = {(r["row"], r["seed"]) for r in results.load_records(workdir / "results")}
    assert done == {("lstm", 0), ("lstm", 1), ("lstm1", 1)}  # one record each, none for the busy point
    assert (busy / locks.LOCK).exists()  # the other process's lock is left alone


# ---- checkpoints are read as weights only --------------------------------------------------------------------------


def test_every_torch_load_in_the_repository_reads_weights_only():
    calls = []
    # the project's own code (not a virtual environment inside the checkout, e.g. CI's .ci/venv)
    for path in (p for d in ("cells", "lit_models", "datamodules", "reproduce", "bench", "tests")
                 for p in (REPO / d).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(", text):
            depth, end = 1, m.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            calls.append((path.relative_to(REPO), text[m.start():end]))
    assert calls and all("weights_only=True" in call for _, call in calls), [c for c in calls if "weights_only=True"
                                                                                 not in c[1]]
