"""Fuzzing on demand (make fuzz): atheris harnesses and the invariants they
share with the Hypothesis fuzz tests."""
