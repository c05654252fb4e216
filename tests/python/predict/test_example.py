"""The example that ships: the digit classifier trained on scikit-learn's
digits, exported, served. Its held-out accuracy is a real classifier's; the
served outputs equal the PyTorch module's on the same inputs, one at a time
and batched (PredictEngine, and POST /v1/predict on a real server)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from modelbench.config import Settings
from modelbench.predict import PredictEngine
from modelbench.predict.example import digits, train_digits

from ..server.conftest import free_port, run_server


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    path = tmp_path_factory.mktemp("digits") / "digits.pt"
    result = train_digits(path, epochs=30)
    return path, result["held_out_accuracy"]


def test_the_example_classifies_digits(exported: tuple[Path, float]) -> None:
    path, accuracy = exported
    assert accuracy > 0.9
    assert path.with_suffix(".json").is_file()


def test_served_outputs_equal_the_module(exported: tuple[Path, float], tmp_path: Path) -> None:
    path, _ = exported
    module = torch.jit.load(str(path))
    x, y = digits()
    sample = x[:40]
    with torch.inference_mode():
        expected = module(sample)
    engine = PredictEngine(path)

    async def main() -> list:
        alone = [await engine.predict({"features": sample[i].tolist()}) for i in range(8)]
        batched = await asyncio.gather(
            *(engine.predict({"features": sample[i].tolist()}) for i in range(40))
        )
        return alone + list(batched)

    try:
        outs = asyncio.run(main())
    finally:
        engine.shutdown()
    for i, out in enumerate(outs):
        row = i if i < 8 else i - 8
        assert torch.allclose(out.outputs["probabilities"][0], expected[row], atol=1e-6)
    settings = Settings(
        model=str(path), port=free_port(), database_url=f"sqlite:///{tmp_path / 'store.db'}"
    )
    with run_server(settings, path) as server:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda i: httpx.post(
                        f"{server.base_url}/v1/predict",
                        json={"model": "digits", "features": sample[i].tolist()},
                        timeout=60,
                    ).json(),
                    range(40),
                )
            )
    for i, body in enumerate(answers):
        got = torch.tensor(body["outputs"]["probabilities"][0])
        assert torch.allclose(got, expected[i], atol=1e-5)
        assert body["label"] == [str(int(expected[i].argmax()))]
    correct = sum(a["class_id"][0] == int(y[i]) for i, a in enumerate(answers))
    assert correct >= 36  # 40 training digits: a classifier that learned them
