"""Decision records: every screened call, kept per UTC day in SQLite, for
traceback requests and compliance reports.

settings: the [records] section; store: the day files; recorder: the
worker's DecisionRecorder; query: traceback; reports and charts: the
monthly campaign and peer reports. Nothing is imported here, so the config
parser can import settings without pulling in the rest.
"""
