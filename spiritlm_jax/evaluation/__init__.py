"""Evaluation: likelihood-pair benchmarks, few-shot tasks, STSP."""
