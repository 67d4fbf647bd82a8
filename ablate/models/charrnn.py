"""The fast.ai lesson-6 stateful character-level language model."""

from typing import Literal

import torch
from torch import nn

from ablate.models.layers import ModuleFactory, get_rnn_cell

State = torch.Tensor | tuple[torch.Tensor, ...]


def _repackage(state: State | None, batch_size: int) -> State | None:
    """fast.ai's ``repackage_var``: cut ``state`` from the previous window's autograd graph.

    ``state`` is a tensor ``[n_layers, B, n_hidden]`` or a tuple of them (LSTM's ``(h, c)``).
    Returns ``None`` (the recurrent layer then starts from zeros) when there is no state or its
    batch size differs from ``batch_size``.
    """
    if state is None:
        return None
    tensors = state if isinstance(state, tuple) else (state,)
    if tensors[0].size(1) != batch_size:
        return None
    detached = tuple(t.detach() for t in tensors)
    return detached if isinstance(state, tuple) else detached[0]


class CharRNN(nn.Module):
    """Stateful multi-output character model (fast.ai's ``CharSeqStatefulRnn`` / ``...LSTM``).

    ``embedding (vocab_size -> n_fac) -> recurrent layers -> dropout -> linear (-> vocab_size)``,
    predicting the next character at every position. The recurrent state carries over between
    calls, so consecutive BPTT windows of the same batch rows continue each other; it is detached
    at the start of each forward (truncated BPTT), reset to zeros when the batch size changes and
    by :meth:`reset_state`. It is a plain attribute, not a buffer, so it stays out of
    ``state_dict()`` and is not moved by ``.to()``: reset it after moving the model.

    Args:
        vocab_size: Number of distinct character ids.
        n_fac: Embedding size.
        n_hidden: Hidden size of each recurrent layer.
        n_layers: Number of stacked recurrent layers.
        cell: ``"rnn"``, ``"gru"`` or ``"lstm"``, or a class/callable, see :func:`get_rnn_cell`.
        dropout: Dropout on the output of every recurrent layer (between layers, as fast.ai's
            ``nn.LSTM(..., dropout=...)``, and before the decoder); 0 disables it.

    Raises:
        ValueError: On a non-positive size, ``dropout`` outside ``[0, 1)`` or an unknown cell.
    """

    hidden: State | None

    def __init__(
        self,
        *,
        vocab_size: int = 128,
        n_fac: int = 42,
        n_hidden: int = 256,
        n_layers: int = 2,
        cell: Literal["rnn", "gru", "lstm"] | ModuleFactory = "lstm",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        rnn_cls = get_rnn_cell(cell)
        for name, value in [
            ("vocab_size", vocab_size),
            ("n_fac", n_fac),
            ("n_hidden", n_hidden),
            ("n_layers", n_layers),
        ]:
            if value < 1:
                raise ValueError(f"{name} must be a positive int, got {value}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        self.embedding = nn.Embedding(vocab_size, n_fac)
        # Inter-layer dropout only exists with 2+ layers (PyTorch warns otherwise).
        self.rnn = rnn_cls(
            n_fac, n_hidden, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = nn.Linear(n_hidden, vocab_size)
        self.hidden = None

    def reset_state(self) -> None:
        """Forget the recurrent state; the next forward starts from zeros."""
        self.hidden = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ids ``[B, T]`` (LongTensor) to next-character logits ``[B, T, vocab_size]``."""
        out, self.hidden = self.rnn(self.embedding(x), _repackage(self.hidden, x.size(0)))
        return self.decoder(self.dropout(out))

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        length: int,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Sample ``length`` characters following ``prompt``, in eval mode from a fresh state.

        The training mode is restored and the state reset afterwards, so this can be called in
        the middle of training.

        Args:
            prompt: Non-empty 1-D LongTensor of character ids.
            length: Number of ids to sample.
            generator: Random generator for ``torch.multinomial`` (on the model's device), for
                reproducible samples.
            temperature: Softmax temperature (> 0); lower is greedier.

        Returns:
            The ``length`` sampled ids (1-D LongTensor, without the prompt).
        """
        if prompt.dim() != 1 or prompt.numel() == 0:
            raise ValueError(f"prompt must be a non-empty 1-D tensor, got shape {prompt.shape}")
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        was_training = self.training
        self.eval()
        self.reset_state()
        try:
            ids = prompt.to(self.decoder.weight.device)[None]
            generated = ids.new_empty(length)
            for i in range(length):
                probs = torch.softmax(self(ids)[0, -1] / temperature, dim=-1)
                generated[i] = torch.multinomial(probs, 1, generator=generator)
                ids = generated[i : i + 1][None]
        finally:
            self.train(was_training)
            self.reset_state()
        return generated
