"""What every Switchboard service process shares: settings, NATS, trace propagation, database engines.

Framework-light on purpose: no module-level connections; each service's composition root
(``create_app``) calls these and owns what they return.
"""
