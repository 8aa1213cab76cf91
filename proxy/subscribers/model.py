"""A subscriber's blocking service, as the hot path reads it: immutable
values in a dict keyed by the integer E.164 number."""

from __future__ import annotations

from dataclasses import dataclass

from ..sip.numbers import e164_key

POLICIES = ("off", "label", "block-high-confidence", "block-all-suspected")
LISTS = ("allow", "block")
MAX_LIST_ENTRIES = 1000  # per subscriber and list


class InvalidField(ValueError):
    """A value a subscriber or operator sent that cannot be stored."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class PersonalList:
    numbers: frozenset[int] = frozenset()
    prefixes: tuple[str, ...] = ()  # E.164 digit prefixes, without '+'

    def matches(self, key: int) -> bool:
        if key in self.numbers:
            return True
        if self.prefixes:
            digits = str(key)
            return any(digits.startswith(p) for p in self.prefixes)
        return False

    def entries(self) -> list[str]:
        return sorted(f"+{n}" for n in self.numbers) + sorted(f"+{p}*" for p in self.prefixes)

    def __len__(self) -> int:
        return len(self.numbers) + len(self.prefixes)


EMPTY = PersonalList()


@dataclass(frozen=True, slots=True)
class Profile:
    """What screening reads for one callee: the index maps the number to one
    of these. Profiles without personal lists are interned, so a million
    subscribers share a handful of objects (memory, and start-up time)."""

    opted_in: bool = False
    policy: str = "label"
    reject_anonymous: bool = False
    allow: PersonalList = EMPTY
    block: PersonalList = EMPTY


_INTERNED: dict[tuple[bool, str, bool], Profile] = {}


def profile_of(
    opted_in: bool, policy: str, reject_anonymous: bool,
    allow: PersonalList = EMPTY, block: PersonalList = EMPTY,
) -> Profile:  # fmt: skip
    if allow is EMPTY and block is EMPTY:
        key = (opted_in, policy, reject_anonymous)
        p = _INTERNED.get(key)
        if p is None:
            p = _INTERNED[key] = Profile(opted_in, policy, reject_anonymous)
        return p
    return Profile(opted_in, policy, reject_anonymous, allow, block)


@dataclass(frozen=True, slots=True)
class Subscriber:
    number: int
    opted_in: bool = False
    policy: str = "label"
    reject_anonymous: bool = False
    allow: PersonalList = EMPTY
    block: PersonalList = EMPTY

    @classmethod
    def of(cls, number: int, p: Profile) -> Subscriber:
        return cls(number, p.opted_in, p.policy, p.reject_anonymous, p.allow, p.block)

    def profile(self) -> Profile:
        return profile_of(self.opted_in, self.policy, self.reject_anonymous, self.allow, self.block)

    def public(self) -> dict[str, object]:
        return {
            "number": f"+{self.number}",
            "opted_in": self.opted_in,
            "policy": self.policy,
            "reject_anonymous": self.reject_anonymous,
            "allow": self.allow.entries(),
            "block": self.block.entries(),
        }


def parse_number(text: object, field: str = "number") -> int:
    if not isinstance(text, str) or len(text) > 32:
        raise InvalidField(field, "expected a telephone number as a string")
    key = e164_key(text.strip())
    if key is None:
        raise InvalidField(field, f"{text[:32]!r} is not a telephone number (E.164 or NANP)")
    return key


def parse_entry(text: object, field: str) -> tuple[str, int | str]:
    """A list entry: a number, or a prefix written with a trailing '*'
    (``+1900*``). Returns ("number", key) or ("prefix", digits)."""
    if not isinstance(text, str) or not text.strip() or len(text) > 32:
        raise InvalidField(field, "expected a number or a prefix like +1900*")
    text = text.strip()
    if text.endswith("*"):
        digits = text[:-1].lstrip("+")
        if not (digits.isascii() and digits.isdigit()) or not 1 <= len(digits) <= 15:
            raise InvalidField(field, f"{text!r} is not a prefix like +1900*")
        if not text.startswith("+"):
            raise InvalidField(field, f"{text!r}: write prefixes in E.164 form, like +1900*")
        return "prefix", digits
    return "number", parse_number(text, field)


def build_list(entries: list[str]) -> PersonalList:
    numbers: set[int] = set()
    prefixes: set[str] = set()
    for i, text in enumerate(entries):
        kind, value = parse_entry(text, f"[{i}]")
        if kind == "number":
            numbers.add(int(value))
        else:
            prefixes.add(str(value))
    if not numbers and not prefixes:
        return EMPTY
    return PersonalList(frozenset(numbers), tuple(sorted(prefixes)))
