"""The built-in training loop: seeding, devices, optimisers, schedules, checkpoints.

Submodules are imported explicitly (``ablate.train.loop``, ``ablate.train.run``) so that importing
this package costs nothing.
"""
