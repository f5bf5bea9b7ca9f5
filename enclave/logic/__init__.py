"""The pure-logic layer: code systems, de-identification and disclosure control, computed on
frames and expressions handed in. Imports only the core.
"""
