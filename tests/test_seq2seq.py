"""The attention seq2seq model and its search (lit_models/seq2seq.py): beam 1 = greedy, the beam's scores are the
model's teacher-forced log-probabilities, padding in the source never changes a translation."""
import pytest
import torch

import cells
from lit_models.seq2seq import Seq2Seq, beam_search, decoder_gates, greedy, length_normalised, sequence_logprob

PAD, BOS, EOS = 0, 1, 2


def model(cell="lstm", seed=0, nlayers=2, vocab=23):
    torch.manual_seed(seed)
    net = Seq2Seq(vocab, vocab, cell, emsize=12, nhid=16, nlayers=nlayers, dropout=0.3, pad=PAD, backend="eager")
    # sharpen the output layer so that searches are long and differ between hypotheses
    with torch.no_grad():
        net.out.weight.mul_(8.0)
        net.out.bias[EOS] -= 2.0
    return net.eval()


def batch(lengths, vocab=23, seed=1):
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    src = torch.full((len(lengths), S), PAD)
    for i, n in enumerate(lengths):
        src[i, :n - 1] = torch.randint(4, vocab, (n - 1,), generator=g)
        src[i, n - 1] = EOS
    return src, torch.tensor(lengths)


def padded(hyps):
    T = max(len(h) for h, _ in hyps)
    return torch.tensor([h + [-1] * (T - len(h)) for h, _ in hyps])


@pytest.mark.parametrize("cell", ["lstm", "g2_lstm", "gru"])
def test_beam_one_is_greedy(cell):
    net = model(cell)
    src, n = batch([7, 5, 9, 3])
    g = greedy(net, src, n, bos=BOS, eos=EOS)
    b = beam_search(net, src, n, bos=BOS, eos=EOS, beam=1, alpha=0.0)
    assert [h for h, _ in g] == [h for h, _ in b]
    assert [s for _, s in g] == pytest.approx([s for _, s in b], abs=1e-5)


@pytest.mark.parametrize("beam,alpha", [(1, 0.0), (5, 1.0), (4, 0.0)])
def test_beam_scores_equal_teacher_forcing(beam, alpha):
    net = model()
    src, n = batch([7, 5, 9, 3, 6])
    hyps = beam_search(net, src, n, bos=BOS, eos=EOS, beam=beam, alpha=alpha)
    rescored = sequence_logprob(net, src, n, padded(hyps), bos=BOS)
    assert rescored.tolist() == pytest.approx([s for _, s in hyps], abs=1e-4)
    assert all(h[-1] == EOS and EOS not in h[:-1] and len(h) <= int(1.5 * 9 + 10) for h, _ in hyps)


def test_a_wide_beam_finds_the_exact_best_sequence():
    """On a vocabulary of two words and four steps a beam wider than every prefix set is an exhaustive search: it must
    return the highest-scoring of all 15 sequences (by teacher forcing), for alpha 0 and alpha 1."""
    import itertools
    net = model(seed=3, vocab=5)
    src, n = batch([6, 4], vocab=5, seed=4)
    seqs = [list(w) + [EOS] for k in range(4) for w in itertools.product([3, 4], repeat=k)]
    for alpha in (0.0, 1.0):
        found = beam_search(net, src, n, bos=BOS, eos=EOS, beam=64, alpha=alpha, max_len_a=0.0, max_len_b=4)
        for i in range(2):
            scores = sequence_logprob(net, src[i:i + 1].expand(len(seqs), -1), n[i:i + 1].expand(len(seqs)),
                                      padded([(q, 0) for q in seqs]), bos=BOS)
            ranked = [length_normalised(float(s), len(q), alpha) for s, q in zip(scores, seqs)]
            assert found[i][0] == seqs[max(range(len(seqs)), key=ranked.__getitem__)]


@pytest.mark.parametrize("cell", ["lstm", "g2_lstm"])
def test_source_padding_never_changes_a_translation(cell):
    net = model(cell)
    src, n = batch([5, 9, 3])
    together = beam_search(net, src, n, bos=BOS, eos=EOS, beam=3)
    alone = [beam_search(net, src[i:i + 1, :n[i]], n[i:i + 1], bos=BOS, eos=EOS, beam=3)[0] for i in range(3)]
    garbage = src.clone()
    garbage[src == PAD] = 7  # what the padding holds must not matter either
    noisy = beam_search(net, garbage, n, bos=BOS, eos=EOS, beam=3)
    for (ht, st), (ha, sa), (hn, sn) in zip(together, alone, noisy):
        assert ht == ha == hn
        assert st == pytest.approx(sa, abs=1e-4) and st == pytest.approx(sn, abs=1e-4)


def test_length_normalisation_is_named_and_used():
    assert length_normalised(-6.0, 3, 1.0) == -2.0 and length_normalised(-6.0, 3, 0.0) == -6.0


def test_loss_ignores_padding_and_trains():
    net = model()
    net.train()
    src, n = batch([6, 4, 8])
    tgt = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD], [BOS, 9, 10, EOS, PAD]])
    loss, tokens = net.loss(src, n, tgt)
    assert tokens == 4 + 2 + 3
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    torch.manual_seed(0)
    first = loss.item()
    for _ in range(30):
        opt.zero_grad()
        loss, _ = net.loss(src, n, tgt)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_every_layer_is_the_named_cell():
    net = model("g2_lstm", nlayers=3)
    assert {type(c).name for r in (net.enc_bi, net.enc_rest, net.decoder) for c in r.cells} == {"g2_lstm"}
    assert net.enc_bi.bidirectional and net.enc_bi.hidden_size == 8 and net.decoder.num_layers == 3
    assert cells.build("lstm", 4, 4).cell_name == "lstm"
    with pytest.raises(ValueError, match="even"):
        Seq2Seq(10, 10, "lstm", nhid=15)


def test_decoder_gates_are_the_first_layer_on_real_target_steps():
    net = model("g2_lstm")
    src, n = batch([6, 4])
    tgt = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD]])
    g = decoder_gates(net, src, n, tgt)
    assert set(g) == {"i", "f"} and g["f"].shape == (4 + 2, 16)
    assert 0.0 <= g["i"].min() and g["i"].max() <= 1.0
    # the same values as the decoder's own step with return_gates, step 0 of sentence 0
    memory, keys, mask, state = net.encode(src, n)
    _, _, _, first = net.decode_step(tgt[:, 0], memory.new_zeros(2, 16), state, memory, keys, mask, return_gates=True)
    assert torch.allclose(g["f"][0], first[0]["f"][0, 0])
    with pytest.raises(ValueError, match="no gate 'q'"):
        decoder_gates(net, src, n, tgt, gates=("q",))


@pytest.mark.parametrize("cell", ["lstm", "g2_lstm", "gru"])
def test_decoder_weights_built_once_give_the_per_step_numbers(cell):
    """forward builds the decoder's stacked weights once per sequence (layer.weights()); the logits and every gradient
    must be those of the step loop that rebuilds them at every step."""
    net = model(cell)
    src, n = batch([7, 5, 9])
    tgt_in = torch.randint(3, 23, (3, 6), generator=torch.Generator().manual_seed(2))
    fast = net(src, n, tgt_in)
    gf = torch.autograd.grad(fast.square().sum(), list(net.parameters()), allow_unused=True)
    memory, keys, mask, state = net.encode(src, n)
    feed, outs = memory.new_zeros(3, net.nhid), []
    for t in range(tgt_in.shape[1]):
        feed, state, _ = net.decode_step(tgt_in[:, t], feed, state, memory, keys, mask)  # no weights: per step
        outs.append(feed)
    slow = net.logits(torch.stack(outs, 1))
    gs = torch.autograd.grad(slow.square().sum(), list(net.parameters()), allow_unused=True)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6)
    for a, b in zip(gf, gs):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layer.weights"):
        net.decoder(torch.zeros(3, 1, net.decoder.input_size), weights=[])


def test_step_attention_equals_attend_with_every_gradient():
    """The teacher-forcing attention (lit_models/attention.py: the memory's gradients summed after the step loop)
    gives ``attend``'s contexts and the same gradients for h, keys and memory, also when keys and memory are used
    outside the loop as well, over padded sources."""
    from lit_models.attention import StepAttention, attend
    g = torch.Generator().manual_seed(3)
    B, S, n, T = 3, 6, 5, 4
    keys0, mem0, h0 = (torch.randn(*shape, generator=g, dtype=torch.float64)
                       for shape in ((B, S, n), (B, S, n), (T, B, n)))
    mask = torch.arange(S)[None] < torch.tensor([6, 2, 4])[:, None]
    weights = torch.randn(T, B, n, generator=g, dtype=torch.float64)

    def run(fast):
        keys, mem, h = (t.clone().requires_grad_(True) for t in (keys0, mem0, h0))
        att = StepAttention(keys, mem, mask) if fast else None
        loss = (keys.square().sum() + mem.sin().sum()) * 0.1  # used outside the loop too
        for t in range(T):
            context, a = att(h[t]) if fast else attend(keys, mem, mask, h[t])
            loss = loss + (context * weights[t]).sum() + context.square().sum() * 0.01
        return [context.detach(), a, *torch.autograd.grad(loss, [keys, mem, h])]

    for got, want in zip(run(True), run(False)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_fairseq_layout_and_uniform_init():
    """recipe=fairseq_wiseman's options: a unidirectional encoder whose final states start the decoder, every
    parameter in U(-r, r) with zero padding embeddings (a cell's own constants, LSTM-b's forget bias, kept), and
    dropout on h~ only, which is then also the fed-back input."""
    torch.manual_seed(0)
    net = Seq2Seq(23, 23, "lstm", emsize=12, nhid=16, nlayers=2, dropout=0.5, pad=PAD, backend="eager",
                  encoder="uni", dropout_at="fairseq", init_range=0.1)
    assert net.enc_bi is None and net.enc_rest.num_layers == 2 and not net.enc_rest.bidirectional
    assert net.recurrent_layers() == [net.enc_rest, net.decoder]
    assert all(p.abs().max() <= 0.1 for p in net.parameters())
    assert net.src_embed.weight[PAD].abs().sum() == 0 and net.tgt_embed.weight[PAD].abs().sum() == 0
    assert min(p.abs().max() for p in net.parameters()) > 0.05  # drawn from the whole range, not left at defaults
    src, n = batch([7, 5])
    memory, keys, mask, state = net.encode(src, n)
    _, (h, c) = net.enc_rest(net.src_embed(src), lengths=n)
    assert torch.equal(state[0], h) and torch.equal(state[1], c)
    # fairseq's dropout: in training the returned h~ (the next step's input feed) is dropped: zeros appear
    net.train()
    feed, *_ = net.decode_step(torch.tensor([4, 5]), memory.new_zeros(2, 16), state, memory, keys, mask)
    assert (feed == 0).any()
    net.eval()
    feed, *_ = net.decode_step(torch.tensor([4, 5]), memory.new_zeros(2, 16), state, memory, keys, mask)
    assert not (feed == 0).any()
    lstm_b = Seq2Seq(23, 23, "lstm_b", emsize=12, nhid=16, nlayers=1, pad=PAD, backend="eager", init_range=0.1)
    assert all(torch.equal(c.b_f, torch.ones_like(c.b_f)) for r in lstm_b.recurrent_layers() for c in r.cells)
    with pytest.raises(ValueError, match="encoder="):
        Seq2Seq(10, 10, "lstm", encoder="left")
    with pytest.raises(ValueError, match="dropout_at="):
        Seq2Seq(10, 10, "lstm", dropout_at="everywhere")


def test_teacher_forcing_frees_each_batch(monkeypatch):
    """No reference cycle through an autograd node: after a batch's backward, its attention memory (and with it the
    encoder's graph) is freed; a cycle kept every batch alive (GBs per epoch, found by a run's memory)."""
    import gc
    import weakref

    from lit_models import attention
    seen = []
    real = attention.StepAttention.__init__

    def spy(self, keys, memory, mask):
        real(self, keys, memory, mask)
        seen.append(weakref.ref(self.keys))

    monkeypatch.setattr(attention.StepAttention, "__init__", spy)
    net = model().train()
    src, n = batch([7, 5, 9])
    tgt = torch.randint(3, 23, (3, 6), generator=torch.Generator().manual_seed(2))
    net.loss(src, n, tgt)[0].backward()
    gc.collect()
    assert len(seen) == 1 and seen[0]() is None
