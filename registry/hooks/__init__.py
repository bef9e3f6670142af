"""Hooks: every matching audit event POSTed as JSON to the tools a team already watches.

The audit log is the outbox: a promote writes its event and nothing more, and a deliverer
(``registry hook run``, ``registry watch``, or ``registry hook deliver`` from cron) sends each
hook the events after its cursor, in order, signed, at least once (``delivery``). What is sent
is ``payload``; adding, listing and removing hooks is ``settings``.
"""
