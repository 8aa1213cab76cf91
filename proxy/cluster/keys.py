"""Redis key names. Each is one stream, and every command the link sends
touches one key, so nothing spans hash slots; the ``{...}`` hash tag keeps a
stream's key on one slot of a Redis Cluster, and the streams on different
slots."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    traffic: str  # counter batches from every node
    subscribers: str  # subscriber changes
    blocklists: str  # artefact versions nodes loaded
    disputes: str  # disputes filed and resolved (stores of their own)

    @classmethod
    def of(cls, prefix: str) -> Keys:
        return cls(
            traffic=f"{prefix}:{{traffic}}:rows",
            subscribers=f"{prefix}:{{subscribers}}:changes",
            blocklists=f"{prefix}:{{blocklists}}:versions",
            disputes=f"{prefix}:{{disputes}}:events",
        )

    def all(self) -> tuple[str, ...]:
        return (self.traffic, self.subscribers, self.blocklists, self.disputes)
