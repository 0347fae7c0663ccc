"""Tests for repgeo.probe: layer selection, hooks, pooling, the collect driver (real tiny models)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
)

from repgeo.probe import (
    CallbackSink,
    MemorySink,
    Probe,
    collect,
    glob_match,
    iter_features,
    list_layers,
    pool,
    resolve_layers,
    stream_pairs,
    tokenize_texts,
    unwrap_model,
)

H = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


VOCAB = 120


def tiny_bert(seed: int = 0, hidden: int = H, layers: int = 2, cls: type = BertModel) -> nn.Module:
    torch.manual_seed(seed)
    cfg = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return cls(cfg).eval()


def tiny_opt(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = OPTConfig(
        hidden_size=H,
        num_hidden_layers=2,
        ffn_dim=37,
        num_attention_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        word_embed_proj_dim=H,
        pad_token_id=1,
    )
    return OPTForCausalLM(cfg).eval()


def tiny_llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=H,
        num_hidden_layers=2,
        intermediate_size=37,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Forward hooks per module. transformers 5 installs its own output-recording hooks on the first
    ``output_hidden_states=True`` call, so compare counts after such a warm-up call."""
    return {n: len(m._forward_hooks) for n, m in model.named_modules()}


def warm(model: nn.Module, batch: dict) -> dict[str, int]:
    with torch.no_grad():
        model(**batch, output_hidden_states=True)
    return hook_counts(model)


def make_seqs(lengths: list[int], seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, VOCAB, (n,), generator=g) for n in lengths]


def pad_batch(seqs: list[torch.Tensor], side: str, pad_id: int = 0, positions: bool = False) -> dict:
    """Hand-built batch: input_ids and attention_mask padded on ``side`` (plus position_ids that
    count real tokens only, for absolute-position models such as BERT)."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(n - len(s), n)
        ids[i, sl] = s
        mask[i, sl] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if positions:
        batch["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
    return batch


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(6, 16)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(16, 8)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.act(self.fc2(self.act(self.fc1(x))))))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


# ---------------------------------------------------------------------------------------------- select


def test_glob_does_not_cross_dots_and_double_star_does():
    bert = tiny_bert()
    names = [ly.name for ly in resolve_layers(bert, "encoder.layer.*.output")]
    assert names == ["encoder.layer.0.output", "encoder.layer.1.output"]
    deep = [ly.name for ly in resolve_layers(bert, "encoder.**.output")]
    assert "encoder.layer.0.attention.output" in deep and "encoder.layer.1.output" in deep
    assert glob_match("a.**", "a.b.c") and not glob_match("a.*", "a.b.c")


def test_selection_order_dedup_and_index_normalisation():
    bert = tiny_bert()
    got = resolve_layers(bert, ["encoder.layer.1", -1, 2, "encoder.layer.*", "hidden_states.0"])
    assert [ly.name for ly in got] == ["encoder.layer.1", "hidden_states.2", "encoder.layer.0", "hidden_states.0"]
    assert got[1].index == 2 and got[0].index is None


def test_no_match_lists_close_names_and_index_range():
    bert = tiny_bert()
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\.output"):
        resolve_layers(bert, "encoder.layer.0.outptu")
    with pytest.raises(ValueError, match=r"glob.*Closest names"):
        resolve_layers(bert, "encoder.layers.*.output")
    with pytest.raises(ValueError, match=r"valid indices -3\.\.2"):
        resolve_layers(bert, 3)
    with pytest.raises(ValueError, match=r"valid indices -3\.\.2"):
        resolve_layers(bert, -4)
    with pytest.raises(TypeError):
        resolve_layers(bert, [1.5])


def test_unwrap_dataparallel_and_compile_and_prefixed_names():
    mlp = MLP()
    dp = nn.DataParallel(mlp)
    assert unwrap_model(dp) is mlp
    assert [ly.name for ly in resolve_layers(dp, "module.fc2")] == ["fc2"]
    compiled = torch.compile(mlp)
    assert unwrap_model(nn.DataParallel(compiled)) is mlp
    x = torch.randn(7, 6)
    ref = collect(mlp, [x], ["fc1", "fc2"], "none", progress=False)
    for wrapped in (dp, compiled):
        got = collect(wrapped, [x], ["fc1", "fc2"], "none", progress=False)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k])


def test_unwrap_distributed_data_parallel(tmp_path):
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        mlp = MLP()
        ddp = nn.parallel.DistributedDataParallel(mlp)
        assert unwrap_model(ddp) is mlp
        x = torch.randn(4, 6)
        got = collect(ddp, [x], "module.fc2", "none", progress=False)
        np.testing.assert_array_equal(got["fc2"], collect(mlp, [x], "fc2", "none", progress=False)["fc2"])
    finally:
        dist.destroy_process_group()


def test_list_layers_shapes():
    bert = tiny_bert()
    batch = pad_batch(make_seqs([5, 3]), "right")
    hooks = warm(bert, batch)
    layers = dict(list_layers(bert, batch))
    assert layers["encoder.layer.0.output"] == (2, 5, H)
    assert layers["encoder.layer.0.attention"] == (2, 5, H)  # tuple output: first tensor
    assert layers["pooler"] == (2, H)
    assert layers["hidden_states.2"] == (2, 5, H)
    assert "hidden_states.3" not in layers
    assert hook_counts(bert) == hooks
    mlp_layers = list_layers(CNN(), torch.randn(2, 3, 8, 8))
    assert mlp_layers == [
        ("features", (2, 4, 4, 4)),
        ("features.0", (2, 4, 8, 8)),
        ("features.1", (2, 4, 8, 8)),
        ("features.2", (2, 4, 4, 4)),
        ("head", (2, 5)),
    ]


@pytest.mark.parametrize(
    ("builder", "final_norm", "last_block"),
    [
        (tiny_bert, None, "encoder.layer.1"),
        (tiny_opt, "model.decoder.final_layer_norm", "model.decoder.layers.1"),
        (tiny_llama, "model.norm", "model.layers.1"),
    ],
)
def test_hidden_states_convention_per_architecture(builder, final_norm, last_block):
    """hidden_states[-1]: BERT = last block output (no final norm); OPT/Llama = final norm output
    (the raw last block output is in no hidden_states entry); hidden_states[1] = block 0 output."""
    model = builder()
    first_block = last_block[:-1] + "0"
    names = [0, 1, -1, first_block, last_block] + ([final_norm] if final_norm else [])
    batch = pad_batch(make_seqs([6, 4]), "right", pad_id=1)
    f = collect(model, [batch], names, "tokens", progress=False)
    np.testing.assert_array_equal(f["hidden_states.1"], f[first_block])
    if final_norm is None:
        np.testing.assert_array_equal(f["hidden_states.2"], f[last_block])
    else:
        np.testing.assert_array_equal(f["hidden_states.2"], f[final_norm])
        assert not np.allclose(f["hidden_states.2"], f[last_block])
    # and against the model's own output_hidden_states=True
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
    assert len(hs) == 3
    m = batch["attention_mask"].bool()
    np.testing.assert_array_equal(f["hidden_states.2"], hs[-1][m].numpy())
    np.testing.assert_array_equal(f["hidden_states.0"], hs[0][m].numpy())


# ---------------------------------------------------------------------------------------------- pooling


def test_pool_against_explicit_loops():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    tmask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 0], [0, 0, 1, 0, 1]]).bool()
    for tm in (None, tmask):
        eff = mask.bool() if tm is None else mask.bool() & tm
        rows = [np.nonzero(eff[b].numpy())[0] for b in range(3)]
        H_ = h.numpy()
        np.testing.assert_allclose(pool(h, mask, "mean", tm).numpy(), [H_[b, r].mean(0) for b, r in enumerate(rows)])
        np.testing.assert_array_equal(pool(h, mask, "cls", tm).numpy(), [H_[b, r[0]] for b, r in enumerate(rows)])
        np.testing.assert_array_equal(pool(h, mask, "last", tm).numpy(), [H_[b, r[-1]] for b, r in enumerate(rows)])
        np.testing.assert_array_equal(
            pool(h, mask, "tokens", tm).numpy(), np.concatenate([H_[b, r] for b, r in enumerate(rows)])
        )
    assert pool(h, mask, "mean").dtype == torch.float64
    assert pool(h.half(), mask, "mean").dtype == torch.float32
    assert pool(h.bfloat16(), None, "tokens").shape == (15, 4)
    np.testing.assert_array_equal(pool(torch.ones(2, 3, 4, 4), None, "none").numpy(), np.ones((2, 48)))


def test_pool_errors():
    h = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        pool(h, torch.tensor([[1, 0, 0], [0, 0, 0]]), "mean")
    with pytest.raises(ValueError, match="expected \\(2, 3\\)"):
        pool(h, torch.ones(2, 4), "mean")
    with pytest.raises(ValueError, match="pooling='none'"):
        pool(torch.randn(2, 4), None, "mean")
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(h, None, "max")


def test_half_precision_is_pooled_in_float32():
    h = torch.full((1, 4096, 2), 1.0009765625, dtype=torch.float16)  # fp16 sum would overflow/round
    out = pool(h, None, "mean")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 2), 1.0009765625))


@pytest.mark.parametrize("arch", ["bert", "opt", "llama"])
def test_left_and_right_padding_agree_on_real_models(arch):
    seqs = make_seqs([7, 3, 5])
    if arch == "bert":
        model, pad_id, pos = tiny_bert(), 0, True  # absolute positions: pass position_ids
    elif arch == "opt":
        model, pad_id, pos = tiny_opt(), 1, False  # OPT derives positions from the attention mask
    else:
        model, pad_id, pos = tiny_llama(), 0, True
    layers = [-1, 1]
    for pooling in ("cls", "mean", "last", "tokens"):
        right = collect(model, [pad_batch(seqs, "right", pad_id, pos)], layers, pooling, progress=False)
        left = collect(model, [pad_batch(seqs, "left", pad_id, pos)], layers, pooling, progress=False)
        unpadded = {k: [] for k in right}
        for s in seqs:
            one = collect(model, [pad_batch([s], "right", pad_id, pos)], layers, pooling, progress=False)
            for k in one:
                unpadded[k].append(one[k])
        for k in right:
            np.testing.assert_allclose(left[k], right[k], atol=2e-5, rtol=1e-4)
            np.testing.assert_allclose(right[k], np.concatenate(unpadded[k]), atol=2e-5, rtol=1e-4)


def test_token_mask_selects_response_tokens_causal_lm():
    model = tiny_opt()
    seqs = make_seqs([6, 4])
    for side in ("left", "right"):
        batch = pad_batch(seqs, side, pad_id=1)
        # "response" = last two real tokens of each row
        am = batch["attention_mask"]
        rank_from_end = am.flip(1).cumsum(1).flip(1)
        batch["token_mask"] = (rank_from_end <= 2) & am.bool()
        f = collect(model, [batch], [-1], "tokens", progress=False)["hidden_states.2"]
        last = collect(model, [batch], [-1], "last", progress=False)["hidden_states.2"]
        full = collect(model, [pad_batch(seqs, side, pad_id=1)], [-1], "tokens", progress=False)["hidden_states.2"]
        assert f.shape == (4, H)
        np.testing.assert_allclose(f, full[[4, 5, 8, 9]], atol=2e-5)
        np.testing.assert_allclose(last, f[[1, 3]], atol=2e-5)


# ---------------------------------------------------------------------------------------------- collect


def test_collect_bert_matches_hidden_states_and_modeloutput_tuple_outputs():
    model = tiny_bert(cls=BertForSequenceClassification)
    batches = [pad_batch(make_seqs([5, 2, 4], seed=s), "right") for s in (1, 2)]
    names = ["bert.encoder", "bert.encoder.layer.0.attention", "bert.encoder.layer.0.attention.output", 1, 2]
    f = collect(model, batches, names, "mean", progress=False)
    assert set(f) == {"bert.encoder", "bert.encoder.layer.0.attention",
                      "bert.encoder.layer.0.attention.output", "hidden_states.1", "hidden_states.2"}  # fmt: skip
    assert all(v.shape == (6, H) and v.dtype == np.float32 for v in f.values())
    np.testing.assert_array_equal(f["bert.encoder"], f["hidden_states.2"])  # ModelOutput -> first tensor
    np.testing.assert_array_equal(f["bert.encoder.layer.0.attention"], f["bert.encoder.layer.0.attention.output"])
    expected = []
    for b in batches:
        with torch.no_grad():
            hs = model(**b, output_hidden_states=True).hidden_states[1].numpy()
        m = b["attention_mask"].numpy()
        expected.append((hs * m[..., None]).sum(1) / m.sum(1, keepdims=True))
    np.testing.assert_allclose(f["hidden_states.1"], np.concatenate(expected), rtol=1e-6, atol=1e-6)


def test_early_stop_skips_later_modules_and_gives_same_features():
    model = tiny_bert(cls=BertForSequenceClassification)
    calls = []
    handle = model.classifier.register_forward_hook(lambda *a: calls.append(1))
    batch = pad_batch(make_seqs([5, 3]), "right")
    early = collect(model, [batch], "bert.encoder.layer.0.output", "cls", progress=False)
    assert calls == []
    full = collect(model, [batch], "bert.encoder.layer.0.output", "cls", progress=False, stop_early=False)
    assert calls == [1]
    np.testing.assert_array_equal(early["bert.encoder.layer.0.output"], full["bert.encoder.layer.0.output"])
    handle.remove()
    # hidden_states need the full pass: early stop is disabled automatically
    with Probe(model, ["bert.encoder.layer.0", 1]) as p:
        assert not p.stop_early
        out = p(batch)
    np.testing.assert_array_equal(out["bert.encoder.layer.0"], out["hidden_states.1"])


def test_train_state_restored_and_hooks_removed_on_error():
    model = tiny_bert()
    hooks = warm(model, pad_batch(make_seqs([3, 2]), "right"))
    model.train()
    model.encoder.layer[1].eval()
    before = {n: m.training for n, m in model.named_modules()}

    class Boom(Exception):
        pass

    def batches():
        yield pad_batch(make_seqs([3, 2]), "right")
        raise Boom

    seen = []
    with pytest.raises(Boom):
        collect(model, batches(), "encoder.layer.*", sink=CallbackSink(lambda i, f: seen.append(model.training)))
    assert seen == [False]  # eval mode during the pass
    assert {n: m.training for n, m in model.named_modules()} == before
    assert hook_counts(model) == hooks
    assert torch.is_grad_enabled()


def test_dropout_is_off_and_grad_mode_not_leaked():
    mlp = MLP().train()
    x = torch.randn(4, 6)
    it = iter_features(mlp, [x, x], "drop", "none")
    a = next(it)["drop"]
    assert torch.is_grad_enabled()  # generator consumer keeps its grad mode
    b = next(it)["drop"]
    it.close()
    assert torch.equal(a, b) and not a.requires_grad
    assert mlp.training


def test_inplace_relu_does_not_alter_captured_linear_output():
    mlp = MLP()
    x = torch.randn(9, 6)
    f = collect(mlp, [x], ["fc1", "fc2"], "none", progress=False)
    with torch.no_grad():
        ref1 = mlp.fc1(x)
        ref2 = mlp.fc2(torch.relu(ref1))
    assert (ref1 < 0).any()
    np.testing.assert_allclose(f["fc1"], ref1.numpy(), rtol=1e-6)
    np.testing.assert_allclose(f["fc2"], ref2.numpy(), rtol=1e-6)


def test_cnn_and_tuple_batches():
    cnn = CNN()
    xs = [torch.randn(3, 3, 8, 8), torch.randn(2, 3, 8, 8)]
    f = collect(cnn, xs, ["features.1", "head"], "none", progress=False)
    assert f["features.1"].shape == (5, 4 * 8 * 8) and f["head"].shape == (5, 5)
    with torch.no_grad():
        ref = torch.cat([cnn(x) for x in xs]).numpy()
    np.testing.assert_allclose(f["head"], ref, rtol=1e-6)
    g = collect(cnn, [(x,) for x in xs], "head", "none", progress=False)
    np.testing.assert_array_equal(g["head"], f["head"])
    with pytest.raises(ValueError, match=r"layer 'head'.*pooling='none'"):
        collect(cnn, xs, "head", "mean", progress=False)


class _NoTensor(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        return (None, "meta")


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.meta = _NoTensor()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.meta(x)
        return self.lin(x)


def test_hooked_module_without_tensor_errors_clearly():
    net = _Net()
    with pytest.raises(TypeError, match="'meta' returned no tensor"):
        collect(net, [torch.randn(2, 3)], "meta", "none", progress=False)
    assert not net.meta._forward_hooks


def test_memory_sink_float16_and_progress_bar():
    mlp = MLP()
    x = torch.randn(5, 6)
    f = collect(mlp, [x], "fc2", "none", sink=MemorySink("float16"), progress=True)
    assert f["fc2"].dtype == np.float16
    with torch.no_grad():
        np.testing.assert_array_equal(f["fc2"], mlp.fc2(mlp.act(mlp.fc1(x))).numpy().astype(np.float16))


def test_opt_and_llama_causal_lm_last_token_matches_logits_path():
    for model in (tiny_opt(), tiny_llama()):
        batch = pad_batch(make_seqs([5, 2, 4]), "left", pad_id=1)
        f = collect(model, [batch], ["lm_head", -1], "last", progress=False)
        with torch.no_grad():
            logits = model(**batch).logits[:, -1]  # left padding: last position is the last token
        np.testing.assert_allclose(f["lm_head"], logits.numpy(), rtol=1e-5, atol=1e-6)
        assert f["hidden_states.2"].shape == (3, H)


# ---------------------------------------------------------------------------------------------- stream


class XtY:
    """A tiny streaming accumulator with the ``.update(X, Y)`` interface."""

    def __init__(self) -> None:
        self.xty = None
        self.n = 0

    def update(self, X, Y) -> None:
        X, Y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)
        self.xty = X.T @ Y if self.xty is None else self.xty + X.T @ Y
        self.n += X.shape[0]


def test_stream_pairs_equals_in_memory_products():
    teacher, student = tiny_bert(0), tiny_bert(1, hidden=24, layers=1)
    batches = [pad_batch(make_seqs([4, 6, 2], seed=s), "right") for s in range(3)]
    pairs = [(-1, -1), ("encoder.layer.0.output", "encoder.layer.0.output")]
    acc = stream_pairs(teacher, student, batches, pairs, XtY, pooling="tokens", progress=False)
    assert set(acc) == {("hidden_states.2", "hidden_states.1"), ("encoder.layer.0.output", "encoder.layer.0.output")}
    T = collect(teacher, batches, [-1, "encoder.layer.0.output"], "tokens", progress=False)
    S = collect(student, batches, [-1, "encoder.layer.0.output"], "tokens", progress=False)
    a = acc[("hidden_states.2", "hidden_states.1")]
    assert a.n == 36 and a.xty.shape == (H, 24)
    np.testing.assert_allclose(
        a.xty.numpy(), T["hidden_states.2"].astype(np.float64).T @ S["hidden_states.1"], rtol=1e-9
    )
    with pytest.raises(ValueError, match="matches 2 layers"):
        stream_pairs(teacher, student, batches, [("encoder.layer.*", -1)], XtY, progress=False)


# ---------------------------------------------------------------------------------------------- tokenise


def _tokenizer() -> BertTokenizerFast:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"the cat sat on a mat dog ran far away".split()]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})


def test_tokenize_texts_truncation_padding_and_empty():
    tok = _tokenizer()
    texts = ["the cat sat", "a dog ran far far far away", "the mat", "dog"]
    with pytest.warns(UserWarning, match="1 of 4 texts were truncated to max_length=6"):
        tt = tokenize_texts(tok, texts, batch_size=3, max_length=6, padding_side="left")
    assert tt.truncated == [1] and tt.n_truncated == 1 and len(tt) == 2 and tt.n_texts == 4
    b0 = tt.batches[0]
    assert b0["input_ids"].shape == (3, 6)
    assert b0["attention_mask"][2].tolist() == [0, 0, 1, 1, 1, 1]  # left padded
    assert b0["input_ids"][1, -1].item() == tok.sep_token_id  # truncation keeps [SEP]
    assert tok.padding_side == "right"  # restored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        right = tokenize_texts(tok, texts, batch_size=3, max_length=16, padding_side="right")
    assert right.n_truncated == 0
    model = tiny_bert()
    f = collect(model, right, [-1], "cls", progress=False)
    assert f["hidden_states.2"].shape == (4, H)
    with pytest.raises(ValueError, match=r"empty text\(s\) at indices \[1, 3\]"):
        tokenize_texts(tok, ["a", " ", "b", ""])
    with pytest.raises(TypeError):
        tokenize_texts(tok, "the cat")
    tok.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        tokenize_texts(tok, ["a"])
