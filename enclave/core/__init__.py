"""The core layer: plain types (errors, settings, the data model) and what every zone shares
(hashing, the audit trail, the publication of versioned folders). Imports no other layer.
"""
