"""Character language model: GRU vs LSTM vs a plain RNN, and how long a BPTT window?

Hypothesis (fast.ai lesson 6): gated cells (GRU, LSTM) model text far better than a plain RNN at
the same size, and a longer truncated-BPTT window helps because the hidden state carries over
between windows anyway. A stateful model (the hidden state is kept across windows and detached
after each backward pass) trained with Adam on an SGDR schedule; every cell x window length
(full factorial, 3 x 2 = 6 variants), 2 seeds. Judged by validation bits per character.

Data: any UTF-8 text file via ``--set data.path=...`` (the lesson used Nietzsche's *Beyond Good
and Evil*); by default the source of Python's standard library, which exists on every machine.

    ablate run studies/charlm_rnn.py --set data.path=nietzsche.txt
    ablate report studies/charlm_rnn.py --set data.path=nietzsche.txt
"""

from ablate import Study
from ablate.data import text
from ablate.models import CharRNN

study = Study(
    "charlm-rnn",
    model=CharRNN,
    data=text,
    config={
        "data.path": None,  # None: the offline default corpus
        "data.max_chars": 300_000,
        "data.batch_size": 64,  # parallel streams of text
        "model.n_fac": 42,  # embedding size
        "model.n_hidden": 128,
        "model.n_layers": 1,
        "train.epochs": 3,
        "train.optimizer": "adam",
        "train.lr": 3e-3,
        "train.weight_decay": 0.0,
        "train.schedule": "sgdr",
        "train.grad_clip": 1.0,
    },
    factors={
        "model.cell": ["lstm", "gru", "rnn"],
        "data.bptt": [32, 8],
    },
    design="full_factorial",
    seeds=2,
    metric="val_bpc",
)
