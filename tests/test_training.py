"""The classification machinery without the data: configs, nets, the LightningModule, callbacks, the runner's grid."""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

import cells
from lit_models.callbacks import Curves, ExpLossLR
from lit_models.classifier import SequenceClassifier
from lit_models.nets import RNNClassifier
from lit_models.regularizers import LockedDropout, embedded_dropout
from reproduce import config, grid, kinds

TABLES = config.experiments()


# ---- configs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TABLES)
@pytest.mark.parametrize("preset", config.PRESETS)
def test_every_experiment_composes_and_changes_the_config(name, preset):
    plain, cfg = config.compose(None, preset), config.compose(name, preset)
    assert cfg.table.name == name and cfg.preset == preset
    assert cfg.task.name != plain.task.name or cfg.cell != plain.cell  # the experiment is not silently ignored
    assert cfg.protocol == ("paper" if preset == "paper" else "holdout")
    for key in grid.grid_points(cfg)[0][2]:  # grid keys exist in the config (maybe null there)
        if not key.startswith("cell.options."):  # a cell option a row adds (cells.build checks it by name)
            assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key
    points = grid.grid_points(cfg)
    if preset == "paper":
        # a table may hold columns that run only when chosen (grid.columns.only: Greff's licensed TIMIT and IAM)
        columns = (cfg.grid.columns.get("only") or cfg.grid.columns["values"]) if cfg.grid.columns else [None]
        assert len(points) == len(cfg.grid.rows["values"]) * len(columns) >= 2  # Fig. 3 of Lu & Salem: 1 x 2


def test_preset_changes_apply_and_the_command_line_wins():
    paper, quick = config.compose("table2_simplified", "paper"), config.compose("table2_simplified", "quick")
    assert paper.trainer.max_epochs == 200 and paper.early_stopping.patience == 50  # the authors' code
    assert quick.trainer.max_epochs == 10 and list(quick.grid.columns["values"]) == [1e-2, 1e-3]
    mine = config.compose("table2_simplified", "quick", ["trainer.max_epochs=2", "grid.columns.values=[0.01]"])
    assert mine.trainer.max_epochs == 2 and list(mine.grid.columns["values"]) == [0.01]
    smoke = config.compose("table3_simplified", "smoke")
    assert smoke.logger.name == "none" and smoke.task.data.limit_train == 256


def test_bad_config_input_lists_the_valid_choices():
    with pytest.raises(ValueError, match="did you mean cell.hidden_size.*valid keys under cell"):
        config.compose("table2_simplified", "quick", ["cell.hiden_size=3"])
    with pytest.raises(ValueError, match="row_mnist"):
        config.compose("table2_simplified", "quick", ["task=mnist"])
    with pytest.raises(ValueError, match="valid presets: paper, quick, smoke"):
        config.compose("table2_simplified", "fast")
    with pytest.raises(ValueError, match="table2_simplified"):
        config.compose("table2_simplifed", "quick")


def test_grid_labels_and_cells_filter():
    cfg = config.compose("table5_slim", "paper")
    points = grid.grid_points(cfg)
    assert points[0][:2] == ("n=100", "eta=5e-5") and points[2][1] == "eta=1.25e-5"
    assert points[0][2] == {"cell.hidden_size": 100, "optim.eta0": 5e-5}
    with pytest.raises(ValueError, match="not cells"):
        grid.grid_points(cfg, ["lstm"])
    cfg = config.compose("table2_simplified", "paper")
    assert [p[:2] for p in grid.grid_points(cfg, ["lstm3"])][0] == ("lstm3", "eta0=1e-2")
    with pytest.raises(ValueError, match="gru not in this table"):
        grid.grid_points(cfg, ["gru"])


def test_row_params_are_the_papers_counts():
    """Lu & Salem Tables I-III and Akandeh & Salem Tables 1-2 (Table 2: a bidirectional layer)."""
    expect = {"table1_simplified": {"lstm": 40_800, "lstm1": 40_500, "lstm2": 40_200, "lstm3": 10_500},
              "table2_simplified": {"lstm": 15_800, "lstm1": 11_600, "lstm2": 11_450, "lstm3": 4_100},
              "table3_simplified": {"lstm": 131_584, "lstm1": 82_432, "lstm2": 82_048, "lstm3": 33_280},
              "table7_slim": {"lstm": 263_168, "lstm6": 65_792, "lstm_c6": 33_280}}
    for table, counts in expect.items():
        cfg = config.compose(table, "paper")
        assert kinds.of(cfg).table_params(cfg, list(counts), cfg.grid.rows.key) == counts, table


# ---- nets, regularizers, module -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_nets_have_the_papers_shapes():
    rnn = cells.build("lstm", 28, 50)
    assert RNNClassifier(rnn, 10)(torch.randn(3, 28, 28)).shape == (3, 10)
    imdb = RNNClassifier(cells.build("lstm1", 32, 16), 1, front="embedding", vocab_size=100, embed_dim=32)
    assert imdb(torch.randint(0, 100, (4, 50))).shape == (4, 1)
    glove = torch.randn(30, 50)
    news = RNNClassifier(cells.build("lstm_c6", 128, 8, bidirectional=True), 20, front="news20_cnn",
                         embedding_weights=glove, hidden=128)
    assert news(torch.randint(0, 30, (2, 1000))).shape == (2, 20)
    assert news.features(torch.randint(0, 30, (2, 1000))).shape == (2, 17, 128)  # Table 6: 17 x 128
    assert not news.embedding.weight.requires_grad  # frozen GloVe
    with pytest.raises(ValueError, match="valid fronts: none, embedding, news20_cnn"):
        RNNClassifier(rnn, 10, front="cnn")


def test_bidirectional_summary_is_forward_last_and_backward_first_step():
    torch.manual_seed(0)
    rnn = cells.build("gru", 3, 4, bidirectional=True)
    net = RNNClassifier(rnn, 2).eval()
    x = torch.randn(2, 5, 3)
    out, _ = rnn(x)
    summary = torch.cat([out[:, -1, :4], out[:, 0, 4:]], -1)
    torch.testing.assert_close(net(x), net.out(summary))


def test_embedded_dropout_drops_whole_words_and_locked_dropout_whole_sequences():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)
    words = torch.arange(50).repeat(2, 1)
    e = embedded_dropout(emb, words, 0.5, training=True)
    dropped = (e == 0).all(-1)
    assert dropped.any() and (dropped[0] == dropped[1]).all()  # a word type is dropped everywhere it occurs
    torch.testing.assert_close(e[~dropped], 2 * emb.weight[words][~dropped])
    assert torch.equal(embedded_dropout(emb, words, 0.5, training=False), emb(words))
    x = torch.ones(4, 7, 6)
    y = LockedDropout(0.5).train()(x)
    assert (y == y[:, :1]).all() and (y == 0).any() and (y == 2).any()  # one mask per sequence, all steps


def _toy(n=64, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, 3, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _fit(module, callbacks, epochs=3, val=None, tmp_path=None):
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                        enable_model_summary=False)
    trainer.fit(module, _toy(), val or [_toy(seed=1), _toy(seed=2)])
    return trainer


def test_exp_loss_lr_sets_eta0_times_exp_of_the_epoch_mean_loss(tmp_path):
    class Spy(L.Callback):
        losses, lrs = [], []

        def on_train_epoch_start(self, trainer, pl_module):
            self.losses.append([])
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses[-1].append(outputs["loss"].item())

    torch.manual_seed(0)
    module = SequenceClassifier(RNNClassifier(cells.build("lstm", 3, 4), 1),
                                lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9))
    spy = Spy()
    _fit(module, [spy, ExpLossLR(0.01)], tmp_path=tmp_path)
    assert spy.lrs[0] == 1e-3  # the first epoch at the optimizer's own rate, as the authors' code
    for epoch in (1, 2):
        prev = spy.losses[epoch - 1]
        assert spy.lrs[epoch] == pytest.approx(0.01 * math.exp(sum(prev) / len(prev)), rel=1e-6)


@pytest.mark.slow
def test_curves_record_every_epoch_and_the_best_is_chosen_by_the_monitor(tmp_path):
    torch.manual_seed(0)
    module = SequenceClassifier(RNNClassifier(cells.build("gru", 3, 4), 2),
                                lambda p: torch.optim.Adam(p, lr=0.05))
    curves = Curves()
    _fit(module, [curves], epochs=4, tmp_path=tmp_path)
    cols = curves.as_columns()
    assert cols["epoch"] == [1, 2, 3, 4] and cols["lr"] == [0.05] * 4  # the rate each epoch trained at
    for key in ("val/acc", "test/acc", "train/loss", "train/acc", "val/loss"):
        assert len(cols[key]) == 4 and all(v is not None for v in cols[key]), key
    best = curves.best("val/acc")
    assert best["val/acc"] == max(cols["val/acc"])
    restored = Curves()
    restored.load_state_dict(curves.state_dict())
    assert restored.rows == curves.rows


@pytest.mark.filterwarnings("ignore:`training_step` returned `None`")  # that is how the step is skipped
def test_non_finite_loss_stops_without_a_step(tmp_path):
    class Bad(SequenceClassifier):
        def forward(self, x):
            out = super().forward(x)
            return out * float("nan") if self.current_epoch == 1 else out

    torch.manual_seed(0)
    module = Bad(RNNClassifier(cells.build("lstm", 3, 4), 2), lambda p: torch.optim.SGD(p, lr=0.1))
    trainer = _fit(module, [], epochs=5, tmp_path=tmp_path)
    assert module.nonfinite == "epoch 1, batch 0"
    assert trainer.current_epoch <= 2  # stopped instead of running 5 epochs
    assert all(torch.isfinite(p).all() for p in module.parameters())  # no step was taken with the NaN


def test_a_run_says_so_when_its_threads_and_the_machine_s_load_exceed_the_cores(capsys, monkeypatch):
    from reproduce import kit

    cores = 2
    monkeypatch.setattr(kit.os, "sched_getaffinity", lambda pid: set(range(cores)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not kit.warn_busy_cores(load=0.1)  # a quiet machine
        assert kit.warn_busy_cores(load=2.0)  # another 2-thread process already on both cores
        assert "busy (load 2.0 on 2 cores)" in capsys.readouterr().err
        torch.set_num_threads(1)
        assert not kit.warn_busy_cores(load=1.0)  # one thread beside one busy core: its share
    finally:
        torch.set_num_threads(threads)


def test_curves_time_whole_epochs_only_and_keep_them_across_a_resume():
    """Curves.times: the seconds of every epoch timed from its start (training and validation); an epoch resumed
    midway (no on_train_epoch_start in this process) is not timed, the earlier times come back from the checkpoint."""
    from types import SimpleNamespace

    trainer = SimpleNamespace(optimizers=[], current_epoch=0, callback_metrics={}, sanity_checking=False)
    c = Curves()
    c.on_train_epoch_start(trainer, None)
    c.on_train_epoch_end(trainer, None)
    assert list(c.times) == [1] and c.times[1] >= 0 and c.epoch_seconds() == c.times[1]
    resumed = Curves()
    resumed.load_state_dict(c.state_dict())
    trainer.current_epoch = 1
    resumed.on_train_epoch_end(trainer, None)  # epoch 2 resumed midway: not timed
    assert list(resumed.times) == [1]
    assert Curves().epoch_seconds() is None
