"""The AWD-LSTM language model: NT-ASGD, the network, AR/TAR, the NT-ASGD trigger, per-batch lr scaling, the cache
pointer, and ``reproduce.train.run`` (the language-model kind) end to end on a few thousand PTB tokens (data from
$GATEZOO_DATA, else
``<repo>/../shared/data``)."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_models.callbacks import Curves
from lit_models.language_model import (
    AWDLSTM,
    LanguageModel,
    ZarembaDecay,
    activation_regularization,
    cache_pointer_perplexity,
    evaluate_perplexity,
    load_model,
    repackage,
)
from lit_models.nt_asgd import NTASGD, nonmonotonic


@pytest.fixture(autouse=True)
def _no_compile(monkeypatch):
    monkeypatch.setenv("GATEZOO_COMPILE", "0")  # backend auto: the fused kernel or eager, no compile per test


def tiny(cell="lstm", V=30, tie=True, **kw) -> AWDLSTM:
    args = dict(emsize=6, nhid=8, nlayers=3, tie_weights=tie, dropout=0.3, dropouth=0.2, dropouti=0.3, dropoute=0.1,
                wdrop=0.3) | kw
    return AWDLSTM(V, cell, **args)


def windows(ids: torch.Tensor, bsz: int, bptt: int) -> list:
    """Consecutive (x, y) windows of a batchified stream (the PTB DataModule's shape contract)."""
    n = len(ids) // bsz
    data = ids[:n * bsz].view(bsz, n)
    return [(data[:, i:i + min(bptt, n - 1 - i)], data[:, i + 1:i + 1 + min(bptt, n - 1 - i)])
            for i in range(0, n - 1, bptt)]


# ---- NT-ASGD ---------------------------------------------------------------------------------------------------------


def _steps(opt, params, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        opt.zero_grad()
        targets = [torch.randn(p.shape, generator=g) for p in params]
        sum(((p - t) ** 2).sum() for p, t in zip(params, targets)).backward()
        opt.step()


def test_nt_asgd_is_sgd_then_torch_asgd_with_t0_0_lambd_0():
    mine = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    opt, sgd = NTASGD(mine, lr=0.1, weight_decay=0.01), torch.optim.SGD(ref, lr=0.1, weight_decay=0.01)
    _steps(opt, mine, 4, seed=1)
    _steps(sgd, ref, 4, seed=1)
    for p, q in zip(mine, ref):
        torch.testing.assert_close(p, q)
    assert not opt.averaging
    opt.start_averaging()  # awd: optimizer = torch.optim.ASGD(params, lr, t0=0, lambd=0., weight_decay=wdecay)
    asgd = torch.optim.ASGD(ref, lr=0.1, t0=0, lambd=0.0, weight_decay=0.01)
    for k in range(1, 6):
        _steps(opt, mine, 1, seed=10 + k)
        _steps(asgd, ref, 1, seed=10 + k)
        for p, q in zip(mine, ref):
            torch.testing.assert_close(p, q)
            torch.testing.assert_close(opt.state[p]["ax"], asgd.state[q]["ax"])
    live = [p.detach().clone() for p in mine]
    with opt.averaged():
        for p, q in zip(mine, ref):
            torch.testing.assert_close(p.detach(), asgd.state[q]["ax"])
    for p, w in zip(mine, live):
        assert torch.equal(p.detach(), w)  # the live weights are back


def test_nt_asgd_state_dict_round_trip_resumes_exactly():
    a = [torch.nn.Parameter(torch.randn(4, 3))]
    opt = NTASGD(a, lr=0.5, weight_decay=1e-3)
    _steps(opt, a, 2, seed=0)
    opt.start_averaging()
    _steps(opt, a, 3, seed=1)
    b = [torch.nn.Parameter(a[0].detach().clone())]
    opt2 = NTASGD(b, lr=0.5)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.averaging and opt2.param_groups[0]["weight_decay"] == 1e-3
    _steps(opt, a, 3, seed=2)
    _steps(opt2, b, 3, seed=2)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(opt.state[a[0]]["ax"], opt2.state[b[0]]["ax"])
    assert opt.state[a[0]]["step"] == opt2.state[b[0]]["step"] == 6


def test_nonmonotonic_trigger_on_a_scripted_run():
    """awd main.py: compare with the best of all but the last `nonmono` earlier losses, then append."""
    script = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.95, 2.9, 3.01, 3.2]
    losses, switched = [], None
    for epoch, loss in enumerate(script, 1):
        if switched is None and nonmonotonic(losses, loss, nonmono=3):
            switched = epoch
        losses.append(loss)
    # epoch 7: 2.95 < min(5, 4, 3); epoch 9: 3.01 > min(5, 4, 3, 3.5, 3.2) = 3.0 -> switch, though 2.9 (epoch 8,
    # among the last nonmono) is better still: only losses older than nonmono epochs count
    assert switched == 9
    assert not nonmonotonic([1.0, 2.0, 3.0], 9.0, nonmono=3)  # not more than nonmono losses yet
    with pytest.raises(ValueError, match="positive"):
        nonmonotonic([1.0], 2.0, nonmono=0)


def _fake_trainer(opt):
    return SimpleNamespace(optimizers=[opt], sanity_checking=False, should_stop=False, current_epoch=0,
                           is_global_zero=True, progress_bar_callback=None, logger=None, loggers=[])


@pytest.mark.parametrize("finetune", [False, True])
def test_the_module_switches_to_averaging_or_stops_the_finetune(finetune):
    module = LanguageModel(tiny(), lr=1.0, nonmono=2, finetune=finetune)
    opt = module.configure_optimizers()
    assert opt.averaging == finetune
    module._trainer = trainer = _fake_trainer(opt)
    for epoch, loss in enumerate([4.0, 3.0, 2.5, 2.6, 3.5], 1):
        trainer.current_epoch = epoch - 1
        module.val_ppl.reset()
        module.val_ppl.update(torch.tensor(loss), 10)
        module.on_validation_epoch_end()
        assert module.last_val_ppl == pytest.approx(math.exp(loss), rel=1e-5)
    # epoch 4: 2.6 > min(4.0) is false; epoch 5: 3.5 > min(4.0, 3.0) = 3.0 -> triggered after epoch 5
    if finetune:
        assert module.stopped and trainer.should_stop and module.asgd_epoch is None
    else:
        assert opt.averaging and module.asgd_epoch == 5 and not trainer.should_stop
    assert module.val_losses == pytest.approx([4.0, 3.0, 2.5, 2.6, 3.5])


# ---- the network -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "g2_lstm"])
def test_awd_lstm_shapes_tied_weights_and_carried_state(cell):
    torch.manual_seed(0)
    net = tiny(cell)
    assert net.decoder.weight is net.encoder.weight and [r.hidden_size for r in net.rnns] == [8, 8, 6]
    assert not net.decoder.bias.any() and net.encoder.weight.abs().max() <= 0.1
    x = torch.randint(0, 30, (2, 11))
    logits, hidden, raw, dropped = net(x, net.init_hidden(2))
    assert logits.shape == (2, 11, 30) and raw.shape == dropped.shape == (2, 11, 6)
    for rnn, h in zip(net.rnns, hidden):
        parts = h if rnn.has_cell_state else (h,)
        assert isinstance(h, tuple) == rnn.has_cell_state and all(p.shape == (1, 2, rnn.hidden_size) for p in parts)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()  # no dropout, no DropConnect, no gate noise: carrying the state = one call on the whole sequence
    with torch.no_grad():
        whole = net(x)[0]
        first, h, _, _ = net(x[:, :4])
        second = net(x[:, 4:], repackage(h))[0]
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    untied = tiny(cell, tie=False)
    assert untied.decoder.weight is not untied.encoder.weight and [r.hidden_size for r in untied.rnns] == [8, 8, 8]
    assert untied(x)[0].shape == (2, 11, 30)


def test_zaremba_dropout_is_per_element():
    net = tiny(locked=False).train()
    assert isinstance(net.drop_i, torch.nn.Dropout)
    net = tiny(locked=True).train()
    x = torch.ones(3, 9, 6)
    y = net.drop_o(x)
    assert (y == y[:, :1]).all()  # locked: one mask per sequence


def test_ar_and_tar_by_hand():
    raw = torch.tensor([[[1.0], [3.0], [6.0]]])  # (B=1, L=3, d=1)
    dropped = torch.tensor([[[2.0], [0.0], [2.0]]])
    # AR: mean(4, 0, 4) = 8/3; TAR: mean((3-1)^2, (6-3)^2) = 6.5
    assert activation_regularization(raw, dropped, 1.0, 0.0).item() == pytest.approx(8 / 3)
    assert activation_regularization(raw, dropped, 0.0, 1.0).item() == pytest.approx(6.5)
    assert activation_regularization(raw, dropped, 2.0, 1.0).item() == pytest.approx(16 / 3 + 6.5)


# ---- training step: lr scaling, hidden carried -----------------------------------------------------------------------


class SpyNTASGD(NTASGD):
    seen: list = []

    def step(self, closure=None):
        self.seen.append(self.param_groups[0]["lr"])
        return super().step(closure)


class SpyModule(LanguageModel):
    def configure_optimizers(self):
        return SpyNTASGD(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def _trainer(epochs=1, **kw):
    return L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                     num_sanity_val_steps=0, enable_model_summary=False, **kw)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_each_step_uses_lr_times_seq_len_over_bptt_and_the_base_rate_is_restored():
    torch.manual_seed(0)
    stream = torch.randint(0, 30, (4, 60))
    lengths = [10, 5, 13, 7]
    starts = [0, 10, 15, 28]
    batches = [(stream[:, s:s + n], stream[:, s + 1:s + 1 + n]) for s, n in zip(starts, lengths)]
    SpyNTASGD.seen = []
    module = SpyModule(tiny(), lr=2.0, bptt=10, alpha=2.0, beta=1.0)
    trainer = _trainer(limit_val_batches=0)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    assert SpyNTASGD.seen == pytest.approx([2.0 * n / 10 for n in lengths])
    assert trainer.optimizers[0].param_groups[0]["lr"] == 2.0


def test_validation_carries_the_state_and_uses_the_averages(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, 30, (400,))
    module = LanguageModel(tiny(), lr=1.0, bptt=10, nonmono=1, finetune=True)  # averaging from the first step
    trainer = _trainer()
    trainer.fit(module, DataLoader(windows(ids, 4, 10), batch_size=None),
                DataLoader(windows(ids[:200], 2, 10), batch_size=None))
    opt = trainer.optimizers[0]
    with opt.averaged():
        expect = evaluate_perplexity(module.net, windows(ids[:200], 2, 10))
    assert trainer.callback_metrics["val/ppl"].item() == pytest.approx(expect, rel=1e-5)
    assert module.last_val_ppl == pytest.approx(expect, rel=1e-5)
    assert evaluate_perplexity(module.net, windows(ids[:200], 2, 10)) != pytest.approx(expect, rel=1e-5)  # live


def test_zaremba_decay_sets_each_epochs_rate_and_the_curve_shows_it():
    torch.manual_seed(0)
    ids = torch.randint(0, 30, (400,))
    module = LanguageModel(tiny(), lr=1.0, bptt=10, asgd=False)
    curves = Curves()
    trainer = _trainer(epochs=4, callbacks=[ZarembaDecay(1.0, start=2, factor=0.5), curves])
    trainer.fit(module, DataLoader(windows(ids, 4, 10), batch_size=None),
                DataLoader(windows(ids[:100], 2, 10), batch_size=None))
    assert curves.as_columns()["lr"] == [1.0, 1.0, 0.5, 0.25]  # epochs 1..start at lr, then x factor per epoch
    assert not trainer.optimizers[0].averaging and module.val_losses == []


@pytest.mark.filterwarnings("ignore:`training_step` returned `None`")
@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_non_finite_loss_stops_without_a_step():
    class Bad(LanguageModel):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                self.net.decoder.bias.data[0] = float("nan")
                out = super().training_step(batch, batch_idx)
                self.net.decoder.bias.data[0] = 0.0  # weights untouched by the bad step
                return out
            return super().training_step(batch, batch_idx)

    torch.manual_seed(0)
    ids = torch.randint(0, 30, (400,))
    module = Bad(tiny(), lr=1.0, bptt=10)
    trainer = _trainer(epochs=5, limit_val_batches=0)
    trainer.fit(module, DataLoader(windows(ids, 4, 10), batch_size=None))
    assert module.nonfinite == "epoch 1, batch 0" and trainer.current_epoch <= 2
    assert all(torch.isfinite(p).all() for p in module.parameters())


# ---- the cache pointer -----------------------------------------------------------------------------------------------


def _reference_cache(net, ids, window, theta, lambdasm):
    """pointer.py position by position (batch 1, one chunk)."""
    with torch.no_grad():
        logits, _, raw, _ = net.eval()(ids[None, :-1])
    p_vocab, h, y = logits[0].softmax(-1), raw[0], ids[1:]
    nll = 0.0
    for t in range(len(y)):
        p = p_vocab[t]
        if t > window:
            attn = (theta * h[t - window:t] @ h[t]).softmax(0)
            p_cache = torch.zeros_like(p).index_add_(0, y[t - window:t], attn)
            p = lambdasm * p_cache + (1 - lambdasm) * p
        nll -= p[y[t]].log().item()
    return math.exp(nll / len(y))


def test_cache_pointer_is_pointer_py_and_plain_perplexity_without_the_cache():
    torch.manual_seed(0)
    net = tiny(V=50).eval()
    ids = torch.randint(0, 50, (120,))
    plain = evaluate_perplexity(net, windows(ids, 1, 17))
    assert cache_pointer_perplexity(net, ids, window=10, lambdasm=0.0, bptt=23) == pytest.approx(plain, rel=1e-5)
    ref = _reference_cache(net, ids, window=10, theta=2.0, lambdasm=0.3)
    for bptt in (7, 40, 1000):  # the chunk fed to the model changes nothing
        got = cache_pointer_perplexity(net, ids, window=10, theta=2.0, lambdasm=0.3, bptt=bptt)
        assert got == pytest.approx(ref, rel=1e-5), bptt


def test_the_cache_helps_on_a_stream_that_repeats_itself():
    torch.manual_seed(0)
    net = tiny(V=200).eval()
    ids = torch.randint(0, 200, (25,)).repeat(12)
    plain = cache_pointer_perplexity(net, ids, window=50, lambdasm=0.0)
    assert cache_pointer_perplexity(net, ids, window=50, lambdasm=0.1) < 0.7 * plain


# ---- end to end ------------------------------------------------------------------------------------------------------


TINY = ["task=ptb", "optim=nt_asgd", "task.net.emsize=8", "task.net.nhid=12", "task.net.nlayers=2",
        "task.data.batch_size=4", "task.data.eval_batch_size=2", "task.data.bptt=12", "task.data.limit_train=2000",
        "task.data.limit_eval=500", "task.lm.finetune_epochs=1", "task.lm.cache.window=40", "task.lm.cache.bptt=150",
        "trainer.gradient_clip_val=0.25", "trainer.limit_train_batches=null", "trainer.limit_val_batches=null"]


@pytest.mark.slow
def test_run_end_to_end_then_resumes(workdir, monkeypatch):
    from reproduce import config
    from reproduce.train import run

    cfg = config.compose(None, "smoke", TINY + ["cell.name=gru"])
    run_dir = workdir / "runs" / "lm"
    first = run(cfg, run_dir, "lm")
    m = first["metrics"]
    for key in ("val/ppl", "test/ppl", "val/ppl_finetune", "test/ppl_finetune", "val/ppl_cache", "test/ppl_cache"):
        assert isinstance(m[key], float) and math.isfinite(m[key]) and 1 < m[key] < 10_000, key
    assert m["epochs"] == 1 and m["best_epoch"] == 1 and m["asgd_epoch"] is None and m["finetune_epochs"] == 1
    assert first["params"] == 3 * (8 * 12 + 12 * 12 + 12) + 3 * (12 * 8 + 8 * 8 + 8)  # gru layers 8->12->8
    assert first["params_total"] == first["params"] + 10_000 * 8 + 10_000  # tied embedding + decoder bias
    assert first["curve"]["phase"] == ["main", "finetune"] and first["curve"]["epoch"] == [1, 2]
    assert set(first) >= {"cell", "seed", "preset", "protocol", "metrics", "curve", "params", "wall_s", "git",
                          "provenance", "run_dir", "config"}
    # the finetune checkpoint holds live weights and, averaging, the averages: load_model gives the averages
    ckpt = torch.load(run_dir / "finetune_last.ckpt", weights_only=True)
    net, conf = load_model(run_dir / "finetune_last.ckpt")
    assert conf["cell"]["name"] == "gru" and not net.training
    assert not torch.equal(net.encoder.weight, ckpt["state_dict"]["net.encoder.weight"])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run trained again")

    with monkeypatch.context() as mp:  # the same run again: every phase resumes at its end
        mp.setattr(LanguageModel, "training_step", no_training)
        again = run(cfg, run_dir, "lm")
    assert again["metrics"] == m and again["curve"] == first["curve"]

    cfg.trainer.max_epochs = 2  # one more epoch: the main phase resumes after epoch 1
    more = run(cfg, run_dir, "lm")
    assert more["curve"]["phase"][:2] == ["main", "main"] and more["metrics"]["epochs"] == 2
    assert more["curve"]["val/ppl"][0] == first["curve"]["val/ppl"][0]
