"""The ground floor: what every role needs and no role owns.

Config, node secrets, identity and rights, the audit trail, presence kinds and small
utilities. It imports no role (an import-linter contract holds that); roles import it.
"""
