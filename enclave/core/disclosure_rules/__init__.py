"""The disclosure rules, one module per rule: each declares ``RULE = Rule(...)``.

Adding a rule is adding a module here (and its tests): :func:`enclave.core.disclosure_registry.rules`
finds it, and the policy, its presets and hash, the settings, the checker and the docs read it.
See :mod:`enclave.core.disclosure_registry` for what a rule declares; modules named ``_*`` hold helpers
shared by rules.
"""
