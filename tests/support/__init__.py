"""Pure test helpers shared by the test modules: a fake clock, counting credentials, a raw TCP
server for answers no HTTP server would give, and the emulator as the engine tests use it.

The Store itself is always :mod:`store_async.emulator` (with its :class:`FaultPlan`); nothing
here fakes it.
"""
