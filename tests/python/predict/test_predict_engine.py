"""PredictEngine: a small classifier trained here (on a data set made from
a fixed seed), exported to TorchScript with its config beside it; served
answers equal the PyTorch module's, concurrent requests share batches;
every bad input is an InvalidParameter naming the input, the shape
expected and the shape received; a bad config names its file and field."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch

from modelbench.engine.errors import InvalidParameter
from modelbench.predict import PredictEngine, QueueFull, is_tensor_model, load_config

LABELS = ["left", "middle", "right"]


def train(path: Path, seed: int = 0) -> torch.nn.Module:
    """Three clusters in 4-D, a two-layer network fitted to them (``seed``
    draws the data and the initial weights: each seed, another network)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[-2.0, 0, 0, 1], [0, 2.0, 0, -1], [2.0, 0, 1, 0]])
    y = torch.randint(0, 3, (300,), generator=g)
    x = centers[y] + 0.5 * torch.randn(300, 4, generator=g)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Softmax(dim=1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(x) + 1e-9), y)
        loss.backward()
        opt.step()
    model.eval()
    torch.jit.script(model).save(str(path))
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "inputs": [{"name": "features", "dtype": "float32", "shape": [-1, 4]}],
                "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, 3]}],
                "labels": LABELS,
                "dynamic_batching": {"max_batch_size": 16, "max_queue_delay_us": 5000},
            }
        )
    )
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    path = tmp_path_factory.mktemp("predict") / "clusters.pt"
    return train(path), path


def test_answers_equal_the_module_one_at_a_time_and_batched(
    trained: tuple[torch.nn.Module, Path],
) -> None:
    module, path = trained
    assert is_tensor_model(path) and not is_tensor_model(path.with_suffix(".json"))
    engine = PredictEngine(path)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1)) * 2
    with torch.inference_mode():
        expected = module(x)

    async def main() -> list:
        alone = [await engine.predict({"features": x[i].tolist()}) for i in range(4)]
        together = await asyncio.gather(
            *(engine.predict({"features": x[i : i + 1]}) for i in range(32))
        )
        several = await engine.predict({"features": x[:5].tolist()})
        return [alone, together, several]

    try:
        alone, together, several = asyncio.run(main())
    finally:
        engine.shutdown()
    for i, out in enumerate(alone):  # one row each, sent without the batch dimension
        assert torch.allclose(out.outputs["probabilities"][0], expected[i], atol=1e-6)
    for i, out in enumerate(together):
        assert torch.allclose(out.outputs["probabilities"][0], expected[i], atol=1e-6)
        assert out.class_ids == [int(expected[i].argmax())]
        assert out.labels == [LABELS[out.class_ids[0]]]
        assert out.confidences[0] == pytest.approx(float(expected[i].max()), abs=1e-6)
    assert several.class_ids == [int(r.argmax()) for r in expected[:5]]
    stats = engine.stats()
    assert stats.num_batches < 4 + 32 + 1  # the gathered ones shared batches


@pytest.mark.parametrize(
    ("inputs", "param", "says"),
    [
        (
            {"features": [1.0, 2.0, 3.0]},
            "inputs.features",
            "has shape [1, 3]; the model expects [any, 4]",
        ),
        ({"features": [[1.0] * 4] * 17}, "inputs.features", "1 to 16 per request"),
        ({"feature": [1.0] * 4}, "inputs.feature", "unknown input 'feature'"),
        ({}, "inputs", "input name -> values"),
        ({"features": [[1.0, 2.0], [3.0]]}, "inputs.features", "not a rectangular array"),
    ],
)
def test_bad_inputs_name_the_input(
    trained: tuple[torch.nn.Module, Path], inputs: dict, param: str, says: str
) -> None:
    engine = PredictEngine(trained[1])
    try:
        with pytest.raises(
            InvalidParameter, match=says.replace("[", r"\[").replace("]", r"\]")
        ) as info:
            engine.check_inputs(inputs)
        assert info.value.param == param
    finally:
        engine.shutdown()


def test_a_full_queue_refuses(trained: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    path = tmp_path / "slow.pt"
    path.write_bytes(trained[1].read_bytes())
    config = json.loads(trained[1].with_suffix(".json").read_text())
    config["dynamic_batching"] = {
        "max_batch_size": 16,
        "max_queue_delay_us": 2_000_000,
        "max_queue_size": 1,
    }
    path.with_suffix(".json").write_text(json.dumps(config))
    engine = PredictEngine(path)

    async def main() -> None:
        first = asyncio.ensure_future(engine.predict({"features": [0.0] * 4}))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull, match="queue is full"):
            await engine.predict({"features": [0.0] * 4})
        assert (await first).class_ids

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"inputs": [], "outputs": [{"name": "y", "shape": [-1]}]}, "inputs"),
        (
            {"inputs": [{"name": "x", "shape": [4]}], "outputs": [{"name": "y", "shape": [-1]}]},
            "must be -1",
        ),
        (
            {
                "inputs": [{"name": "x", "shape": [-1, 4]}],
                "outputs": [{"name": "y", "shape": [-1, 3]}],
                "labels": ["a"],
            },
            "1 labels for 3 classes",
        ),
        (
            {
                "inputs": [{"name": "x", "shape": [-1], "dtype": "complex"}],
                "outputs": [{"name": "y", "shape": [-1]}],
            },
            "dtype",
        ),
    ],
)
def test_a_bad_config_names_its_file_and_field(tmp_path: Path, config: dict, says: str) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    model.with_suffix(".json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=says) as info:
        load_config(model)
    assert "m.json" in str(info.value)
    (tmp_path / "lonely.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="has no config: write lonely.json"):
        load_config(tmp_path / "lonely.pt")
