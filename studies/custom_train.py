"""Your own training code: ablate any setting of a plain PyTorch loop through ``train=fn``.

Hypothesis: on the two-moons toy problem a small MLP needs its non-linearity and enough width,
while dropout and input normalisation barely matter at this size. The training function below is
ordinary PyTorch; ``ablate`` gives it the config, a seed, a device and a checkpoint folder, and
records what it logs. One factor changed at a time, 5 seeds.

    ablate run studies/custom_train.py
    ablate report studies/custom_train.py
"""

import math

import torch
from torch import nn

from ablate import Study


def two_moons(n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    t = torch.rand(n, generator=generator) * math.pi
    label = torch.randint(0, 2, (n,), generator=generator)
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    x = torch.where(label[:, None] == 0, upper, lower)
    return x + noise * torch.randn(x.shape, generator=generator), label


def train(config, run):
    """Any training code: read settings from ``config``, call ``run.log`` once per epoch."""
    data = torch.Generator().manual_seed(1234)  # the same data for every trial
    x, y = two_moons(2000, config["task.noise"], data)
    if config["net.normalize"]:
        x = (x - x.mean(0)) / x.std(0)
    x, y = x.to(run.device), y.to(run.device)
    x_train, y_train, x_val, y_val = x[:1500], y[:1500], x[1500:], y[1500:]
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity}[config["net.activation"]]
    width = config["net.width"]
    model = nn.Sequential(nn.Linear(2, width), act(), nn.Dropout(config["net.dropout"]),
                          nn.Linear(width, width), act(), nn.Linear(width, 2)).to(run.device)
    opt = torch.optim.Adam(model.parameters(), lr=config["opt.lr"])
    start = 0
    state = run.load_checkpoint()  # resume an interrupted trial where it stopped
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"]
    for epoch in range(start, config["opt.epochs"]):
        model.train()
        order = torch.randperm(len(x_train), device=run.device)
        for i in range(0, len(order), 100):
            idx = order[i:i + 100]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = nn.functional.cross_entropy(logits, y_val)
            val_acc = (logits.argmax(1) == y_val).float().mean()
        run.log({"train_loss": loss, "val_loss": val_loss, "val_acc": val_acc}, step=epoch)
        run.save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(),
                             "epoch": epoch + 1})


study = Study(
    "custom-train",
    train=train,
    config={"task.noise": 0.25, "opt.lr": 0.01, "opt.epochs": 15},
    factors={
        "net.activation": ["relu", "tanh", "none"],  # "none": a linear model
        "net.width": [32, 4],
        "net.dropout": [0.0, 0.3],
        "net.normalize": [True, False],
    },
    design="one_at_a_time",
    seeds=5,
    metric="val_acc",
)
