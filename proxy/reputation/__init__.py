"""Reputation: scores from complaints, traffic patterns and attestation."""

from .engine import Assessment, ReputationEngine
from .settings import POLICIES, SIGNALS, ReputationConfig

__all__ = ["POLICIES", "SIGNALS", "Assessment", "ReputationConfig", "ReputationEngine"]
