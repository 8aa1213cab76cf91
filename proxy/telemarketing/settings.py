"""The ``[telemarketing]`` config section: which upstream trunks carry
telemarketing, their permitted calling hours at the callee, the National Do
Not Call artefact, and whether the rules block or only observe.

A window is minutes after local midnight, start inclusive and end
exclusive: the TSR's 8:00 a.m. to 9:00 p.m. permits 8:00 and 20:59 and
refuses 7:59 and 21:00.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config_table import MODES, ConfigError, Table

# hours = "tsr": the Telemarketing Sales Rule, 16 CFR 310.4(c)
# hours = "dnd": the narrower window configured for the proposed Do Not Disturb Act
PRESETS: dict[str, tuple[int, int]] = {"tsr": (8 * 60, 21 * 60), "dnd": (9 * 60, 17 * 60)}
CUSTOM = "custom"  # hours given as start and end


@dataclass(frozen=True, slots=True)
class TelemarketingConfig:
    trunks: frozenset[str] = frozenset()  # [[peers]] names whose calls are telemarketing
    hours: str = "tsr"  # a PRESETS name, or CUSTOM
    start: int = PRESETS["tsr"][0]  # minutes after local midnight, inclusive
    end: int = PRESETS["tsr"][1]  # exclusive
    dnc_dir: str = ""  # artefact directory from `blocklist build dnc:FILE ...`; "": none
    watch_interval: float = 5.0  # seconds between looks at the DNC manifest; 0: never
    mode: str = "enforce"

    @property
    def enabled(self) -> bool:
        return bool(self.trunks)


def parse_telemarketing(t: Table, peer_names: Iterable[str]) -> TelemarketingConfig:
    """``peer_names``: the names declared in ``[[peers]]``; every trunk must be one."""
    d = TelemarketingConfig()
    declared = frozenset(peer_names)
    trunks = t.strings("trunks", ())
    for i, name in enumerate(trunks):
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none declared"
            raise ConfigError(
                f"{t.key('trunks')}[{i}]", f"{name!r} is not a [[peers]] name ({known})"
            )
    explicit = "start" in t.data or "end" in t.data
    if explicit and "hours" in t.data:
        raise ConfigError(t.key("hours"), "give either hours or start and end, not both")
    hours = t.string("hours", d.hours, tuple(PRESETS))
    start, end = PRESETS[hours]
    if explicit:
        hours = CUSTOM
        start = _clock(t, "start")
        end = _clock(t, "end")
        if start >= end:
            raise ConfigError(t.key("end"), "must be later in the day than start")
    cfg = TelemarketingConfig(
        trunks=frozenset(trunks),
        hours=hours,
        start=start,
        end=end,
        dnc_dir=t.string("dnc_dir", d.dnc_dir),
        watch_interval=t.number("watch_interval", d.watch_interval, 0.0, 3600.0),
        mode=t.string("mode", d.mode, MODES),
    )
    t.done()
    if cfg.dnc_dir and not cfg.trunks:
        raise ConfigError(t.key("dnc_dir"), "set trunks too: the list applies to their calls only")
    return cfg


def _clock(t: Table, name: str) -> int:
    """'HH:MM' as minutes after midnight; '24:00' is the end of the day."""
    if name not in t.data:
        raise ConfigError(t.key(name), "start and end go together: give both")
    text = t.string(name, "")
    hh, sep, mm = text.partition(":")
    ok = sep and len(hh) == 2 and len(mm) == 2 and (hh + mm).isascii() and (hh + mm).isdigit()
    minutes = int(hh) * 60 + int(mm) if ok else -1
    if not ok or int(mm) > 59 or not 0 <= minutes <= 24 * 60:
        raise ConfigError(t.key(name), f"expected a time HH:MM from 00:00 to 24:00, got {text!r}")
    return minutes


def clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
