"""STIR/SHAKEN verification on the terminating side (RFC 8224, 8225, 8588):
Identity headers parsed, PASSporTs verified against certificates fetched in
the background and validated against configured STI-CA roots, and the
result passed on to the switch as verstat (3GPP TS 24.229)."""
