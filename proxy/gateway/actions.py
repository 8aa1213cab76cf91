"""Each peer's effective action: the stricter of its own (configured, or an
operator's override) and the one [peer_policy] derives from its RMD
standing. Recomputed off the hot path (start, RMD reload, override, SIGHUP);
the screening checks read one dict, replaced whole, per call.

Actions, mildest first: observe (nothing done), label (calls carry the
label), throttle (labelled, and past ``throttle_cps`` calls per second the
peer's calls are answered 503), block (603, every call).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..flood import TokenBuckets
from ..peers import PEER_ACTIONS, UNKNOWN, PeerConfig, PeerDirectory
from .rmd import MISSING, NOT_MITIGATING, UNIDENTIFIED, RmdData, Standing, standing
from .settings import PeerPolicyConfig

log = logging.getLogger("robocall_shield.peers")
LEVEL = {action: i for i, action in enumerate(PEER_ACTIONS)}


@dataclass(frozen=True, slots=True)
class Setting:
    """An action, with its rate when it is "throttle"."""

    action: str
    throttle_cps: float = 0.0

    def text(self) -> str:
        return f"throttle {self.throttle_cps:g}/s" if self.action == "throttle" else self.action


OBSERVE = Setting("observe")


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's action for one peer, in force until cleared."""

    setting: Setting
    reason: str
    actor: str
    at: float  # Unix time


@dataclass(frozen=True, slots=True)
class PeerView:
    """How one peer's effective action came about."""

    peer: PeerConfig
    configured: Setting
    override: Override | None
    standing: Standing
    policy: Setting  # what [peer_policy] makes of the standing
    effective: Setting
    because: str  # which of them decided

    @property
    def own(self) -> Setting:
        """The peer's own action: the override, else the configured one."""
        return self.override.setting if self.override is not None else self.configured


def stricter(a: Setting, b: Setting) -> Setting:
    """The stricter action; of two throttles, the lower rate. Ties keep ``a``."""
    la, lb = LEVEL[a.action], LEVEL[b.action]
    if la != lb:
        return a if la > lb else b
    if a.action == "throttle" and b.throttle_cps < a.throttle_cps:
        return b
    return a


def policy_setting(status: str, policy: PeerPolicyConfig) -> Setting:
    action = {
        MISSING: policy.missing_from_rmd,
        NOT_MITIGATING: policy.not_mitigating,
        UNIDENTIFIED: policy.unidentified,
    }.get(status, "observe")
    return Setting(action, policy.throttle_cps if action == "throttle" else 0.0)


def throttle_burst(cps: float) -> float:
    """One second's worth of calls, and at least one call."""
    return cps if cps > 1.0 else 1.0


class PeerActions:
    """The peers' effective actions and the state the checks keep with them."""

    def __init__(
        self,
        peers: tuple[PeerConfig, ...],
        policy: PeerPolicyConfig,
        overrides: dict[str, Override] | None = None,
    ) -> None:
        self.directory = PeerDirectory(peers)
        self.peers = {p.name: p for p in peers}
        self.policy = policy
        self.overrides: dict[str, Override] = dict(overrides or {})
        self.rmd: RmdData | None = None
        self.rmd_error: str | None = None  # the last failed import, until one succeeds
        self.views: dict[str, PeerView] = {}
        # the hot path's view: name -> setting, for peers not merely observed
        self.enforced: dict[str, Setting] = {}
        # throttle buckets per peer name, and the calls refused by them
        self.buckets: TokenBuckets[str] = TokenBuckets(len(peers) + 1)
        self.throttled: dict[str, int] = dict.fromkeys(self.directory.names, 0)
        self._recompute()

    # -- changes (never on the hot path) -----------------------------------

    def configure(self, policy: PeerPolicyConfig) -> None:
        self.policy = policy
        self._recompute()

    def adopt_rmd(self, data: RmdData) -> None:
        self.rmd = data
        self.rmd_error = None
        self._recompute()

    def drop_rmd(self) -> None:
        """[peer_policy] rmd_file removed: no standing applies any more."""
        self.rmd = None
        self.rmd_error = None
        self._recompute()

    def rmd_failed(self, error: str) -> None:
        """A failed import: the data already loaded stays in force."""
        self.rmd_error = error

    def set_override(self, name: str, override: Override | None) -> None:
        if override is None:
            self.overrides.pop(name, None)
        else:
            self.overrides[name] = override
        self._recompute()

    def adopt_overrides(self, overrides: dict[str, Override]) -> None:
        """Another worker's edits, read from the shared store."""
        self.overrides = {k: v for k, v in overrides.items() if k in self.peers}
        self._recompute()

    def _recompute(self) -> None:
        views: dict[str, PeerView] = {}
        for name, peer in self.peers.items():
            configured = Setting(peer.action, peer.throttle_cps if peer.action == "throttle" else 0)
            override = self.overrides.get(name)
            own = override.setting if override is not None else configured
            found = standing(peer, self.rmd)
            derived = policy_setting(found.status, self.policy)
            effective = stricter(own, derived)
            if effective == own and override is not None:
                because = f"operator override by {override.actor}: {override.reason}"
            elif effective == own:
                because = "configured in [[peers]]"
            else:
                because = f"[peer_policy] for a peer {found.status}: {found.detail}"
            views[name] = PeerView(peer, configured, override, found, derived, effective, because)
        old = self.views
        for name, view in views.items():
            before = old.get(name)
            if before is not None and before.effective != view.effective:
                log.warning(
                    "peer %s: action %s -> %s (%s)",
                    name,
                    before.effective.text(),
                    view.effective.text(),
                    view.because,
                )
            if before is None or before.effective != view.effective:
                self.buckets.entries.pop(name, None)  # a new rate starts with a full bucket
        self.views = views
        self.enforced = {
            name: v.effective for name, v in views.items() if v.effective.action != "observe"
        }

    # -- reads ---------------------------------------------------------------

    def view(self, name: str) -> PeerView | None:
        return self.views.get(name)

    def effective(self, name: str) -> Setting:
        return self.enforced.get(name, OBSERVE)

    def known(self, name: str) -> bool:
        return name in self.peers or name == UNKNOWN
