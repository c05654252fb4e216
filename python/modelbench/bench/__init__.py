"""The benchmark harness: workloads, targets, the runner, vLLM's metric
definitions, stored runs and reports."""
