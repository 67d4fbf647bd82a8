import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.models import CharRNN, get_rnn_cell

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
VOCAB = 20


def small_rnn(cell: str = "lstm", **kwargs) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(**{"vocab_size": VOCAB, "n_fac": 6, "n_hidden": 12, "cell": cell, **kwargs})


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell", CELLS)
def test_forward_backward(cell):
    net = small_rnn(cell, dropout=0.2)
    assert type(net.rnn) is CELLS[cell] and net.rnn.batch_first
    x = torch.randint(0, VOCAB, (3, 7))
    logits = net(x)
    assert logits.shape == (3, 7, VOCAB)
    F.cross_entropy(logits.flatten(0, 1), torch.randint(0, VOCAB, (21,))).backward()
    assert net.embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cell", CELLS)
def test_state_is_detached_between_windows(cell):
    """Backward through window k stops at its start: the graph does not grow with k."""
    net = small_rnn(cell)
    fed_states = []
    net.rnn.register_forward_pre_hook(lambda _, args: fed_states.append(args[1]))
    for k in range(6):
        # Even windows use ids 0..9, odd windows ids 10..19.
        x = torch.randint(0, VOCAB // 2, (4, 5)) + (k % 2) * (VOCAB // 2)
        net.zero_grad()
        F.cross_entropy(net(x).flatten(0, 1), torch.randint(0, VOCAB, (20,))).backward()
        grad = net.embedding.weight.grad
        used = slice(0, VOCAB // 2) if k % 2 == 0 else slice(VOCAB // 2, VOCAB)
        previous = slice(VOCAB // 2, VOCAB) if k % 2 == 0 else slice(0, VOCAB // 2)
        assert grad[used].abs().sum() > 0
        assert torch.count_nonzero(grad[previous]) == 0  # window k-1's tokens get no gradient
    assert fed_states[0] is None  # the first window starts from zeros
    for state in fed_states[1:]:
        tensors = as_tuple(state)
        assert len(tensors) == (2 if cell == "lstm" else 1)
        assert all(t.grad_fn is None and not t.requires_grad for t in tensors)


@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_over_and_resets(cell):
    net = small_rnn(cell).eval()
    x = torch.randint(0, VOCAB, (4, 5))
    first = net(x)
    assert not torch.allclose(net(x), first)  # the second window continues the first
    net.reset_state()
    assert net.hidden is None
    torch.testing.assert_close(net(x), first)  # a reset state is a zero state


@pytest.mark.parametrize("cell", CELLS)
def test_state_reset_when_batch_size_changes(cell):
    net = small_rnn(cell).eval()
    net(torch.randint(0, VOCAB, (4, 5)))
    last = torch.randint(0, VOCAB, (3, 5))  # the last, short batch
    out = net(last)
    assert all(t.shape[1] == 3 for t in as_tuple(net.hidden))
    net.reset_state()
    torch.testing.assert_close(out, net(last))


@pytest.mark.parametrize("cell", CELLS)
def test_state_is_not_in_state_dict(cell):
    net = small_rnn(cell)
    keys = set(net.state_dict())
    net(torch.randint(0, VOCAB, (2, 3)))
    assert net.hidden is not None
    assert set(net.state_dict()) == keys
    assert not any("hidden" in key for key in keys)
    assert list(net.buffers()) == []


@pytest.mark.parametrize("cell", CELLS)
def test_generate(cell):
    net = small_rnn(cell, n_layers=1)
    net.train()
    net(torch.randint(0, VOCAB, (4, 5)))  # leave a state behind
    prompt = torch.tensor([1, 2, 3])

    def sample(seed: int) -> torch.Tensor:
        return net.generate(prompt, 40, generator=torch.Generator().manual_seed(seed))

    ids = sample(0)
    assert ids.shape == (40,) and ids.dtype == torch.long
    assert 0 <= ids.min() and ids.max() < VOCAB
    assert net.training and net.hidden is None
    assert torch.equal(sample(0), ids)
    assert not torch.equal(sample(1), ids)
    assert net.generate(prompt, 0).shape == (0,)
    net.eval()
    net.generate(prompt, 3, temperature=0.5)
    assert not net.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(vocab_size=0), "vocab_size must be a positive int, got 0"),
        (dict(n_fac=0), "n_fac must be a positive int"),
        (dict(n_hidden=-1), "n_hidden must be a positive int"),
        (dict(n_layers=0), "n_layers must be a positive int"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), r"dropout must be in \[0, 1\)"),
        (
            dict(cell="transformer"),
            "unknown cell 'transformer'; valid choices: 'rnn', 'gru', 'lstm'",
        ),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_rnn(**kwargs)


@pytest.mark.parametrize(
    ("prompt", "kwargs", "match"),
    [
        ([[1, 2]], {}, "prompt must be a non-empty 1-D tensor"),
        ([], {}, "prompt must be a non-empty 1-D tensor"),
        ([1], dict(length=-1), "length must be >= 0"),
        ([1], dict(temperature=0.0), "temperature must be > 0"),
    ],
)
def test_generate_invalid_arguments_raise(prompt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_rnn().generate(torch.tensor(prompt, dtype=torch.long), **{"length": 3, **kwargs})


def test_cell_resolver_accepts_classes():
    assert get_rnn_cell("GRU") is nn.GRU
    assert get_rnn_cell(nn.LSTM) is nn.LSTM
    assert isinstance(small_rnn(nn.GRU).rnn, nn.GRU)
