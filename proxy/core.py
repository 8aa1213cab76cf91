"""The stateless screening proxy (RFC 3261 §16.11), sans-I/O.

Bytes and the current time go in; ``Event`` objects come out, ``Send``
among them. The edges in ``proxy.transport`` do the actual I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from .addressing import (
    bracket,
    is_sos,
    received_via,
    reply_address,
    uri_address,
)
from .branch import COOKIE, deterministic_branch, digest
from .config import Config, RedressConfig, SwitchConfig
from .events import (
    Address,
    AwaitCertificate,
    CallOutcome,
    Dropped,
    Event,
    Forwarded,
    KernelDrop,
    Limited,
    Malformed,
    PingAnswered,
    Received,
    Replied,
    Screened,
    Send,
    Shed,
)
from .flood import BAN, FloodGuard
from .peers import PeerDirectory
from .relay import (
    drop_top_via,
    next_hop,
    privacy_requested,
    relay_response,
    reserialize_request,
    splice_request,
)
from .reputation import ReputationEngine
from .routing import SwitchPool
from .screening import Action, Pipeline, Screening, Verdict
from .sip import (
    CallFacts,
    SipParseError,
    SipRequest,
    SipResponse,
    build_response,
    call_facts,
    parse_datagram,
    parse_name_addr,
    serialize_request,
)
from .sip.grammar import split_commas
from .sip.message import SipMessage
from .sip.via import parse_via_value
from .transactions import RecentTransactions

if TYPE_CHECKING:
    from .stir.checker import StirVerifier
    from .stir.verify import Verification

PASSED, FAILED = "TN-Validation-Passed", "TN-Validation-Failed"
# [stir] reject_failed: the verdict recorded for a call refused with 438
REJECTED_IDENTITY = Screening(
    Verdict(Action.BLOCK, 100, ("stir-failed",), sip_status=438), "stir"
)

ROUTABLE_SCHEMES = frozenset(("sip", "sips", "tel"))
SCREENED_METHODS = frozenset(("INVITE", "MESSAGE"))
DIALOG_METHODS = frozenset(("INVITE", "SUBSCRIBE", "REFER", "NOTIFY"))
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, PRACK, UPDATE, INFO, REFER, NOTIFY, SUBSCRIBE"
def blocked_reason(redress: RedressConfig) -> str:
    """The Reason header of a 603+ response, as ATIS-1000099 defines it."""
    text = "v=analytics1"
    for key, value in (("tel", redress.tel), ("url", redress.url), ("email", redress.email)):
        if value:
            text += f";{key}={value}"
    return f'SIP;cause=603;text="{text}";location=RLN'


class StatelessProxy:
    def __init__(
        self,
        cfg: Config,
        pipeline: Pipeline,
        pool: SwitchPool,
        nonce: str,
        reputation: ReputationEngine | None = None,
        timer: Callable[[], float] | None = None,
    ) -> None:
        self.cfg = cfg
        # an injected monotonic clock, only to measure how long screening
        # takes; decisions never read it
        self.timer = timer
        # share of new calls admitted, set by the worker's overload guard; the
        # rest get 503 (emergency calls never)
        self.admit = 1.0
        self._credit = 0.0
        self.reputation = reputation  # fed every INVITE, final response and BYE it sees
        self.recent = RecentTransactions()  # screened lately, by branch
        self.stir: StirVerifier | None = None  # set by the worker when [stir] is enabled
        self.pipeline = pipeline
        self.pool = pool
        self.host = bracket(cfg.sip.public_host)
        self.port = cfg.sip.port
        # the port in our health checks' Via: a worker sharing the SIP port
        # with siblings pings from a socket of its own, so the answer comes
        # back to it and not to whichever sibling the kernel picks
        self.ping_port = self.port
        # ports that are us in a Via, Route or Request-URI: the SIP port and,
        # with [sip] worker_port_base, the worker's own (self.port is then that)
        self.tls_port = cfg.sip.tls_port  # SIP over TLS; 0: off
        self.local_ports = frozenset(p for p in (self.port, self.tls_port) if p)
        self.local_hosts = frozenset((bracket(cfg.sip.host), self.host))
        self.switch_hosts = frozenset(s.host for s in cfg.switches)
        # who may send requests: the [[peers]] (and the switches, always);
        # None when every source is accepted
        self.gate = (
            PeerDirectory(cfg.peers)
            if cfg.peers and cfg.sip.unknown_sources != "accept"
            else None
        )
        self.drop_strangers = self.gate is not None and cfg.sip.unknown_sources == "drop"
        self.trusted_hops = {(s.host, s.port): s.trusted for s in cfg.switches}
        self.flood = (
            FloodGuard(cfg.flood, cfg.peers, self.switch_hosts) if cfg.flood.enabled else None
        )
        self.limits = cfg.sip.limits
        self.apply_policy(cfg, pipeline)
        self.nonce = nonce
        # Our To-tags start with this; other stacks' tags hardly ever look so.
        self._tag_prefix = f"rs{digest(nonce)[:10]}-"
        self._own_tag = f";tag={self._tag_prefix}".encode()  # see _tag
        self._ping_seq = 0

    def apply_policy(self, cfg: Config, pipeline: Pipeline) -> None:
        """Swap in screening policy (lists, label, redress) from a reloaded
        config. Each attribute is replaced whole, so a message in flight sees
        either the old policy or the new one."""
        self.cfg = cfg
        self.pipeline = pipeline
        self.reason_603 = blocked_reason(cfg.redress)
        self.verdict_header = cfg.screening.verdict_header
        self.verdict_key = self.verdict_header.lower()
        self.label = cfg.screening.label_text

    # -- entry points ----------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> list[Event]:
        over: int | None = None
        flood = self.flood
        if flood is not None and not flood.reply:
            # [flood]: an over-limit datagram is dropped unparsed, unless it may
            # be a new emergency call (only an INVITE or MESSAGE can be)
            over = flood.ip(source.host, now)
            if over and not data.startswith((b"INVITE ", b"MESSAGE ")):
                return self._ip_limited(over, source, "drop")
        if self.drop_strangers and data[:8] != b"SIP/2.0 " and self._stranger(source):
            # silence for a stranger's request costs no parse (after the flood
            # count above, so a flooding stranger can still be dropped in the kernel)
            return [Dropped("unknown-source", source.host)]
        if data[:4] == b"ACK " and self._own_tag in data:
            # The ACK of a response of ours (its To-tag starts with our nonce):
            # absorbed without parsing, which matters most while shedding.
            return [Received("request", "ACK"), Dropped("ack-absorbed")]
        try:
            msg = parse_datagram(data, self.limits)
        except SipParseError as exc:
            return self.reject(exc, source)
        if msg is None:
            return []
        return self.receive_message(msg, source, now, over=over)

    def receive_message(
        self,
        msg: SipMessage,
        source: Address,
        now: float,
        waited: bool = False,
        over: int | None = None,
    ) -> list[Event]:
        """``waited``: offered again after waiting for its certificate
        (AwaitCertificate); counted when it first arrived. ``over``: the
        [flood] per-IP verdict, when receive_datagram has taken it."""
        flood = self.flood
        if flood is not None and not waited:
            if over is None:
                over = flood.ip(source.host, now)
            if over:
                limited = self._flood_ip(msg, source, now, over, flood.reply)
                if limited is not None:
                    return limited
        if isinstance(msg, SipResponse):
            received = Received("response", msg.cseq_method, msg.status)
            return [received, *self._response(msg, source, now)]
        try:
            if waited:
                return self._request(msg, source, now, waited)
            return [Received("request", msg.method), *self._request(msg, source, now)]
        except SipParseError as exc:  # a header parsed lazily turned out malformed
            exc.headers, exc.is_request = msg.headers, True
            return self.reject(exc, source)

    def reject(self, exc: SipParseError, source: Address) -> list[Event]:
        """Answer a malformed request when its top Via is usable; else drop."""
        bad = Malformed(exc.status, exc.reason)
        if not exc.is_request or not exc.headers:
            return [bad, Dropped("malformed", exc.reason)]
        if self.cfg.sip.unknown_sources == "drop" and self._stranger(source):
            return [bad, Dropped("unknown-source", source.host)]  # silence means silence
        via_value = next((v for k, _, v in exc.headers if k == "via"), None)
        cseq = next((v for k, _, v in exc.headers if k == "cseq"), "")
        if cseq.rstrip().upper().endswith(" ACK"):
            return [bad, Dropped("malformed", exc.reason)]
        try:
            first = split_commas(via_value)[0] if via_value else None
            top = parse_via_value(first, any_version=True) if first else None
        except SipParseError:
            top = None
        if top is None:
            return [bad, Dropped("malformed", exc.reason)]
        call_id = next((v for k, _, v in exc.headers if k == "call-id"), "")
        from_tag = _raw_tag(next((v for k, _, v in exc.headers if k == "from"), ""))
        to_value = next((v for k, _, v in exc.headers if k == "to"), None)
        needs_tag = to_value is not None and _raw_tag(to_value) is None
        data = build_response(
            exc.headers,
            exc.status,
            _REASONS.get(exc.status, "Bad Request"),
            to_tag=self._tag(call_id, from_tag, top.branch) if needs_tag else None,
            top_via=received_via(top, source),
        )
        return [bad, Send(reply_address(top, source), data), Replied(exc.status, "?")]

    def pings(self, now: float) -> list[Event]:
        """OPTIONS health checks that are due now."""
        out: list[Event] = []
        for state in self.pool.due_pings(now):
            sw = state.cfg
            self._ping_seq += 1
            call_id = f"rs-ping-{self.nonce}-{self._ping_seq}@{self.host}"
            headers = [
                (
                    "Via",
                    f"SIP/2.0/UDP {self.host}:{self.ping_port};branch={COOKIE}rsping"
                    + digest(call_id),
                ),
                ("Max-Forwards", "70"),
                ("From", f"<sip:robocall-shield@{self.host}:{self.port}>;tag={self.nonce}"),
                ("To", f"<sip:{bracket(sw.host)}:{sw.port}>"),
                ("Call-ID", call_id),
                ("CSeq", f"{self._ping_seq} OPTIONS"),
            ]
            data = serialize_request("OPTIONS", f"sip:{bracket(sw.host)}:{sw.port}", headers, b"")
            self.pool.ping_sent(state, call_id, now)
            out.append(Send(Address(sw.host, sw.port, sw.transport), data))
        return out

    # -- requests --------------------------------------------------------

    def _request(
        self, req: SipRequest, source: Address, now: float, waited: bool = False
    ) -> list[Event]:
        top = req.vias[0]
        top_via = received_via(top, source)
        method = req.method

        screened: str | None = None  # the Call-ID of a call reputation is tracking

        def reply(status: int, reason: str, extra: tuple[tuple[str, str], ...] = ()) -> list[Event]:
            if screened is not None and self.reputation is not None:
                self.reputation.forget(screened)  # answered here: no outcome to learn from
            if method == "ACK":
                return [Dropped("ack-not-forwardable", f"{status} {reason}")]
            new_tag = self._tag(req.call_id, req.from_.tag, top.branch) if initial else None
            data = build_response(
                req.headers, status, reason, to_tag=new_tag, top_via=top_via, extra=extra
            )
            return [Send(reply_address(top, source), data), Replied(status, method)]

        initial = req.to.tag is None
        if (
            method == "ACK"
            and not initial
            and req.to.tag == self._tag(req.call_id, req.from_.tag, top.branch)
        ):
            return [Dropped("ack-absorbed")]
        if self._stranger(source):
            if method == "ACK" or self.cfg.sip.unknown_sources == "drop":
                return [Dropped("unknown-source", source.host)]
            return reply(403, "Forbidden (unknown source)")
        if req.uri.scheme not in ROUTABLE_SCHEMES and not is_sos(req.uri):
            return reply(416, "Unsupported URI Scheme")
        call: CallFacts | None = None
        if initial and method in SCREENED_METHODS:
            call = call_facts(req, source.host, now)
            # Shedding comes first: while overloaded, a refused call must
            # cost as little as possible (see proxy.overload).
            if (
                self.admit < 1.0
                and not self._admitted()
                and not is_sos(req.uri)
                and not self._emergency(call)
            ):
                return [Shed(method), *reply(503, "Service Unavailable", (("Retry-After", "5"),))]
            flood = self.flood
            if (
                flood is not None
                and call.caller_key is not None
                and not flood.caller(call.caller_key, now)
                and not is_sos(req.uri)
                and not self._emergency(call)
            ):
                if not flood.reply:
                    return [Limited("caller", "drop")]
                retry = (("Retry-After", str(flood.cfg.retry_after)),)
                return [Limited("caller", "503"), *reply(503, "Service Unavailable", retry)]
        branch, loop_part = deterministic_branch(req)
        for via in req.vias:
            if self._is_us(via.host, via.port) and (via.branch or "").endswith(loop_part):
                return reply(482, "Loop Detected")
        to_us = req.uri.user is None and self._is_us(req.uri.host, req.uri.port)
        if req.max_forwards == 0:
            if method == "OPTIONS" and to_us:
                return reply(200, "OK", (("Allow", ALLOW),))
            return reply(483, "Too Many Hops")
        if method not in ("ACK", "CANCEL"):
            unsupported = req.header_values("proxy-require")
            if unsupported:
                return reply(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
        if method == "OPTIONS" and to_us and req.to.tag is None:
            return reply(200, "OK", (("Allow", ALLOW),))
        try:
            routes = [parse_name_addr(v) for v in req.header_values("route")]
        except SipParseError:
            return reply(400, "Bad Route")
        popped = 0
        while popped < len(routes) and self._is_us(
            routes[popped].uri.host, routes[popped].uri.port
        ):
            popped += 1

        events: list[Event] = []
        label: Verdict | None = None
        verstat: str | None = None
        verified: Verification | None = None
        if call is not None and self.stir is not None:
            checked = self.stir.verify(req, call, now, may_wait=not waited)
            if isinstance(checked, str):  # its certificate is being fetched
                return [AwaitCertificate(checked, req, source)]
            verified = checked
        # a retransmission of a transaction screened lately (told once the
        # call is screened, not while its certificate is being fetched)
        repeat = call is not None and self.recent.repeat(hash(branch), now)
        if call is not None and self.stir is not None and verified is not None:
            verstat = verified.outcome.value
            passed = verstat == PASSED
            call = replace(
                call,
                verified=verstat,
                verify_reason=verified.reason,
                attest=verified.attest if passed else call.attest,
            )
            if verstat == FAILED and self.stir.cfg.reject_failed:
                events.append(Screened(call, REJECTED_IDENTITY, Action.BLOCK, repeat=repeat))
                return events + reply(438, "Invalid Identity Header")
            if not self.stir.cfg.verstat:
                verstat = None
        if call is not None:
            if self.reputation is not None and not repeat:
                self.reputation.record(call)
                screened = req.call_id  # recorded now: forget it if answered here
            timer = self.timer
            started = timer() if timer is not None else 0.0
            result = self.pipeline.screen(call)
            elapsed = timer() - started if timer is not None else 0.0
            action = result.verdict.action
            events.append(Screened(call, result, action, elapsed, repeat))
            if action is Action.BLOCK:
                status = result.verdict.sip_status
                if status != 603:
                    return events + reply(status, _REASONS.get(status, "Rejected"))
                return events + reply(603, "Network Blocked", (("Reason", self.reason_603),))
            if action is Action.LABEL:
                label = result.verdict

        # Peers may only reach the switches; a switch may reach anyone (the
        # callers it has dialogs with). In-dialog requests from a peer without
        # a Route go to the pool, keyed by Call-ID: the switch that has the call.
        from_switch = source.host in self.switch_hosts
        switch: SwitchConfig | None = None
        if method == "BYE" and self.reputation is not None:
            ended = self.reputation.ended(req.call_id, now)
            if ended is not None:
                events.append(CallOutcome(ended[0], duration=ended[1]))
        if popped < len(routes):
            dest = uri_address(routes[popped].uri)
        elif (
            from_switch
            and req.uri.scheme in ("sip", "sips")
            and not self._is_us(req.uri.host, req.uri.port)
        ):
            dest = uri_address(req.uri)
        else:
            switch = self.pool.choose(req.call_id, now)
            if switch is None:
                return events + reply(503, "Service Unavailable", (("Retry-After", "5"),))
            dest = Address(switch.host, switch.port, switch.transport)
        if dest is None:
            return events + reply(503, "Service Unavailable (next hop is not an IP address)")
        trusted = self.trusted_hops.get((dest.host, dest.port))
        if trusted is None and not from_switch:
            return events + reply(403, "Forbidden (relaying to other hosts is denied)")
        strip_pai = not trusted and privacy_requested(req)
        data = self._forward(
            req, branch, top_via, dest, source, popped, label, strip_pai, verstat
        )
        return [*events, Send(dest, data), Forwarded("request", method)]

    def _forward(
        self,
        req: SipRequest,
        branch: str,
        top_via: str | None,
        dest: Address,
        source: Address,
        popped: int,
        label: Verdict | None,
        strip_pai: bool,
        verstat: str | None = None,
    ) -> bytes:
        port = self.tls_port if dest.transport == "tls" else self.port
        out = [("Via", f"SIP/2.0/{dest.transport.upper()} {self.host}:{port};branch={branch}")]
        if self.cfg.sip.record_route and req.to.tag is None and req.method in DIALOG_METHODS:
            out.append(("Record-Route", self._rr(dest.transport)))
            if dest.transport != source.transport:  # RFC 5658 double Record-Route
                out.append(("Record-Route", self._rr(source.transport)))
        if req.wire and label is None and not strip_pai and not popped and verstat is None:
            spliced = splice_request(req, out, top_via, self.verdict_key)
            if spliced is not None:
                return spliced
        style = (self.verdict_key, self.verdict_header, self.label)
        return reserialize_request(req, out, top_via, popped, label, strip_pai, verstat, style)

    # -- responses -------------------------------------------------------

    def _response(self, resp: SipResponse, source: Address, now: float) -> list[Event]:
        top = resp.vias[0]
        if not self._is_us(top.host, top.port) and not (
            top.host in self.local_hosts and top.port == self.ping_port
        ):
            return [Dropped("response-not-ours", top.sent_by)]
        if len(resp.vias) == 1:
            state = self.pool.ping_answered(resp.call_id)
            if state is None:
                return [Dropped("response-unmatched")]
            return [PingAnswered(state.cfg.name, resp.status)]
        hop = next_hop(resp.vias[1])
        if isinstance(hop, Dropped):
            return [hop]
        # splice when the bytes are exactly what re-serialising would give
        data = drop_top_via(resp.wire, resp.headers) if resp.wire else relay_response(resp)
        out_events: list[Event] = [
            Send(hop, data),
            Forwarded("response", resp.cseq_method, resp.status),
        ]
        reputation = self.reputation
        if (
            reputation is not None
            and resp.status >= 200
            and resp.cseq_method in SCREENED_METHODS
            and source.host in self.switch_hosts  # a peer must not answer its own calls
        ):
            outcome = reputation.final(resp.call_id, resp.status, now)
            if outcome is not None:
                out_events.append(CallOutcome(outcome[0], answered=outcome[1]))
        return out_events

    # -- helpers ---------------------------------------------------------

    @property
    def overloaded(self) -> bool:
        return self.admit < 1.0

    @overloaded.setter
    def overloaded(self, shed_all: bool) -> None:
        self.admit = 0.0 if shed_all else 1.0

    def _admitted(self) -> bool:
        """Admit the share ``admit`` of new calls, evenly: each call adds the
        share to a credit, and a call is admitted when a whole unit is there."""
        self._credit += self.admit
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    def _flood_ip(
        self, msg: SipMessage, source: Address, now: float, over: int, reply: bool
    ) -> list[Event] | None:
        """A message from a source over its [flood] rate: dropped, or a
        request answered 503; None for a new emergency call, which passes."""
        if not isinstance(msg, SipRequest):
            return self._ip_limited(over, source, "drop")
        try:
            if msg.method in SCREENED_METHODS and msg.to.tag is None:
                call = call_facts(msg, source.host, now)
                if is_sos(msg.uri) or self._emergency(call):
                    return None
        except SipParseError:
            return self._ip_limited(over, source, "drop")
        if not reply or msg.method == "ACK":
            return self._ip_limited(over, source, "drop")
        assert self.flood is not None
        events = self._ip_limited(over, source, "503")
        top = msg.vias[0]
        tag = self._tag(msg.call_id, msg.from_.tag, top.branch) if msg.to.tag is None else None
        data = build_response(
            msg.headers,
            503,
            "Service Unavailable",
            to_tag=tag,
            top_via=received_via(top, source),
            extra=(("Retry-After", str(self.flood.cfg.retry_after)),),
        )
        return [*events, Send(reply_address(top, source), data), Replied(503, msg.method)]

    def _ip_limited(self, over: int, source: Address, action: str) -> list[Event]:
        limited = Limited("ip", action)
        if over == BAN and self.flood is not None:
            return [limited, KernelDrop(source.host, self.flood.cfg.kernel_drop_seconds)]
        return [limited]

    def _emergency(self, call: CallFacts) -> bool:
        """Never shed an emergency call or a PSAP callback (FCC orders)."""
        stages = self.pipeline.stages
        first = stages[0].check if stages else None
        return first is not None and first.name == "emergency" and first.check(call) is not None

    def _stranger(self, source: Address) -> bool:
        """A source that is neither a declared peer (over its transport) nor a
        switch, when peers are declared."""
        gate = self.gate
        return (
            gate is not None
            and source.host not in self.switch_hosts
            and not gate.admits(source.host, source.transport)
        )

    def _is_us(self, host: str, port: int | None) -> bool:
        return host in self.local_hosts and (port or 5060) in self.local_ports

    def _rr(self, transport: str) -> str:
        if transport == "tls":
            return f"<sip:{self.host}:{self.tls_port};transport=tls;lr>"
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"<sip:{self.host}:{self.port}{suffix};lr>"

    def _tag(self, call_id: str, from_tag: str | None, branch: str | None) -> str:
        """To-tag of our own responses; an ACK carrying it is ours to absorb."""
        return self._tag_prefix + digest(f"{call_id}|{from_tag}|{branch}|{self.nonce}")[:8]


def _raw_tag(value: str) -> str | None:
    """The tag of a From/To of a request that failed validation, if readable."""
    try:
        return parse_name_addr(value).tag
    except SipParseError:
        return None


_REASONS = {
    400: "Bad Request",
    413: "Request Entity Too Large",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    433: "Anonymity Disallowed",
    483: "Too Many Hops",
    503: "Service Unavailable",
    505: "Version Not Supported",
    607: "Unwanted",
}
