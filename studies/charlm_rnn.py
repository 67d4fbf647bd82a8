"""Character language model: a plain RNN vs GRU vs LSTM, and how long a BPTT window?

Hypothesis (fast.ai lesson 6): gated cells (GRU, LSTM) model text better than a plain RNN of
the same size, and a longer truncated-BPTT window helps less than one might think, because the
hidden state carries over between windows anyway. A stateful model (the hidden state is kept
across windows and detached after each backward pass), with the course's settings for its RNN
and GRU rows: a 42-dim character embedding, 256 hidden units, one layer, batch 64 (parallel
streams), Adam; here every cell x window (full factorial, 3 x 2 = 6 variants), 8 epochs on a
one-cycle schedule, 2 seeds. Judged by validation bits per character.

Data: Nietzsche's *Beyond Good and Evil*, the lesson's corpus (``text(name="nietzsche")``:
downloaded once into ``~/.cache/ablate`` and checked against its SHA-256); any UTF-8 text with
``--set data.path=...``. The course reached 2.14 bpc (RNN, BPTT 8), 1.98 (GRU) and 1.90 (a
2-layer 512-unit LSTM with dropout, 15 epochs).

    ablate run studies/charlm_rnn.py
    ablate report studies/charlm_rnn.py
"""

from ablate import Study
from ablate.data import text
from ablate.models import CharRNN

study = Study(
    "charlm-rnn",
    model=CharRNN,
    data=text,
    config={
        "data.name": "nietzsche",
        "data.max_chars": None,  # the whole corpus (600,901 characters)
        "data.batch_size": 64,  # parallel streams of text
        "model.n_fac": 42,  # embedding size
        "model.n_hidden": 256,
        "model.n_layers": 1,
        "train.epochs": 8,
        "train.optimizer": "adam",
        "train.lr": 3e-3,
        "train.weight_decay": 0.0,
        "train.schedule": "onecycle",
        "train.grad_clip": 1.0,
    },
    factors={
        "model.cell": ["rnn", "gru", "lstm"],
        "data.bptt": [8, 32],
    },
    design="full_factorial",
    seeds=2,
    metric="val_bpc",
)
