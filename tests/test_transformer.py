"""The causal transformer: hand-written gradients against autograd, the op order, the targets it
scores, eval mode, and a full AdamW run that resumes exactly."""
import pytest
import torch

from ninjagrad.errors import UsageError
from ninjagrad.models import MODELS, Transformer, TransformerConfig
from ninjagrad.models.transformer import next_char_targets
from ninjagrad.optim import AdamW
from ninjagrad.train import TrainConfig, execute, start_run

from .model_checks import assert_grads_match, op_trace, perturb, resume_matches

SMALL = {"n_embd": 12, "n_head": 3, "n_layer": 2}


def batch(B=16, T=8, V=27, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, V, (B, T), generator=g)
    X[: B // 2, : T // 2] = 0  # word starts: padding targets that must not count
    X[-1] = X[0, -1]  # repeated characters: the embedding's backward must accumulate
    return X, torch.randint(0, V, (B,), generator=g)


def model(dtype=torch.float64, **kw):
    return perturb(Transformer.create(TransformerConfig(**{**SMALL, **kw}), torch.Generator().manual_seed(1),
                                      dtype=dtype), scale=0.1)


def test_default_size():
    m = Transformer.create(TransformerConfig(), torch.Generator().manual_seed(0))
    E, L, V, T = 64, 4, 27, 8
    per_block = 2 * 2 * E + E * 3 * E + 3 * E + E * E + E + E * 4 * E + 4 * E + 4 * E * E + E
    assert m.num_params() == V * E + T * E + L * per_block + 2 * E + E * V + V == 204059
    assert MODELS["transformer"] == (Transformer, TransformerConfig) and Transformer.default_optimizer == "adamw"


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_gradients_match_autograd(dtype, tol):
    X, Y = batch()
    assert_grads_match(model(dtype), X, Y, tol)


def test_other_shapes_match_autograd():
    for kw, B, T in (({"n_head": 1, "n_layer": 1, "block_size": 3}, 5, 3), ({"n_embd": 8, "n_head": 4}, 2, 8)):
        X, Y = batch(B=B, T=T, seed=B)
        assert_grads_match(model(**kw), X, Y, 1e-10)


def test_backward_is_forward_reversed(monkeypatch):
    X, Y = batch()
    fwd, bwd = op_trace(monkeypatch, model(), X, Y)
    assert fwd.count("attention") == 2 and fwd.count("layernorm") == 5 and fwd[-1] == "cross_entropy_masked"
    assert bwd == fwd[::-1]


def test_targets_skip_padding_before_the_word():
    # the windows of "emma" with block_size 4 (e=5, m=13, a=1, '.'=0)
    X = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 5], [0, 0, 5, 13], [0, 5, 13, 13], [5, 13, 13, 1]])
    Y = torch.tensor([5, 13, 13, 1, 0])
    targets, mask = next_char_targets(X, Y)
    assert targets.tolist() == [[0, 0, 0, 5], [0, 0, 5, 13], [0, 5, 13, 13], [5, 13, 13, 1], [13, 13, 1, 0]]
    assert mask.int().tolist() == [[0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_eval_logits_are_the_last_position_of_training():
    """logits(X) is the training forward's last position, so the val loss is the next character
    given the whole window: the same quantity the MLP and WaveNet report."""
    m = model()
    X, Y = batch(B=20)
    full, _ = m._trunk(X)
    head = full @ m.params["Wout"] + m.params["bout"]  # (B, T, V)
    assert torch.allclose(m.logits(X, chunk=7), head[:, -1], rtol=0, atol=1e-12)
    # and the training loss with only the last position counted equals that cross-entropy
    last_only = torch.nn.functional.cross_entropy(head[:, -1], Y)
    assert abs(last_only.item() - torch.nn.functional.cross_entropy(m.logits(X), Y).item()) <= 1e-12


def test_config_errors():
    with pytest.raises(UsageError, match="multiple of --n-head"):
        TransformerConfig(n_embd=10, n_head=4).validate()
    with pytest.raises(UsageError, match="at least 1"):
        TransformerConfig(n_layer=0).validate()


def small_cfg(words, **kw):
    settings = dict(model="transformer", steps=30, batch_size=16, lr=3e-3, data=str(words), checkpoint_every=10,
                    verify_every=7, num_samples=3, model_config={"block_size": 8, **SMALL})
    return TrainConfig(**{**settings, **kw})


def test_full_run_with_adamw_verify_and_resume(small_words, tmp_path):
    straight, resumed = resume_matches(lambda: small_cfg(small_words), tmp_path, stop_at=17)
    assert isinstance(straight.engine.optimizer, AdamW) and straight.engine.optimizer.t == 30
    for k, m in straight.engine.optimizer.m.items():
        assert torch.equal(m, resumed.engine.optimizer.m[k]) and torch.equal(straight.engine.optimizer.v[k],
                                                                          resumed.engine.optimizer.v[k]), k
    summary = execute(straight, show_progress=False)
    assert summary["model"] == "transformer" and len(summary["samples"]) == 3
    assert 1.0 < summary["val_loss"] < 3.4


def test_autograd_engine_takes_the_same_steps(small_words, tmp_path):
    runs = {}
    for engine in ("manual", "autograd"):
        runs[engine] = start_run(small_cfg(small_words, engine=engine, dtype="float64", verify_every=0, steps=15),
                                 str(tmp_path / engine))
        runs[engine].train([])
    a, b = torch.tensor(runs["manual"].losses), torch.tensor(runs["autograd"].losses)
    assert ((a - b).abs() / b).max().item() <= 1e-10
