"""The example tensor model: a digit classifier trained on scikit-learn's
digits (8x8 images, 1,797 of them, shipped inside the package), exported
to TorchScript with its config beside it.

    python -m modelbench.predict.example digits.pt   # trains in seconds; digits.pt + .json
    modelbench serve --model digits.pt
    curl localhost:8000/v1/predict -d '{"model": "digits", "features": [0, 0, 5, 13, ...]}'

Needs scikit-learn (``pip install scikit-learn``) for the data only; the
network is a PyTorch MLP (64 -> 64 -> 10, softmax).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


class Scale(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits as float32 [1797, 64] pixel values in 0..16, and their labels."""
    try:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped, unused-ignore]
    except ImportError as e:
        raise RuntimeError(
            "the example's data comes from scikit-learn: pip install scikit-learn"
        ) from e
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    return x, torch.tensor(data.target, dtype=torch.long)


def train_digits(out: str | Path, epochs: int = 60, seed: int = 0) -> dict[str, float]:
    """Train on 80% of the digits, write ``out`` (TorchScript) and its
    config beside it; returns the held-out accuracy."""
    torch.manual_seed(seed)
    x, y = digits()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(x))
    train_idx, test_idx = order[:split], order[split:]
    model = torch.nn.Sequential(
        Scale(1 / 16),  # pixels 0..16 as sent, to 0..1
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
        torch.nn.Softmax(dim=1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for batch in torch.split(train_idx[torch.randperm(split)], 64):
            opt.zero_grad()
            loss = torch.nn.functional.nll_loss(torch.log(model(x[batch]) + 1e-9), y[batch])
            loss.backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        accuracy = float((model(x[test_idx]).argmax(1) == y[test_idx]).float().mean())
    out = Path(out)
    torch.jit.script(model).save(str(out))
    config = {
        "inputs": [{"name": "features", "dtype": "float32", "shape": [-1, 64]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, 10]}],
        "labels": [str(d) for d in range(10)],
        "dynamic_batching": {
            "max_batch_size": 64,
            "preferred_batch_sizes": [16, 32],
            "max_queue_delay_us": 1000,
        },
    }
    out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    return {"held_out_accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description="Train and export the example digit classifier.")
    parser.add_argument("out", help="the TorchScript file to write (its .json config beside it)")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    result = train_digits(args.out, args.epochs)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}: {result}")


if __name__ == "__main__":
    main()
