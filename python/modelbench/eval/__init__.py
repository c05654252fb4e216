"""Execution-verified quality: the sandbox, HumanEval, pass@k and verify."""
