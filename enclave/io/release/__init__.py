"""Release builder: what leaves the restricted zone, and how it is desensitized."""
