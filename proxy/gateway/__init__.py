"""Gateway providers: upstream peers as first-class objects.

Their standing in the FCC Robocall Mitigation Database (``rmd``), the
``[peer_policy]`` that turns it into an action (``settings``, ``actions``),
operator overrides with an audit trail (``store``), rolling statistics per
peer (``stats``), their metrics and the admin API (``admin``). The checks
that act on calls are in ``proxy.screening.peer_check``.

Nothing is imported here: ``proxy.screening`` imports ``actions`` while
``proxy.events`` (which ``stats`` needs) is itself importing it.
"""
