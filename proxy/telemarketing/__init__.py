"""Outbound telemarketing rules for trunks whose customers are
telemarketers: calling hours at the callee's location (the FTC
Telemarketing Sales Rule, or a stricter window) and the National Do Not
Call Registry.

settings: the [telemarketing] section; zones: number -> time zones, built
once; dnc: the DNC artefact and its loader; check: the screening check and
what a worker holds. Nothing is imported here, so the config parser can
import settings without pulling in the rest.
"""
