"""The C++ TensorModel: a TorchScript classifier behind the dynamic batcher.
Outputs equal the PyTorch module's, batched and one at a time, with
batching on and off; a full queue refuses; a request that times out waiting
fails; a failing batch fails only its own requests; shutdown fails what
waits; a file that is not TorchScript is a ValueError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelbench import _core


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if bool((x > 1e6).any()):
            raise RuntimeError("input out of range")
        logits = self.net(x)
        return logits, torch.softmax(logits, dim=1)


@pytest.fixture(scope="module")
def module_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[Classifier, Path]:
    torch.manual_seed(0)
    module = Classifier().eval()
    path = tmp_path_factory.mktemp("tensor") / "classifier.pt"
    torch.jit.script(module).save(str(path))
    return module, path


def batching(
    max_batch_size: int, delay_us: int = 2000, queue: int = 1024, enabled: bool = True
) -> _core.DynamicBatcherConfig:
    config = _core.DynamicBatcherConfig()
    config.max_batch_size = max_batch_size
    config.max_queue_delay_us = delay_us
    config.max_queue_size = queue
    config.enabled = enabled
    return config


def collect(model: _core.TensorModel, n: int) -> dict[int, _core.TensorResult]:
    got: dict[int, _core.TensorResult] = {}
    while len(got) < n:
        results = model.wait_results(10.0)
        assert results, "no result within 10 s"
        got.update({r.ticket: r for r in results})
    return got


@pytest.mark.parametrize("enabled", [False, True])
def test_outputs_equal_the_module_batched_and_one_at_a_time(
    module_path: tuple[Classifier, Path], enabled: bool
) -> None:
    module, path = module_path
    model = _core.TensorModel(str(path), 1, 2, "cpu", batching(16, enabled=enabled))
    x = torch.randn(48, 16)
    with torch.inference_mode():
        logits, probs = module(x)
    # One row per request, then requests of 3 rows: split back exactly.
    tickets = {model.submit([x[i : i + 1]]): (i, 1) for i in range(24)}
    tickets |= {model.submit([x[i : i + 3]]): (i, 3) for i in range(24, 48, 3)}
    got = collect(model, len(tickets))
    for ticket, (i, rows) in tickets.items():
        result = got[ticket]
        assert result.error == ""
        assert torch.allclose(result.outputs[0], logits[i : i + rows], atol=1e-6)
        assert torch.allclose(result.outputs[1], probs[i : i + rows], atol=1e-6)
    stats = model.stats()
    assert stats.num_batched_rows == 48
    if not enabled:
        assert stats.num_batches == 24 + 8
    else:
        assert stats.num_batches < 24 + 8  # requests shared batches
    assert torch.allclose(model.run_one([x])[0], logits, atol=1e-6)
    model.shutdown()


def test_a_failing_batch_fails_only_its_requests(module_path: tuple[Classifier, Path]) -> None:
    _, path = module_path
    model = _core.TensorModel(str(path), 1, 2, "cpu", batching(4, enabled=False))
    good = model.submit([torch.zeros(1, 16)])
    bad = model.submit([torch.full((1, 16), 1e7)])
    after = model.submit([torch.ones(1, 16)])
    got = collect(model, 3)
    assert got[good].error == "" and got[after].error == ""
    assert "input out of range" in got[bad].error
    assert model.stats().num_failed == 1
    model.shutdown()


def test_queue_bound_timeout_and_shutdown(module_path: tuple[Classifier, Path]) -> None:
    _, path = module_path
    # One long wait for company: requests queue up behind the delay.
    model = _core.TensorModel(str(path), 1, 2, "cpu", batching(64, delay_us=3_000_000, queue=2))
    first = model.submit([torch.zeros(1, 16)], 0.05)
    second = model.submit([torch.zeros(1, 16)])
    assert first > 0 and second > 0
    assert model.submit([torch.zeros(1, 16)]) == -1  # full: the caller answers 429
    got = collect(model, 1)
    assert got[first].timed_out and "timed out" in got[first].error
    model.shutdown()
    rest = model.wait_results(5.0)
    assert [r.ticket for r in rest] == [second]
    assert "shutting down" in rest[0].error


def test_bad_input_and_bad_files(module_path: tuple[Classifier, Path], tmp_path: Path) -> None:
    _, path = module_path
    model = _core.TensorModel(str(path), 1, 2, "cpu", batching(4))
    with pytest.raises(ValueError, match="takes 1 inputs, got 2"):
        model.submit([torch.zeros(1, 16), torch.zeros(1, 16)])
    with pytest.raises(ValueError, match="max_batch_size"):
        model.submit([torch.zeros(5, 16)])
    model.shutdown()
    (tmp_path / "not.pt").write_text("hello")
    with pytest.raises(ValueError, match="cannot load the TorchScript file"):
        _core.TensorModel(str(tmp_path / "not.pt"), 1, 1)
    bad = batching(4)
    bad.preferred_batch_sizes = [8]
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        _core.TensorModel(str(path), 1, 2, "cpu", bad)
